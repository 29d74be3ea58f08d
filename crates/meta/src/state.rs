//! The replicated state machine's data and the commands that change it.
//!
//! Applying a command is a pure function of the state and the command, so every member that
//! applies the same log reaches the same state (checked by the simulator's invariants).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tern_proto::{CatalogOp, DATASETS_TABLE, NodeId, NodeRecord, NodeState};

use crate::index::Holdings;

/// Longest table or key name accepted in the catalog.
pub const MAX_NAME_BYTES: usize = 512;
/// Largest catalog value. The catalog holds metadata, not data: blocks live in the block store.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Largest command, encoded: with at most `MAX_ENTRIES_PER_APPEND` of them an AppendEntries
/// stays well below the transport's frame limit.
pub const MAX_COMMAND_BYTES: usize = 2 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// table → key → value. The block store keeps datasets, partitions and replica sets here.
    pub catalog: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// What each node holds by the dataset records, kept up to date on apply (derived: not
    /// in snapshots; see [`Self::reindex`]).
    #[serde(skip)]
    pub holdings: Holdings,
}

/// What a Raft entry asks the state machine to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a node or update its address, zone and capacity (its state becomes `up`).
    RegisterNode(NodeRecord),
    SetNodeState {
        id: NodeId,
        state: NodeState,
    },
    /// Applied all-or-nothing: one invalid op rejects the whole entry.
    Catalog(Vec<CatalogOp>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Done,
    /// The entry was committed but changed nothing, for this reason.
    Rejected(String),
    /// The entry was committed but changed nothing: `table`/`key` was not what an `Expect`
    /// said it should be.
    PreconditionFailed {
        table: String,
        key: String,
    },
}

/// A state key a command changed, so storage can persist just that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    Node(NodeId),
    Catalog(String, String),
}

/// Why a catalog op cannot be applied; checked before anything changes.
pub fn validate_op(op: &CatalogOp) -> Result<(), String> {
    let (table, key) = match op {
        CatalogOp::Put { table, key, .. }
        | CatalogOp::Delete { table, key }
        | CatalogOp::Expect { table, key, .. } => (table, key),
    };
    if let CatalogOp::Put { value, .. } = op {
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "catalog value of {} bytes exceeds the {MAX_VALUE_BYTES}-byte limit",
                value.len()
            ));
        }
    }
    for (what, name) in [("table", table), ("key", key)] {
        if name.is_empty() {
            return Err(format!("catalog {what} name is empty"));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(format!(
                "catalog {what} name is longer than {MAX_NAME_BYTES} bytes"
            ));
        }
        if name.contains('\0') {
            return Err(format!("catalog {what} name contains a NUL byte"));
        }
    }
    Ok(())
}

impl MetaState {
    pub fn apply(&mut self, command: &Command, touched: &mut Vec<Touched>) -> CommandResult {
        match command {
            Command::RegisterNode(record) => {
                let mut record = record.clone();
                record.state = NodeState::Up;
                touched.push(Touched::Node(record.id));
                self.nodes.insert(record.id, record);
                CommandResult::Done
            }
            Command::SetNodeState { id, state } => match self.nodes.get_mut(id) {
                Some(node) => {
                    node.state = *state;
                    touched.push(Touched::Node(*id));
                    CommandResult::Done
                }
                None => CommandResult::Rejected(format!("node {id} is not registered")),
            },
            Command::Catalog(ops) => {
                if let Some(reason) = ops.iter().find_map(|op| validate_op(op).err()) {
                    return CommandResult::Rejected(reason);
                }
                for op in ops {
                    if let CatalogOp::Expect { table, key, value } = op {
                        if self.catalog_get(table, key) != value.as_ref() {
                            return CommandResult::PreconditionFailed {
                                table: table.clone(),
                                key: key.clone(),
                            };
                        }
                    }
                }
                for op in ops {
                    match op {
                        CatalogOp::Expect { .. } => {}
                        CatalogOp::Put { table, key, value } => {
                            let old = self
                                .catalog
                                .entry(table.clone())
                                .or_default()
                                .insert(key.clone(), value.clone());
                            if table == DATASETS_TABLE {
                                if let Some(old) = old {
                                    self.holdings.count(&old, -1);
                                }
                                self.holdings.count(value, 1);
                            }
                            touched.push(Touched::Catalog(table.clone(), key.clone()));
                        }
                        CatalogOp::Delete { table, key } => {
                            if let Some(t) = self.catalog.get_mut(table) {
                                if let Some(old) = t.remove(key)
                                    && table == DATASETS_TABLE
                                {
                                    self.holdings.count(&old, -1);
                                }
                                if t.is_empty() {
                                    self.catalog.remove(table);
                                }
                            }
                            touched.push(Touched::Catalog(table.clone(), key.clone()));
                        }
                    }
                }
                CommandResult::Done
            }
        }
    }

    /// Rebuild the derived indexes from the catalog (after loading or installing a snapshot).
    pub fn reindex(&mut self) {
        self.holdings = Holdings::default();
        for raw in self
            .catalog
            .get(DATASETS_TABLE)
            .into_iter()
            .flat_map(|t| t.values())
        {
            self.holdings.count(raw, 1);
        }
    }

    pub fn catalog_get(&self, table: &str, key: &str) -> Option<&Vec<u8>> {
        self.catalog.get(table)?.get(key)
    }

    /// The entries of `table` whose keys come after `after` (all when `None`), in key order:
    /// for paging through a table without reading it whole.
    pub fn catalog_after<'a>(
        &'a self,
        table: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = (&'a String, &'a Vec<u8>)> + 'a {
        use std::ops::Bound;
        let start = match after {
            Some(key) => Bound::Excluded(key.to_string()),
            None => Bound::Unbounded,
        };
        self.catalog
            .get(table)
            .into_iter()
            .flat_map(move |t| t.range((start.clone(), Bound::Unbounded)))
    }

    pub fn catalog_list(&self, table: &str, prefix: &str, limit: usize) -> Vec<(String, Vec<u8>)> {
        let Some(t) = self.catalog.get(table) else {
            return Vec::new();
        };
        t.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(table: &str, key: &str, value: &[u8]) -> CatalogOp {
        CatalogOp::Put {
            table: table.into(),
            key: key.into(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn catalog_entry_is_all_or_nothing() {
        let mut state = MetaState::default();
        let mut touched = Vec::new();
        let bad = Command::Catalog(vec![put("t", "a", b"1"), put("t", "", b"2")]);
        assert!(matches!(
            state.apply(&bad, &mut touched),
            CommandResult::Rejected(_)
        ));
        assert!(state.catalog.is_empty());
        assert!(touched.is_empty());

        let good = Command::Catalog(vec![
            put("t", "a", b"1"),
            put("t", "ab", b"2"),
            put("t", "b", b"3"),
        ]);
        assert_eq!(state.apply(&good, &mut touched), CommandResult::Done);
        assert_eq!(state.catalog_list("t", "a", 10).len(), 2);
        assert_eq!(state.catalog_list("t", "", 2).len(), 2);
        assert_eq!(state.catalog_get("t", "b"), Some(&b"3".to_vec()));

        let del = Command::Catalog(vec![
            CatalogOp::Delete {
                table: "t".into(),
                key: "a".into(),
            },
            CatalogOp::Delete {
                table: "t".into(),
                key: "ab".into(),
            },
            CatalogOp::Delete {
                table: "t".into(),
                key: "b".into(),
            },
        ]);
        state.apply(&del, &mut touched);
        assert!(state.catalog.is_empty(), "empty tables disappear");
    }

    #[test]
    fn preconditions_make_create_and_replace_atomic() {
        let mut state = MetaState::default();
        let mut touched = Vec::new();
        let absent = CatalogOp::Expect {
            table: "t".into(),
            key: "k".into(),
            value: None,
        };
        let create = Command::Catalog(vec![absent.clone(), put("t", "k", b"v1")]);
        assert_eq!(state.apply(&create, &mut touched), CommandResult::Done);
        assert!(
            matches!(state.apply(&create, &mut touched), CommandResult::PreconditionFailed { key, .. } if key == "k")
        );
        let replace = Command::Catalog(vec![
            CatalogOp::Expect {
                table: "t".into(),
                key: "k".into(),
                value: Some(b"v1".to_vec()),
            },
            put("t", "k", b"v2"),
        ]);
        assert_eq!(state.apply(&replace, &mut touched), CommandResult::Done);
        assert!(
            matches!(
                state.apply(&replace, &mut touched),
                CommandResult::PreconditionFailed { .. }
            ),
            "stale replace refused"
        );
        assert_eq!(state.catalog_get("t", "k"), Some(&b"v2".to_vec()));
    }

    fn dataset(name: &str, holders: &[(u64, Vec<NodeId>)]) -> Vec<u8> {
        let record = tern_proto::DatasetRecord {
            name: name.into(),
            version: 1,
            format: "bytes".into(),
            schema: String::new(),
            partitions: holders
                .iter()
                .map(|(bytes, h)| tern_proto::PartitionRecord {
                    block: tern_proto::BlockHash::of(&bytes.to_le_bytes()),
                    bytes: *bytes,
                    rows: 0,
                    holders: h.clone(),
                })
                .collect(),
            created_ms: 0,
            bounds: Vec::new(),
        };
        postcard::to_allocvec(&record).unwrap()
    }

    proptest::proptest! {
        /// Whatever puts, replacements and removals of datasets are applied, the holdings kept
        /// up to date on apply equal those rebuilt from the catalog.
        #[test]
        fn holdings_kept_on_apply_equal_holdings_rebuilt(
            ops in proptest::collection::vec(
                (0..4usize, proptest::option::of(proptest::collection::vec(
                    (1..1000u64, proptest::collection::vec(1..6u64, 0..4)), 0..5))),
                1..30,
            )
        ) {
            let mut state = MetaState::default();
            let mut touched = Vec::new();
            for (name, partitions) in ops {
                let (table, key) = (DATASETS_TABLE.to_string(), format!("d{name}"));
                let op = match partitions {
                    Some(p) => CatalogOp::Put { table, key: key.clone(), value: dataset(&key, &p) },
                    None => CatalogOp::Delete { table, key },
                };
                state.apply(&Command::Catalog(vec![op]), &mut touched);
            }
            let mut rebuilt = state.clone();
            rebuilt.reindex();
            proptest::prop_assert_eq!(&state.holdings, &rebuilt.holdings);
            let partitions: Vec<tern_proto::PartitionRecord> = state
                .catalog
                .get(DATASETS_TABLE)
                .into_iter()
                .flat_map(|t| t.values())
                .map(|raw| tern_proto::DatasetRecord::decode(raw).unwrap())
                .flat_map(|d| d.partitions)
                .collect();
            let listed: u64 = partitions.iter().map(|p| p.bytes * p.holders.len() as u64).sum();
            let held: u64 = state.holdings.bytes_per_node().values().sum();
            proptest::prop_assert_eq!(listed, held);
            let short = partitions.iter().filter(|p| p.holders.len() < 3).count() as u64;
            proptest::prop_assert_eq!(state.holdings.short_and_empty().0, short);
        }
    }

    #[test]
    fn node_state_changes_need_a_registered_node() {
        let mut state = MetaState::default();
        let mut touched = Vec::new();
        let set = Command::SetNodeState {
            id: 9,
            state: NodeState::Down,
        };
        assert!(matches!(
            state.apply(&set, &mut touched),
            CommandResult::Rejected(_)
        ));
        let record = NodeRecord {
            id: 9,
            addr: "127.0.0.1:1".into(),
            zone: String::new(),
            capacity_bytes: 1,
            state: NodeState::Down,
        };
        state.apply(&Command::RegisterNode(record), &mut touched);
        assert_eq!(
            state.nodes[&9].state,
            NodeState::Up,
            "registering brings a node up"
        );
        assert_eq!(state.apply(&set, &mut touched), CommandResult::Done);
        assert_eq!(state.nodes[&9].state, NodeState::Down);
    }
}
