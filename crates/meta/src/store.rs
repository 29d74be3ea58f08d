//! Durable Raft storage on one [`Disk`] (RocksDB in production, the simulator's disk under
//! test) with four families:
//!
//! | family     | keys                                   | values                      |
//! |------------|----------------------------------------|-----------------------------|
//! | `log`      | entry index, big-endian u64            | postcard `Entry`            |
//! | `raft`     | `vote`, `committed`, `last_purged`     | postcard                    |
//! | `state`    | `n/<id>`, `c/<table>\0<key>`, `m/...`  | the applied state, per key  |
//! | `snapshot` | `meta`, `data`                         | the last built snapshot     |
//!
//! Appends, votes, truncations and purges are synced before they are acknowledged (a node
//! that forgot its vote in a crash could grant a lesser one). The state machine is persisted
//! per changed key on every apply, so a restart resumes from the last applied entry instead of
//! replaying the whole log.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tern_store::disk::{Batch, Disk, FamilyOptions, Order, RocksDisk};

use crate::state::{MetaState, Touched};
use crate::{CommandResult, MetaError, TypeConfig};

type StorageResult<T> = Result<T, StorageError<u64>>;

const CF_LOG: &str = "log";
const CF_RAFT: &str = "raft";
const CF_STATE: &str = "state";
const CF_SNAPSHOT: &str = "snapshot";

const FAMILIES: [FamilyOptions; 4] = [
    FamilyOptions {
        name: CF_LOG,
        blob_min_bytes: None,
    },
    FamilyOptions {
        name: CF_RAFT,
        blob_min_bytes: None,
    },
    FamilyOptions {
        name: CF_STATE,
        blob_min_bytes: None,
    },
    FamilyOptions {
        name: CF_SNAPSHOT,
        blob_min_bytes: None,
    },
];

type Db = Arc<dyn Disk>;

/// Open (or create) the metadata database at `path` and return its two Raft halves.
pub fn open_stores(path: &Path) -> Result<(LogStore, StateMachineStore), MetaError> {
    let disk = RocksDisk::open(path, &FAMILIES).map_err(|e| MetaError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    stores_on(Arc::new(disk)).map_err(|e| MetaError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The two Raft halves on any disk (the simulator's, for one).
pub fn stores_on(disk: Arc<dyn Disk>) -> Result<(LogStore, StateMachineStore), MetaError> {
    let sm =
        StateMachineStore::load(disk.clone()).map_err(|e| MetaError::Storage(e.to_string()))?;
    Ok((
        LogStore {
            db: disk,
            vote_before_sync: false,
        },
        sm,
    ))
}

/// The Raft vote stored on `disk`: what the node would start with (for checks from outside).
pub fn stored_vote(disk: &dyn Disk) -> Result<Option<Vote<u64>>, MetaError> {
    let storage = |e: StorageError<u64>| MetaError::Storage(e.to_string());
    match disk
        .get(CF_RAFT, b"vote")
        .map_err(read_err)
        .map_err(storage)?
    {
        Some(bytes) => decode(&bytes).map(Some).map_err(storage),
        None => Ok(None),
    }
}

fn io_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::<u64>::write(openraft::AnyError::error(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::<u64>::read(openraft::AnyError::error(e.to_string())).into()
}

fn encode<T: Serialize>(value: &T) -> StorageResult<Vec<u8>> {
    postcard::to_allocvec(value).map_err(io_err)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StorageResult<T> {
    postcard::from_bytes(bytes).map_err(read_err)
}

fn get<T: DeserializeOwned>(db: &Db, family: &str, key: &[u8]) -> StorageResult<Option<T>> {
    match db.get(family, key).map_err(read_err)? {
        Some(bytes) => Ok(Some(decode(&bytes)?)),
        None => Ok(None),
    }
}

fn put_synced<T: Serialize>(
    db: &Db,
    family: &'static str,
    key: &[u8],
    value: &T,
) -> StorageResult<()> {
    let mut batch = Batch::default();
    batch.put(family, key, encode(value)?);
    db.write(batch, true).map_err(io_err)
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Db,
    /// A bug planted for the simulator to find: votes saved without a sync. Never set
    /// outside the simulator's tests.
    vote_before_sync: bool,
}

impl LogStore {
    /// Plant a known bug: votes are saved (and so granted) before they are synced.
    #[doc(hidden)]
    pub fn plant_bug_vote_before_sync(&mut self) {
        self.vote_before_sync = true;
    }

    fn last_entry_id(&self) -> StorageResult<Option<LogId<u64>>> {
        let mut iter = self
            .db
            .scan(CF_LOG, &[], Order::DescendingFromEnd)
            .map_err(read_err)?;
        match iter.next() {
            Some(item) => {
                let (_, value) = item.map_err(read_err)?;
                Ok(Some(decode::<Entry<TypeConfig>>(&value)?.log_id))
            }
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let from = start.to_be_bytes();
        let iter = self
            .db
            .scan(CF_LOG, &from, Order::Ascending)
            .map_err(read_err)?;
        let mut entries = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(read_err)?;
            let index = u64::from_be_bytes(key.as_slice().try_into().map_err(read_err)?);
            if !range.contains(&index) {
                break;
            }
            entries.push(decode(&value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<u64>> = get(&self.db, CF_RAFT, b"last_purged")?;
        let last = self.last_entry_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        // openraft answers a vote request only once this returns: the vote must be durable,
        // or a node that crashes could grant a second, lesser vote after it restarts.
        if self.vote_before_sync {
            let mut batch = Batch::default();
            batch.put(CF_RAFT, b"vote", encode(vote)?);
            return self.db.write(batch, false).map_err(io_err);
        }
        put_synced(&self.db, CF_RAFT, b"vote", vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        get(&self.db, CF_RAFT, b"vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        put_synced(&self.db, CF_RAFT, b"committed", &committed)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        Ok(get::<Option<LogId<u64>>>(&self.db, CF_RAFT, b"committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = Batch::default();
        for entry in entries {
            batch.put(CF_LOG, entry.log_id.index.to_be_bytes(), encode(&entry)?);
        }
        // Acknowledge only what is on disk.
        let synced = self
            .db
            .write(batch, true)
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(synced);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let mut batch = Batch::default();
        batch.delete_range(CF_LOG, log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
        // delete_range's end is exclusive.
        batch.delete(CF_LOG, u64::MAX.to_be_bytes());
        self.db.write(batch, true).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        put_synced(&self.db, CF_RAFT, b"last_purged", &log_id)?;
        let mut batch = Batch::default();
        batch.delete_range(CF_LOG, 0u64.to_be_bytes(), (log_id.index + 1).to_be_bytes());
        self.db.write(batch, true).map_err(io_err)
    }
}

/// The state machine as last applied, shared with readers.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, openraft::BasicNode>,
    pub data: MetaState,
}

/// The state machine: an in-memory [`MetaState`] mirrored to RocksDB key by key.
pub struct StateMachineStore {
    db: Db,
    applied: Arc<RwLock<Applied>>,
    snapshots_built: u64,
}

fn node_key(id: u64) -> Vec<u8> {
    let mut key = b"n/".to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn catalog_key(table: &str, key: &str) -> Vec<u8> {
    let mut out = b"c/".to_vec();
    out.extend_from_slice(table.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}

const APPLIED_KEY: &[u8] = b"m/applied";
const MEMBERSHIP_KEY: &[u8] = b"m/membership";

impl StateMachineStore {
    fn load(db: Db) -> StorageResult<Self> {
        let mut applied = Applied::default();
        for item in db.scan(CF_STATE, &[], Order::Ascending).map_err(read_err)? {
            let (key, value) = item.map_err(read_err)?;
            if let Some(id) = key.strip_prefix(b"n/") {
                let id = u64::from_be_bytes(id.try_into().map_err(read_err)?);
                applied.data.nodes.insert(id, decode(&value)?);
            } else if let Some(rest) = key.strip_prefix(b"c/") {
                let split = rest
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| read_err("bad catalog key"))?;
                let table = String::from_utf8(rest[..split].to_vec()).map_err(read_err)?;
                let k = String::from_utf8(rest[split + 1..].to_vec()).map_err(read_err)?;
                applied
                    .data
                    .catalog
                    .entry(table)
                    .or_default()
                    .insert(k, value);
            } else if key.as_slice() == APPLIED_KEY {
                applied.last_applied = decode(&value)?;
            } else if key.as_slice() == MEMBERSHIP_KEY {
                applied.membership = decode(&value)?;
            }
        }
        applied.data.reindex();
        Ok(Self {
            db,
            applied: Arc::new(RwLock::new(applied)),
            snapshots_built: 0,
        })
    }

    /// A handle for reading the applied state from outside Raft.
    pub fn shared(&self) -> Arc<RwLock<Applied>> {
        self.applied.clone()
    }

    /// Replace the whole persisted state with `applied`, in `batch`.
    fn write_all(&self, applied: &Applied, batch: &mut Batch) -> StorageResult<()> {
        let family = CF_STATE;
        batch.delete_range(family, b"", [0xffu8; 8]);
        for (id, node) in &applied.data.nodes {
            batch.put(family, node_key(*id), encode(node)?);
        }
        for (table, entries) in &applied.data.catalog {
            for (key, value) in entries {
                batch.put(family, catalog_key(table, key), value);
            }
        }
        batch.put(family, APPLIED_KEY, encode(&applied.last_applied)?);
        batch.put(family, MEMBERSHIP_KEY, encode(&applied.membership)?);
        Ok(())
    }
}

fn read_lock(lock: &RwLock<Applied>) -> std::sync::RwLockReadGuard<'_, Applied> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock(lock: &RwLock<Applied>) -> std::sync::RwLockWriteGuard<'_, Applied> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// Builds a snapshot from a copy of the state taken when it was asked for.
pub struct SnapshotBuilder {
    db: Db,
    copy: Applied,
    sequence: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let data = encode(&self.copy.data)?;
        let snapshot_id = match &self.copy.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.sequence),
            None => format!("none-{}", self.sequence),
        };
        let meta = SnapshotMeta {
            last_log_id: self.copy.last_applied,
            last_membership: self.copy.membership.clone(),
            snapshot_id,
        };
        // A snapshot installed from the leader meanwhile may be newer: never replace it.
        let stored: Option<SnapshotMeta<u64, openraft::BasicNode>> =
            get(&self.db, CF_SNAPSHOT, b"meta")?;
        if stored.is_none_or(|s| s.last_log_id < meta.last_log_id) {
            let mut batch = Batch::default();
            add_snapshot(&mut batch, &meta, &data)?;
            self.db.write(batch, true).map_err(io_err)?;
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

fn add_snapshot(
    batch: &mut Batch,
    meta: &SnapshotMeta<u64, openraft::BasicNode>,
    data: &[u8],
) -> StorageResult<()> {
    batch.put(CF_SNAPSHOT, b"meta", encode(meta)?);
    batch.put(CF_SNAPSHOT, b"data", data);
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<u64>>,
        StoredMembership<u64, openraft::BasicNode>,
    )> {
        let applied = read_lock(&self.applied);
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        let mut touched = Vec::new();
        let family = CF_STATE;
        let mut batch = Batch::default();
        {
            let mut applied = write_lock(&self.applied);
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(CommandResult::Done),
                    EntryPayload::Normal(command) => {
                        results.push(applied.data.apply(&command, &mut touched));
                    }
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        results.push(CommandResult::Done);
                    }
                }
            }
            for t in touched.drain(..) {
                match t {
                    Touched::Node(id) => match applied.data.nodes.get(&id) {
                        Some(node) => batch.put(family, node_key(id), encode(node)?),
                        None => batch.delete(family, node_key(id)),
                    },
                    Touched::Catalog(table, key) => match applied.data.catalog_get(&table, &key) {
                        Some(value) => batch.put(family, catalog_key(&table, &key), value),
                        None => batch.delete(family, catalog_key(&table, &key)),
                    },
                }
            }
            batch.put(family, APPLIED_KEY, encode(&applied.last_applied)?);
            batch.put(family, MEMBERSHIP_KEY, encode(&applied.membership)?);
        }
        // Not synced here: the log entries are durable, and the next synced log write (or
        // purge) carries these writes with it, since all families share one WAL.
        self.db.write(batch, false).map_err(io_err)?;
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        SnapshotBuilder {
            db: self.db.clone(),
            copy: read_lock(&self.applied).clone(),
            sequence: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        let mut data: MetaState = decode(&bytes)?;
        data.reindex();
        let new = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            data,
        };
        // The state and the snapshot it came from change together, or not at all.
        let mut batch = Batch::default();
        self.write_all(&new, &mut batch)?;
        add_snapshot(&mut batch, meta, &bytes)?;
        self.db.write(batch, true).map_err(io_err)?;
        *write_lock(&self.applied) = new;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let meta: Option<SnapshotMeta<u64, openraft::BasicNode>> =
            get(&self.db, CF_SNAPSHOT, b"meta")?;
        let Some(meta) = meta else { return Ok(None) };
        let data = self
            .db
            .get(CF_SNAPSHOT, b"data")
            .map_err(read_err)?
            .ok_or_else(|| read_err("snapshot data missing"))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct RocksBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachineStore)> {
            let dir = tempfile::tempdir().map_err(io_err)?;
            let (log, sm) = open_stores(dir.path()).map_err(io_err)?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own conformance suite against the RocksDB store.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(RocksBuilder).expect("storage suite");
    }

    #[tokio::test]
    async fn state_survives_reopen() {
        use crate::Command;
        use tern_proto::CatalogOp;
        let dir = tempfile::tempdir().unwrap();
        let log_id = LogId::new(openraft::CommittedLeaderId::new(1, 1), 1);
        {
            let (_log, mut sm) = open_stores(dir.path()).unwrap();
            let entry = Entry::<TypeConfig> {
                log_id,
                payload: EntryPayload::Normal(Command::Catalog(vec![CatalogOp::Put {
                    table: "datasets".into(),
                    key: "trips".into(),
                    value: b"v1".to_vec(),
                }])),
            };
            sm.apply([entry]).await.unwrap();
        }
        let (_log, mut sm) = open_stores(dir.path()).unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id));
        assert_eq!(
            read_lock(&sm.shared())
                .data
                .catalog_get("datasets", "trips"),
            Some(&b"v1".to_vec())
        );
    }
}
