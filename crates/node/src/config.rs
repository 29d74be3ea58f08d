//! `node.toml`: everything a node needs to start. Command-line flags override it.
//!
//! ```toml
//! id = 1
//! data_dir = ".tern/data/node-1"
//! listen = "127.0.0.1:7401"
//! zone = "a"
//! join = []                      # addresses of running nodes; empty bootstraps a new cluster
//! ca = ".tern/ca.pem"
//! cert = ".tern/node-1.pem"
//! key = ".tern/node-1.key"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tern_net::TlsFiles;

use crate::NodeError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The address other nodes and clients use; defaults to `listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub join: Vec<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Bytes offered for blocks (default 100 GiB).
    #[serde(default = "default_capacity")]
    pub capacity_bytes: u64,
    /// Voters in the metadata group (3 or 5); later nodes join as learners.
    #[serde(default = "default_max_voters")]
    pub max_voters: usize,
    /// Query tasks this node runs at once; 0 (the default) means one per core.
    #[serde(default)]
    pub task_slots: usize,
    /// Memory one task may hold; past it, its sorts, aggregations and joins spill to
    /// `<data_dir>/spill` (default 1 GiB).
    #[serde(default = "default_task_memory")]
    pub task_memory_bytes: u64,
    /// Memory all of this node's query work may hold at once, every task and every final
    /// stage it coordinates together; 0 (the default) means two tasks' more than its slots'.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub query_memory_bytes: u64,
    /// A query this node coordinates that runs longer fails, saying so (default one hour).
    #[serde(default = "default_query_timeout")]
    pub query_timeout_ms: u64,
    /// Shuffle outputs this node keeps in memory; past it they go to `<data_dir>/shuffle`
    /// (default 1 GiB).
    #[serde(default = "default_shuffle_memory")]
    pub shuffle_memory_bytes: u64,
    /// The rows one query's tasks may send back to this node when it coordinates (what its
    /// final stage merges, sorts or limits); a query past it fails, saying so, instead of
    /// taking the node's memory (default 2 GiB; Spark's `maxResultSize`).
    #[serde(default = "default_answer_memory")]
    pub answer_memory_bytes: u64,
    /// Decoded columns of this node's blocks kept in memory for later scans (Spark's cached
    /// blocks); 0 keeps none (default 2 GiB).
    #[serde(default = "default_cache_memory")]
    pub cache_memory_bytes: u64,
    /// For tests and demos: every task this node runs first waits this long (a slow node).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub task_delay_ms: u64,
    /// For tests: when this node coordinates, only tables of at most this many rows are
    /// planned with their size known (default one million; 0: none, so every join is
    /// planned partitioned and decided as the query runs, whatever the data's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sized_table_rows: Option<u64>,
    #[serde(default)]
    pub timings: NodeTimings,
    /// The Python interpreter this node runs users' Python functions in (in worker
    /// processes, never in the node); one that can `import tern`. None: this node answers
    /// Python tasks with an error saying so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PathBuf>,
    /// Resident memory one Python worker may hold; past it the worker is stopped and its task
    /// fails saying so (Dask's `memory_limit`). 0 (the default): the machine's memory shared
    /// among the node's slots.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub python_worker_memory_bytes: u64,
}

fn default_task_memory() -> u64 {
    1 << 30
}

fn default_query_timeout() -> u64 {
    3600 * 1000
}

fn default_shuffle_memory() -> u64 {
    1 << 30
}

fn default_answer_memory() -> u64 {
    2 << 30
}

fn default_cache_memory() -> u64 {
    2 << 30
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What a node needs to run tasks, taken from its config.
#[derive(Debug, Clone)]
pub struct ComputeSettings {
    pub slots: usize,
    pub task_memory_bytes: u64,
    /// See [`NodeConfig::query_memory_bytes`] (resolved: never 0 while tasks have a limit).
    pub query_memory_bytes: u64,
    pub query_timeout: Duration,
    pub shuffle_memory_bytes: u64,
    pub answer_memory_bytes: u64,
    pub cache_memory_bytes: u64,
    pub task_delay_ms: u64,
    /// See [`NodeConfig::sized_table_rows`].
    pub sized_table_rows: Option<u64>,
    pub data_dir: PathBuf,
    /// See [`NodeConfig::python`].
    pub python: Option<PathBuf>,
    /// See [`NodeConfig::python_worker_memory_bytes`] (resolved: never 0 where the
    /// machine's memory is known).
    pub python_worker_memory_bytes: u64,
}

/// Heartbeat and failure-detection timings, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeTimings {
    pub heartbeat_ms: u64,
    pub suspect_after_ms: u64,
    pub down_after_ms: u64,
    /// A node silent this long is marked out and its replicas are copied to other nodes.
    /// Between down and out its data is served by the other holders and nothing is copied,
    /// so a reboot or a switch that comes back does not start a storm of copies (Ceph waits
    /// 600 s, HDFS about 10.5 min).
    pub out_after_ms: u64,
    pub raft_heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// The background scrub re-hashes one block per this many milliseconds.
    pub scrub_interval_ms: u64,
    /// An unreferenced block is deleted after it has been unreferenced this long, so readers
    /// of a removed or replaced dataset finish first.
    pub gc_grace_ms: u64,
    /// A put whose writer has not renewed its lease for this long is abandoned and its
    /// blocks become garbage.
    pub put_lease_expiry_ms: u64,
    /// How long the cluster remembers the id of a write made with `write_once` (retries of a
    /// write come well within this).
    pub write_id_expiry_ms: u64,
    /// Repair and drain copies into this node are paced to this many bytes per second.
    pub copy_bytes_per_s: u64,
}

impl Default for NodeTimings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 1000,
            suspect_after_ms: 3000,
            down_after_ms: 10_000,
            out_after_ms: 600_000,
            // A follower campaigns once it has not heard from its leader for the lease
            // (election_max_ms) plus a random election_min_ms..election_max_ms, and the other
            // followers refuse to vote while their own lease lasts: failover takes 1.1-1.4 s.
            // That is 11 missed heartbeats at least, which a busy debug build on 2 cores
            // does not miss by accident.
            raft_heartbeat_ms: 100,
            election_min_ms: 400,
            election_max_ms: 700,
            // One block every 10 s: about 6.7 MB/s of reading and hashing per node with 64 MiB
            // partitions (a full pass over 1 TB in under two days), little next to real work.
            scrub_interval_ms: 10_000,
            gc_grace_ms: 5 * 60 * 1000,
            // Fifteen missed renewals (one every 2 s): a stalled writer is not cut off lightly.
            put_lease_expiry_ms: 30_000,
            write_id_expiry_ms: 10 * 60 * 1000,
            copy_bytes_per_s: 200 << 20,
        }
    }
}

impl NodeTimings {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

fn default_capacity() -> u64 {
    100 << 30
}

impl NodeConfig {
    pub fn compute(&self) -> ComputeSettings {
        let query_memory_bytes = match self.query_memory_bytes {
            0 => self
                .task_memory_bytes
                .saturating_mul(self.slots() as u64 + 2),
            bytes => bytes,
        };
        ComputeSettings {
            slots: self.slots(),
            task_memory_bytes: self.task_memory_bytes,
            query_memory_bytes,
            query_timeout: Duration::from_millis(self.query_timeout_ms.max(1)),
            shuffle_memory_bytes: self.shuffle_memory_bytes,
            answer_memory_bytes: self.answer_memory_bytes,
            cache_memory_bytes: self.cache_memory_bytes,
            task_delay_ms: self.task_delay_ms,
            sized_table_rows: self.sized_table_rows,
            data_dir: self.data_dir.clone(),
            python: self.python.clone(),
            python_worker_memory_bytes: match self.python_worker_memory_bytes {
                0 => machine_memory().map_or(0, |m| m / self.slots().max(1) as u64),
                bytes => bytes,
            },
        }
    }

    /// Task slots, with 0 meaning the machine's cores.
    pub fn slots(&self) -> usize {
        if self.task_slots > 0 {
            self.task_slots
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }
}

/// The machine's memory (Linux's `/proc/meminfo`; `None` elsewhere).
pub fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn default_max_voters() -> usize {
    3
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|e| NodeError::Config {
            path: path.display().to_string(),
            reason: e.message().to_string(),
        })?;
        config.validate().map_err(|reason| NodeError::Config {
            path: path.display().to_string(),
            reason,
        })?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("id must be at least 1".into());
        }
        if !(1..=5).contains(&self.max_voters) {
            return Err(format!(
                "max_voters is {}, it must be between 1 and 5",
                self.max_voters
            ));
        }
        let t = &self.timings;
        if t.scrub_interval_ms < 10 {
            return Err("scrub_interval_ms must be at least 10".into());
        }
        if t.put_lease_expiry_ms < 2 * tern_proto::PUT_LEASE_RENEW_MS {
            return Err(format!(
                "put_lease_expiry_ms must be at least {} (two lease renewals)",
                2 * tern_proto::PUT_LEASE_RENEW_MS
            ));
        }
        if t.copy_bytes_per_s < 1 << 20 {
            return Err("copy_bytes_per_s must be at least 1 MiB/s".into());
        }
        if t.heartbeat_ms == 0 || t.raft_heartbeat_ms == 0 {
            return Err("heartbeat_ms and raft_heartbeat_ms must be at least 1".into());
        }
        if t.out_after_ms < t.down_after_ms {
            return Err("timings must satisfy down_after_ms <= out_after_ms".into());
        }
        if t.suspect_after_ms <= t.heartbeat_ms || t.down_after_ms < t.suspect_after_ms {
            return Err(
                "timings must satisfy heartbeat_ms < suspect_after_ms <= down_after_ms".into(),
            );
        }
        if t.election_min_ms <= t.raft_heartbeat_ms || t.election_max_ms <= t.election_min_ms {
            return Err(
                "timings must satisfy raft_heartbeat_ms < election_min_ms < election_max_ms".into(),
            );
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    pub fn advertise_addr(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let text = r#"
            id = 2
            data_dir = "/tmp/n2"
            listen = "127.0.0.1:7402"
            join = ["127.0.0.1:7401"]
            ca = "ca.pem"
            cert = "node-2.pem"
            key = "node-2.key"
        "#;
        let config: NodeConfig = toml::from_str(text).unwrap();
        assert!(config.validate().is_ok());
        assert_eq!(config.max_voters, 3);
        assert_eq!(config.advertise_addr(), "127.0.0.1:7402");
        let again: NodeConfig = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let text = "id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\nlisten_addr = 3\n";
        assert!(toml::from_str::<NodeConfig>(text).is_err());
        let mut config: NodeConfig = toml::from_str(
            "id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"d\"\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n",
        )
        .unwrap();
        config.max_voters = 7;
        assert!(config.validate().unwrap_err().contains("max_voters"));
    }
}
