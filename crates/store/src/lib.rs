//! The block store: the bytes of partitions, each stored once per node under its blake3 hash,
//! in RocksDB (values above 64 KiB go to blob files, so large blocks do not bloat compaction).
//!
//! It owns naming ([`BlockHash`]), durability (a block is synced before `put` returns, so a
//! holder acknowledges only what survives a crash) and integrity: every block is re-hashed when
//! it is stored under an expected name and whenever it is read, so a corrupted copy is reported
//! as [`StoreError::CorruptBlock`], never served. It does not decide where blocks go (the
//! placement lives in the catalog) nor move them between nodes (the node does).

use std::path::Path;

use rocksdb::{DB, IteratorMode, Options, WriteOptions};

pub use tern_proto::BlockHash;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("block {hash} is not stored here")]
    NotFound { hash: BlockHash },
    #[error("block {hash} is corrupt: its bytes hash to {actual}")]
    CorruptBlock { hash: BlockHash, actual: BlockHash },
    #[error("block store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("block store I/O: {0}")]
    Io(String),
}

fn io(e: rocksdb::Error) -> StoreError {
    StoreError::Io(e.into_string())
}

/// Blocks at least this large are kept in RocksDB blob files.
const MIN_BLOB_BYTES: u64 = 64 << 10;

/// One node's blocks.
pub struct BlockStore {
    db: DB,
}

impl BlockStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(MIN_BLOB_BYTES);
        opts.set_blob_file_size(256 << 20);
        opts.set_enable_blob_gc(true);
        let db = DB::open(&opts, path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: e.into_string(),
        })?;
        Ok(Self { db })
    }

    fn write_synced(&self, hash: &BlockHash, bytes: &[u8]) -> Result<(), StoreError> {
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.put_opt(hash.0, bytes, &sync).map_err(io)
    }

    /// Store `bytes` and return their name. Idempotent: the same bytes always get the same
    /// name, and storing them twice keeps one copy.
    pub fn put(&self, bytes: &[u8]) -> Result<BlockHash, StoreError> {
        let hash = BlockHash::of(bytes);
        // Absent, or present but unreadable: (re)write it.
        if !matches!(self.contains(&hash), Ok(true)) {
            self.write_synced(&hash, bytes)?;
        }
        Ok(hash)
    }

    /// Store bytes that arrived under the name `expected` (from a client or another holder),
    /// refusing them if they do not hash to it. On `Ok` the block is durable here.
    pub fn put_verified(&self, expected: &BlockHash, bytes: &[u8]) -> Result<(), StoreError> {
        let actual = BlockHash::of(bytes);
        if actual != *expected {
            return Err(StoreError::CorruptBlock {
                hash: *expected,
                actual,
            });
        }
        // Absent, or present but unreadable: (re)write it.
        if !matches!(self.contains(expected), Ok(true)) {
            self.write_synced(expected, bytes)?;
        }
        Ok(())
    }

    /// The block's bytes, checked against its name.
    pub fn get(&self, hash: &BlockHash) -> Result<Vec<u8>, StoreError> {
        let bytes = self
            .db
            .get(hash.0)
            .map_err(io)?
            .ok_or(StoreError::NotFound { hash: *hash })?;
        let actual = BlockHash::of(&bytes);
        if actual != *hash {
            return Err(StoreError::CorruptBlock {
                hash: *hash,
                actual,
            });
        }
        Ok(bytes)
    }

    pub fn contains(&self, hash: &BlockHash) -> Result<bool, StoreError> {
        Ok(self.db.get_pinned(hash.0).map_err(io)?.is_some())
    }

    /// Drop a block (it is unreferenced, or corrupt and about to be re-copied).
    pub fn delete(&self, hash: &BlockHash) -> Result<(), StoreError> {
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.delete_opt(hash.0, &sync).map_err(io)
    }

    /// Every block held here with its size, in hash order.
    pub fn list(&self) -> Result<Vec<(BlockHash, u64)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator(IteratorMode::Start) {
            let (key, value) = item.map_err(io)?;
            let Ok(key) = <[u8; 32]>::try_from(key.as_ref()) else {
                continue;
            };
            out.push((BlockHash(key), value.len() as u64));
        }
        Ok(out)
    }

    /// Re-hash one block: `Ok(true)` if intact, `Ok(false)` if its bytes no longer match or
    /// cannot be read back (RocksDB's own checksums caught the damage first); the caller drops
    /// it and fetches a healthy copy.
    pub fn verify(&self, hash: &BlockHash) -> Result<bool, StoreError> {
        match self.get(hash) {
            Ok(_) => Ok(true),
            Err(StoreError::CorruptBlock { .. } | StoreError::Io(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Write everything to table and blob files, so a restart need not replay the log.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(io)
    }

    /// Overwrite a block's stored bytes without renaming it: what a flipped bit on disk does.
    /// For tests of corruption handling only.
    #[doc(hidden)]
    pub fn corrupt_for_test(&self, hash: &BlockHash, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_synced(hash, bytes)
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
        store.delete(&a).unwrap();
        assert!(matches!(store.get(&a), Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn corruption_is_detected_on_store_and_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path()).unwrap();
        let hash = BlockHash::of(b"good bytes");
        let refused = store.put_verified(&hash, b"bad bytes").unwrap_err();
        assert!(
            matches!(refused, StoreError::CorruptBlock { .. }),
            "{refused}"
        );
        assert!(
            !store.contains(&hash).unwrap(),
            "a refused block is not kept"
        );

        store.put_verified(&hash, b"good bytes").unwrap();
        assert!(store.verify(&hash).unwrap());
        store.corrupt_for_test(&hash, b"good bytez").unwrap();
        assert!(!store.verify(&hash).unwrap());
        let err = store.get(&hash).unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && err.contains(&hash.to_string()),
            "{err}"
        );
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
