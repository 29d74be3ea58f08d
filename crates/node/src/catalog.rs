//! Typed catalog writes, answered by the leader: a write's lease, a dataset's commit and
//! removal (each dataset's owner recorded, and held to its quota if it has one), a
//! certificate's revocation, a quota. Clients never write the system tables directly
//! ([`tern_proto::SYSTEM_TABLES`]): the leader checks each request against the catalog it
//! leads (names, versions, formats and schemas, holders distinct and real, sizes within
//! limits), composes the catalog changes itself, and guards them with preconditions, so a
//! record in the catalog is one the leader accepted, whoever sent it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tern_meta::placement::REPLICAS;
use tern_meta::{Command, MetaError};
use tern_proto::{
    BlockHash, Caller, CatalogOp, Clock, DATASETS_TABLE, DatasetRecord, ErrorKind, MAX_BLOCK_BYTES,
    NodeId, NodeState, OWNERS_TABLE, PUTS_TABLE, PutId, PutLease, QUOTAS_TABLE, REVOKED_TABLE,
    Request, Response, Transport, WRITES_TABLE, human_bytes, validate_dataset_name, write_once,
};
use tracing::info;

use crate::NodeService;

/// How long the leader waits for a holder to say what it stores, at a commit.
const HOLDER_CHECK: Duration = Duration::from_secs(10);

/// What partitions may hold: Arrow IPC tables, an array's chunks (Arrow IPC of one column),
/// or opaque bytes.
const FORMATS: [&str; 3] = ["arrow-ipc", tern_array::FORMAT, "bytes"];

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encodes plain data")
}

fn lease(dataset: &str, renewals: u64) -> Vec<u8> {
    encode(&PutLease {
        dataset: dataset.into(),
        renewals,
    })
}

fn invalid(reason: impl Into<String>) -> Response {
    Response::error(ErrorKind::Invalid, reason)
}

impl<T: Transport, C: Clock> NodeService<T, C> {
    /// Answer one typed write (on the leader; elsewhere `NotLeader`, and the caller forwards).
    pub(crate) async fn answer_typed_write(
        &self,
        request: &Request,
        caller: &Caller,
    ) -> Result<Response, MetaError> {
        if !self.meta.is_leader() {
            return Err(self.not_leader());
        }
        match request {
            Request::BeginPut { put, dataset } => {
                if let Err(reason) = validate_dataset_name(dataset) {
                    return Ok(invalid(reason));
                }
                let ops = vec![
                    expect(PUTS_TABLE, &put.key(), None),
                    put_op(PUTS_TABLE, &put.key(), lease(dataset, 0)),
                ];
                self.written(ops, "the write id is already in use").await
            }
            Request::RenewPut {
                put,
                dataset,
                renewals,
            } => {
                let Some(before) = renewals.checked_sub(1) else {
                    return Ok(invalid("a renewal counts from 1"));
                };
                let ops = vec![
                    expect(PUTS_TABLE, &put.key(), Some(lease(dataset, before))),
                    put_op(PUTS_TABLE, &put.key(), lease(dataset, *renewals)),
                ];
                self.written(ops, "").await
            }
            Request::EndPut {
                put,
                dataset,
                renewals,
            } => {
                let ops = vec![
                    expect(PUTS_TABLE, &put.key(), Some(lease(dataset, *renewals))),
                    delete(PUTS_TABLE, &put.key()),
                ];
                // A lease already gone (expired) is as ended as can be.
                match self.written(ops, "").await? {
                    Response::Error(e) if e.kind == ErrorKind::LeaseExpired => Ok(Response::Ack),
                    other => Ok(other),
                }
            }
            Request::CommitDataset {
                record,
                replaces,
                put,
                renewals,
                write,
            } => {
                self.commit_dataset(record, *replaces, *put, *renewals, *write, caller)
                    .await
            }
            Request::RemoveDataset {
                name,
                version,
                write,
            } => self.remove_dataset(name, *version, *write).await,
            Request::Revoke { serial, reason } => {
                let ok = !serial.is_empty()
                    && serial.len() <= 64
                    && serial.chars().all(|c| c.is_ascii_hexdigit());
                if !ok {
                    return Ok(invalid(format!(
                        "{serial:?} is not a certificate serial number (hex digits)"
                    )));
                }
                info!(%serial, %reason, %caller, "revoking a certificate");
                let reason = reason.chars().take(256).collect::<String>();
                let ops = vec![put_op(
                    REVOKED_TABLE,
                    &serial.to_ascii_lowercase(),
                    reason.into_bytes(),
                )];
                self.written(ops, "").await
            }
            Request::SetQuota { client, bytes } => {
                if let Err(reason) = tern_net::validate_client_name(client) {
                    return Ok(invalid(reason));
                }
                info!(%client, ?bytes, %caller, "setting a storage quota");
                let op = match bytes {
                    Some(bytes) => put_op(QUOTAS_TABLE, client, bytes.to_le_bytes().to_vec()),
                    None => delete(QUOTAS_TABLE, client),
                };
                self.written(vec![op], "").await
            }
            other => Ok(invalid(format!("{} is not a typed write", other.name()))),
        }
    }

    async fn commit_dataset(
        &self,
        record: &DatasetRecord,
        replaces: Option<u64>,
        put: PutId,
        renewals: u64,
        write: PutId,
        caller: &Caller,
    ) -> Result<Response, MetaError> {
        if let Err(reason) = self.check_record(record, replaces) {
            return Ok(invalid(format!(
                "dataset {:?} refused: {reason}",
                record.name
            )));
        }
        let current = self
            .meta
            .read_local(|s| s.catalog_get(DATASETS_TABLE, &record.name).cloned());
        let old = match (replaces, current) {
            (None, None) => None,
            (None, Some(_)) => {
                return Ok(self.applied_or(
                    &write,
                    Response::error(
                        ErrorKind::Exists,
                        format!("dataset {:?} already exists", record.name),
                    ),
                ));
            }
            (Some(version), Some(bytes)) => match DatasetRecord::decode(&bytes) {
                Ok(old) if old.version == version => Some(bytes),
                _ => return Ok(self.applied_or(&write, changed(&record.name))),
            },
            (Some(_), None) => return Ok(self.applied_or(&write, changed(&record.name))),
        };
        if let Err(refusal) = self.check_quota(record, caller) {
            return Ok(self.applied_or(&write, refusal));
        }
        if let Err(refusal) = self.check_holders(record).await {
            return Ok(self.applied_or(&write, refusal));
        }
        let owner = match caller {
            Caller::Client { name, .. } => name.clone(),
            Caller::Node(id) => format!("node-{id}"),
        };
        let ops = write_once(
            &write.key(),
            vec![
                expect(DATASETS_TABLE, &record.name, old),
                put_op(DATASETS_TABLE, &record.name, encode(record)),
                put_op(OWNERS_TABLE, &record.name, owner.into_bytes()),
                expect(PUTS_TABLE, &put.key(), Some(lease(&record.name, renewals))),
                delete(PUTS_TABLE, &put.key()),
            ],
        );
        let answer = self.written(ops, "").await?;
        if matches!(answer, Response::Written { .. }) {
            info!(dataset = %record.name, version = record.version, partitions = record.partitions.len(), %caller, "dataset committed");
        }
        Ok(answer)
    }

    async fn remove_dataset(
        &self,
        name: &str,
        version: u64,
        write: PutId,
    ) -> Result<Response, MetaError> {
        let current = self
            .meta
            .read_local(|s| s.catalog_get(DATASETS_TABLE, name).cloned());
        let Some(bytes) = current else {
            return Ok(self.applied_or(
                &write,
                Response::error(ErrorKind::NotFound, format!("no dataset named {name:?}")),
            ));
        };
        if !DatasetRecord::decode(&bytes).is_ok_and(|d| d.version == version) {
            return Ok(self.applied_or(&write, changed(name)));
        }
        let ops = write_once(
            &write.key(),
            vec![
                expect(DATASETS_TABLE, name, Some(bytes)),
                delete(DATASETS_TABLE, name),
                delete(OWNERS_TABLE, name),
            ],
        );
        self.written(ops, "").await
    }

    /// A refusal unless every holder a record names stores the block, of the size it declares:
    /// the record is the leader's to trust, not the writer's (one block stored on one node
    /// and committed as held by three would count as three replicas until a scrub noticed).
    /// One call per holder node, for all its blocks.
    async fn check_holders(&self, record: &DatasetRecord) -> Result<(), Response> {
        let mut by_node: BTreeMap<NodeId, Vec<(usize, BlockHash, u64)>> = BTreeMap::new();
        for (i, p) in record.partitions.iter().enumerate() {
            for holder in &p.holders {
                by_node
                    .entry(*holder)
                    .or_default()
                    .push((i, p.block, p.bytes));
            }
        }
        let addrs: BTreeMap<NodeId, String> = self
            .meta
            .read_local(|s| s.nodes.values().map(|n| (n.id, n.addr.clone())).collect());
        let mut asks = Vec::new();
        for (node, blocks) in by_node {
            let hashes: Vec<BlockHash> = blocks.iter().map(|(_, h, _)| *h).collect();
            let addr = addrs.get(&node).cloned().unwrap_or_default();
            let ask = async move {
                let sizes = if node == self.id() {
                    let store = self.blocks.clone();
                    crate::blocks::on_store(&store, move |b| {
                        hashes
                            .iter()
                            .map(|h| b.size(h))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .await
                    .map_err(|e| e.to_string())
                } else {
                    let request = Request::BlockSizes { hashes };
                    match self
                        .transport
                        .call_within(&addr, request, HOLDER_CHECK)
                        .await
                    {
                        Ok(Response::BlockSizes { sizes }) => Ok(sizes),
                        Ok(Response::Error(e)) => Err(e.message),
                        Ok(other) => Err(format!("unexpected answer {other:?}")),
                        Err(e) => Err(e.to_string()),
                    }
                };
                (node, blocks, sizes)
            };
            asks.push(ask);
        }
        for (node, blocks, sizes) in futures::future::join_all(asks).await {
            let sizes = sizes.map_err(|reason| {
                Response::error(
                    ErrorKind::Unavailable,
                    format!("could not confirm what node {node} holds ({reason}); nothing was committed, try again"),
                )
            })?;
            for ((i, hash, bytes), size) in blocks
                .iter()
                .zip(sizes.iter().chain(std::iter::repeat(&None)))
            {
                match size {
                    Some(size) if size == bytes => {}
                    Some(size) => {
                        return Err(invalid(format!(
                            "dataset {:?} refused: partition {i} declares {bytes} bytes, and node {node} holds block {} of {size}",
                            record.name,
                            hash.prefix(12)
                        )));
                    }
                    None => {
                        return Err(invalid(format!(
                            "dataset {:?} refused: partition {i} names node {node} as a holder, and it does not hold block {}",
                            record.name,
                            hash.prefix(12)
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// A refusal if committing `record` would take its writer past its quota: the bytes of
    /// the datasets it owns, the version `record` replaces not counted.
    fn check_quota(&self, record: &DatasetRecord, caller: &Caller) -> Result<(), Response> {
        let Caller::Client { name: client, .. } = caller else {
            return Ok(());
        };
        let verdict = self.meta.read_local(|s| {
            let quota = s
                .catalog_get(QUOTAS_TABLE, client)
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map(u64::from_le_bytes)?;
            let owned = s
                .catalog
                .get(OWNERS_TABLE)
                .into_iter()
                .flatten()
                .filter(|(name, owner)| {
                    owner.as_slice() == client.as_bytes() && **name != record.name
                })
                .filter_map(|(name, _)| s.catalog_get(DATASETS_TABLE, name))
                .filter_map(|raw| DatasetRecord::decode(raw).ok())
                .map(|d| d.bytes())
                .sum::<u64>();
            Some((quota, owned))
        });
        match verdict {
            Some((quota, owned)) if owned.saturating_add(record.bytes()) > quota => {
                Err(Response::error(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "dataset {:?} ({}) would take client {client:?} past its quota of {} ({} owned already); nothing was committed",
                        record.name,
                        human_bytes(record.bytes()),
                        human_bytes(quota),
                        human_bytes(owned)
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Take the revocation list from this node's copy of the catalog (every node, each
    /// second: a revoked certificate is refused everywhere within about that).
    pub(crate) fn sync_revocations(&self) {
        let serials = self.meta.read_local(|s| {
            s.catalog
                .get(REVOKED_TABLE)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default()
        });
        self.revocations.set(serials);
    }

    /// A success if write `id` applied before (a retry whose first delivery's answer was
    /// lost), else `refusal`.
    fn applied_or(&self, id: &PutId, refusal: Response) -> Response {
        let applied = self
            .meta
            .read_local(|s| s.catalog_get(WRITES_TABLE, &id.key()).is_some());
        if applied {
            Response::Written { log_index: 0 }
        } else {
            refusal
        }
    }

    /// Commit `ops`, turning a failed precondition into the typed error it means.
    async fn written(&self, ops: Vec<CatalogOp>, taken: &str) -> Result<Response, MetaError> {
        match self.meta.write(Command::Catalog(ops)).await {
            Ok(log_index) => Ok(Response::Written { log_index }),
            Err(MetaError::PreconditionFailed { table, key }) => Ok(match table.as_str() {
                // A write whose id is recorded applied before: its retry succeeds.
                WRITES_TABLE => Response::Written { log_index: 0 },
                PUTS_TABLE if !taken.is_empty() => invalid(taken),
                PUTS_TABLE => Response::error(
                    ErrorKind::LeaseExpired,
                    format!("the write's lease {key} expired: its writer did not renew it in time"),
                ),
                _ => changed(&key),
            }),
            Err(e) => Err(e),
        }
    }

    /// Why `record` cannot be committed as a new version after `replaces`.
    fn check_record(&self, record: &DatasetRecord, replaces: Option<u64>) -> Result<(), String> {
        validate_dataset_name(&record.name)?;
        let want = replaces.map_or(1, |v| v + 1);
        if record.version != want {
            return Err(format!(
                "its version is {}, and the next one is {want}",
                record.version
            ));
        }
        if !FORMATS.contains(&record.format.as_str()) {
            return Err(format!(
                "unknown format {:?} (tern stores {})",
                record.format,
                FORMATS.join(", ")
            ));
        }
        match record.format.as_str() {
            "arrow-ipc" => {
                let schema = tern_exec::schema_from_json(&record.name, &record.schema)
                    .map_err(|e| e.to_string())?;
                if schema.fields().is_empty() {
                    return Err("a table needs at least one column".into());
                }
                for field in schema.fields() {
                    tern_exec::check_type_size(field.data_type())
                        .map_err(|e| format!("column {}: {e}", field.name()))?;
                }
                // Bounds that do not hold would skip partitions a filter matches: the same
                // rows would answer differently with and without it.
                let rows: Vec<u64> = record.partitions.iter().map(|p| p.rows).collect();
                tern_exec::bounds::Bounds::decode(&record.bounds, &schema, &rows)
                    .map_err(|e| e.to_string())?;
            }
            tern_array::FORMAT => {
                if !record.bounds.is_empty() {
                    return Err("an array's chunks carry no bounds".into());
                }
                let meta =
                    tern_array::ArrayMeta::from_json(&record.schema).map_err(|e| e.to_string())?;
                if record.partitions.len() != meta.chunk_count() {
                    return Err(format!(
                        "an array of {} chunks has as many partitions, not {}",
                        meta.chunk_count(),
                        record.partitions.len()
                    ));
                }
                for (i, p) in record.partitions.iter().enumerate() {
                    if p.rows != meta.chunk_elements(i) {
                        return Err(format!(
                            "partition {i} claims {} elements where chunk {i} has {}",
                            p.rows,
                            meta.chunk_elements(i)
                        ));
                    }
                }
            }
            _ if !record.schema.is_empty() => {
                return Err(format!("{} partitions carry no schema", record.format));
            }
            _ if !record.bounds.is_empty() => {
                return Err(format!("{} partitions carry no bounds", record.format));
            }
            _ => {}
        }
        let nodes: BTreeMap<u64, NodeState> = self
            .meta
            .read_local(|s| s.nodes.values().map(|n| (n.id, n.state)).collect());
        for (i, p) in record.partitions.iter().enumerate() {
            if p.bytes > MAX_BLOCK_BYTES {
                return Err(format!(
                    "partition {i} claims {} bytes, more than a block may hold",
                    p.bytes
                ));
            }
            let distinct: BTreeSet<u64> = p.holders.iter().copied().collect();
            if p.holders.len() != REPLICAS || distinct.len() != REPLICAS {
                return Err(format!(
                    "partition {i} names holders {:?}: a partition has {REPLICAS} distinct holders",
                    p.holders
                ));
            }
            for holder in &p.holders {
                match nodes.get(holder) {
                    None => {
                        return Err(format!(
                            "partition {i} names node {holder}, which is not in the cluster"
                        ));
                    }
                    Some(NodeState::Up | NodeState::Suspect) => {}
                    Some(state) => {
                        return Err(format!(
                            "partition {i} names node {holder}, which is {state} and holds no new blocks"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn changed(name: &str) -> Response {
    Response::error(
        ErrorKind::Conflict,
        format!("dataset {name:?} changed while this write ran; nothing was done"),
    )
}

fn expect(table: &str, key: &str, value: Option<Vec<u8>>) -> CatalogOp {
    CatalogOp::Expect {
        table: table.into(),
        key: key.into(),
        value,
    }
}

fn put_op(table: &str, key: &str, value: Vec<u8>) -> CatalogOp {
    CatalogOp::Put {
        table: table.into(),
        key: key.into(),
        value,
    }
}

fn delete(table: &str, key: &str) -> CatalogOp {
    CatalogOp::Delete {
        table: table.into(),
        key: key.into(),
    }
}
