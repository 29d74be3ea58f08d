//! A harness for end-to-end tests and benchmarks: it starts real `tern` node processes on
//! loopback with `tern up --detach`, drives them with the `tern` command and the Rust client,
//! kills them with real signals, and waits by polling with deadlines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub use tern_client::Client;
use tern_proto::{LocalMetrics, Request, Response, Role};

static TERN_BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Use this `tern` binary (integration tests pass `env!("CARGO_BIN_EXE_tern")`).
pub fn use_tern_binary(path: impl Into<PathBuf>) {
    let _ = TERN_BIN.set(path.into());
}

/// The `tern` binary under test: the one given to [`use_tern_binary`], else `$TERN_BIN`, else
/// the one next to the running executable.
pub fn tern_bin() -> PathBuf {
    if let Some(bin) = TERN_BIN.get() {
        return bin.clone();
    }
    if let Some(bin) = std::env::var_os("TERN_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("tern");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "cannot find the tern binary near {}; build it (cargo build -p tern-cli) or set TERN_BIN",
        exe.display()
    );
}

/// Run `tern ARGS` and return its output.
pub fn tern(args: &[&str]) -> Output {
    Command::new(tern_bin())
        .args(args)
        .output()
        .expect("run tern")
}

/// Poll `check` every 50 ms until it returns `Some`, or panic after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// UDP ports `base..base+count` that are free now, below Linux's ephemeral range (32768+),
/// which the clients' own sockets use. Each test process starts from a different region so
/// concurrent test binaries rarely collide.
pub fn free_port_range(count: u16) -> u16 {
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    if NEXT.load(Ordering::Relaxed) == 0 {
        let start = LOW + (std::process::id() % 100) as u16 * 100;
        let _ = NEXT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    loop {
        let base = NEXT.fetch_add(count + 2, Ordering::Relaxed);
        if base + count > HIGH {
            NEXT.store(LOW, Ordering::Relaxed);
            continue;
        }
        let free =
            (base..base + count).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
}

/// A local cluster of real node processes, stopped (and killed if need be) on drop.
pub struct LocalCluster {
    pub dir: tempfile::TempDir,
    pub base_port: u16,
    pub nodes: u64,
}

impl LocalCluster {
    /// `tern up --detach` with `nodes` nodes in a fresh directory.
    pub fn up(nodes: u64) -> Self {
        Self::up_args(nodes, &[])
    }

    /// `tern up --detach ... EXTRA` with `nodes` nodes in a fresh directory.
    pub fn up_args(nodes: u64, extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tern-e2e-")
            .tempdir()
            .expect("tempdir");
        let base_port = free_port_range(nodes as u16 + 4);
        let cluster = Self {
            dir,
            base_port,
            nodes,
        };
        cluster.up_with(nodes, extra);
        cluster
    }

    /// Run `tern up --detach` again (starting nodes that are not running, adding new ones).
    pub fn up_with(&self, nodes: u64, extra: &[&str]) -> Output {
        let nodes_s = nodes.to_string();
        let port_s = self.base_port.to_string();
        let mut args = vec![
            "up",
            "--detach",
            "--dir",
            self.path_str(),
            "--nodes",
            &nodes_s,
            "--base-port",
            &port_s,
        ];
        args.extend_from_slice(extra);
        let out = tern(&args);
        assert!(
            out.status.success(),
            "tern up failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        out
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    /// `tern --cluster DIR ARGS`.
    pub fn tern(&self, args: &[&str]) -> Output {
        let mut all = vec!["--cluster", self.path_str()];
        all.extend_from_slice(args);
        tern(&all)
    }

    /// A client of this cluster (call inside a tokio runtime: its socket is registered there).
    pub fn client(&self) -> Client {
        Client::open(self.path()).expect("client config")
    }

    pub fn addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.base_port as u64 + id - 1)
    }

    pub fn pid(&self, id: u64) -> i32 {
        let path = self.path().join("run").join(format!("node-{id}.pid"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .parse()
            .expect("pid")
    }

    /// SIGKILL node `id`: no shutdown, no flush beyond what it already synced.
    pub fn kill(&self, id: u64) {
        let out = self.tern(&["node", "stop", &id.to_string(), "--kill"]);
        assert!(
            out.status.success(),
            "kill node {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start(&self, id: u64) {
        let out = self.tern(&["node", "start", &id.to_string()]);
        assert!(
            out.status.success(),
            "start node {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `tern status --json`, parsed.
    pub fn status_json(&self) -> Option<serde_json::Value> {
        let out = self.tern(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for id in 1..=self.nodes + 2 {
            let path = self.path().join("logs").join(format!("node-{id}.log"));
            if let Ok(text) = std::fs::read_to_string(&path) {
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                all.push_str(&format!("--- node {id} (last lines)\n"));
                for line in tail.into_iter().rev() {
                    all.push_str(line);
                    all.push('\n');
                }
            }
        }
        all
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = tern(&["down", "--cluster", self.path_str()]);
    }
}

/// Ask node at `addr` directly for its own Raft view (no forwarding, no retries).
pub async fn local_metrics(client: &Client, addr: &str) -> Option<LocalMetrics> {
    match client.call_node(addr, Request::LocalMetrics).await {
        Ok(Response::Metrics(m)) => Some(m),
        _ => None,
    }
}

/// The leader as the nodes at `addrs` see it: the id that one of them reports as itself
/// leading, and that every answering node agrees on.
pub async fn agreed_leader(client: &Client, addrs: &[String]) -> Option<(u64, u64)> {
    let mut leader = None;
    let mut answers = 0;
    for addr in addrs {
        if let Some(m) = local_metrics(client, addr).await {
            answers += 1;
            if m.role == Role::Leader {
                leader = Some((m.id, m.term));
            }
        }
    }
    let (id, term) = leader?;
    for addr in addrs {
        if let Some(m) = local_metrics(client, addr).await {
            if m.leader != Some(id) {
                return None;
            }
        }
    }
    (answers > 0).then_some((id, term))
}

/// A multi-threaded tokio runtime for a test's client calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `len` bytes that neither compress nor repeat (xorshift from `seed`), so a misplaced or
/// flipped byte always changes the hash.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A CSV of `rows` sales rows (id, name, amount, flag) at `path`.
pub fn write_sales_csv(path: &Path, rows: usize) {
    let mut text = String::from("id,name,amount,flag\n");
    for i in 0..rows {
        text.push_str(&format!(
            "{i},customer-{},{}.25,{}\n",
            i % 97,
            i % 1000,
            i % 3 == 0
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// The eight TPC-H tables at scale factor `sf`, generated in process (`tpchgen-arrow`), as
/// (table name, batches of about `batch_rows` rows).
pub fn tpch_tables(
    sf: f64,
    batch_rows: usize,
) -> Vec<(&'static str, Vec<arrow::record_batch::RecordBatch>)> {
    use tpchgen::generators::*;
    use tpchgen_arrow::*;
    fn all(
        batches: impl Iterator<
            Item = Result<arrow::record_batch::RecordBatch, arrow::error::ArrowError>,
        >,
    ) -> Vec<arrow::record_batch::RecordBatch> {
        batches.map(|b| b.expect("generate TPC-H")).collect()
    }
    vec![
        (
            "nation",
            all(NationArrow::new(NationGenerator::new(sf, 1, 1)).with_batch_size(batch_rows)),
        ),
        (
            "region",
            all(RegionArrow::new(RegionGenerator::new(sf, 1, 1)).with_batch_size(batch_rows)),
        ),
        (
            "part",
            all(PartArrow::new(PartGenerator::new(sf, 1, 1)).with_batch_size(batch_rows)),
        ),
        (
            "supplier",
            all(SupplierArrow::new(SupplierGenerator::new(sf, 1, 1)).with_batch_size(batch_rows)),
        ),
        (
            "partsupp",
            all(PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)).with_batch_size(batch_rows)),
        ),
        (
            "customer",
            all(CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)).with_batch_size(batch_rows)),
        ),
        (
            "orders",
            all(OrderArrow::new(OrderGenerator::new(sf, 1, 1)).with_batch_size(batch_rows)),
        ),
        (
            "lineitem",
            all(LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)).with_batch_size(batch_rows)),
        ),
    ]
}
