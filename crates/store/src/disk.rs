//! The disk seam: an ordered key-value store with named families, atomic batches, and an
//! explicit sync. Both the block store and the Raft storage (`tern-meta`) are written against
//! [`Disk`], so the simulator can run them on a disk that loses unsynced writes when its node
//! crashes and flips bits on request; production uses [`RocksDisk`].
//!
//! The contract the simulator enforces is RocksDB's: writes apply in order; a synced write is
//! durable when it returns, and so is every write before it (one write-ahead log); a crash may
//! lose any suffix of the unsynced writes, never a write in the middle.

use std::path::Path;

use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DiskError {
    #[error("cannot open {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("disk full: {0}")]
    Full(String),
    #[error("disk I/O: {0}")]
    Io(String),
    /// The disk itself says the stored bytes are damaged (RocksDB's checksums), as opposed
    /// to an I/O failure that may pass: only this, or a hash mismatch, condemns a copy.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// One change within a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put {
        family: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        family: &'static str,
        key: Vec<u8>,
    },
    /// Every key in `from..to` (end excluded).
    DeleteRange {
        family: &'static str,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

/// Changes applied together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub changes: Vec<Change>,
}

impl Batch {
    pub fn put(&mut self, family: &'static str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.changes.push(Change::Put {
            family,
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        });
    }

    pub fn delete(&mut self, family: &'static str, key: impl AsRef<[u8]>) {
        self.changes.push(Change::Delete {
            family,
            key: key.as_ref().to_vec(),
        });
    }

    pub fn delete_range(
        &mut self,
        family: &'static str,
        from: impl AsRef<[u8]>,
        to: impl AsRef<[u8]>,
    ) {
        self.changes.push(Change::DeleteRange {
            family,
            from: from.as_ref().to_vec(),
            to: to.as_ref().to_vec(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Which way a [`Disk::scan`] walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// From `from` up to the last key.
    Ascending,
    /// From the last key down to the first (`from` is ignored).
    DescendingFromEnd,
}

pub type Entries<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), DiskError>> + 'a>;

/// An ordered key-value store with families (see the module docs for its durability contract).
pub trait Disk: Send + Sync + 'static {
    fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError>;
    /// The same, for values the caller checks itself (blocks, against their blake3 name): the
    /// disk may skip its own checksums. RocksDB checks a blob's CRC32C in portable code, which
    /// cost a quarter of a table scan's CPU, to catch what the hash check catches anyway.
    fn get_self_checked(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        self.get(family, key)
    }
    /// Several values the caller checks itself: `each(i, value)` for the `i`th of `keys`
    /// (`None` if absent), in order, with the disk's own bytes where it can (no copy).
    fn get_many_self_checked(
        &self,
        family: &str,
        keys: &[&[u8]],
        each: &mut dyn FnMut(usize, Option<&[u8]>),
    ) -> Result<(), DiskError> {
        for (i, key) in keys.iter().enumerate() {
            each(i, self.get_self_checked(family, key)?.as_deref());
        }
        Ok(())
    }
    /// Apply `batch` atomically. With `sync`, it and every earlier write are durable on return.
    fn write(&self, batch: Batch, sync: bool) -> Result<(), DiskError>;
    /// The family's entries in key order, starting at `from` (see [`Order`]).
    fn scan<'a>(
        &'a self,
        family: &str,
        from: &[u8],
        order: Order,
    ) -> Result<Entries<'a>, DiskError>;
    /// Bytes the data occupies on disk (an estimate; for accounting backstops only).
    fn used_bytes(&self) -> Result<u64, DiskError>;
    /// Make everything durable and compact what a restart would otherwise replay.
    fn flush(&self) -> Result<(), DiskError>;
    /// Whether calls block the thread on I/O (then async callers move them off the runtime).
    fn blocks_thread(&self) -> bool {
        true
    }
    /// Give back the space of deleted values when enough of it has piled up; `deleted` is
    /// what the caller deleted since the last call that reclaimed (the disk may not count it
    /// as garbage until it compacts). Returns the bytes of garbage it set out to reclaim (0:
    /// not worth it yet).
    fn reclaim(&self, deleted: u64) -> Result<u64, DiskError> {
        let _ = deleted;
        Ok(0)
    }
}

/// How a family is tuned in RocksDB.
#[derive(Debug, Clone, Copy)]
pub struct FamilyOptions {
    pub name: &'static str,
    /// Values at least this large go to blob files (`None`: keep them in the tables).
    pub blob_min_bytes: Option<u64>,
}

/// The production disk: one RocksDB database.
pub struct RocksDisk {
    db: DB,
    families: Vec<&'static str>,
    /// The families whose large values go to blob files.
    blob_families: Vec<&'static str>,
    /// Garbage below this is left in the blob files ([`RECLAIM_MIN_BYTES`] unless changed).
    reclaim_min: u64,
}

fn rocks_error(e: rocksdb::Error) -> DiskError {
    let kind = e.kind();
    let reason = e.into_string();
    if reason.contains("No space left") || reason.contains("NoSpace") {
        DiskError::Full(reason)
    } else if kind == rocksdb::ErrorKind::Corruption {
        DiskError::Corrupt(reason)
    } else {
        DiskError::Io(reason)
    }
}

/// Garbage in blob files below this is left alone (a collection rewrites the live bytes).
pub const RECLAIM_MIN_BYTES: u64 = 256 << 20;

/// The default family's name; every RocksDB database has it.
pub const DEFAULT_FAMILY: &str = rocksdb::DEFAULT_COLUMN_FAMILY_NAME;

impl RocksDisk {
    /// Open (or create) the database at `path` with these families (the default family is
    /// always there; name it to tune it).
    pub fn open(path: &Path, families: &[FamilyOptions]) -> Result<Self, DiskError> {
        let tuned = |family: &FamilyOptions| {
            let mut opts = Options::default();
            if let Some(min) = family.blob_min_bytes {
                opts.set_enable_blob_files(true);
                opts.set_min_blob_size(min);
                opts.set_blob_file_size(256 << 20);
                // Off until `reclaim` wants it. RocksDB's collector moves every live blob out
                // of the oldest quarter of blob files in every compaction, garbage or not: for
                // blocks, which never change, that rewrote a quarter of the data each time a
                // few flushes piled up (measured: a third of a node's CPU in a sum over a
                // freshly stored array went to it, and most of an ingest's disk writes).
                opts.set_enable_blob_gc(false);
            }
            opts
        };
        let mut db_opts = families
            .iter()
            .find(|f| f.name == DEFAULT_FAMILY)
            .map(tuned)
            .unwrap_or_default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        let mut descriptors: Vec<_> = families
            .iter()
            .map(|f| ColumnFamilyDescriptor::new(f.name, tuned(f)))
            .collect();
        if !families.iter().any(|f| f.name == DEFAULT_FAMILY) {
            descriptors.push(ColumnFamilyDescriptor::new(
                DEFAULT_FAMILY,
                Options::default(),
            ));
        }
        let db =
            DB::open_cf_descriptors(&db_opts, path, descriptors).map_err(|e| DiskError::Open {
                path: path.display().to_string(),
                reason: e.into_string(),
            })?;
        let mut names: Vec<&'static str> = families.iter().map(|f| f.name).collect();
        names.push(DEFAULT_FAMILY);
        Ok(Self {
            db,
            families: names,
            blob_families: families
                .iter()
                .filter(|f| f.blob_min_bytes.is_some())
                .map(|f| f.name)
                .collect(),
            reclaim_min: RECLAIM_MIN_BYTES,
        })
    }

    /// Reclaim space from this much garbage on (tests use small stores).
    pub fn reclaim_at_least(mut self, bytes: u64) -> Self {
        self.reclaim_min = bytes;
        self
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created on open")
    }
}

impl Disk for RocksDisk {
    fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        self.db.get_cf(self.cf(family), key).map_err(rocks_error)
    }

    fn get_self_checked(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_verify_checksums(false);
        self.db
            .get_cf_opt(self.cf(family), key, &opts)
            .map_err(rocks_error)
    }

    fn get_many_self_checked(
        &self,
        family: &str,
        keys: &[&[u8]],
        each: &mut dyn FnMut(usize, Option<&[u8]>),
    ) -> Result<(), DiskError> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_verify_checksums(false);
        let found =
            self.db
                .batched_multi_get_cf_opt(self.cf(family), keys, keys.is_sorted(), &opts);
        for (i, value) in found.into_iter().enumerate() {
            each(i, value.map_err(rocks_error)?.as_deref());
        }
        Ok(())
    }

    fn write(&self, batch: Batch, sync: bool) -> Result<(), DiskError> {
        let mut rocks = WriteBatch::default();
        for change in batch.changes {
            match change {
                Change::Put { family, key, value } => rocks.put_cf(self.cf(family), key, value),
                Change::Delete { family, key } => rocks.delete_cf(self.cf(family), key),
                Change::DeleteRange { family, from, to } => {
                    rocks.delete_range_cf(self.cf(family), from, to)
                }
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(rocks, &opts).map_err(rocks_error)
    }

    fn scan<'a>(
        &'a self,
        family: &str,
        from: &[u8],
        order: Order,
    ) -> Result<Entries<'a>, DiskError> {
        let mode = match order {
            Order::Ascending => IteratorMode::From(from, Direction::Forward),
            Order::DescendingFromEnd => IteratorMode::End,
        };
        let iter = self.db.iterator_cf(self.cf(family), mode);
        Ok(Box::new(iter.map(|item| {
            item.map(|(k, v)| (k.into_vec(), v.into_vec()))
                .map_err(rocks_error)
        })))
    }

    fn used_bytes(&self) -> Result<u64, DiskError> {
        let mut total = 0;
        for property in [
            "rocksdb.total-sst-files-size",
            "rocksdb.total-blob-file-size",
        ] {
            total += self
                .db
                .property_int_value(property)
                .map_err(rocks_error)?
                .unwrap_or(0);
        }
        Ok(total)
    }

    fn reclaim(&self, deleted: u64) -> Result<u64, DiskError> {
        let mut reclaimed = 0;
        for family in &self.blob_families {
            let cf = self.cf(family);
            let property = |name: &str| {
                self.db
                    .property_int_value_cf(cf, name)
                    .map(|v| v.unwrap_or(0))
                    .map_err(rocks_error)
            };
            let total = property("rocksdb.live-blob-file-size")?;
            let garbage = property("rocksdb.live-blob-file-garbage-size")?.max(deleted);
            // A copying collection rewrites the live bytes once: worth it when garbage is at
            // least a third of the files (then space is at most 1.5 times the data).
            if garbage < self.reclaim_min || garbage * 3 < total {
                continue;
            }
            let set = |on: &str| {
                self.db
                    .set_options_cf(
                        cf,
                        &[
                            ("enable_blob_garbage_collection", on),
                            ("blob_garbage_collection_age_cutoff", "1.0"),
                        ],
                    )
                    .map_err(rocks_error)
            };
            set("true")?;
            self.db
                .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &Default::default());
            set("false")?;
            reclaimed += garbage;
        }
        Ok(reclaimed)
    }

    fn flush(&self) -> Result<(), DiskError> {
        // Every family: the log is dropped only once nothing in it is unflushed.
        for family in &self.families {
            self.db.flush_cf(self.cf(family)).map_err(rocks_error)?;
        }
        Ok(())
    }
}
