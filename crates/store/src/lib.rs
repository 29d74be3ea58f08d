//! The block store: the bytes of partitions, each stored once per node under its blake3 hash,
//! on a [`Disk`]: RocksDB in production (values above 64 KiB go to blob files, so large blocks
//! do not bloat compaction), the simulator's disk under test. The [`disk`] module is the seam
//! the Raft storage in `tern-meta` sits on too.
//!
//! It owns naming ([`BlockHash`]), durability (a block is synced before `put` returns, so a
//! holder acknowledges only what survives a crash) and integrity: every block is re-hashed when
//! it is stored under an expected name and whenever it is read, so a corrupted copy is reported
//! as [`StoreError::CorruptBlock`], never served. A block is kept as groups of
//! [`GROUP_BYTES`] with its [`Outboard`], so [`BlockStore::ranges`] reads and checks only the
//! groups a reader asks for (a scan of two columns reads two columns); blocks stored whole by
//! earlier versions still read. It does not decide where blocks go (the placement lives in
//! the catalog) nor move them between nodes (the node does).

use std::path::Path;
use std::sync::Arc;

pub mod disk;

pub use disk::{Batch, Disk, DiskError, FamilyOptions, Order, RocksDisk};
pub use tern_proto::BlockHash;
use tern_proto::{GROUP_BYTES, Outboard, PutId};

/// Family of blocks: key = block hash ++ group index (u32, big endian), value = the group's
/// bytes (see [`GROUP_BYTES`]); or, for blocks stored by earlier versions, key = block hash,
/// value = all its bytes.
const BLOCKS: &str = disk::DEFAULT_FAMILY;
/// Family of outboards: key = block hash, value = its [`Outboard`] (blocks stored in groups).
const OUTBOARDS: &str = "outboards";
/// Family of claims: key = block hash ++ put id, empty value. A claim says "this block
/// arrived for that put", so garbage collection keeps it while the put's lease lives.
const CLAIMS: &str = "claims";
/// Family indexing the blocks: key = block hash, value = its size (u64, little endian), then
/// [`IN_GROUPS`] for a block stored in groups (nothing for one stored whole).
/// Listing or checking blocks reads this, never the blob files: RocksDB iterators and point
/// lookups on the blocks family load the (large) values too.
const INDEX: &str = "index";
/// The index's mark of a block stored in groups.
const IN_GROUPS: u8 = 1;

/// The families a block store needs, for opening its [`Disk`].
pub const FAMILIES: [FamilyOptions; 4] = [
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
    FamilyOptions {
        name: OUTBOARDS,
        blob_min_bytes: None,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("block {hash} is not stored here")]
    NotFound { hash: BlockHash },
    #[error("block {hash} is corrupt: its bytes hash to {actual}")]
    CorruptBlock { hash: BlockHash, actual: BlockHash },
    /// Part of a block read by range does not check out against its name (see [`Outboard`]).
    #[error("block {hash} is corrupt: {reason}")]
    CorruptRange { hash: BlockHash, reason: String },
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

/// Values at least this large are kept in RocksDB blob files: every whole group of a block, so
/// blocks do not bloat compaction.
const MIN_BLOB_BYTES: u64 = GROUP_BYTES;

/// One node's blocks.
pub struct BlockStore {
    disk: Arc<dyn Disk>,
    planted: PlantedBugs,
    /// Bytes of blocks deleted since the disk last reclaimed space (see [`Self::reclaim_space`]).
    deleted_unreclaimed: std::sync::atomic::AtomicU64,
    /// Bytes of blocks read from the disk and checked against their names, since opening.
    bytes_read: std::sync::atomic::AtomicU64,
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
            bytes_read: Default::default(),
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

    fn write_synced(
        &self,
        hash: &BlockHash,
        bytes: &[u8],
        outboard: &Outboard,
    ) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        Self::add_block(&mut batch, hash, bytes, outboard);
        self.commit(batch)
    }

    fn group_key(hash: &BlockHash, group: u64) -> [u8; 36] {
        let mut key = [0u8; 36];
        key[..32].copy_from_slice(&hash.0);
        key[32..].copy_from_slice(&(group as u32).to_be_bytes());
        key
    }

    fn add_block(batch: &mut Batch, hash: &BlockHash, bytes: &[u8], outboard: &Outboard) {
        // A block stored whole before (by an earlier version, or a damaged copy) goes.
        batch.delete(BLOCKS, hash.0);
        for (i, group) in bytes.chunks(GROUP_BYTES as usize).enumerate() {
            batch.put(BLOCKS, Self::group_key(hash, i as u64), group);
        }
        if bytes.is_empty() {
            batch.put(BLOCKS, Self::group_key(hash, 0), b"");
        }
        batch.put(OUTBOARDS, hash.0, outboard.to_bytes());
        let mut entry = (bytes.len() as u64).to_le_bytes().to_vec();
        entry.push(IN_GROUPS);
        batch.put(INDEX, hash.0, entry);
    }

    /// Whether `hash` must be (re)written: absent, stored whole (by an earlier version: it
    /// moves to groups), or present but no longer intact. Checking reads the block, but only
    /// when the same bytes are stored twice.
    fn needs_write(&self, hash: &BlockHash) -> bool {
        !matches!(self.entry(hash), Ok(Some((_, true)))) || !matches!(self.verify(hash), Ok(true))
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
        let (outboard, hash) = Outboard::of(bytes);
        if self.needs_write(&hash) {
            self.write_synced(&hash, bytes, &outboard)?;
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
        let (outboard, actual) = Outboard::of(bytes);
        if actual != *expected {
            return Err(StoreError::CorruptBlock {
                hash: *expected,
                actual,
            });
        }
        let mut batch = Batch::default();
        if self.needs_write(expected) {
            Self::add_block(&mut batch, expected, bytes, &outboard);
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
        let (len, in_groups) = self
            .entry(hash)?
            .ok_or(StoreError::NotFound { hash: *hash })?;
        let bytes = if in_groups {
            let count = tern_proto::outboard::group_count(len);
            let keys: Vec<[u8; 36]> = (0..count).map(|g| Self::group_key(hash, g)).collect();
            let mut bytes = Vec::with_capacity(len as usize);
            let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
            let mut missing = None;
            self.disk
                .get_many_self_checked(BLOCKS, &keys, &mut |g, group| match group {
                    Some(group) => bytes.extend_from_slice(group),
                    None => {
                        missing.get_or_insert(g);
                    }
                })?;
            if let Some(g) = missing {
                return Err(StoreError::CorruptRange {
                    hash: *hash,
                    reason: format!("its group {g} is missing"),
                });
            }
            bytes
        } else {
            self.disk
                .get_self_checked(BLOCKS, &hash.0)?
                .ok_or(StoreError::NotFound { hash: *hash })?
        };
        self.count_read(bytes.len());
        let actual = BlockHash::of(&bytes);
        if actual != *hash && !self.planted.skip_read_hash_check {
            return Err(StoreError::CorruptBlock {
                hash: *hash,
                actual,
            });
        }
        Ok(bytes)
    }

    fn count_read(&self, bytes: usize) {
        self.bytes_read
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes of blocks read from the disk and checked against their names since the store
    /// was opened (whole blocks and groups read by [`BlockRanges`]).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Block `hash` to read by ranges: `None` when it is stored whole (by an earlier version,
    /// or it is one group long), then the caller reads it with [`Self::get`]. Its outboard is
    /// checked against its name here, once.
    pub fn ranges(&self, hash: &BlockHash) -> Result<Option<BlockRanges<'_>>, StoreError> {
        let (len, in_groups) = self
            .entry(hash)?
            .ok_or(StoreError::NotFound { hash: *hash })?;
        if !in_groups || len <= GROUP_BYTES {
            return Ok(None);
        }
        let stored = self.disk.get(OUTBOARDS, &hash.0)?.unwrap_or_default();
        let outboard =
            Outboard::from_bytes(&stored, len, hash).map_err(|e| StoreError::CorruptRange {
                hash: *hash,
                reason: e.to_string(),
            })?;
        Ok(Some(BlockRanges {
            store: self,
            hash: *hash,
            len,
            outboard,
        }))
    }

    /// The size of block `hash` if it is stored here (from the index; its bytes are not read).
    pub fn size(&self, hash: &BlockHash) -> Result<Option<u64>, StoreError> {
        Ok(self.entry(hash)?.map(|(len, _)| len))
    }

    /// Block `hash`'s index entry: its size, and whether it is stored in groups.
    fn entry(&self, hash: &BlockHash) -> Result<Option<(u64, bool)>, StoreError> {
        Ok(self.disk.get(INDEX, &hash.0)?.and_then(|v| parse_entry(&v)))
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
        batch.delete_range(
            BLOCKS,
            Self::group_key(hash, 0),
            Self::group_key(hash, u32::MAX as u64),
        );
        batch.delete(OUTBOARDS, hash.0);
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
            let (Ok(key), Some((size, _))) =
                (<[u8; 32]>::try_from(key.as_slice()), parse_entry(&value))
            else {
                continue;
            };
            out.push((BlockHash(key), size));
        }
        Ok(out)
    }

    /// Re-hash one block: `Ok(true)` if intact, `Ok(false)` if its bytes no longer match
    /// their name or the disk reports them damaged (the caller replaces it with a healthy
    /// copy). An I/O error that may pass is an `Err`: a copy is never condemned on it.
    pub fn verify(&self, hash: &BlockHash) -> Result<bool, StoreError> {
        let bytes = match self.get(hash) {
            Ok(bytes) => bytes,
            Err(
                StoreError::CorruptBlock { .. }
                | StoreError::CorruptRange { .. }
                | StoreError::Unreadable(_),
            ) => return Ok(false),
            Err(e) => return Err(e),
        };
        // The bytes are intact; an outboard that no longer checks out is made again from them
        // (it is derived from the bytes, so the copy need not go).
        if let Err(StoreError::CorruptRange { .. }) = self.ranges(hash) {
            let (outboard, _) = Outboard::of(&bytes);
            let mut batch = Batch::default();
            batch.put(OUTBOARDS, hash.0, outboard.to_bytes());
            self.commit(batch)?;
        }
        Ok(true)
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

    /// Flip the bits of `mask` in the stored byte at `offset` of a block, without renaming
    /// it: what damage on disk does. For tests of corruption handling only.
    #[doc(hidden)]
    pub fn flip_for_test(&self, hash: &BlockHash, offset: u64, mask: u8) -> Result<(), StoreError> {
        let (_, in_groups) = self
            .entry(hash)?
            .ok_or(StoreError::NotFound { hash: *hash })?;
        let (key, at) = if in_groups {
            let key = Self::group_key(hash, offset / GROUP_BYTES);
            (key.to_vec(), offset % GROUP_BYTES)
        } else {
            (hash.0.to_vec(), offset)
        };
        let mut value = self
            .disk
            .get(BLOCKS, &key)?
            .ok_or(StoreError::NotFound { hash: *hash })?;
        let byte = value
            .get_mut(at as usize)
            .ok_or(StoreError::NotFound { hash: *hash })?;
        *byte ^= mask;
        let mut batch = Batch::default();
        batch.put(BLOCKS, key, value);
        self.commit(batch)
    }

    /// Store `bytes` whole under their name, as versions before groups did: for tests that
    /// such blocks still read.
    #[doc(hidden)]
    pub fn put_whole_for_test(&self, bytes: &[u8]) -> Result<BlockHash, StoreError> {
        let hash = BlockHash::of(bytes);
        let mut batch = Batch::default();
        batch.put(BLOCKS, hash.0, bytes);
        batch.put(INDEX, hash.0, (bytes.len() as u64).to_le_bytes());
        self.commit(batch)?;
        Ok(hash)
    }
}

/// An index entry: the block's size, and whether it is stored in groups.
fn parse_entry(value: &[u8]) -> Option<(u64, bool)> {
    let size = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    Some((size, value.get(8) == Some(&IN_GROUPS)))
}

/// One block stored in groups, read by ranges: each group read is checked against the
/// block's [`Outboard`], which [`BlockStore::ranges`] checked against the block's name.
pub struct BlockRanges<'a> {
    store: &'a BlockStore,
    hash: BlockHash,
    len: u64,
    outboard: Outboard,
}

impl BlockRanges<'_> {
    /// The block's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Read groups `groups` (indexes, see [`GROUP_BYTES`]) into `out` (the block's length) at
    /// their offsets, each checked. Returns the bytes read.
    pub fn read_groups(&self, groups: &[u64], out: &mut [u8]) -> Result<u64, StoreError> {
        let corrupt = |reason: String| StoreError::CorruptRange {
            hash: self.hash,
            reason,
        };
        if out.len() as u64 != self.len {
            return Err(StoreError::Io(format!(
                "a buffer of {} bytes for a block of {}",
                out.len(),
                self.len
            )));
        }
        let keys: Vec<[u8; 36]> = groups
            .iter()
            .map(|&g| BlockStore::group_key(&self.hash, g))
            .collect();
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let mut read = 0u64;
        let mut failed = None;
        self.store
            .disk
            .get_many_self_checked(BLOCKS, &keys, &mut |i, bytes| {
                if failed.is_some() {
                    return;
                }
                let g = groups[i];
                let start = g * GROUP_BYTES;
                let end = (start + GROUP_BYTES).min(self.len);
                let Some(bytes) = bytes else {
                    failed = Some(format!("its group {g} is missing"));
                    return;
                };
                if start >= self.len || bytes.len() as u64 != end - start {
                    failed = Some(format!("its group {g} has {} bytes", bytes.len()));
                    return;
                }
                self.store.count_read(bytes.len());
                if !self.store.planted.skip_read_hash_check
                    && let Err(e) = self.outboard.check_group(g, bytes)
                {
                    failed = Some(e.to_string());
                    return;
                }
                out[start as usize..end as usize].copy_from_slice(bytes);
                read += bytes.len() as u64;
            })?;
        if let Some(reason) = failed {
            return Err(corrupt(reason));
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests;
