//! Datasets as the catalog records them: a named, versioned, immutable list of partitions,
//! each stored as one block on its holders. One catalog entry (table [`DATASETS_TABLE`], key =
//! the name) holds the whole record, so one Raft entry makes a whole dataset visible.

use serde::{Deserialize, Serialize};

use crate::block::BlockHash;
use crate::message::NodeId;

/// The catalog table that holds dataset records.
pub const DATASETS_TABLE: &str = "datasets";
/// The catalog table of writes in progress: key = the put's id (hex), value = a [`PutLease`].
pub const PUTS_TABLE: &str = "puts";
/// The catalog table of revoked certificates: key = serial number (hex), value = the reason.
pub const REVOKED_TABLE: &str = "revoked";

/// The catalog table of storage quotas: key = a client's name, value = the bytes (u64, little
/// endian) of datasets it may own. A client without an entry has no quota.
pub const QUOTAS_TABLE: &str = "quotas";
/// Who wrote each dataset: key = the dataset's name, value = the client's name (what quotas
/// count against).
pub const OWNERS_TABLE: &str = "owners";

/// Tables only typed requests write (the leader keeps them consistent); raw catalog writes
/// from clients may not touch them.
pub const SYSTEM_TABLES: [&str; 6] = [
    DATASETS_TABLE,
    PUTS_TABLE,
    WRITES_TABLE,
    REVOKED_TABLE,
    QUOTAS_TABLE,
    OWNERS_TABLE,
];

/// How often a writer renews its lease. Nodes expire a lease whose value has not changed for
/// their `put_lease_expiry_ms` (measured on their own clock, so clocks need not agree).
pub const PUT_LEASE_RENEW_MS: u64 = 2000;
/// Longest dataset name.
pub const MAX_DATASET_NAME: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub block: BlockHash,
    pub bytes: u64,
    /// Rows in the partition, when the data is a table (0 when unknown).
    pub rows: u64,
    /// The nodes that acknowledged a durable, verified copy, in chain order.
    pub holders: Vec<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub name: String,
    /// 1 for a new dataset, +1 for each replacement.
    pub version: u64,
    /// What the partitions hold (for example `arrow-ipc`, `bytes`).
    pub format: String,
    /// The schema, as its format describes it (empty when the format has none).
    pub schema: String,
    pub partitions: Vec<PartitionRecord>,
    /// Wall-clock milliseconds since the Unix epoch when it was committed.
    pub created_ms: u64,
    /// What each partition's columns hold, for skipping partitions a filter cannot match:
    /// an Arrow IPC stream of one batch, row `i` for partition `i`, with columns `c.min`,
    /// `c.max` (of `c`'s type) and `c.nulls` (UInt64) for each column `c` that has bounds
    /// (see `tern_exec::bounds`). Empty: none known (records older than bounds, formats
    /// without a schema). Last, so a record written before it decodes (see [`Self::decode`]).
    pub bounds: Vec<u8>,
}

/// [`DatasetRecord`] as written before it had `bounds` (postcard has no optional fields).
#[derive(Deserialize)]
struct DatasetRecordWithoutBounds {
    name: String,
    version: u64,
    format: String,
    schema: String,
    partitions: Vec<PartitionRecord>,
    created_ms: u64,
}

/// Most datasets one `ListDatasets` page holds (a page of summaries stays well below a frame).
pub const MAX_LIST_PAGE: u32 = 1000;

/// A dataset as `tern ls` lists it: what it is and how large, without its partitions. As JSON
/// (`tern ls --json`, Python's `list_datasets`) it is its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSummary {
    pub name: String,
    pub version: u64,
    /// The record's format, or `None` when this version cannot decode the record.
    pub format: Option<String>,
    /// (Named as Dask names it when written as JSON.)
    #[serde(rename = "npartitions")]
    pub partitions: u64,
    pub rows: u64,
    pub bytes: u64,
    pub created_ms: u64,
}

impl DatasetSummary {
    /// The summary of the record stored under `name` as `raw`.
    pub fn of(name: &str, raw: &[u8]) -> Self {
        match DatasetRecord::decode(raw) {
            Ok(d) => Self {
                name: d.name.clone(),
                version: d.version,
                format: Some(d.format.clone()),
                partitions: d.partitions.len() as u64,
                rows: d.rows(),
                bytes: d.bytes(),
                created_ms: d.created_ms,
            },
            Err(_) => Self {
                name: name.into(),
                version: 0,
                format: None,
                partitions: 0,
                rows: 0,
                bytes: 0,
                created_ms: 0,
            },
        }
    }
}

/// Names one dataset write, from its first block to its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PutId(pub [u8; 16]);

impl PutId {
    /// The catalog key of this put's lease.
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for PutId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A write in progress, renewed by its writer every [`PUT_LEASE_RENEW_MS`]. While it lives,
/// the blocks stored for it are kept although no dataset references them; the commit deletes
/// it in the same Raft entry that makes the dataset visible. A writer that dies stops renewing,
/// the lease expires, and its blocks are collected as garbage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutLease {
    pub dataset: String,
    /// Bumped by every renewal, so nodes see the lease is alive without comparing clocks.
    pub renewals: u64,
}

impl DatasetRecord {
    /// A record from its catalog entry, whichever version of the record wrote it.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes::<Self>(bytes).or_else(|error| {
            let old =
                postcard::from_bytes::<DatasetRecordWithoutBounds>(bytes).map_err(|_| error)?;
            Ok(Self {
                name: old.name,
                version: old.version,
                format: old.format,
                schema: old.schema,
                partitions: old.partitions,
                created_ms: old.created_ms,
                bounds: Vec::new(),
            })
        })
    }

    pub fn bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes).sum()
    }
    pub fn rows(&self) -> u64 {
        self.partitions.iter().map(|p| p.rows).sum()
    }
}

/// Why a dataset name is refused: names become catalog keys and file names in messages, so
/// they are short, printable and free of path tricks.
pub fn validate_dataset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a dataset name may not be empty".into());
    }
    if name.len() > MAX_DATASET_NAME {
        return Err(format!(
            "dataset name is longer than {MAX_DATASET_NAME} bytes"
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(format!(
            "dataset name {name:?} may not start with '.' or '-'"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "dataset name {name:?} contains {bad:?}; use letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_before_bounds_still_decodes() {
        #[derive(Serialize)]
        struct Before<'a> {
            name: &'a str,
            version: u64,
            format: &'a str,
            schema: &'a str,
            partitions: Vec<PartitionRecord>,
            created_ms: u64,
        }
        let partition = PartitionRecord {
            block: BlockHash::of(b"p"),
            bytes: 10,
            rows: 2,
            holders: vec![1, 2, 3],
        };
        let before = postcard::to_allocvec(&Before {
            name: "trips",
            version: 3,
            format: "arrow-ipc",
            schema: "[]",
            partitions: vec![partition.clone()],
            created_ms: 7,
        })
        .unwrap();
        let record = DatasetRecord::decode(&before).unwrap();
        assert_eq!((record.name.as_str(), record.version), ("trips", 3));
        assert_eq!(record.partitions, vec![partition]);
        assert!(record.bounds.is_empty());

        let now = DatasetRecord {
            bounds: vec![1, 2, 3],
            ..record
        };
        assert_eq!(
            DatasetRecord::decode(&postcard::to_allocvec(&now).unwrap()).unwrap(),
            now
        );
        assert!(DatasetRecord::decode(&before[..before.len() - 1]).is_err());
    }

    #[test]
    fn names_without_path_tricks_are_accepted() {
        for ok in ["trips", "lineitem_sf1", "tpch.lineitem", "a-b", "X9"] {
            assert!(validate_dataset_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            ".hidden",
            "-rf",
            "sp ace",
            "naïve",
            &"x".repeat(129),
        ] {
            assert!(validate_dataset_name(bad).is_err(), "{bad:?}");
        }
    }
}

/// The catalog table of recent conditional writes made idempotent with [`write_once`]:
/// key = the write's id, empty value. Nodes forget an id after `write_id_expiry_ms`.
pub const WRITES_TABLE: &str = "writes";

/// `ops` made safe to deliver twice: they apply at most once under `id`. A conditional write
/// that is retried (its answer was lost) or delivered twice would otherwise be refused by its
/// own first copy ("precondition failed") although it applied; with the id, the second copy is
/// refused by the precondition on the id itself, which the leader answers as a success.
pub fn write_once(id: &str, ops: Vec<crate::CatalogOp>) -> Vec<crate::CatalogOp> {
    let mut once = vec![
        crate::CatalogOp::Expect {
            table: WRITES_TABLE.into(),
            key: id.into(),
            value: None,
        },
        crate::CatalogOp::Put {
            table: WRITES_TABLE.into(),
            key: id.into(),
            value: Vec::new(),
        },
    ];
    once.extend(ops);
    once
}
