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

    /// `tern put FILE --name NAME --quiet EXTRA`, which must succeed.
    pub fn put(&self, file: &Path, name: &str, extra: &[&str]) {
        let mut args = vec![
            "put",
            file.to_str().expect("utf-8 path"),
            "--name",
            name,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        let out = self.tern(&args);
        assert!(
            out.status.success(),
            "put {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A client of this cluster (call inside a tokio runtime: its socket is registered there).
    pub fn client(&self) -> Client {
        Client::open(self.path()).expect("client config")
    }

    /// A client that sends everything to node `id` (which then coordinates its queries).
    pub fn client_of(&self, id: u64) -> Client {
        let config = tern_client::ClientConfig::load(self.path()).expect("client config");
        let files = tern_client::TlsFiles {
            ca: config.ca,
            cert: config.cert,
            key: config.key,
        };
        Client::with_identity(self.path(), vec![self.addr(id)], &files).expect("client")
    }

    /// A client presenting certificate `name` (`DIR/NAME.pem`: a client issued by `tern cert
    /// issue`, one of `admin`, `writer`, `reader`, or a node's, `node-N`).
    pub fn client_as(&self, name: &str) -> Client {
        let config = tern_client::ClientConfig::load(self.path()).expect("client config");
        let files = tern_client::TlsFiles {
            ca: config.ca,
            cert: self.path().join(format!("{name}.pem")),
            key: self.path().join(format!("{name}.key")),
        };
        Client::with_identity(self.path(), config.nodes, &files).expect("client")
    }

    /// A cluster directory whose `client.toml` presents certificate `name` (see
    /// [`LocalCluster::client_as`]), for `tern --cluster THAT …` as that client.
    pub fn dir_as(&self, name: &str) -> PathBuf {
        let dir = self.path().join(format!("as-{name}"));
        std::fs::create_dir_all(&dir).expect("client dir");
        let mut config = tern_client::ClientConfig::load(self.path()).expect("client config");
        config.cert = self.path().join(format!("{name}.pem"));
        config.key = self.path().join(format!("{name}.key"));
        std::fs::write(tern_client::ClientConfig::path_in(&dir), config.to_toml())
            .expect("client.toml");
        dir
    }

    /// `tern --cluster DIR/as-NAME ARGS`: the command as client `name`.
    pub fn tern_as(&self, name: &str, args: &[&str]) -> Output {
        let dir = self.dir_as(name);
        let mut all = vec!["--cluster", dir.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        tern(&all)
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

/// The 22 TPC-H queries, with the specification's validation parameters (Q15's view as a
/// common table expression).
pub const TPCH_QUERIES: [&str; 22] = [
    // Q1 pricing summary
    "select l_returnflag, l_linestatus, sum(l_quantity) as sum_qty, sum(l_extendedprice) as sum_base_price,
       sum(l_extendedprice * (1 - l_discount)) as sum_disc_price,
       sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) as sum_charge,
       avg(l_quantity) as avg_qty, avg(l_extendedprice) as avg_price, avg(l_discount) as avg_disc,
       count(*) as count_order
     from lineitem where l_shipdate <= date '1998-12-01' - interval '90' day
     group by l_returnflag, l_linestatus order by l_returnflag, l_linestatus",
    // Q2 minimum cost supplier
    "select s_acctbal, s_name, n_name, p_partkey, p_mfgr, s_address, s_phone, s_comment
     from part, supplier, partsupp, nation, region
     where p_partkey = ps_partkey and s_suppkey = ps_suppkey and p_size = 15 and p_type like '%BRASS'
       and s_nationkey = n_nationkey and n_regionkey = r_regionkey and r_name = 'EUROPE'
       and ps_supplycost = (select min(ps_supplycost) from partsupp, supplier, nation, region
                            where p_partkey = ps_partkey and s_suppkey = ps_suppkey
                              and s_nationkey = n_nationkey and n_regionkey = r_regionkey
                              and r_name = 'EUROPE')
     order by s_acctbal desc, n_name, s_name, p_partkey limit 100",
    // Q3 shipping priority
    "select l_orderkey, sum(l_extendedprice * (1 - l_discount)) as revenue, o_orderdate, o_shippriority
     from customer, orders, lineitem
     where c_mktsegment = 'BUILDING' and c_custkey = o_custkey and l_orderkey = o_orderkey
       and o_orderdate < date '1995-03-15' and l_shipdate > date '1995-03-15'
     group by l_orderkey, o_orderdate, o_shippriority
     order by revenue desc, o_orderdate, l_orderkey limit 10",
    // Q4 order priority checking
    "select o_orderpriority, count(*) as order_count from orders
     where o_orderdate >= date '1993-07-01' and o_orderdate < date '1993-07-01' + interval '3' month
       and exists (select * from lineitem where l_orderkey = o_orderkey and l_commitdate < l_receiptdate)
     group by o_orderpriority order by o_orderpriority",
    // Q5 local supplier volume
    "select n_name, sum(l_extendedprice * (1 - l_discount)) as revenue
     from customer, orders, lineitem, supplier, nation, region
     where c_custkey = o_custkey and l_orderkey = o_orderkey and l_suppkey = s_suppkey
       and c_nationkey = s_nationkey and s_nationkey = n_nationkey and n_regionkey = r_regionkey
       and r_name = 'ASIA' and o_orderdate >= date '1994-01-01'
       and o_orderdate < date '1994-01-01' + interval '1' year
     group by n_name order by revenue desc",
    // Q6 forecasting revenue change
    "select sum(l_extendedprice * l_discount) as revenue from lineitem
     where l_shipdate >= date '1994-01-01' and l_shipdate < date '1994-01-01' + interval '1' year
       and l_discount between 0.06 - 0.01 and 0.06 + 0.01 and l_quantity < 24",
    // Q7 volume shipping
    "select supp_nation, cust_nation, l_year, sum(volume) as revenue from (
       select n1.n_name as supp_nation, n2.n_name as cust_nation,
              extract(year from l_shipdate) as l_year, l_extendedprice * (1 - l_discount) as volume
       from supplier, lineitem, orders, customer, nation n1, nation n2
       where s_suppkey = l_suppkey and o_orderkey = l_orderkey and c_custkey = o_custkey
         and s_nationkey = n1.n_nationkey and c_nationkey = n2.n_nationkey
         and ((n1.n_name = 'FRANCE' and n2.n_name = 'GERMANY') or (n1.n_name = 'GERMANY' and n2.n_name = 'FRANCE'))
         and l_shipdate between date '1995-01-01' and date '1996-12-31') as shipping
     group by supp_nation, cust_nation, l_year order by supp_nation, cust_nation, l_year",
    // Q8 national market share
    "select o_year, sum(case when nation = 'BRAZIL' then volume else 0 end) / sum(volume) as mkt_share from (
       select extract(year from o_orderdate) as o_year, l_extendedprice * (1 - l_discount) as volume,
              n2.n_name as nation
       from part, supplier, lineitem, orders, customer, nation n1, nation n2, region
       where p_partkey = l_partkey and s_suppkey = l_suppkey and l_orderkey = o_orderkey
         and o_custkey = c_custkey and c_nationkey = n1.n_nationkey and n1.n_regionkey = r_regionkey
         and r_name = 'AMERICA' and s_nationkey = n2.n_nationkey
         and o_orderdate between date '1995-01-01' and date '1996-12-31'
         and p_type = 'ECONOMY ANODIZED STEEL') as all_nations
     group by o_year order by o_year",
    // Q9 product type profit measure
    "select nation, o_year, sum(amount) as sum_profit from (
       select n_name as nation, extract(year from o_orderdate) as o_year,
              l_extendedprice * (1 - l_discount) - ps_supplycost * l_quantity as amount
       from part, supplier, lineitem, partsupp, orders, nation
       where s_suppkey = l_suppkey and ps_suppkey = l_suppkey and ps_partkey = l_partkey
         and p_partkey = l_partkey and o_orderkey = l_orderkey and s_nationkey = n_nationkey
         and p_name like '%green%') as profit
     group by nation, o_year order by nation, o_year desc",
    // Q10 returned item reporting
    "select c_custkey, c_name, sum(l_extendedprice * (1 - l_discount)) as revenue, c_acctbal, n_name,
            c_address, c_phone, c_comment
     from customer, orders, lineitem, nation
     where c_custkey = o_custkey and l_orderkey = o_orderkey and o_orderdate >= date '1993-10-01'
       and o_orderdate < date '1993-10-01' + interval '3' month and l_returnflag = 'R'
       and c_nationkey = n_nationkey
     group by c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment
     order by revenue desc, c_custkey limit 20",
    // Q11 important stock identification
    "select ps_partkey, sum(ps_supplycost * ps_availqty) as value
     from partsupp, supplier, nation
     where ps_suppkey = s_suppkey and s_nationkey = n_nationkey and n_name = 'GERMANY'
     group by ps_partkey
     having sum(ps_supplycost * ps_availqty) > (
       select sum(ps_supplycost * ps_availqty) * 0.0001 from partsupp, supplier, nation
       where ps_suppkey = s_suppkey and s_nationkey = n_nationkey and n_name = 'GERMANY')
     order by value desc, ps_partkey",
    // Q12 shipping modes and order priority
    "select l_shipmode,
            sum(case when o_orderpriority = '1-URGENT' or o_orderpriority = '2-HIGH' then 1 else 0 end) as high_line_count,
            sum(case when o_orderpriority <> '1-URGENT' and o_orderpriority <> '2-HIGH' then 1 else 0 end) as low_line_count
     from orders, lineitem
     where o_orderkey = l_orderkey and l_shipmode in ('MAIL', 'SHIP') and l_commitdate < l_receiptdate
       and l_shipdate < l_commitdate and l_receiptdate >= date '1994-01-01'
       and l_receiptdate < date '1994-01-01' + interval '1' year
     group by l_shipmode order by l_shipmode",
    // Q13 customer distribution
    "select c_count, count(*) as custdist from (
       select c_custkey, count(o_orderkey) as c_count
       from customer left outer join orders on c_custkey = o_custkey and o_comment not like '%special%requests%'
       group by c_custkey) as c_orders
     group by c_count order by custdist desc, c_count desc",
    // Q14 promotion effect
    "select 100.00 * sum(case when p_type like 'PROMO%' then l_extendedprice * (1 - l_discount) else 0 end)
            / sum(l_extendedprice * (1 - l_discount)) as promo_revenue
     from lineitem, part
     where l_partkey = p_partkey and l_shipdate >= date '1995-09-01'
       and l_shipdate < date '1995-09-01' + interval '1' month",
    // Q15 top supplier (the view as a common table expression)
    "with revenue0 as (
       select l_suppkey as supplier_no, sum(l_extendedprice * (1 - l_discount)) as total_revenue
       from lineitem where l_shipdate >= date '1996-01-01' and l_shipdate < date '1996-01-01' + interval '3' month
       group by l_suppkey)
     select s_suppkey, s_name, s_address, s_phone, total_revenue from supplier, revenue0
     where s_suppkey = supplier_no and total_revenue = (select max(total_revenue) from revenue0)
     order by s_suppkey",
    // Q16 parts/supplier relationship
    "select p_brand, p_type, p_size, count(distinct ps_suppkey) as supplier_cnt
     from partsupp, part
     where p_partkey = ps_partkey and p_brand <> 'Brand#45' and p_type not like 'MEDIUM POLISHED%'
       and p_size in (49, 14, 23, 45, 19, 3, 36, 9)
       and ps_suppkey not in (select s_suppkey from supplier where s_comment like '%Customer%Complaints%')
     group by p_brand, p_type, p_size
     order by supplier_cnt desc, p_brand, p_type, p_size",
    // Q17 small-quantity-order revenue
    "select sum(l_extendedprice) / 7.0 as avg_yearly from lineitem, part
     where p_partkey = l_partkey and p_brand = 'Brand#23' and p_container = 'MED BOX'
       and l_quantity < (select 0.2 * avg(l_quantity) from lineitem where l_partkey = p_partkey)",
    // Q18 large volume customer
    "select c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice, sum(l_quantity)
     from customer, orders, lineitem
     where o_orderkey in (select l_orderkey from lineitem group by l_orderkey having sum(l_quantity) > 300)
       and c_custkey = o_custkey and o_orderkey = l_orderkey
     group by c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice
     order by o_totalprice desc, o_orderdate, o_orderkey limit 100",
    // Q19 discounted revenue
    "select sum(l_extendedprice * (1 - l_discount)) as revenue from lineitem, part
     where (p_partkey = l_partkey and p_brand = 'Brand#12'
            and p_container in ('SM CASE', 'SM BOX', 'SM PACK', 'SM PKG')
            and l_quantity >= 1 and l_quantity <= 1 + 10 and p_size between 1 and 5
            and l_shipmode in ('AIR', 'AIR REG') and l_shipinstruct = 'DELIVER IN PERSON')
        or (p_partkey = l_partkey and p_brand = 'Brand#23'
            and p_container in ('MED BAG', 'MED BOX', 'MED PKG', 'MED PACK')
            and l_quantity >= 10 and l_quantity <= 10 + 10 and p_size between 1 and 10
            and l_shipmode in ('AIR', 'AIR REG') and l_shipinstruct = 'DELIVER IN PERSON')
        or (p_partkey = l_partkey and p_brand = 'Brand#34'
            and p_container in ('LG CASE', 'LG BOX', 'LG PACK', 'LG PKG')
            and l_quantity >= 20 and l_quantity <= 20 + 10 and p_size between 1 and 15
            and l_shipmode in ('AIR', 'AIR REG') and l_shipinstruct = 'DELIVER IN PERSON')",
    // Q20 potential part promotion
    "select s_name, s_address from supplier, nation
     where s_suppkey in (
       select ps_suppkey from partsupp
       where ps_partkey in (select p_partkey from part where p_name like 'forest%')
         and ps_availqty > (select 0.5 * sum(l_quantity) from lineitem
                            where l_partkey = ps_partkey and l_suppkey = ps_suppkey
                              and l_shipdate >= date '1994-01-01'
                              and l_shipdate < date '1994-01-01' + interval '1' year))
       and s_nationkey = n_nationkey and n_name = 'CANADA'
     order by s_name",
    // Q21 suppliers who kept orders waiting
    "select s_name, count(*) as numwait from supplier, lineitem l1, orders, nation
     where s_suppkey = l1.l_suppkey and o_orderkey = l1.l_orderkey and o_orderstatus = 'F'
       and l1.l_receiptdate > l1.l_commitdate
       and exists (select * from lineitem l2 where l2.l_orderkey = l1.l_orderkey and l2.l_suppkey <> l1.l_suppkey)
       and not exists (select * from lineitem l3 where l3.l_orderkey = l1.l_orderkey
                       and l3.l_suppkey <> l1.l_suppkey and l3.l_receiptdate > l3.l_commitdate)
       and s_nationkey = n_nationkey and n_name = 'SAUDI ARABIA'
     group by s_name order by numwait desc, s_name limit 100",
    // Q22 global sales opportunity
    "select cntrycode, count(*) as numcust, sum(c_acctbal) as totacctbal from (
       select substring(c_phone from 1 for 2) as cntrycode, c_acctbal from customer
       where substring(c_phone from 1 for 2) in ('13', '31', '23', '29', '30', '18', '17')
         and c_acctbal > (select avg(c_acctbal) from customer where c_acctbal > 0.00
                          and substring(c_phone from 1 for 2) in ('13', '31', '23', '29', '30', '18', '17'))
         and not exists (select * from orders where o_custkey = c_custkey)) as custsale
     group by cntrycode order by cntrycode",
];

/// Batches as an aligned text table, for comparing answers.
pub fn pretty(batches: &[arrow::record_batch::RecordBatch]) -> String {
    arrow::util::pretty::pretty_format_batches(batches)
        .expect("format")
        .to_string()
}
