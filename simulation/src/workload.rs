//! The workload: a client host that writes, replaces, reads and removes datasets through the
//! same requests `tern-client` sends (a put lease, placement, a block written along its chain
//! of holders, one catalog commit), while the driver injects faults. It keeps a model of what
//! was acknowledged, checks every read against it, and when the faults stop checks that the
//! cluster heals (the liveness phase).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use tern_proto::{
    BlockHash, DATASETS_TABLE, DatasetRecord, ErrorKind, NodeId, NodeState, PartitionRecord, PutId,
    Request, Response, Transport, fetch_bytes,
};

use crate::cluster::node_addr;
use crate::invariants;
use crate::net::SimTransport;
use crate::world::{World, lock};

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
fn table_partition(op: u64, part: u32, rows: u64) -> OpResult<(Vec<u8>, GroupStats)> {
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
    transport: SimTransport,
    world: Arc<World>,
}

/// Why an operation did not complete (not a violation: faults make operations fail).
type OpResult<T> = Result<T, String>;

impl SimClient {
    fn any_node(&self) -> String {
        let n = self.world.nodes;
        node_addr(self.world.with_rng(|r| r.gen_range(1..=n)))
    }

    /// `k` distinct nodes from a random one on, as a client tries the nodes it knows in
    /// turn (three random picks could all be the one dead node: seed 6001337 at 30 s).
    fn some_nodes(&self, k: u64) -> Vec<String> {
        let n = self.world.nodes;
        let first = self.world.with_rng(|r| r.gen_range(0..n));
        (0..k.min(n))
            .map(|i| node_addr((first + i) % n + 1))
            .collect()
    }

    /// One request, tried on up to four nodes.
    async fn call(&self, request: Request) -> OpResult<Response> {
        let mut last = String::new();
        for _ in 0..4 {
            match self.transport.call(&self.any_node(), request.clone()).await {
                Ok(Response::Error(e)) => last = e.message,
                Ok(answer) => return Ok(answer),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    async fn catalog_get(&self, name: &str) -> OpResult<Option<Vec<u8>>> {
        match self
            .call(Request::CatalogGet {
                table: DATASETS_TABLE.into(),
                key: name.into(),
            })
            .await?
        {
            Response::CatalogValue(v) => Ok(v),
            other => Err(format!("unexpected {other:?}")),
        }
    }

    /// Send one typed write (as `tern-client` does, with a fresh write id where it takes
    /// one): `Ok(true)` acknowledged, `Ok(false)` refused (what it expected changed, or the
    /// lease expired: nothing applied), `Err` unknown.
    async fn write(&self, request: Request) -> OpResult<bool> {
        let addr = self.any_node();
        match self.transport.call(&addr, request).await {
            Ok(Response::Written { .. } | Response::Ack) => Ok(true),
            Ok(Response::Error(e))
                if matches!(
                    e.kind,
                    ErrorKind::Conflict
                        | ErrorKind::Exists
                        | ErrorKind::NotFound
                        | ErrorKind::LeaseExpired
                ) =>
            {
                Ok(false)
            }
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn new_id(&self) -> PutId {
        let mut raw = [0u8; 16];
        self.world.with_rng(|r| r.fill(&mut raw));
        PutId(raw)
    }

    async fn put_block(&self, bytes: &[u8], chain: &[String], put: PutId) -> OpResult<Vec<NodeId>> {
        let (first, rest) = chain.split_first().ok_or("no holders")?;
        let request = Request::PutBlock {
            hash: BlockHash::of(bytes),
            size: bytes.len() as u64,
            chain: rest.to_vec(),
            put: Some(put),
        };
        let (mut writer, mut reader) = self
            .transport
            .open_bulk(first, &request)
            .await
            .map_err(|e| e.to_string())?;
        use tern_proto::{BulkRead, BulkWrite};
        writer.write_chunk(bytes).await.map_err(|e| e.to_string())?;
        writer.finish().await.map_err(|e| e.to_string())?;
        match reader.response().await.map_err(|e| e.to_string())? {
            Response::BlockStored { holders } => Ok(holders),
            other => Err(format!("{other:?}")),
        }
    }

    /// Write dataset `name` (replacing what is there) as a client does: raw bytes, or for a
    /// table name (`t…`) Arrow partitions as `tern put` writes them.
    async fn put(&self, name: &str, op: u64) -> OpResult<()> {
        let table = name.starts_with('t');
        let old = self.catalog_get(name).await?;
        let old_record = match &old {
            Some(bytes) => {
                Some(postcard::from_bytes::<DatasetRecord>(bytes).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let replaces = old_record.as_ref().map(|r| r.version);
        let put = self.new_id();
        let begin = Request::BeginPut {
            put,
            dataset: name.into(),
        };
        if !self.write(begin).await? {
            return Err("lease refused".into());
        }
        let parts = self.world.with_rng(|r| r.gen_range(1..=3));
        let mut partitions = Vec::new();
        let mut pending: BTreeMap<NodeId, u64> = BTreeMap::new();
        for part in 0..parts {
            let (bytes, rows) = if table {
                let rows = self.world.with_rng(|r| r.gen_range(1..300));
                let (bytes, stats) = table_partition(op, part, rows)?;
                self.world.block_stats(BlockHash::of(&bytes), stats);
                (bytes, rows)
            } else {
                let len = self.world.with_rng(|r| r.gen_range(64..4096));
                let mut bytes = format!("{name} op {op} part {part} ").into_bytes();
                bytes.resize(len.max(bytes.len()), (op as u8).wrapping_add(part as u8));
                (bytes, 0)
            };
            let chains = match self
                .call(Request::Place {
                    sizes: vec![bytes.len() as u64],
                    pending: pending.iter().map(|(k, v)| (*k, *v)).collect(),
                })
                .await?
            {
                Response::Placement { chains } => chains,
                other => return Err(format!("placement: {other:?}")),
            };
            let chain = chains.into_iter().next().ok_or("no placement")?;
            let addrs: Vec<String> = chain.iter().map(|(_, a)| a.clone()).collect();
            let holders = self.put_block(&bytes, &addrs, put).await?;
            if holders.len() < addrs.len() {
                return Err(format!("only {holders:?} stored the block"));
            }
            self.world
                .block_acknowledged(BlockHash::of(&bytes), &holders);
            for h in &holders {
                *pending.entry(*h).or_default() += bytes.len() as u64;
            }
            self.world.event(format!(
                "put {name}: block {} on {holders:?}",
                BlockHash::of(&bytes)
            ));
            partitions.push(PartitionRecord {
                block: BlockHash::of(&bytes),
                bytes: bytes.len() as u64,
                rows,
                holders,
            });
        }
        let (format, schema) = if table {
            (
                "arrow-ipc".to_string(),
                tern_client::ingest::schema_json(&table_schema()),
            )
        } else {
            ("bytes".to_string(), String::new())
        };
        let record = DatasetRecord {
            name: name.into(),
            version: replaces.map_or(1, |v| v + 1),
            format,
            schema,
            partitions,
            created_ms: self.world.now_ms(),
        };
        let commit = Request::CommitDataset {
            record: record.clone(),
            replaces,
            put,
            renewals: 0,
            write: self.new_id(),
        };
        {
            let mut all = lock(&self.world.datasets);
            let model = all.entry(name.into()).or_default();
            model.maybe.push(record.clone());
            model.superseded.extend(old_record);
        }
        match self.write(commit).await {
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
        let removing =
            postcard::from_bytes::<DatasetRecord>(&current).map_err(|e| e.to_string())?;
        let version = removing.version;
        lock(&self.world.datasets)
            .entry(name.into())
            .or_default()
            .superseded
            .push(removing);
        let remove = Request::RemoveDataset {
            name: name.into(),
            version,
            write: self.new_id(),
        };
        let outcome = self.write(remove).await;
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
                    &self.transport,
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

    /// Run `sql` as `tern sql` does (on another node when one does not answer) and return the
    /// answer's rows as (k or -1, n, s).
    async fn query(&self, sql: &str) -> OpResult<Vec<(i64, u64, i64)>> {
        let mut last = String::new();
        for node in self.some_nodes(3) {
            match self.query_on(&node, sql).await {
                Ok(Ok(rows)) => return Ok(rows),
                Ok(Err(refused)) => return Err(refused),
                Err(unreachable) => last = unreachable,
            }
        }
        Err(last)
    }

    /// `Err`: the node did not answer; `Ok(Err)`: it answered with an error.
    async fn query_on(
        &self,
        addr: &str,
        sql: &str,
    ) -> Result<OpResult<Vec<(i64, u64, i64)>>, String> {
        use tern_proto::{BulkRead, BulkWrite};
        let request = Request::Query {
            sql: sql.into(),
            explain: false,
        };
        let (writer, mut reader) = self
            .transport
            .open_bulk(addr, &request)
            .await
            .map_err(|e| e.to_string())?;
        writer.finish().await.map_err(|e| e.to_string())?;
        match reader.response().await.map_err(|e| e.to_string())? {
            Response::QueryRunning { .. } => {}
            Response::Error(e) => return Ok(Err(e.message)),
            other => return Ok(Err(format!("{other:?}"))),
        }
        // The coordinator's events: progress, then the rows, then the end.
        let mut events = tern_proto::QueryEvents::new(reader);
        let mut batches = Vec::new();
        while let Some(event) = events.next().await.map_err(|e| e.to_string())? {
            match event {
                tern_proto::QueryEvent::Rows(bytes) => {
                    match tern_client::export::decode_partition(bytes) {
                        Ok((_, more)) => batches.extend(more),
                        Err(e) => return Ok(Err(e.to_string())),
                    }
                }
                tern_proto::QueryEvent::Failed(e) => return Ok(Err(e.message)),
                _ => {}
            }
        }
        Ok(answer_rows(&batches))
    }

    /// Query table `name` three times (a whole-table aggregate, a grouped one that
    /// shuffles, and the same groups kept by a semi join with the table's own keys); each
    /// answer must be that of some version of the table whose commit was sent. The nodes
    /// plan every table without its size (`sized_table_rows` 0), so the semi join is decided
    /// as the query runs (a broadcast of the keys into the scan, or the scan filtered by
    /// them), as joins of large tables are.
    async fn check_queries(&self, name: &str) -> OpResult<()> {
        let total = self
            .query(&format!("SELECT count(*) AS n, sum(v) AS s FROM {name}"))
            .await?;
        let grouped = self
            .query(&format!(
                "SELECT k, count(*) AS n, sum(v) AS s FROM {name} GROUP BY k ORDER BY k"
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

    /// Run a task graph over table `name` as the client's `compute_graph` does: per
    /// partition its rows and the sum of `v`, both added up, and beside them a small graph of
    /// literals. What completes must be what the partitions hold and what the literals make;
    /// a task may fail only for want of a node or a holder (never because a kernel refused
    /// good data), and the graph must end within its window. Once the cluster has healed
    /// (`healed`), every task must complete.
    async fn check_graph(&self, name: &str, op: u64, healed: bool) -> OpResult<()> {
        use tern_proto::{Arg, Datum, Graph, Kernel, Task, TaskFailure, TaskOutcome, Value};
        let Some(bytes) = self.catalog_get(name).await? else {
            self.world
                .event(format!("graph over {name}: no such table"));
            return Ok(());
        };
        let record: DatasetRecord = postcard::from_bytes(&bytes).map_err(|e| e.to_string())?;
        let task = |kernel: &str, args: Vec<Arg>| Task::new(kernel, Kernel::builtin(kernel), args);
        let part = |i: usize| Arg::Partition {
            dataset: name.into(),
            version: record.version,
            index: i as u32,
        };
        let mut tasks = Vec::new();
        let (mut counts, mut sums) = (Vec::new(), Vec::new());
        for i in 0..record.partitions.len() {
            let count = task("row_count", vec![part(i)]);
            let sum = task(
                "column_sum",
                vec![part(i), Arg::Value(Value::Str("v".into()))],
            );
            counts.push(Arg::Output(count.key.clone()));
            sums.push(Arg::Output(sum.key.clone()));
            tasks.extend([count, sum]);
        }
        let rows = task("add", counts);
        let total = task("add", sums);
        let a = task("inc", vec![Arg::Value(Value::Int(op as i64))]);
        let b = task(
            "add",
            vec![Arg::Output(a.key.clone()), Arg::Value(Value::Int(2))],
        );
        let c = task(
            "add",
            vec![Arg::Output(a.key.clone()), Arg::Output(b.key.clone())],
        );
        let wanted = vec![rows.key.clone(), total.key.clone(), c.key.clone()];
        tasks.extend([rows.clone(), total.clone(), a, b, c.clone()]);
        let graph = Graph { tasks, wanted };
        let window = Duration::from_secs(120);
        let outcomes = match tokio::time::timeout(window, self.graph(&graph)).await {
            Ok(Ok(outcomes)) => outcomes,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                self.world.violated(
                    invariants::LIVENESS,
                    format!(
                        "a graph over {name} was still pending after {} s",
                        window.as_secs()
                    ),
                );
                return Err("pending past its window".into());
            }
        };
        // Failing for want of a node or a holder is allowed under faults; a kernel refusing
        // the data a table holds is not.
        let allowed = |f: &TaskFailure| {
            matches!(
                f,
                TaskFailure::InputUnavailable { .. }
                    | TaskFailure::Abandoned { .. }
                    | TaskFailure::Stopped { .. }
            )
        };
        let int = |key: &tern_proto::TaskKey| match outcomes.get(key) {
            Some(TaskOutcome::Done(Datum::Value(Value::Int(v)))) => Ok(Some(*v)),
            Some(TaskOutcome::Failed(TaskFailure::Upstream { cause, .. })) if allowed(cause) => {
                Ok(None)
            }
            Some(TaskOutcome::Failed(f)) if allowed(f) => Ok(None),
            other => Err(format!("{other:?}")),
        };
        let expected_c = 2 * (op as i64 + 1) + 2;
        match int(&c.key) {
            Ok(Some(v)) if v == expected_c => {}
            Ok(None) => {}
            got => self.world.violated(
                invariants::ANSWERS,
                format!("a graph of literals made {got:?}, not {expected_c}"),
            ),
        }
        self.world.event(format!(
            "graph over {name} v{}: rows {:?}, sum {:?}, literals {:?}",
            record.version,
            int(&rows.key),
            int(&total.key),
            int(&c.key)
        ));
        let expected = self.world.expected_total(&record);
        for (what, key, want) in [
            ("rows", &rows.key, expected.map(|e| e.0 as i64)),
            ("sum of v", &total.key, expected.map(|e| e.1)),
        ] {
            match (int(key), want) {
                (Ok(Some(v)), Some(want)) if v == want => {}
                (Ok(None), _) | (Ok(Some(_)), None) => {}
                (got, want) => self.world.violated(
                    invariants::ANSWERS,
                    format!(
                        "a graph over {name} v{} made {what} {got:?}, not {want:?}",
                        record.version
                    ),
                ),
            }
        }
        let incomplete = [&rows.key, &total.key, &c.key]
            .into_iter()
            .any(|k| !matches!(outcomes.get(k), Some(TaskOutcome::Done(_))));
        if healed && incomplete {
            return Err(format!(
                "a graph over {name} did not complete: {outcomes:?}"
            ));
        }
        Ok(())
    }

    /// Submit `graph` as the client does: to another node when one does not take it.
    async fn graph(
        &self,
        graph: &tern_proto::Graph,
    ) -> OpResult<BTreeMap<tern_proto::TaskKey, tern_proto::TaskOutcome>> {
        let mut last = String::new();
        for node in self.some_nodes(3) {
            match self.graph_on(&node, graph).await {
                Ok(answer) => return answer,
                Err(unreachable) => last = unreachable,
            }
        }
        Err(last)
    }

    /// Submit `graph` to the node at `addr` and collect the wanted outcomes. `Err`: the node
    /// did not take it; `Ok(Err)`: it took it and then failed.
    async fn graph_on(
        &self,
        addr: &str,
        graph: &tern_proto::Graph,
    ) -> Result<OpResult<BTreeMap<tern_proto::TaskKey, tern_proto::TaskOutcome>>, String> {
        use tern_proto::{BulkRead, BulkWrite};
        let submission = tern_proto::Submission {
            graph: graph.clone(),
            kept: Vec::new(),
            keep: false,
        };
        let body = tern_proto::encode_submission(&submission);
        let request = Request::SubmitGraph {
            bytes: body.len() as u64,
        };
        let (mut writer, mut reader) = self
            .transport
            .open_bulk(addr, &request)
            .await
            .map_err(|e| e.to_string())?;
        writer.write_chunk(&body).await.map_err(|e| e.to_string())?;
        writer.finish().await.map_err(|e| e.to_string())?;
        match reader.response().await.map_err(|e| e.to_string())? {
            Response::GraphRunning { .. } => {}
            Response::Error(e) => return Ok(Err(e.message)),
            other => return Ok(Err(format!("{other:?}"))),
        }
        Ok(Self::graph_events(reader).await)
    }

    async fn graph_events(
        mut reader: <SimTransport as Transport>::Reader,
    ) -> OpResult<BTreeMap<tern_proto::TaskKey, tern_proto::TaskOutcome>> {
        use tern_proto::{BulkRead, GraphEvent};
        let mut decoder = tern_proto::EventDecoder::default();
        let mut outcomes = BTreeMap::new();
        loop {
            while let Some(event) = decoder
                .next_event::<GraphEvent>()
                .map_err(|e| e.to_string())?
            {
                match event {
                    GraphEvent::Output { key, outcome } => {
                        outcomes.insert(key, outcome);
                    }
                    GraphEvent::Finished(_) => return Ok(outcomes),
                    GraphEvent::Failed(e) => return Err(e.message),
                    GraphEvent::Progress { .. } | GraphEvent::Kept(_) | GraphEvent::Holding => {}
                }
            }
            match reader.next_chunk().await.map_err(|e| e.to_string())? {
                Some(chunk) => decoder.push(&chunk),
                None => return Err("the coordinator stopped before the graph finished".into()),
            }
        }
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
                73..80 if name.starts_with('t') => {
                    ("graph", self.check_graph(&name, op, false).await)
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
                    if let Ok(record) = postcard::from_bytes::<DatasetRecord>(&bytes) {
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
            let record: DatasetRecord = postcard::from_bytes(&bytes).map_err(|e| e.to_string())?;
            invariants::check_replicas(&record, &up, &zone_of)?;
        }
        for name in names {
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
    let client = Arc::new(SimClient {
        transport,
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
