//! The block store: the bytes of partitions, each stored once per node under its blake3 hash,
//! on a [`Disk`]: RocksDB in production (values above 64 KiB go to blob files, so large blocks
//! do not bloat compaction), the simulator's disk under test. The [`disk`] module is the seam
//! the Raft storage in `tern-meta` sits on too.
//!
//! It owns naming ([`BlockHash`]), durability (a block is synced before `put` returns, so a
//! holder acknowledges only what survives a crash) and integrity: every block is re-hashed when
//! it is stored under an expected name and whenever it is read, so a corrupted copy is reported
//! as [`StoreError::CorruptBlock`], never served. It does not decide where blocks go (the
//! placement lives in the catalog) nor move them between nodes (the node does).

use std::path::Path;
use std::sync::Arc;

pub mod disk;

pub use disk::{Batch, Disk, DiskError, FamilyOptions, Order, RocksDisk};
pub use tern_proto::BlockHash;
use tern_proto::PutId;

/// Family of blocks: key = block hash, value = its bytes.
const BLOCKS: &str = disk::DEFAULT_FAMILY;
/// Family of claims: key = block hash ++ put id, empty value. A claim says "this block
/// arrived for that put", so garbage collection keeps it while the put's lease lives.
const CLAIMS: &str = "claims";
/// Family indexing the blocks: key = block hash, value = its size (u64, little endian).
/// Listing or checking blocks reads this, never the blob files: RocksDB iterators and point
/// lookups on the blocks family load the (large) values too.
const INDEX: &str = "index";

/// The families a block store needs, for opening its [`Disk`].
pub const FAMILIES: [FamilyOptions; 3] = [
    FamilyOptions {
        name: BLOCKS,
        blob_min_bytes: Some(MIN_BLOB_BYTES),
    },
    FamilyOptions {
        name: CLAIMS,
        blob_min_bytes: None,
    },
    FamilyOptions {
        name: INDEX,
        blob_min_bytes: None,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("block {hash} is not stored here")]
    NotFound { hash: BlockHash },
    #[error("block {hash} is corrupt: its bytes hash to {actual}")]
    CorruptBlock { hash: BlockHash, actual: BlockHash },
    #[error("block store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("disk full: {0}")]
    DiskFull(String),
    #[error("block store I/O: {0}")]
    Io(String),
    /// The disk reports the stored bytes damaged before they could be hashed.
    #[error("block store: stored bytes are damaged: {0}")]
    Unreadable(String),
}

impl From<DiskError> for StoreError {
    fn from(e: DiskError) -> Self {
        match e {
            DiskError::Open { path, reason } => StoreError::Open { path, reason },
            DiskError::Full(reason) => StoreError::DiskFull(reason),
            DiskError::Io(reason) => StoreError::Io(reason),
            DiskError::Corrupt(reason) => StoreError::Unreadable(reason),
        }
    }
}

/// Blocks at least this large are kept in RocksDB blob files.
const MIN_BLOB_BYTES: u64 = 64 << 10;

/// One node's blocks.
pub struct BlockStore {
    disk: Arc<dyn Disk>,
    planted: PlantedBugs,
    /// Bytes of blocks deleted since the disk last reclaimed space (see [`Self::reclaim_space`]).
    deleted_unreclaimed: std::sync::atomic::AtomicU64,
}

/// Bugs planted on purpose so the simulator's tests can show it catches them. Off unless one
/// of the `plant_bug_*` methods is called, which nothing but those tests does.
#[derive(Debug, Clone, Copy, Default)]
struct PlantedBugs {
    ack_before_sync: bool,
    skip_read_hash_check: bool,
}

impl BlockStore {
    /// Open (or create) the RocksDB block store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::on(Arc::new(RocksDisk::open(path, &FAMILIES)?))
    }

    /// The block store on any disk (the simulator's, for one).
    pub fn on(disk: Arc<dyn Disk>) -> Result<Self, StoreError> {
        let store = Self {
            disk,
            planted: PlantedBugs::default(),
            deleted_unreclaimed: Default::default(),
        };
        store.build_index_if_missing()?;
        Ok(store)
    }

    /// Plant a known bug: blocks are acknowledged before they are synced.
    #[doc(hidden)]
    pub fn plant_bug_ack_before_sync(&mut self) {
        self.planted.ack_before_sync = true;
    }

    /// Plant a known bug: blocks are served without checking them against their name.
    #[doc(hidden)]
    pub fn plant_bug_skip_read_hash_check(&mut self) {
        self.planted.skip_read_hash_check = true;
    }

    /// Whether calls block on I/O (then async callers run them off the runtime).
    pub fn blocks_thread(&self) -> bool {
        self.disk.blocks_thread()
    }

    /// A store written before the index existed gets one, in a single pass over its blocks.
    fn build_index_if_missing(&self) -> Result<(), StoreError> {
        if self
            .disk
            .scan(INDEX, &[], Order::Ascending)?
            .next()
            .is_some()
        {
            return Ok(());
        }
        let mut batch = Batch::default();
        for item in self.disk.scan(BLOCKS, &[], Order::Ascending)? {
            let (key, value) = item?;
            if key.len() == 32 {
                batch.put(INDEX, &key, (value.len() as u64).to_le_bytes());
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.commit(batch)
    }

    fn write_synced(&self, hash: &BlockHash, bytes: &[u8]) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        Self::add_block(&mut batch, hash, bytes);
        self.commit(batch)
    }

    fn add_block(batch: &mut Batch, hash: &BlockHash, bytes: &[u8]) {
        batch.put(BLOCKS, hash.0, bytes);
        batch.put(INDEX, hash.0, (bytes.len() as u64).to_le_bytes());
    }

    /// Whether `hash` must be (re)written: absent, or present but no longer intact. Checking
    /// reads the block, but only when the same bytes are stored twice.
    fn needs_write(&self, hash: &BlockHash) -> bool {
        !matches!(self.contains(hash), Ok(true)) || !matches!(self.verify(hash), Ok(true))
    }

    /// Every write is synced: a holder acknowledges only what survives a crash.
    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        Ok(self.disk.write(batch, !self.planted.ack_before_sync)?)
    }

    fn claim_key(hash: &BlockHash, put: &PutId) -> [u8; 48] {
        let mut key = [0u8; 48];
        key[..32].copy_from_slice(&hash.0);
        key[32..].copy_from_slice(&put.0);
        key
    }

    /// Store `bytes` and return their name. Idempotent: the same bytes always get the same
    /// name, and storing them twice keeps one copy.
    pub fn put(&self, bytes: &[u8]) -> Result<BlockHash, StoreError> {
        let hash = BlockHash::of(bytes);
        if self.needs_write(&hash) {
            self.write_synced(&hash, bytes)?;
        }
        Ok(hash)
    }

    /// Store bytes that arrived under the name `expected` (from a client or another holder),
    /// refusing them if they do not hash to it, and record `claim` (the put they belong to)
    /// with them. On `Ok` the block and its claim are durable here.
    pub fn put_verified(
        &self,
        expected: &BlockHash,
        bytes: &[u8],
        claim: Option<PutId>,
    ) -> Result<(), StoreError> {
        let actual = BlockHash::of(bytes);
        if actual != *expected {
            return Err(StoreError::CorruptBlock {
                hash: *expected,
                actual,
            });
        }
        let mut batch = Batch::default();
        if self.needs_write(expected) {
            Self::add_block(&mut batch, expected, bytes);
        }
        if let Some(put) = claim {
            batch.put(CLAIMS, Self::claim_key(expected, &put), b"");
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.commit(batch)
    }

    /// The puts that claimed this block (see [`BlockStore::put_verified`]).
    pub fn claims(&self, hash: &BlockHash) -> Result<Vec<PutId>, StoreError> {
        let mut out = Vec::new();
        for item in self.disk.scan(CLAIMS, &hash.0, Order::Ascending)? {
            let (key, _) = item?;
            if key.len() != 48 || key[..32] != hash.0 {
                break;
            }
            let mut put = [0u8; 16];
            put.copy_from_slice(&key[32..]);
            out.push(PutId(put));
        }
        Ok(out)
    }

    /// Forget one claim (its put ended; the block stays if something else needs it).
    pub fn drop_claim(&self, hash: &BlockHash, put: &PutId) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.delete(CLAIMS, Self::claim_key(hash, put));
        self.commit(batch)
    }

    /// The block's bytes, checked against its name.
    pub fn get(&self, hash: &BlockHash) -> Result<Vec<u8>, StoreError> {
        let bytes = self
            .disk
            .get_self_checked(BLOCKS, &hash.0)?
            .ok_or(StoreError::NotFound { hash: *hash })?;
        let actual = BlockHash::of(&bytes);
        if actual != *hash && !self.planted.skip_read_hash_check {
            return Err(StoreError::CorruptBlock {
                hash: *hash,
                actual,
            });
        }
        Ok(bytes)
    }

    /// The size of block `hash` if it is stored here (from the index; its bytes are not read).
    pub fn size(&self, hash: &BlockHash) -> Result<Option<u64>, StoreError> {
        Ok(self
            .disk
            .get(INDEX, &hash.0)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_le_bytes))
    }

    /// Whether a block of that name is stored here (its bytes are not checked).
    pub fn contains(&self, hash: &BlockHash) -> Result<bool, StoreError> {
        Ok(self.disk.get(INDEX, &hash.0)?.is_some())
    }

    /// Drop a block and its claims (it is unreferenced, or corrupt and about to be re-copied).
    pub fn delete(&self, hash: &BlockHash) -> Result<(), StoreError> {
        let size = self.size(hash)?.unwrap_or(0);
        let mut batch = Batch::default();
        batch.delete(BLOCKS, hash.0);
        batch.delete(INDEX, hash.0);
        for put in self.claims(hash)? {
            batch.delete(CLAIMS, Self::claim_key(hash, &put));
        }
        self.commit(batch)?;
        self.deleted_unreclaimed
            .fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Give the space of deleted blocks back to the file system once enough has piled up
    /// (the disk decides: a collection rewrites the live blocks, so it waits until garbage is
    /// a good share of the files). Returns the bytes it set out to reclaim, usually 0.
    pub fn reclaim_space(&self) -> Result<u64, StoreError> {
        use std::sync::atomic::Ordering;
        let deleted = self.deleted_unreclaimed.load(Ordering::Relaxed);
        let reclaimed = self.disk.reclaim(deleted)?;
        if reclaimed > 0 {
            self.deleted_unreclaimed
                .fetch_sub(deleted, Ordering::Relaxed);
        }
        Ok(reclaimed)
    }

    /// The names of every block held here, in hash order, without reading their bytes.
    pub fn hashes(&self) -> Result<Vec<BlockHash>, StoreError> {
        Ok(self.list()?.into_iter().map(|(hash, _)| hash).collect())
    }

    /// Every block held here with its size, in hash order, without reading their bytes.
    pub fn list(&self) -> Result<Vec<(BlockHash, u64)>, StoreError> {
        let mut out = Vec::new();
        for item in self.disk.scan(INDEX, &[], Order::Ascending)? {
            let (key, value) = item?;
            let (Ok(key), Ok(size)) = (
                <[u8; 32]>::try_from(key.as_slice()),
                <[u8; 8]>::try_from(value.as_slice()),
            ) else {
                continue;
            };
            out.push((BlockHash(key), u64::from_le_bytes(size)));
        }
        Ok(out)
    }

    /// Re-hash one block: `Ok(true)` if intact, `Ok(false)` if its bytes no longer match
    /// their name or the disk reports them damaged (the caller replaces it with a healthy
    /// copy). An I/O error that may pass is an `Err`: a copy is never condemned on it.
    pub fn verify(&self, hash: &BlockHash) -> Result<bool, StoreError> {
        match self.get(hash) {
            Ok(_) => Ok(true),
            Err(StoreError::CorruptBlock { .. } | StoreError::Unreadable(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Bytes the store occupies in table and blob files. Blocks still in the write-ahead log
    /// and memtable are not counted until flushed, and deleted blocks until compacted: a
    /// backstop for the catalog's own accounting, which placement uses first.
    pub fn bytes_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.disk.used_bytes()?)
    }

    /// Write everything to table and blob files, so a restart need not replay the log.
    pub fn flush(&self) -> Result<(), StoreError> {
        Ok(self.disk.flush()?)
    }

    /// Overwrite a block's stored bytes without renaming it: what a flipped bit on disk does.
    /// For tests of corruption handling only.
    #[doc(hidden)]
    pub fn corrupt_for_test(&self, hash: &BlockHash, bytes: &[u8]) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.put(BLOCKS, hash.0, bytes);
        self.commit(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_named_by_content_and_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path()).unwrap();
        let a = store.put(b"partition 0").unwrap();
        assert_eq!(a, store.put(b"partition 0").unwrap());
        assert_eq!(a, BlockHash::of(b"partition 0"));
        let big = vec![7u8; 3 << 20];
        let b = store.put(&big).unwrap();
        assert_eq!(
            store.get(&b).unwrap(),
            big,
            "large blocks round-trip through blob files"
        );
        assert_eq!(store.list().unwrap().len(), 2);
        assert_eq!(store.hashes().unwrap().len(), 2);
        store.delete(&a).unwrap();
        assert!(matches!(store.get(&a), Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn space_of_deleted_blocks_is_reclaimed_once_garbage_is_a_third_of_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RocksDisk::open(dir.path(), &FAMILIES)
            .unwrap()
            .reclaim_at_least(1 << 20);
        let store = BlockStore::on(Arc::new(disk)).unwrap();
        let blocks: Vec<BlockHash> = (0..16u8)
            .map(|i| store.put(&vec![i; 1 << 20]).unwrap())
            .collect();
        store.flush().unwrap();
        let full = store.bytes_on_disk().unwrap();
        assert!(full >= 16 << 20, "{full}");

        store.delete(&blocks[0]).unwrap();
        assert_eq!(
            store.reclaim_space().unwrap(),
            0,
            "one block in sixteen is not worth rewriting the rest"
        );
        for hash in &blocks[1..12] {
            store.delete(hash).unwrap();
        }
        store.flush().unwrap();
        assert!(store.reclaim_space().unwrap() >= 12 << 20);
        let after = store.bytes_on_disk().unwrap();
        assert!(after < 6 << 20, "{after} bytes on disk for 4 MiB of blocks");
        for (i, hash) in blocks.iter().enumerate().skip(12) {
            assert_eq!(store.get(hash).unwrap(), vec![i as u8; 1 << 20]);
        }
        assert_eq!(
            store.reclaim_space().unwrap(),
            0,
            "nothing is left to reclaim"
        );
    }

    #[test]
    fn claims_name_the_puts_a_block_arrived_for_and_go_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path()).unwrap();
        let (p1, p2) = (PutId([1; 16]), PutId([2; 16]));
        let bytes = b"shared partition";
        let hash = BlockHash::of(bytes);
        let other = BlockHash::of(b"other");
        store.put_verified(&hash, bytes, Some(p1)).unwrap();
        store.put_verified(&hash, bytes, Some(p2)).unwrap();
        store.put_verified(&other, b"other", Some(p1)).unwrap();
        assert_eq!(store.claims(&hash).unwrap(), vec![p1, p2]);
        store.drop_claim(&hash, &p1).unwrap();
        assert_eq!(store.claims(&hash).unwrap(), vec![p2]);
        store.delete(&hash).unwrap();
        assert!(store.claims(&hash).unwrap().is_empty());
        assert_eq!(
            store.claims(&other).unwrap(),
            vec![p1],
            "other blocks keep theirs"
        );
        assert_eq!(store.hashes().unwrap(), vec![other]);
    }

    #[test]
    fn corruption_is_detected_on_store_and_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path()).unwrap();
        let hash = BlockHash::of(b"good bytes");
        let refused = store.put_verified(&hash, b"bad bytes", None).unwrap_err();
        assert!(
            matches!(refused, StoreError::CorruptBlock { .. }),
            "{refused}"
        );
        assert!(
            !store.contains(&hash).unwrap(),
            "a refused block is not kept"
        );

        store.put_verified(&hash, b"good bytes", None).unwrap();
        assert!(store.verify(&hash).unwrap());
        store.corrupt_for_test(&hash, b"good bytez").unwrap();
        assert!(!store.verify(&hash).unwrap());
        // Storing the same block again replaces the damaged copy.
        store.put_verified(&hash, b"good bytes", None).unwrap();
        assert!(store.verify(&hash).unwrap());
        store.corrupt_for_test(&hash, b"good bytez").unwrap();
        let err = store.get(&hash).unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && err.contains(&hash.to_string()),
            "{err}"
        );
    }

    /// A disk whose reads fail as told: an I/O error that may pass, or damage it reports.
    struct Flaky {
        disk: RocksDisk,
        fail: std::sync::Mutex<Option<DiskError>>,
    }

    impl Disk for Flaky {
        fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
            self.disk.get(family, key)
        }
        fn get_self_checked(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
            match self.fail.lock().unwrap().clone() {
                Some(e) => Err(e),
                None => self.disk.get_self_checked(family, key),
            }
        }
        fn write(&self, batch: Batch, sync: bool) -> Result<(), DiskError> {
            self.disk.write(batch, sync)
        }
        fn scan<'a>(
            &'a self,
            family: &str,
            from: &[u8],
            order: Order,
        ) -> Result<disk::Entries<'a>, DiskError> {
            self.disk.scan(family, from, order)
        }
        fn used_bytes(&self) -> Result<u64, DiskError> {
            self.disk.used_bytes()
        }
        fn flush(&self) -> Result<(), DiskError> {
            self.disk.flush()
        }
    }

    /// Scrub condemns a copy only when it is known bad: an I/O error is an error, not a
    /// verdict (the caller keeps the copy and looks again later).
    #[test]
    fn only_known_damage_condemns_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky {
            disk: RocksDisk::open(dir.path(), &FAMILIES).unwrap(),
            fail: Default::default(),
        });
        let store = BlockStore::on(flaky.clone()).unwrap();
        let hash = store.put(b"block").unwrap();
        *flaky.fail.lock().unwrap() = Some(DiskError::Io("EIO, for now".into()));
        assert!(matches!(store.verify(&hash), Err(StoreError::Io(_))));
        *flaky.fail.lock().unwrap() = Some(DiskError::Corrupt("bad blob checksum".into()));
        assert!(!store.verify(&hash).unwrap());
        *flaky.fail.lock().unwrap() = None;
        assert!(store.verify(&hash).unwrap());
    }

    #[test]
    fn blocks_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let hash = BlockStore::open(dir.path())
            .unwrap()
            .put(b"durable")
            .unwrap();
        let store = BlockStore::open(dir.path()).unwrap();
        assert_eq!(store.get(&hash).unwrap(), b"durable");
    }
}
