//! `tern`: the one command for users and operators.
//!
//! Cluster set-up (`cluster init`, `up`, `down`), running a node (`node run`), and talking to
//! a cluster (`status`, `catalog`, `wait`). Errors print as one line on stderr.

mod access;
mod arrays;
mod data;
mod local;
mod output;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tern_client::{Client, cluster_dir};
use tern_net::ClusterFiles;
use tern_node::NodeConfig;

#[derive(Parser)]
#[command(
    name = "tern",
    version,
    about = "tern: replicated storage and compute, in the spirit of Dask"
)]
struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The cluster directory (else $TERN_CLUSTER, else ./.tern).
    #[arg(long, global = true)]
    cluster: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster of N node processes on loopback.
    Up(local::UpArgs),
    /// Stop the nodes a `tern up` started.
    Down,
    /// Show the cluster's nodes, roles and health.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Store files as a dataset: cut into partitions, each kept on three nodes.
    Put(data::PutArgs),
    /// Write a dataset to a local file (.parquet, .csv, .arrow, .json).
    Get(data::GetArgs),
    /// List the datasets.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// A dataset's structure: partitions, sizes, blocks and holders.
    Describe {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every block on every node now; bad or missing copies are replaced.
    Scrub {
        /// Run a full pass now (the background scrub runs all the time).
        #[arg(long)]
        now: bool,
    },
    /// Remove a dataset (its blocks become unreferenced).
    Rm { name: String },
    /// Run a SQL query over the datasets (each is a table; quote names with dots or capitals).
    Sql(data::SqlArgs),
    /// Running and recent jobs (queries and task graphs): tasks done, where they run.
    Jobs {
        #[arg(long)]
        json: bool,
    },
    /// Stop a running job (its own client or an admin may): `tern jobs` shows the ids.
    Cancel {
        /// The job id, in hex as `tern jobs` prints it.
        job: String,
    },
    /// Certificates and membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Client certificates with roles; rotation and revocation.
    #[command(subcommand)]
    Cert(access::CertCommand),
    /// Storage quotas per client (off unless set).
    #[command(subcommand)]
    Quota(access::QuotaCommand),
    /// Run or manage one node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Read and write the raw catalog table (for operators and tests).
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Wait for a cluster condition (for scripts); prints how long it took.
    #[command(subcommand)]
    Wait(WaitCommand),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Create the cluster CA, certificates for N nodes, and clients with each role
    /// (admin.pem, writer.pem, reader.pem).
    Init {
        #[arg(long, default_value = ".tern")]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
    },
    /// Issue a certificate for one more node; prints its id.
    AddNode {
        #[arg(long, default_value = ".tern")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Run a node in the foreground until SIGTERM or Ctrl-C.
    Run(NodeRunArgs),
    /// Start node ID of a `tern up` cluster again, in the background.
    Start { id: u64 },
    /// Stop node ID of a `tern up` cluster (SIGTERM; --kill sends SIGKILL).
    Stop {
        id: u64,
        #[arg(long)]
        kill: bool,
    },
    /// Move every replica off node ID (never leaving a block with fewer than 3 live copies),
    /// then mark it drained, ready to be removed. Waits and shows progress unless --no-wait.
    Drain {
        id: u64,
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds (the drain itself goes on).
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
}

#[derive(Args)]
struct NodeRunArgs {
    /// node.toml; the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    id: Option<u64>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    #[arg(long)]
    advertise: Option<String>,
    #[arg(long)]
    zone: Option<String>,
    /// Address(es) of running nodes to join through (comma separated).
    #[arg(long, value_delimiter = ',')]
    join: Option<Vec<String>>,
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long)]
    cert: Option<PathBuf>,
    #[arg(long)]
    key: Option<PathBuf>,
    #[arg(long)]
    max_voters: Option<usize>,
}

#[derive(Subcommand)]
enum CatalogCommand {
    Put {
        table: String,
        key: String,
        value: String,
    },
    Get {
        table: String,
        key: String,
    },
    Ls {
        table: String,
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum WaitCommand {
    /// Until some node (not --not ID) leads and answers a linearizable read.
    Leader {
        #[arg(long)]
        not: Option<u64>,
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Until every node answers and is marked up.
    Healthy {
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Until every node is either up or marked down or out, and every partition again has
    /// three replicas on nodes that are up (a down node's replicas are copied once it is out).
    Replicated {
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// Until node ID has applied everything the leader has.
    CaughtUp {
        id: u64,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// glibc's malloc hands buffers over 128 KiB (adaptively up to 32 MiB) back to the kernel
/// when freed, and trims its heaps eagerly; queries allocate and free large Arrow buffers all
/// the time, and each fresh one faulted in zeroed pages (a quarter of a join-heavy query's CPU
/// went to the kernel clearing pages). Keep them: map only what is larger than 32 MiB, and
/// return free heap to the kernel only past 256 MiB. (mimalloc was tried: it returned memory
/// more eagerly still and was slower.)
fn keep_freed_memory() {
    // SAFETY: mallopt only changes the allocator's thresholds; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    let is_node = matches!(cli.command, Command::Node(NodeCommand::Run(_)));
    init_logging(
        cli.log_format,
        if is_node {
            "info,openraft=warn"
        } else {
            "warn,openraft=error"
        },
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    let dir = cluster_dir(cli.cluster.as_deref());
    let json_logs = matches!(cli.log_format, LogFormat::Json);
    match cli.command {
        Command::Up(args) => local::up(args, cli.cluster.as_deref(), json_logs).await,
        Command::Down => local::down(&dir),
        Command::Status { json } => {
            let client = Client::open(&dir)?;
            let status = client.status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", output::status_table(&status));
            }
            Ok(())
        }
        Command::Put(args) => data::put(&dir, args).await,
        Command::Get(args) => data::get(&dir, args).await,
        Command::Ls { json } => {
            // Page by page: each row is printed as its page arrives, and a catalog of any
            // size costs the leader one page at a time.
            let client = Client::open(&dir)?;
            let (mut after, mut all, mut listed) = (None::<String>, Vec::new(), 0);
            loop {
                let (page, more) = client
                    .list_datasets(after.as_deref(), tern_proto::MAX_LIST_PAGE)
                    .await?;
                if !json {
                    print!("{}", output::datasets_rows(&page, listed == 0));
                }
                listed += page.len();
                after = page.last().map(|d| d.name.clone());
                if json {
                    all.extend(page);
                }
                if !more || after.is_none() {
                    break;
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&output::datasets_json(&all))?
                );
            } else if listed == 0 {
                println!("no datasets");
            }
            Ok(())
        }
        Command::Describe { name, json } => {
            let client = Client::open(&dir)?;
            let dataset = client
                .dataset(&name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no dataset named {name:?}"))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&output::dataset_json(&dataset))?
                );
            } else {
                print!("{}", output::describe(&dataset));
            }
            Ok(())
        }
        Command::Sql(args) => data::sql(&dir, args).await,
        Command::Scrub { now } => {
            if !now {
                bail!(
                    "the background scrub always runs; `tern scrub --now` runs a full pass at once"
                );
            }
            let client = Client::open(&dir)?;
            let reports = client.scrub_now().await?;
            let mut total = tern_proto::ScrubReport::default();
            for r in &reports {
                println!(
                    "node {}: {} blocks checked, {} corrupt, {} missing, {} repaired, {} unreadable now",
                    r.node, r.checked, r.corrupt, r.missing, r.repaired, r.unreadable
                );
                total.checked += r.checked;
                total.corrupt += r.corrupt;
                total.missing += r.missing;
                total.repaired += r.repaired;
                total.unreadable += r.unreadable;
            }
            println!(
                "scrub: {} blocks checked, {} corrupt, {} missing, {} repaired, {} unreadable now (kept, checked again later)",
                total.checked, total.corrupt, total.missing, total.repaired, total.unreadable
            );
            Ok(())
        }
        Command::Jobs { json } => {
            let jobs = Client::open(&dir)?.jobs().await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&output::jobs_json(&jobs))?
                );
            } else {
                print!("{}", output::jobs_table(&jobs));
            }
            Ok(())
        }
        Command::Cancel { job } => {
            let id = u64::from_str_radix(job.trim_start_matches("0x"), 16).map_err(|_| {
                anyhow::anyhow!("{job:?} is not a job id (hex, as `tern jobs` prints)")
            })?;
            Client::open(&dir)?.cancel_job(id).await?;
            println!("cancelled job {id:x}");
            Ok(())
        }
        Command::Rm { name } => {
            Client::open(&dir)?.remove_dataset(&name).await?;
            println!("removed {name}");
            Ok(())
        }
        Command::Cluster(ClusterCommand::Init { dir, nodes }) => {
            if nodes == 0 {
                bail!("--nodes must be at least 1");
            }
            ClusterFiles::new(&dir).init(nodes)?;
            println!(
                "certificates for {nodes} nodes and clients admin, writer and reader (one per role) are in {}",
                dir.display()
            );
            Ok(())
        }
        Command::Cluster(ClusterCommand::AddNode { dir }) => {
            let files = ClusterFiles::new(&dir);
            if !files.has_ca() {
                bail!(
                    "no cluster CA in {} (run `tern cluster init` first)",
                    dir.display()
                );
            }
            let id = files.highest_node_id() + 1;
            let tls = files.issue_node(id, tern_net::DEFAULT_CERT_DAYS)?;
            println!("node {id}: {} {}", tls.cert.display(), tls.key.display());
            Ok(())
        }
        Command::Node(NodeCommand::Run(args)) => run_node(args).await,
        Command::Node(NodeCommand::Start { id }) => local::start_node(&dir, id, json_logs),
        Command::Node(NodeCommand::Stop { id, kill }) => local::stop_node(&dir, id, kill),
        Command::Node(NodeCommand::Drain {
            id,
            no_wait,
            timeout_secs,
            quiet,
        }) => data::drain(&dir, id, no_wait, timeout_secs, quiet).await,
        Command::Catalog(cmd) => catalog(&dir, cmd).await,
        Command::Cert(cmd) => access::run(&dir, cmd).await,
        Command::Quota(cmd) => access::quota(&dir, cmd).await,
        Command::Wait(cmd) => wait(&dir, cmd).await,
    }
}

async fn run_node(args: NodeRunArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::load(path)?,
        None => {
            let id = args.id.context("--id is required without --config")?;
            let need = |v: &Option<PathBuf>, flag: &str| {
                v.clone()
                    .with_context(|| format!("{flag} is required without --config"))
            };
            NodeConfig {
                id,
                data_dir: need(&args.data_dir, "--data-dir")?,
                listen: args
                    .listen
                    .context("--listen is required without --config")?,
                advertise: None,
                zone: String::new(),
                join: Vec::new(),
                ca: need(&args.ca, "--ca")?,
                cert: need(&args.cert, "--cert")?,
                key: need(&args.key, "--key")?,
                capacity_bytes: 100 << 30,
                max_voters: 3,
                task_slots: 0,
                task_memory_bytes: 1 << 30,
                query_memory_bytes: 0,
                query_timeout_ms: 3600 * 1000,
                shuffle_memory_bytes: 1 << 30,
                answer_memory_bytes: 2 << 30,
                cache_memory_bytes: 2 << 30,
                task_delay_ms: 0,
                sized_table_rows: None,
                timings: Default::default(),
                python: None,
                python_worker_memory_bytes: 0,
            }
        }
    };
    if let Some(v) = args.id {
        config.id = v
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v
    }
    if let Some(v) = args.listen {
        config.listen = v
    }
    if let Some(v) = args.advertise {
        config.advertise = Some(v)
    }
    if let Some(v) = args.zone {
        config.zone = v
    }
    if let Some(v) = args.join {
        config.join = v
    }
    if let Some(v) = args.ca {
        config.ca = v
    }
    if let Some(v) = args.cert {
        config.cert = v
    }
    if let Some(v) = args.key {
        config.key = v
    }
    if let Some(v) = args.max_voters {
        config.max_voters = v
    }
    let id = config.id;
    let node = tern_node::start(config)
        .await
        .with_context(|| format!("node {id} failed to start"))?;
    wait_for_stop_signal().await;
    tracing::info!(id, "stop signal received, shutting down");
    node.shutdown().await;
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn catalog(dir: &std::path::Path, cmd: CatalogCommand) -> Result<()> {
    let client = Client::open(dir)?;
    match cmd {
        CatalogCommand::Put { table, key, value } => {
            let index = client.catalog_put(&table, &key, value.into_bytes()).await?;
            println!("committed at log index {index}");
        }
        CatalogCommand::Get { table, key } => match client.catalog_get(&table, &key).await? {
            Some(value) => println!("{}", String::from_utf8_lossy(&value)),
            None => bail!("no key {key:?} in table {table:?}"),
        },
        CatalogCommand::Ls {
            table,
            prefix,
            limit,
        } => {
            for (key, value) in client.catalog_list(&table, &prefix, limit).await? {
                println!("{key}\t{}", String::from_utf8_lossy(&value));
            }
        }
    }
    Ok(())
}

/// Poll `check` every 50 ms until it returns what to print, or fail with `failure` after
/// `timeout_secs`.
async fn poll_until<F, Fut>(timeout_secs: u64, failure: String, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_secs);
    loop {
        if let Some(done) = check().await {
            println!("{done} after {} ms", started.elapsed().as_millis());
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{failure}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait(dir: &std::path::Path, cmd: WaitCommand) -> Result<()> {
    use tern_proto::{NodeState, Role};
    let client = &Client::open(dir)?;
    match cmd {
        WaitCommand::Leader { not, timeout_secs } => {
            poll_until(
                timeout_secs,
                format!("no leader within {timeout_secs} s"),
                || async move {
                    let (leader, term, _) =
                        client.serving_leader(Duration::from_millis(500)).await?;
                    (Some(leader) != not).then(|| format!("node {leader} is leader (term {term})"))
                },
            )
            .await
        }
        WaitCommand::Healthy { timeout_secs } => {
            let failure =
                format!("the cluster was not healthy within {timeout_secs} s (see tern status)");
            poll_until(timeout_secs, failure, || async move {
                let status = client.status().await.ok()?;
                let healthy = status
                    .nodes
                    .iter()
                    .all(|n| n.state == NodeState::Up && n.role != Role::Unreachable);
                (healthy && !status.nodes.is_empty())
                    .then(|| format!("all {} nodes up", status.nodes.len()))
            })
            .await
        }
        WaitCommand::Replicated { timeout_secs } => {
            let failure =
                format!("replication did not recover within {timeout_secs} s (see tern status)");
            poll_until(timeout_secs, failure, || async move {
                let status = client.status().await.ok()?;
                // Every node is settled: up and answering, or gone (its replicas repaired once
                // it is out).
                let settled = status.nodes.iter().all(|n| {
                    n.state.is_gone()
                        || n.state == NodeState::Drained
                        || (n.state == NodeState::Up && n.role != Role::Unreachable)
                });
                (settled && status.under_replicated == 0 && status.missing == 0)
                    .then(|| "every partition has 3 live replicas".to_string())
            })
            .await
        }
        WaitCommand::CaughtUp { id, timeout_secs } => {
            poll_until(
                timeout_secs,
                format!("node {id} did not catch up within {timeout_secs} s"),
                || async move {
                    let status = client.status().await.ok()?;
                    let applied = status.nodes.iter().find(|n| n.id == id)?.applied_index?;
                    (Some(applied) >= status.applied_index)
                        .then(|| format!("node {id} caught up: applied index {applied} = leader's"))
                },
            )
            .await
        }
    }
}
