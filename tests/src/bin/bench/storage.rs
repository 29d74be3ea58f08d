//! Storage benchmarks, each against a baseline measured in the same run:
//!
//! - Raw sequential write rate of this disk (1 GiB in 8 MiB writes, then fsync), the limit of
//!   replicated ingest divided by 3 since every byte is written three times on one machine.
//! - Replicated ingest of TPC-H lineitem SF1 (generated in process with `tpchgen-arrow`, written
//!   as CSV) into a 3-node cluster with `tern put`; the peak RSS of that `tern put`.
//! - Read throughput of the whole dataset: blocks only, and `tern get` to an Arrow file.
//! - Time to restore 3 replicas after a node holding more than 1 GB of blocks dies.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tern_e2e::{LocalCluster, payload, tern_bin, wait_for};

const MB: f64 = 1e6;

thread_local! {
    /// CPU seconds of the last `timed_tern` child, sampled just before it exited.
    static LAST_CLIENT_CPU: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
}

pub fn run(rt: &tokio::runtime::Runtime) {
    println!("\n## storage\n");
    let work = tempfile::Builder::new()
        .prefix("tern-bench-")
        .tempdir()
        .expect("tempdir");
    let raw = raw_write_rate(work.path());
    println!(
        "raw sequential write (1 GiB, 8 MiB writes, fsync at the end): {:.0} MB/s; / 3 replicas: {:.0} MB/s",
        raw / MB,
        raw / 3.0 / MB
    );

    let csv = work.path().join("lineitem.csv");
    let started = Instant::now();
    let rows = write_lineitem_csv(&csv);
    let csv_bytes = std::fs::metadata(&csv).expect("csv").len();
    println!(
        "lineitem SF1: {rows} rows, {:.0} MB of CSV (generated in {:.1} s)",
        csv_bytes as f64 / MB,
        started.elapsed().as_secs_f64()
    );
    ingest_and_read(rt, work.path(), &csv, csv_bytes, raw);
    restore(rt);
}

/// Bytes per second of one large sequential write made durable.
fn raw_write_rate(dir: &Path) -> f64 {
    let path = dir.join("raw-write-test");
    let chunk = payload(8 << 20, 7);
    let total: usize = 1 << 30;
    let started = Instant::now();
    let mut file = std::fs::File::create(&path).expect("create");
    for _ in 0..total / chunk.len() {
        file.write_all(&chunk).expect("write");
    }
    file.sync_all().expect("fsync");
    let rate = total as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    rate
}

/// lineitem at scale factor 1 as CSV with a header; returns the row count.
pub fn write_lineitem_csv(path: &Path) -> usize {
    let generator = tpchgen::generators::LineItemGenerator::new(1.0, 1, 1);
    let batches = tpchgen_arrow::LineItemArrow::new(generator).with_batch_size(64 * 1024);
    let file = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path).unwrap());
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(file);
    let mut rows = 0;
    for batch in batches {
        let batch = batch.expect("generate lineitem");
        rows += batch.num_rows();
        writer.write(&batch).expect("write csv");
    }
    rows
}

/// CPU seconds (user + system) process `pid` has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn nodes_cpu(cluster: &LocalCluster) -> f64 {
    (1..=cluster.nodes)
        .map(|id| cpu_seconds(cluster.pid(id) as u32))
        .sum()
}

/// Run `tern ARGS` against `cluster`, returning (seconds, peak RSS in bytes, output).
fn timed_tern(cluster: &LocalCluster, args: &[&str]) -> (f64, u64, std::process::Output) {
    let started = Instant::now();
    let mut child = Command::new(tern_bin())
        .args(["--cluster", cluster.path_str()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tern");
    // VmHWM is the process's high-water mark: the last reading before it exits is its peak.
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let mut cpu = 0.0;
    while child.try_wait().expect("wait").is_none() {
        cpu = cpu_seconds(child.id());
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let secs = started.elapsed().as_secs_f64();
    LAST_CLIENT_CPU.with(|c| c.set(cpu));
    assert!(
        output.status.success(),
        "tern {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (secs, peak_kib * 1024, output)
}

fn ingest_and_read(
    rt: &tokio::runtime::Runtime,
    work: &Path,
    csv: &Path,
    csv_bytes: u64,
    raw: f64,
) {
    let cluster = LocalCluster::up(3);
    let client = cluster.client();
    let csv_arg = csv.to_str().expect("utf-8 path");
    let nodes_before = nodes_cpu(&cluster);
    let (secs, peak, _) = timed_tern(&cluster, &["put", csv_arg, "--name", "lineitem", "--quiet"]);
    let nodes_used = nodes_cpu(&cluster) - nodes_before;
    let client_used = LAST_CLIENT_CPU.with(|c| c.get());
    let record = rt
        .block_on(client.dataset("lineitem"))
        .expect("dataset")
        .expect("lineitem committed");
    let stored = record.bytes() as f64;
    let stored_rate = stored / secs;
    // Every stored byte is written three times on this one disk.
    let ratio = 3.0 * stored_rate / raw;
    println!(
        "replicated ingest, tern put of lineitem SF1 CSV (64 MiB partitions, 3 replicas): {secs:.1} s; {:.1} MB/s of CSV read; {} partitions, {:.0} MB stored per replica = {:.1} MB/s, {:.1} MB/s written over 3 replicas",
        csv_bytes as f64 / MB / secs,
        record.partitions.len(),
        stored / MB,
        stored_rate / MB,
        3.0 * stored_rate / MB
    );
    println!(
        "CPU during the put: tern put {client_used:.1} s, the 3 nodes {nodes_used:.1} s, in {secs:.1} s on {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "ingest vs raw disk / 3: {ratio:.2} counting stored bytes, {:.2} counting CSV bytes (goal: at least 0.5)\npeak RSS of tern put: {:.0} MiB on a {:.0} MB file ({:.1}x that RSS)",
        3.0 * csv_bytes as f64 / secs / raw,
        peak as f64 / (1 << 20) as f64,
        csv_bytes as f64 / MB,
        csv_bytes as f64 / peak.max(1) as f64
    );

    // Reads: every block once from its least-busy holder (bytes verified, not decoded), then
    // the whole dataset through `tern get` to an Arrow file.
    let addresses = rt.block_on(client.node_addresses()).expect("addresses");
    let started = Instant::now();
    let mut read = 0usize;
    for i in 0..record.partitions.len() {
        read += rt
            .block_on(client.read_partition(&record, i, &addresses))
            .expect("read partition")
            .len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "read, every block of lineitem once (verified, not decoded): {:.0} MB in {secs:.1} s = {:.0} MB/s",
        read as f64 / MB,
        read as f64 / MB / secs
    );
    let out = work.join("lineitem-back.arrow");
    let (secs, _, _) = timed_tern(
        &cluster,
        &[
            "get",
            "lineitem",
            "--out",
            out.to_str().expect("utf-8"),
            "--quiet",
        ],
    );
    println!(
        "read, tern get lineitem --out .arrow (decode and write {} rows): {secs:.1} s = {:.0} MB/s of stored partitions, {:.0} MB/s of CSV-equivalent",
        record.rows(),
        stored / MB / secs,
        csv_bytes as f64 / MB / secs
    );
    let _ = std::fs::remove_file(&out);
}

/// Kill the node holding the most bytes (over 1 GB) of a 4-node cluster; time until every
/// partition has three live replicas again (marked out as soon as it is down).
fn restore(rt: &tokio::runtime::Runtime) {
    let cluster = LocalCluster::up_args(4, &["--down-after", "3", "--out-after", "3"]);
    let client = cluster.client();
    const PARTITION: usize = 64 << 20;
    const PARTITIONS: u64 = 24;
    rt.block_on(async {
        let mut writer = client
            .dataset_writer("filler", false)
            .await
            .expect("writer");
        for i in 0..PARTITIONS {
            writer
                .add_partition(&payload(PARTITION, 1000 + i), 0)
                .await
                .expect("partition");
        }
        writer.commit("bytes", "").await.expect("commit");
    });
    // Right after 1.5 GB of synced writes the disk is busy: ask until the cluster answers.
    let status = wait_for("status", Duration::from_secs(120), || {
        rt.block_on(client.status()).ok()
    });
    let victim = status
        .nodes
        .iter()
        .max_by_key(|n| n.stored_bytes)
        .expect("nodes")
        .clone();
    cluster.kill(victim.id);
    let killed = Instant::now();
    wait_for("the node to be marked out", Duration::from_secs(60), || {
        let s = rt.block_on(client.status()).ok()?;
        s.nodes
            .iter()
            .any(|n| n.id == victim.id && n.state == tern_proto::NodeState::Out)
            .then_some(())
    });
    let down = killed.elapsed();
    wait_for("3 replicas again", Duration::from_secs(600), || {
        let s = rt.block_on(client.status()).ok()?;
        (s.under_replicated == 0 && s.missing == 0).then_some(())
    });
    let total = killed.elapsed();
    let copying = (total - down).as_secs_f64();
    println!(
        "restore 3 replicas after node {} holding {:.2} GB ({} partitions) died: {:.1} s from SIGKILL ({:.1} s to be marked out with --out-after 3, {copying:.1} s copying = {:.0} MB/s)",
        victim.id,
        victim.stored_bytes as f64 / 1e9,
        victim.stored_partitions,
        total.as_secs_f64(),
        down.as_secs_f64(),
        victim.stored_bytes as f64 / MB / copying
    );
}
