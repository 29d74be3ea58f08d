//! Starting and stopping a real node: files, sockets, Raft, and the background loops.

use std::sync::Arc;
use std::time::Duration;

use tern_meta::{Command, Meta, MetaError, MetaOptions};
use tern_net::{QuicTransport, TlsIdentity, TransportOptions};
use tern_proto::{
    Clock, NodeHealth, NodeRecord, NodeState, Request, Response, SystemClock, Transport,
};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::{NodeConfig, NodeError, NodeService};

/// How often the leader looks for replicas to repair.
const REPAIR_INTERVAL: Duration = Duration::from_secs(2);

/// How long a new node keeps asking to be admitted.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);

/// A started node; [`RunningNode::shutdown`] stops it cleanly.
pub struct RunningNode {
    service: Arc<NodeService<QuicTransport, SystemClock>>,
    transport: Arc<QuicTransport>,
    tasks: Vec<JoinHandle<()>>,
    /// Query work runs here, on threads of its own: a long join must not starve the runtime
    /// that answers heartbeats, Raft and QUIC (peers would see the node go silent).
    compute: Option<tokio::runtime::Runtime>,
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The data directory remembers whose it is: starting node 2 on node 1's data is refused.
fn check_identity(config: &NodeConfig) -> Result<(), NodeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(io(&config.data_dir))?;
    let path = config.data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let stored: u64 = text.trim().parse().map_err(|_| {
                NodeError::Identity(format!("{} does not hold a node id", path.display()))
            })?;
            if stored != config.id {
                return Err(NodeError::Identity(format!(
                    "{} belongs to node {stored}, not node {}",
                    config.data_dir.display(),
                    config.id
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{}\n", config.id)).map_err(io(&path))
        }
        Err(e) => Err(io(&path)(e)),
    }
}

pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    config.validate().map_err(|reason| NodeError::Config {
        path: "node config".into(),
        reason,
    })?;
    check_identity(&config)?;
    // What one function call may make: half a task's memory (a node without a task limit
    // keeps the default).
    if config.task_memory_bytes > 0 {
        tern_exec::set_output_limit(
            (config.task_memory_bytes / 2).min(tern_exec::DEFAULT_OUTPUT_LIMIT * 4),
        );
    }
    let tls_files = config.tls_files();
    let identity = TlsIdentity::load(&tls_files)?;
    match identity.identity() {
        Ok(tern_proto::Caller::Node(id)) if id == config.id => {}
        Ok(other) => {
            return Err(NodeError::Identity(format!(
                "{} is the certificate of {other}, not of node {}",
                tls_files.cert.display(),
                config.id
            )));
        }
        Err(reason) => {
            return Err(NodeError::Identity(format!(
                "{}: {reason}",
                tls_files.cert.display()
            )));
        }
    }
    let transport = QuicTransport::server(config.listen, &identity, TransportOptions::default())?;
    let t = &config.timings;
    let options = MetaOptions {
        heartbeat_interval: Duration::from_millis(t.raft_heartbeat_ms),
        election_timeout: (
            Duration::from_millis(t.election_min_ms),
            Duration::from_millis(t.election_max_ms),
        ),
        max_voters: config.max_voters,
        ..MetaOptions::default()
    };
    let meta = Meta::open(
        config.id,
        &config.data_dir.join("meta"),
        transport.clone(),
        &options,
    )
    .await?;
    let blocks = Arc::new(
        tern_store::BlockStore::open(&config.data_dir.join("blocks"))
            .map_err(|e| NodeError::Identity(format!("cannot open the block store: {e}")))?,
    );
    let record = NodeRecord {
        id: config.id,
        addr: config.advertise_addr(),
        zone: config.zone.clone(),
        capacity_bytes: config.capacity_bytes,
        state: NodeState::Up,
    };
    let compute = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.slots())
        .thread_name("tern-compute")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
        .map_err(io(&config.data_dir))?;
    let service = Arc::new(
        NodeService::new(
            record.clone(),
            meta,
            transport.clone(),
            Arc::new(SystemClock),
            config.timings.clone(),
            config.max_voters,
            blocks,
            config.compute(),
        )
        .with_compute_runtime(compute.handle().clone())
        .with_revocations(transport.revocations().clone()),
    );
    let mut tasks = vec![tokio::spawn(tern_net::serve(
        transport.clone(),
        service.clone(),
    ))];
    info!(id = config.id, listen = %config.listen, "node listening");
    join_or_bootstrap(&service, &config.join).await?;
    tasks.extend(spawn_loops(&service));
    tasks.push(tokio::spawn(reload_certificates(
        transport.clone(),
        tls_files,
        config.id,
    )));
    Ok(RunningNode {
        service,
        transport,
        tasks,
        compute: Some(compute),
    })
}

/// A node with no cluster yet either starts one (no peers to join) or asks `peers` to admit it.
/// A node that already belongs to a cluster does neither.
pub async fn join_or_bootstrap<T: Transport, C: Clock>(
    service: &Arc<NodeService<T, C>>,
    peers: &[String],
) -> Result<(), NodeError> {
    if service.meta.is_initialized().await? {
        return Ok(());
    }
    let record = &service.record;
    if peers.is_empty() {
        info!(id = record.id, "bootstrapping a new cluster");
        service.meta.bootstrap(&record.addr).await?;
        register_self(&service.meta, record).await
    } else {
        join(service.transport.as_ref(), peers, record).await
    }
}

/// Start the loops that keep a node and its cluster healthy: heartbeats, failure detection,
/// repair, garbage collection, shuffle expiry and scrubbing. Abort the handles to stop them.
pub fn spawn_loops<T: Transport, C: Clock>(
    service: &Arc<NodeService<T, C>>,
) -> Vec<JoinHandle<()>> {
    let timings = &service.timings;
    let heartbeat = timings.heartbeat();
    let scrub_every = Duration::from_millis(timings.scrub_interval_ms);
    let health = service.loop_panics.clone();
    let mut tasks = Vec::new();
    tasks.push(every(
        "heartbeat",
        heartbeat,
        Duration::ZERO,
        service.clone(),
        health.clone(),
        |s| async move { s.send_heartbeat().await },
    ));
    tasks.push(every(
        "failure detection",
        heartbeat,
        Duration::ZERO,
        service.clone(),
        health.clone(),
        |s| async move { s.detect_failures().await },
    ));
    tasks.push(every(
        "repair",
        // The work waits itself: for the interval, or less when a node is marked out or a
        // drain starts (`repair_wake`), so repair starts then, not at the next tick.
        Duration::from_millis(1),
        Duration::ZERO,
        service.clone(),
        health.clone(),
        // A round that copied is followed at once by the next: the interval paces an idle
        // cluster's checks, not a repair under way.
        |s| async move {
            tokio::select! {
                () = s.repair_wake.notified() => {}
                () = tokio::time::sleep(REPAIR_INTERVAL) => {}
            }
            while s.repair_once().await > 0 {}
        },
    ));
    let gc_every = crate::gc::gc_interval(Duration::from_millis(timings.gc_grace_ms));
    tasks.push(every(
        "garbage collection",
        gc_every,
        gc_every,
        service.clone(),
        health.clone(),
        |s| async move {
            s.collect_garbage().await;
        },
    ));
    tasks.push(every(
        "revocations",
        Duration::from_secs(1),
        Duration::ZERO,
        service.clone(),
        health.clone(),
        |s| async move { s.sync_revocations() },
    ));
    tasks.push(every(
        "shuffle expiry",
        Duration::from_secs(60),
        Duration::from_secs(60),
        service.clone(),
        health.clone(),
        |s| async move { s.shuffles.expire(crate::shuffle::ABANDONED_AFTER) },
    ));
    // The first scrub waits a full interval: a node that just started has other work first.
    let cursor = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tasks.push(every(
        "scrub",
        scrub_every,
        scrub_every,
        service.clone(),
        health,
        move |s| {
            let cursor = cursor.clone();
            async move { s.scrub_step(&cursor).await }
        },
    ));
    tasks
}

/// How often a node looks for a rotated certificate.
const CERT_CHECK: Duration = Duration::from_secs(5);

/// Present a rotated certificate (`tern cert rotate` wrote new files) without a restart: when
/// the files change, load them and hand them to the endpoint, unless they no longer name
/// this node (then keep the old ones and say why).
async fn reload_certificates(transport: Arc<QuicTransport>, files: tern_net::TlsFiles, id: u64) {
    let stamp = |files: &tern_net::TlsFiles| {
        [&files.cert, &files.key, &files.ca]
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    };
    let mut seen = stamp(&files);
    loop {
        tokio::time::sleep(CERT_CHECK).await;
        let now = stamp(&files);
        if now == seen {
            continue;
        }
        seen = now;
        let loaded = TlsIdentity::load(&files)
            .map_err(|e| e.to_string())
            .and_then(|identity| match identity.identity() {
                Ok(tern_proto::Caller::Node(named)) if named == id => Ok(identity),
                Ok(other) => Err(format!("it is the certificate of {other}")),
                Err(reason) => Err(reason),
            });
        match loaded.and_then(|identity| transport.reload(&identity).map_err(|e| e.to_string())) {
            Ok(()) => info!(cert = %files.cert.display(), "presenting the rotated certificate"),
            Err(reason) => {
                warn!(cert = %files.cert.display(), %reason, "not presenting the changed certificate")
            }
        }
    }
}

/// Query threads yield the CPU to the threads that answer heartbeats and Raft: a node busy
/// with a join still answers within the failure detector's deadlines.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread; a failure leaves its priority as is.
    unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, 10);
    }
}

/// Run `work` every `period` (the first time after `first`) until the task is aborted. A
/// panic in one round is caught, logged and counted in the node's health (`tern status`),
/// and the loop goes on with the next round: repair, GC or scrub must not stop for good
/// because one round met something unexpected.
fn every<S, F, Fut>(
    name: &'static str,
    period: Duration,
    first: Duration,
    service: Arc<S>,
    health: Arc<std::sync::Mutex<NodeHealth>>,
    work: F,
) -> JoinHandle<()>
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use futures::FutureExt;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
        loop {
            tick.tick().await;
            let round = std::panic::AssertUnwindSafe(work(service.clone()));
            if let Err(panic) = round.catch_unwind().await {
                let what = panic_message(panic.as_ref());
                tracing::error!(task = name, panic = %what, "background loop panicked; restarting it");
                let mut health = health.lock().unwrap_or_else(|p| p.into_inner());
                health.loop_panics += 1;
                health.last_loop_panic = Some(format!("{name}: {what}"));
            }
        }
    })
}

/// The text a panic carries, when it carries one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// A bootstrapping node elects itself at once; wait for that, then record itself.
async fn register_self(meta: &Meta, record: &NodeRecord) -> Result<(), NodeError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match meta.write(Command::RegisterNode(record.clone())).await {
            Ok(_) => return Ok(()),
            Err(MetaError::NoLeader | MetaError::NotLeader { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn join<T: Transport>(
    transport: &T,
    peers: &[String],
    record: &NodeRecord,
) -> Result<(), NodeError> {
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    let mut last_error = String::from("no answer");
    loop {
        // A join goes to the leader itself (it is bound to this node's certificate, so no
        // node forwards it): a peer that does not lead says who does, and that is asked next.
        let mut asking: Vec<String> = peers.to_vec();
        let mut asked = 0;
        while asked < asking.len() {
            let peer = asking[asked].clone();
            asked += 1;
            info!(peer = %peer, "asking to join");
            match transport.call(&peer, Request::Join(record.clone())).await {
                Ok(Response::Joined { voter, .. }) => {
                    info!(voter, "joined the cluster");
                    return Ok(());
                }
                Ok(Response::NotLeader {
                    leader: Some((_, leader)),
                }) => {
                    if !asking.contains(&leader) {
                        asking.insert(asked, leader);
                    }
                    last_error = format!("{peer} does not lead");
                }
                Ok(Response::NotLeader { leader: None }) => {
                    last_error = "no leader is elected right now".into()
                }
                Ok(Response::Error(e))
                    if matches!(
                        e.kind,
                        tern_proto::ErrorKind::Invalid | tern_proto::ErrorKind::Forbidden
                    ) =>
                {
                    return Err(NodeError::Join {
                        tried: peer.clone(),
                        reason: e.message,
                    });
                }
                Ok(Response::Error(e)) => last_error = e.message,
                Ok(other) => last_error = format!("unexpected answer {other:?}"),
                Err(e) => last_error = e.to_string(),
            }
            warn!(peer = %peer, error = %last_error, "join attempt failed");
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(NodeError::Join {
                tried: peers.join(", "),
                reason: last_error,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        // A runtime may not be dropped where blocking is not allowed (inside async code).
        if let Some(compute) = self.compute.take() {
            compute.shutdown_background();
        }
    }
}

impl RunningNode {
    pub fn id(&self) -> u64 {
        self.service.id()
    }

    pub fn service(&self) -> &Arc<NodeService<QuicTransport, SystemClock>> {
        &self.service
    }

    /// Stop the loops, let Raft finish its in-flight work, close connections.
    pub async fn shutdown(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(compute) = self.compute.take() {
            compute.shutdown_background();
        }
        self.service.meta.shutdown().await;
        if let Err(e) = self.service.blocks.flush() {
            tracing::warn!(error = %e, "block store not flushed at shutdown");
        }
        self.transport.close();
        info!(id = self.service.id(), "node stopped");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A round that panics is counted in the node's health, and the loop keeps running.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_round_does_not_stop_its_loop() {
        let rounds = Arc::new(AtomicU32::new(0));
        let health = Arc::new(std::sync::Mutex::new(NodeHealth::default()));
        let task = every(
            "test loop",
            Duration::from_millis(10),
            Duration::ZERO,
            rounds.clone(),
            health.clone(),
            |rounds| async move {
                if rounds.fetch_add(1, Ordering::Relaxed) == 1 {
                    panic!("round two fails");
                }
            },
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while rounds.load(Ordering::Relaxed) < 5 {
            assert!(tokio::time::Instant::now() < deadline, "the loop stopped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        let health = health.lock().unwrap().clone();
        assert_eq!(health.loop_panics, 1);
        assert_eq!(
            health.last_loop_panic.as_deref(),
            Some("test loop: round two fails")
        );
        assert_eq!(health.problems().len(), 1);
    }
}
