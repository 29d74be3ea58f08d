//! The embedded default: a local cluster of node processes on loopback, managed through files
//! in the cluster directory.
//!
//! ```text
//! DIR/node-N.toml        node N's configuration (written once, then reused)
//! DIR/data/node-N/       its data (metadata now, blocks later)
//! DIR/logs/node-N.log    its log
//! DIR/run/node-N.pid     its process id while it runs
//! DIR/client.toml        where clients find the cluster
//! ```

use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tern_client::{Client, ClientConfig, cluster_dir};
use tern_net::ClusterFiles;
use tern_node::{NodeConfig, NodeTimings};
use tern_proto::Role;

#[derive(Args)]
pub struct UpArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// The cluster directory (default: --cluster, $TERN_CLUSTER or ./.tern).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave the nodes running and return (stop them with `tern down`).
    #[arg(long)]
    detach: bool,
    /// Node N listens on UDP port base-port + N - 1.
    #[arg(long, default_value_t = 7401)]
    base_port: u16,
    /// Voters in the metadata group (3 or 5); later nodes are learners.
    #[arg(long, default_value_t = 3)]
    max_voters: usize,
    /// Seconds of silence before the leader marks a node down.
    #[arg(long, default_value_t = 10)]
    down_after: u64,
    /// Seconds of silence before a down node is marked out and its replicas are copied to
    /// other nodes (default: 10 s after it is marked down; a production node waits 600 s, so
    /// a reboot does not start a storm of copies).
    #[arg(long)]
    out_after: Option<u64>,
    /// The background scrub re-hashes one block per this many milliseconds.
    #[arg(long, default_value_t = 10_000)]
    scrub_interval_ms: u64,
    /// Unreferenced blocks are deleted after this many milliseconds (default 5 minutes).
    #[arg(long, default_value_t = 300_000)]
    gc_grace_ms: u64,
    /// A put whose client stopped renewing its lease this long ago is abandoned.
    #[arg(long, default_value_t = 30_000)]
    put_lease_expiry_ms: u64,
    /// Bytes each node offers for blocks, for example 500GiB or 64MiB.
    #[arg(long, default_value = "100GiB", value_parser = crate::data::parse_size)]
    capacity: u64,
    /// Zones to spread the nodes over, round robin (for example a,b,c); none by default.
    #[arg(long, value_delimiter = ',')]
    zones: Vec<String>,
    /// The Python interpreter the nodes run users' Python functions in (worker processes;
    /// it must be able to `import tern`). Without it, Python tasks fail saying so.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Resident memory each Python worker may hold before it is stopped (for example
    /// 4GiB; default: the machine's memory shared among a node's task slots).
    #[arg(long, value_parser = crate::data::parse_size)]
    worker_memory: Option<u64>,
    /// Query tasks each node runs at once (default: one per core).
    #[arg(long, default_value_t = 0)]
    task_slots: usize,
    /// Memory one task may hold before it spills to disk, for example 1GiB or 8MiB.
    #[arg(long, default_value = "1GiB", value_parser = crate::data::parse_size)]
    task_memory: u64,
    /// Memory all query work on a node may hold at once (default: two tasks' more than its
    /// slots').
    #[arg(long, value_parser = crate::data::parse_size)]
    query_memory: Option<u64>,
    /// A query running longer than this many seconds fails, saying so.
    #[arg(long, default_value_t = 3600)]
    query_timeout_secs: u64,
    /// Shuffle outputs each node keeps in memory before writing them to files.
    #[arg(long, default_value = "1GiB", value_parser = crate::data::parse_size)]
    shuffle_memory: u64,
    /// What one query's tasks may send back to its coordinating node (its answer, or what the
    /// final stage merges); a query past it fails with an error saying so.
    #[arg(long, default_value = "2GiB", value_parser = crate::data::parse_size)]
    answer_memory: u64,
    /// What each node keeps in memory of the data it read, for later queries and tasks: decoded
    /// columns, array chunks (0: none; default an eighth of the machine's memory shared among
    /// the nodes, from 256 MiB to 2 GiB each).
    #[arg(long, value_parser = crate::data::parse_size_or_zero)]
    cache_memory: Option<u64>,
    /// Make node ID slow for testing: each of its tasks first waits MS milliseconds (ID:MS).
    #[arg(long, value_parser = parse_slow_node)]
    slow_node: Option<(u64, u64)>,
    /// For testing: plan only tables of at most ROWS rows with their size known (default one
    /// million); with 0 every join is planned partitioned and decided as the query runs
    /// (broadcast, key filter or shuffle), as for large tables.
    #[arg(long, value_name = "ROWS")]
    sized_table_rows: Option<u64>,
}

fn parse_slow_node(text: &str) -> Result<(u64, u64), String> {
    let (id, ms) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected ID:MS, for example 2:300"))?;
    let id = id.parse().map_err(|_| format!("{id:?} is not a node id"))?;
    let ms = ms
        .parse()
        .map_err(|_| format!("{ms:?} is not a number of milliseconds"))?;
    Ok((id, ms))
}

/// How long `tern up` waits for every node to be up and a leader elected.
const UP_DEADLINE: Duration = Duration::from_secs(60);
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// Nodes are started with absolute config paths, so that the path in a node's command line
/// identifies it whatever directory `tern` was run from.
fn config_path(dir: &Path, id: u64) -> PathBuf {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.join(format!("node-{id}.toml"))
}

fn pid_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("run").join(format!("node-{id}.pid"))
}

fn log_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("logs").join(format!("node-{id}.log"))
}

fn node_addr(base_port: u16, id: u64) -> Result<std::net::SocketAddr> {
    let port = u16::try_from(base_port as u64 + id - 1)
        .context("--base-port leaves no room for that many nodes")?;
    Ok(([127, 0, 0, 1], port).into())
}

pub async fn up(args: UpArgs, cluster_flag: Option<&Path>, json_logs: bool) -> Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if let Some(out) = args.out_after
        && out < args.down_after
    {
        bail!(
            "--out-after {out} is shorter than --down-after {}: a node is marked out only after it is down",
            args.down_after
        );
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| cluster_dir(cluster_flag));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let files = ClusterFiles::new(&dir);
    files.init(args.nodes)?;
    for sub in ["data", "logs", "run"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }

    let mut addresses = Vec::new();
    for id in 1..=args.nodes {
        let path = config_path(&dir, id);
        let config = if path.exists() {
            let mut config = NodeConfig::load(&path)?;
            let mut changed = false;
            if args.python.is_some() && config.python != args.python {
                config.python = args.python.clone();
                changed = true;
            }
            if let Some(bytes) = args
                .worker_memory
                .filter(|b| *b != config.python_worker_memory_bytes)
            {
                config.python_worker_memory_bytes = bytes;
                changed = true;
            }
            if changed {
                std::fs::write(&path, config.to_toml())?;
            }
            config
        } else {
            let tls = files.node(id);
            let config = NodeConfig {
                id,
                data_dir: dir.join("data").join(format!("node-{id}")),
                listen: node_addr(args.base_port, id)?,
                advertise: None,
                zone: if args.zones.is_empty() {
                    String::new()
                } else {
                    args.zones[(id as usize - 1) % args.zones.len()].clone()
                },
                join: addresses.clone(),
                ca: tls.ca,
                cert: tls.cert,
                key: tls.key,
                capacity_bytes: args.capacity,
                max_voters: args.max_voters,
                task_slots: args.task_slots,
                task_memory_bytes: args.task_memory,
                query_memory_bytes: args.query_memory.unwrap_or(0),
                query_timeout_ms: args.query_timeout_secs.max(1) * 1000,
                shuffle_memory_bytes: args.shuffle_memory,
                answer_memory_bytes: args.answer_memory,
                cache_memory_bytes: args.cache_memory.unwrap_or_else(|| local_cache(args.nodes)),
                task_delay_ms: args
                    .slow_node
                    .filter(|(slow, _)| *slow == id)
                    .map_or(0, |(_, ms)| ms),
                sized_table_rows: args.sized_table_rows,
                python: args.python.clone(),
                python_worker_memory_bytes: args.worker_memory.unwrap_or(0),
                timings: {
                    let defaults = NodeTimings::default();
                    let down_after_ms = args.down_after * 1000;
                    // Suspect halfway to down (3 s at most), but after a missed heartbeat.
                    let suspect_after_ms = (down_after_ms / 2)
                        .min(defaults.suspect_after_ms)
                        .max(defaults.heartbeat_ms + 1);
                    let out_after_ms = args.out_after.map_or(down_after_ms + 10_000, |s| s * 1000);
                    NodeTimings {
                        down_after_ms,
                        out_after_ms,
                        suspect_after_ms,
                        scrub_interval_ms: args.scrub_interval_ms,
                        gc_grace_ms: args.gc_grace_ms,
                        put_lease_expiry_ms: args.put_lease_expiry_ms,
                        ..defaults
                    }
                },
            };
            config.validate().map_err(anyhow::Error::msg)?;
            std::fs::write(&path, config.to_toml())?;
            config
        };
        addresses.push(config.advertise_addr());
    }
    let client_config = ClientConfig {
        nodes: addresses.clone(),
        ca: "ca.pem".into(),
        cert: "admin.pem".into(),
        key: "admin.key".into(),
    };
    std::fs::write(ClientConfig::path_in(&dir), client_config.to_toml())?;

    for id in 1..=args.nodes {
        if running_pid(&dir, id).is_some() {
            println!("node {id} is already running");
            continue;
        }
        let config = NodeConfig::load(&config_path(&dir, id))?;
        if std::net::UdpSocket::bind(config.listen).is_err() {
            bail!(
                "port {} for node {id} is in use (pick another with --base-port)",
                config.listen
            );
        }
        spawn_node(&dir, id, json_logs)?;
    }

    let client = Client::open(&dir)?;
    let started = Instant::now();
    let status = loop {
        let last = client.status().await;
        if let Ok(status) = &last {
            let ready = status
                .nodes
                .iter()
                .filter(|n| n.role != Role::Unreachable)
                .count() as u64;
            if status.leader.is_some() && ready >= args.nodes {
                break status.clone();
            }
        }
        for id in 1..=args.nodes {
            if running_pid(&dir, id).is_none() {
                bail!(
                    "node {id} exited while starting; see {}",
                    log_path(&dir, id).display()
                );
            }
        }
        if started.elapsed() > UP_DEADLINE {
            let why = match last {
                Ok(s) => format!(
                    "{} of {} nodes ready, leader {:?}",
                    s.nodes.len(),
                    args.nodes,
                    s.leader
                ),
                Err(e) => e.to_string(),
            };
            bail!(
                "the cluster did not come up within {} s ({why}); logs are in {}",
                UP_DEADLINE.as_secs(),
                dir.join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    println!(
        "tern: {} nodes up in {:.1} s\n",
        args.nodes,
        started.elapsed().as_secs_f64()
    );
    print!("{}", crate::output::status_table(&status));
    let flag = if dir == Path::new(".tern").canonicalize().unwrap_or_default() {
        String::new()
    } else {
        format!(" --cluster {}", dir.display())
    };
    println!("\ntalk to it:  tern status{flag}");
    println!("client config: {}", ClientConfig::path_in(&dir).display());
    println!("node logs:     {}", dir.join("logs").display());
    if args.detach {
        println!("stop it with: tern down{flag}");
        return Ok(());
    }
    println!("press Ctrl-C to stop the cluster");
    let _ = tokio::signal::ctrl_c().await;
    println!();
    down(&dir)
}

/// Start node `id` of the cluster in `dir` as a background process.
fn spawn_node(dir: &Path, id: u64, json_logs: bool) -> Result<u32> {
    let config = config_path(dir, id);
    if !config.exists() {
        bail!(
            "no {} (is node {id} part of this cluster?)",
            config.display()
        );
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir, id))
        .with_context(|| format!("cannot open {}", log_path(dir, id).display()))?;
    let exe = std::env::current_exe().context("cannot find the tern executable")?;
    let log_format = if json_logs { "json" } else { "text" };
    let child = Command::new(exe)
        .args(["--log-format", log_format, "node", "run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: Ctrl-C in this terminal reaches `tern up`, which stops the
        // nodes in order, not the nodes directly.
        .process_group(0)
        .spawn()
        .context("cannot start a node process")?;
    let pid = child.id();
    std::fs::write(pid_path(dir, id), format!("{pid}\n"))?;
    Ok(pid)
}

pub fn start_node(dir: &Path, id: u64, json_logs: bool) -> Result<()> {
    if let Some(pid) = running_pid(dir, id) {
        bail!("node {id} is already running (pid {pid})");
    }
    let pid = spawn_node(dir, id, json_logs)?;
    println!(
        "started node {id} (pid {pid}); log: {}",
        log_path(dir, id).display()
    );
    Ok(())
}

/// The pid of node `id` if that process is alive and is a tern node.
fn running_pid(dir: &Path, id: u64) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_path(dir, id))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // A zombie has exited; only its parent has not collected it yet.
    let state = stat.rsplit(')').next()?.split_whitespace().next()?;
    if state == "Z" {
        return None;
    }
    // The pid must still be this cluster's node `id`: compare the exact config path, so a
    // reused pid (or another cluster's node with the same id) is never signalled.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let config = config_path(dir, id);
    let matches = cmdline
        .split(|b| *b == 0)
        .any(|arg| Path::new(std::ffi::OsStr::from_bytes(arg)) == config);
    matches.then_some(pid)
}

pub fn stop_node(dir: &Path, id: u64, kill: bool) -> Result<()> {
    let Some(pid) = running_pid(dir, id) else {
        bail!("node {id} is not running");
    };
    let signal = if kill { libc::SIGKILL } else { libc::SIGTERM };
    // SAFETY: plain kill(2) on a pid we just checked belongs to this cluster's node.
    unsafe { libc::kill(pid, signal) };
    let deadline = Instant::now() + STOP_DEADLINE;
    while running_pid(dir, id).is_some() {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            eprintln!(
                "node {id} did not stop within {} s; killed",
                STOP_DEADLINE.as_secs()
            );
            // Wait for it to be gone, so a restart does not find its RocksDB lock held.
            let gone_by = Instant::now() + Duration::from_secs(5);
            while running_pid(dir, id).is_some() && Instant::now() < gone_by {
                std::thread::sleep(Duration::from_millis(50));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(pid_path(dir, id));
    println!("stopped node {id}{}", if kill { " (SIGKILL)" } else { "" });
    Ok(())
}

pub fn down(dir: &Path) -> Result<()> {
    let run = dir.join("run");
    let mut ids: Vec<u64> = std::fs::read_dir(&run)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_prefix("node-")?
                        .strip_suffix(".pid")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    let mut stopped = 0;
    for id in ids {
        if running_pid(dir, id).is_some() {
            stop_node(dir, id, false)?;
            stopped += 1;
        } else {
            let _ = std::fs::remove_file(pid_path(dir, id));
        }
    }
    if stopped == 0 {
        println!("no nodes were running in {}", dir.display());
    }
    Ok(())
}

/// Each local node's cache by default: the nodes share one machine, so an eighth of its
/// memory among them, from 256 MiB to 2 GiB each (2 GiB where the memory is not known).
fn local_cache(nodes: u64) -> u64 {
    tern_node::machine_memory()
        .map_or(2 << 30, |m| m / 8 / nodes.max(1))
        .clamp(256 << 20, 2 << 30)
}
