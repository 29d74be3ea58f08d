//! The workload: a client host that writes, replaces, reads and removes datasets, queries
//! them, and submits task graphs and futures through the real `tern_client::Client` (over the
//! simulated network), while the driver injects faults. It keeps a model of what was
//! acknowledged, checks every read and answer against it, and when the faults stop checks
//! that the cluster heals (the liveness phase). Reads of blocks go to each holder directly,
//! so what every node serves is checked, not only what the client accepts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use tern_client::{Client, ClientError};
use tern_proto::{
    BlockHash, DATASETS_TABLE, DatasetRecord, Entropy, ErrorKind, NodeId, NodeState, Request,
    Response, fetch_bytes,
};

use crate::cluster::node_addr;

mod graphs;
use crate::invariants;
use crate::net::SimTransport;
use crate::world::{SimClock, World, lock};

/// How long the workload runs with faults, then how long the cluster has to heal.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    pub chaos: Duration,
    pub heal: Duration,
}

/// Dataset names are drawn from a few, so puts replace and race each other: `ds0..` hold
/// bytes, `t0..` tables that the workload queries.
const NAMES: u32 = 5;
const TABLES: u32 = 2;
/// Distinct values of the grouping column `k`.
pub const GROUPS: usize = 5;

/// The tables' schema: a grouping key and a value.
fn table_schema() -> arrow::datatypes::Schema {
    use arrow::datatypes::{DataType, Field, Schema};
    Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ])
}

/// Per value of `k`: (rows, sum of v).
pub type GroupStats = [(u64, i64); GROUPS];

/// One table partition of `rows` rows, encoded as `tern put` encodes them, with what it holds.
fn table_partition(
    op: u64,
    part: u32,
    rows: u64,
) -> OpResult<(tern_client::ingest::Partition, GroupStats)> {
    use arrow::array::Int64Array;
    let schema = Arc::new(table_schema());
    let mut stats = [(0u64, 0i64); GROUPS];
    let (mut ks, mut vs) = (Vec::new(), Vec::new());
    for i in 0..rows {
        let k = (i % GROUPS as u64) as i64;
        let v = (op % 1000) as i64 * 1000 + part as i64 * 300 + i as i64;
        stats[k as usize].0 += 1;
        stats[k as usize].1 += v;
        ks.push(k);
        vs.push(v);
    }
    let batch = arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ks)),
            Arc::new(Int64Array::from(vs)),
        ],
    )
    .map_err(|e| e.to_string())?;
    let mut builder =
        tern_client::ingest::PartitionBuilder::new(&schema).map_err(|e| e.to_string())?;
    builder.push(&batch).map_err(|e| e.to_string())?;
    Ok((builder.finish().map_err(|e| e.to_string())?, stats))
}

/// A query answer as rows of (k, n, s); `k` is -1 when the query has no `k` column.
fn answer_rows(batches: &[arrow::record_batch::RecordBatch]) -> OpResult<Vec<(i64, u64, i64)>> {
    use arrow::array::{Array, Int64Array};
    let mut rows = Vec::new();
    for batch in batches {
        let column = |name: &str| -> OpResult<Int64Array> {
            let array = batch
                .column_by_name(name)
                .ok_or_else(|| format!("no column {name}"))?;
            let cast = arrow::compute::cast(array, &arrow::datatypes::DataType::Int64)
                .map_err(|e| e.to_string())?;
            cast.as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| format!("column {name} is not an integer"))
        };
        let (n, s) = (column("n")?, column("s")?);
        let k = column("k").ok();
        for i in 0..batch.num_rows() {
            let key = k.as_ref().map(|k| k.value(i)).unwrap_or(-1);
            let sum = if s.is_null(i) { 0 } else { s.value(i) };
            rows.push((key, n.value(i) as u64, sum));
        }
    }
    Ok(rows)
}
/// Concurrent operation loops.
const WRITERS: usize = 2;

struct SimClient {
    /// The real client, over the simulated network.
    client: Arc<Client<SimTransport>>,
    world: Arc<World>,
}

/// The client's ids come from the run's seed.
struct SeededEntropy(Arc<World>);

impl Entropy for SeededEntropy {
    fn next_u64(&self) -> u64 {
        self.0.with_rng(|r| r.r#gen())
    }
}

/// Why an operation did not complete (not a violation: faults make operations fail).
type OpResult<T> = Result<T, String>;

/// Whether a write the client sent was applied: `Ok(true)` acknowledged, `Ok(false)` refused
/// (what it expected changed, or its lease expired: nothing applied), `Err` unknown.
fn write_outcome<T>(outcome: Result<T, ClientError>) -> OpResult<bool> {
    match outcome {
        Ok(_) => Ok(true),
        Err(
            ClientError::Conflict(_)
            | ClientError::Exists(_)
            | ClientError::NotFound(_)
            | ClientError::DatasetExists { .. }
            | ClientError::PutLeaseLost { .. },
        ) => Ok(false),
        Err(ClientError::Remote(e)) if e.kind == ErrorKind::LeaseExpired => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

impl SimClient {
    async fn call(&self, request: Request) -> OpResult<Response> {
        self.client.call(request).await.map_err(|e| e.to_string())
    }

    async fn catalog_get(&self, name: &str) -> OpResult<Option<Vec<u8>>> {
        self.client
            .catalog_get(DATASETS_TABLE, name)
            .await
            .map_err(|e| e.to_string())
    }

    /// Write dataset `name` (replacing what is there) with the client's `DatasetWriter`: raw
    /// bytes, or for a table name (`t…`) Arrow partitions as `tern put` writes them.
    async fn put(&self, name: &str, op: u64) -> OpResult<()> {
        let table = name.starts_with('t');
        let old_record = match self.catalog_get(name).await? {
            Some(bytes) => Some(DatasetRecord::decode(&bytes).map_err(|e| e.to_string())?),
            None => None,
        };
        let mut writer = match self.client.dataset_writer(name, true).await {
            Ok(writer) => writer,
            Err(e) => return Err(format!("lease refused: {e}")),
        };
        let parts = self.world.with_rng(|r| r.gen_range(1..=3));
        for part in 0..parts {
            // A table's partitions carry their bounds, which the leader checks at commit.
            let stored = if table {
                let rows = self.world.with_rng(|r| r.gen_range(1..300));
                let (partition, stats) = table_partition(op, part, rows)?;
                self.world
                    .block_stats(BlockHash::of(&partition.bytes), stats);
                writer.add_table_partition(&partition).await
            } else {
                let len = self.world.with_rng(|r| r.gen_range(64..4096));
                let mut bytes = format!("{name} op {op} part {part} ").into_bytes();
                bytes.resize(len.max(bytes.len()), (op as u8).wrapping_add(part as u8));
                writer.add_partition(&bytes, 0).await
            }
            .map_err(|e| e.to_string())?;
            self.world.block_acknowledged(stored.block, &stored.holders);
            self.world.event(format!(
                "put {name}: block {} on {:?}",
                stored.block, stored.holders
            ));
        }
        let (format, schema) = if table {
            (
                "arrow-ipc".to_string(),
                tern_client::ingest::schema_json(&table_schema()),
            )
        } else {
            ("bytes".to_string(), String::new())
        };
        let record = writer.record(&format, &schema);
        if old_record.as_ref().map(|r| r.version) != writer.replaces() {
            // Replaced or removed between our read and the writer's: the model's "superseded"
            // must name what the writer replaces.
            return Err("the dataset changed meanwhile".into());
        }
        {
            let mut all = lock(&self.world.datasets);
            let model = all.entry(name.into()).or_default();
            model.maybe.push(record.clone());
            model.superseded.extend(old_record);
        }
        match write_outcome(writer.commit(&format, &schema).await) {
            Ok(true) => {
                let mut all = lock(&self.world.datasets);
                let model = all.entry(name.into()).or_default();
                if model.superseded.contains(&record) {
                    // Committed, then read and replaced or removed by the other loop before
                    // this answer came back: that write decides what the catalog holds.
                    self.world.event(format!(
                        "put {name} v{} acknowledged after it was superseded",
                        record.version
                    ));
                } else {
                    self.world
                        .event(format!("put {name} v{} acknowledged", record.version));
                    model.acked = Some(record);
                    model.uncertain_remove = false;
                }
                Ok(())
            }
            Ok(false) => Err("the dataset changed meanwhile".into()),
            Err(e) => {
                // Maybe committed: the model already allows readers to see it.
                Err(format!("commit unknown: {e}"))
            }
        }
    }

    async fn remove(&self, name: &str) -> OpResult<()> {
        let Some(current) = self.catalog_get(name).await? else {
            return Ok(());
        };
        let removing = DatasetRecord::decode(&current).map_err(|e| e.to_string())?;
        let version = removing.version;
        lock(&self.world.datasets)
            .entry(name.into())
            .or_default()
            .superseded
            .push(removing);
        let outcome = write_outcome(self.client.remove_dataset_version(name, version).await);
        let mut all = lock(&self.world.datasets);
        let model = all.entry(name.into()).or_default();
        match outcome {
            Ok(true) => {
                self.world
                    .event(format!("remove {name} v{version} acknowledged"));
                model.acked = None;
                model.uncertain_remove = false;
                Ok(())
            }
            // Written once (see `write`): a refusal means it did not apply, even when the
            // request was delivered twice.
            Ok(false) => Err("changed meanwhile".into()),
            Err(e) => {
                model.uncertain_remove = true;
                Err(format!("remove unknown: {e}"))
            }
        }
    }

    /// Read dataset `name` and every block of it; what is seen must have been committed and
    /// every byte served must match its block's name.
    async fn read(&self, name: &str, require_all: bool) -> OpResult<Option<DatasetRecord>> {
        let Some(bytes) = self.catalog_get(name).await? else {
            return Ok(None);
        };
        let record: DatasetRecord = match postcard::from_bytes(&bytes) {
            Ok(r) => r,
            Err(e) => {
                self.world.violated(
                    invariants::VISIBILITY,
                    format!("catalog entry {name} does not decode: {e}"),
                );
                return Err(e.to_string());
            }
        };
        invariants::check_visible(&self.world, &record);
        for p in &record.partitions {
            let mut served = false;
            for holder in &p.holders {
                match fetch_bytes(
                    self.client.transport(),
                    &node_addr(*holder),
                    &Request::GetBlock { hash: p.block },
                )
                .await
                {
                    Ok(bytes) => {
                        invariants::check_served(&self.world, *holder, &p.block, &bytes);
                        served = true;
                        if !require_all {
                            break;
                        }
                    }
                    Err(e) if require_all => {
                        return Err(format!("node {holder} did not serve {}: {e}", p.block));
                    }
                    Err(_) => {}
                }
            }
            if !served && !require_all {
                return Err(format!("no holder served {}", p.block));
            }
        }
        Ok(Some(record))
    }

    /// Run `sql` with the client's `sql` (which tries another node when one does not take
    /// it) and return the answer's rows as (k or -1, n, s).
    async fn query(&self, sql: &str) -> OpResult<Vec<(i64, u64, i64)>> {
        let answer = self.client.sql(sql).await.map_err(|e| e.to_string())?;
        answer_rows(&answer.batches)
    }

    /// Query table `name` three times (a whole-table aggregate, a grouped one that
    /// shuffles behind a filter the partitions' bounds are tested against, and the same groups kept by a semi join with the table's own keys); each
    /// answer must be that of some version of the table whose commit was sent. The nodes
    /// plan every table without its size (`sized_table_rows` 0), so the semi join is decided
    /// as the query runs (a broadcast of the keys into the scan, or the scan filtered by
    /// them), as joins of large tables are.
    async fn check_queries(&self, name: &str) -> OpResult<()> {
        let total = self
            .query(&format!("SELECT count(*) AS n, sum(v) AS s FROM {name}"))
            .await?;
        // The filter holds for every row (v is never negative): the scan tests it against
        // the partitions' bounds, and must skip none.
        let grouped = self
            .query(&format!(
                "SELECT k, count(*) AS n, sum(v) AS s FROM {name} WHERE v >= 0 GROUP BY k ORDER BY k"
            ))
            .await?;
        let joined = self
            .query(&format!(
                "SELECT k, count(*) AS n, sum(v) AS s FROM {name} \
                 WHERE k IN (SELECT k FROM {name} GROUP BY k HAVING count(*) > 0) \
                 GROUP BY k ORDER BY k"
            ))
            .await?;
        for (what, answer) in [
            ("total", &total),
            ("grouped", &grouped),
            ("joined", &joined),
        ] {
            let expected = self.world.expected_answers(name, what != "total");
            invariants::check_answer(&self.world, name, what, answer, &expected);
        }
        Ok(())
    }

    async fn op_loop(&self, writer: usize, until: tokio::time::Instant) {
        let mut op = writer as u64 * 1_000_000;
        while tokio::time::Instant::now() < until && self.world.violation().is_none() {
            op += 1;
            let name = self
                .world
                .with_rng(|r| match r.gen_range(0..NAMES + TABLES) {
                    n if n < NAMES => format!("ds{n}"),
                    n => format!("t{}", n - NAMES),
                });
            let pick = self.world.with_rng(|r| r.gen_range(0..100));
            let (kind, outcome) = match pick {
                0..40 => ("put", self.put(&name, op).await),
                40..65 => ("read", self.read(&name, false).await.map(|_| ())),
                65..73 if name.starts_with('t') => ("query", self.check_queries(&name).await),
                73..77 if name.starts_with('t') => {
                    ("graph", self.check_graph(&name, op, false).await)
                }
                77..80 if name.starts_with('t') => {
                    ("futures", self.check_futures(&name, op, false).await)
                }
                65..80 => ("read", self.read(&name, false).await.map(|_| ())),
                80..89 => ("remove", self.remove(&name).await),
                89 => ("drain", self.drain().await),
                _ => ("list", self.list().await),
            };
            match outcome {
                Ok(()) => {
                    lock(&self.world.ops).entry(kind).or_default().0 += 1;
                    self.world.event(format!("{kind} {name}: ok"));
                }
                Err(e) => {
                    lock(&self.world.ops).entry(kind).or_default().1 += 1;
                    self.world.event(format!("{kind} {name}: failed ({e})"));
                }
            }
            let pause = self.world.with_rng(|r| r.gen_range(20..300));
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// Drain one node (at most one per run): its replicas move to others, copy first.
    async fn drain(&self) -> OpResult<()> {
        if lock(&self.world.drained).is_some() {
            return Ok(());
        }
        let node = self.world.with_rng(|r| r.gen_range(1..=self.world.nodes));
        *lock(&self.world.drained) = Some(node);
        let answer = self.call(Request::Drain { node }).await;
        if !matches!(answer, Ok(Response::Ack)) {
            *lock(&self.world.drained) = None;
        }
        match answer? {
            Response::Ack => {
                self.world.event(format!("drain of node {node} accepted"));
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    }

    async fn list(&self) -> OpResult<()> {
        match self
            .call(Request::CatalogList {
                table: DATASETS_TABLE.into(),
                prefix: String::new(),
                limit: 1000,
            })
            .await?
        {
            Response::CatalogEntries(entries) => {
                for (_, bytes) in entries {
                    if let Ok(record) = DatasetRecord::decode(&bytes) {
                        invariants::check_visible(&self.world, &record);
                    }
                }
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    }

    /// Wait until every node is in the node table and up.
    async fn wait_for_cluster(&self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < until {
            if let Ok(Response::Status(status)) = self.call(Request::Status).await
                && status.nodes.len() as u64 >= self.world.initial_nodes
                && status.nodes.iter().all(|n| n.state == NodeState::Up)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    }

    /// After the faults: every acknowledged dataset is there, and every block of every dataset
    /// has exactly three holders, distinct, up, each serving it intact. `Err` says what is not
    /// so yet.
    async fn healed(&self) -> OpResult<()> {
        let nodes = match self.call(Request::Status).await? {
            Response::Status(status) => status.nodes,
            other => return Err(format!("{other:?}")),
        };
        let up: Vec<NodeId> = nodes
            .iter()
            .filter(|n| n.state == NodeState::Up)
            .map(|n| n.id)
            .collect();
        let zone_of: BTreeMap<NodeId, String> =
            nodes.iter().map(|n| (n.id, n.zone.clone())).collect();
        let names: Vec<String> = lock(&self.world.datasets).keys().cloned().collect();
        // First what the catalog says (cheap), then every copy (slow while a holder is gone).
        for name in &names {
            let Some(bytes) = self.catalog_get(name).await? else {
                continue;
            };
            let record = DatasetRecord::decode(&bytes).map_err(|e| e.to_string())?;
            invariants::check_replicas(&record, &up, &zone_of)?;
        }
        for (i, name) in names.into_iter().enumerate() {
            let record = self
                .read(&name, true)
                .await
                .map_err(|e| format!("reading {name}: {e}"))?;
            let model = lock(&self.world.datasets)
                .get(&name)
                .cloned()
                .unwrap_or_default();
            invariants::check_durable(&self.world, &name, &model, record.as_ref());
            if record.is_some() && name.starts_with('t') {
                self.check_queries(&name)
                    .await
                    .map_err(|e| format!("queries over {name}: {e}"))?;
                self.check_graph(&name, 0, true)
                    .await
                    .map_err(|e| format!("a graph over {name}: {e}"))?;
                // Tables in turn submit and persist (odd `op`s persist).
                self.check_futures(&name, i as u64, true)
                    .await
                    .map_err(|e| format!("futures over {name}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// The client host's software: form, run with faults, stop the faults, check healing.
pub async fn run(world: Arc<World>, phases: Phases) -> turmoil::Result {
    let client = tern_proto::Caller::Client {
        name: "sim-client".into(),
        role: Some(tern_proto::ClientRole::Admin),
    };
    let transport = SimTransport::bind(world.clone(), 1, client).await?;
    tokio::spawn(transport.clone().receive_answers());
    let nodes = (1..=world.initial_nodes).map(node_addr).collect();
    let client = Client::with_transport(
        "the simulated cluster".into(),
        nodes,
        Arc::new(transport),
        Arc::new(SeededEntropy(world.clone())),
        Arc::new(SimClock::new(1.0)),
    );
    let client = Arc::new(SimClient {
        client: Arc::new(client),
        world: world.clone(),
    });
    if !client.wait_for_cluster(Duration::from_secs(60)).await {
        world.violated(invariants::LIVENESS, "the cluster did not form within 60 s");
        return Ok(());
    }
    world.event("cluster formed; faults start");
    world.chaos.store(true, Ordering::Relaxed);
    let until = tokio::time::Instant::now() + phases.chaos;
    let mut loops = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let client = client.clone();
        loops.spawn(async move { client.op_loop(writer, until).await });
    }
    while loops.join_next().await.is_some() {}
    world.event("faults stop; checking that the cluster heals");
    world.chaos.store(false, Ordering::Relaxed);
    world.calm.store(true, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + phases.heal;
    loop {
        if world.violation().is_some() {
            return Ok(());
        }
        match client.healed().await {
            Ok(()) => {
                world.event("healed");
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                world.violated(
                    invariants::LIVENESS,
                    format!(
                        "not healed {} s after the faults stopped: {e}",
                        phases.heal.as_secs()
                    ),
                );
                return Ok(());
            }
            Err(e) => world.event(format!("not healed yet: {e}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
