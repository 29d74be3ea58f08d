//! Out-of-process runtimes for user code: a [`WorkerPool`] of worker processes a node hands
//! the tasks of `Kernel::External` to. Python is the one runtime today (`python -m
//! tern.worker`, the Python package's worker, in the interpreter the node's config names).
//!
//! User code never runs inside a node (CPython cannot be sandboxed, and a crash must cost a
//! task, not the node): each task goes to an idle worker over its stdin and stdout
//! ([`wire`]), one task at a time per worker. A worker that dies, or answers with something
//! unreadable, fails only its task ([`WorkerError::Died`], which the coordinator retries on
//! another node) and is not used again; a task past its deadline has its worker killed
//! ([`WorkerError::TimedOut`]), and so does one whose resident memory passes its limit
//! ([`WorkerError::OutOfMemory`], watched every 100 ms as Dask's nanny watches its worker).
//! Workers are started on demand and kept for the next task, up to the node's task slots.
//!
//! It owns the processes and the bytes between them and the node. It does not own where a
//! task runs, its inputs or its output's keeping: the node does.

pub mod wire;

use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_proto::Datum;

/// The runtime `Kernel::External` names for Python functions.
pub const PYTHON: &str = "python";

/// Why a task of an external runtime has no output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    /// The node was not given this runtime.
    #[error(
        "node runs no {runtime} workers: give it an interpreter (`python = \"/path/to/python\"` in node.toml, `tern up --python PATH`)"
    )]
    NoRuntime { runtime: String },
    /// The function raised: the message (for Python, the exception and its traceback).
    #[error("{message}")]
    Raised { message: String },
    /// The worker died or broke the protocol mid-task (it is replaced); another node may
    /// succeed.
    #[error("the {runtime} worker died running the task: {reason}")]
    Died { runtime: String, reason: String },
    /// The task ran past its deadline; its worker was killed.
    #[error("the task ran past its deadline of {secs} s; its worker was stopped")]
    TimedOut { secs: u64 },
    /// The worker's resident memory passed its limit while running the task; it was killed
    /// (and is replaced). The same task would do the same anywhere, so it is not retried.
    #[error(
        "the task's {runtime} worker went past its memory limit of {} and was stopped (python_worker_memory_bytes in node.toml; `tern up --worker-memory`)",
        tern_proto::human_bytes(*limit)
    )]
    OutOfMemory { runtime: String, limit: u64 },
}

/// How a node runs its workers.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The Python interpreter (one that can `import tern`); `None`: no Python here.
    pub python: Option<PathBuf>,
    /// Idle workers kept for later tasks (the node's task slots).
    pub keep_idle: usize,
    /// How long one task may run.
    pub task_timeout: Duration,
    /// Resident memory one worker may hold, in bytes; 0: no limit.
    pub memory_limit: u64,
}

/// How often a running task's worker is looked at (its deadline, its memory).
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Why the watchdog stopped a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    Running,
    TimedOut,
    OutOfMemory,
}

struct Worker {
    child: Arc<Mutex<Child>>,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A node's worker processes (see the crate docs).
pub struct WorkerPool {
    config: WorkerConfig,
    idle: Mutex<Vec<Worker>>,
}

impl WorkerPool {
    pub fn new(config: WorkerConfig) -> Self {
        Self {
            config,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Whether this pool runs `runtime`'s tasks.
    pub fn runs(&self, runtime: &str) -> bool {
        runtime == PYTHON && self.config.python.is_some()
    }

    /// Run `function` of `runtime` over `inputs` in a worker and return its output. Blocks
    /// (call it off the async threads).
    pub fn run(
        &self,
        runtime: &str,
        function: &[u8],
        inputs: &[Datum],
    ) -> Result<Datum, WorkerError> {
        let Some(python) = self.config.python.as_ref().filter(|_| runtime == PYTHON) else {
            return Err(WorkerError::NoRuntime {
                runtime: runtime.to_string(),
            });
        };
        let died = |reason: String| WorkerError::Died {
            runtime: runtime.to_string(),
            reason,
        };
        // An unusable input is the task's fault, wherever it runs.
        let request = wire::encode_task(function, inputs)
            .map_err(|message| WorkerError::Raised { message })?;
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut worker = match idle {
            Some(worker) => worker,
            None => spawn(python).map_err(|e| {
                died(format!(
                    "could not start {} -m tern.worker: {e}",
                    python.display()
                ))
            })?,
        };
        // The deadline and the memory limit: a watchdog kills the worker past either, which
        // ends the read below.
        let (finished, watched) = channel::<()>();
        let stopped = Arc::new(Mutex::new(Stopped::Running));
        let watchdog = {
            let (child, stopped) = (worker.child.clone(), stopped.clone());
            let (timeout, limit) = (self.config.task_timeout, self.config.memory_limit);
            let pid = worker.child.lock().unwrap_or_else(|p| p.into_inner()).id();
            std::thread::spawn(move || {
                let started = Instant::now();
                loop {
                    let left = timeout.saturating_sub(started.elapsed());
                    match watched.recv_timeout(left.min(WATCH_EVERY)) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let why = if started.elapsed() >= timeout {
                        Stopped::TimedOut
                    } else if limit > 0 && resident_bytes(pid).is_some_and(|b| b > limit) {
                        Stopped::OutOfMemory
                    } else {
                        continue;
                    };
                    *stopped.lock().unwrap_or_else(|p| p.into_inner()) = why;
                    let _ = child.lock().unwrap_or_else(|p| p.into_inner()).kill();
                    return;
                }
            })
        };
        let answered = worker
            .stdin
            .write_all(&request)
            .and_then(|()| worker.stdin.flush())
            .and_then(|()| wire::read_frame(&mut worker.stdout, wire::MAX_FRAME));
        let _ = finished.send(());
        let _ = watchdog.join();
        match *stopped.lock().unwrap_or_else(|p| p.into_inner()) {
            Stopped::Running => {}
            Stopped::TimedOut => {
                return Err(WorkerError::TimedOut {
                    secs: self.config.task_timeout.as_secs(),
                });
            }
            Stopped::OutOfMemory => {
                return Err(WorkerError::OutOfMemory {
                    runtime: runtime.to_string(),
                    limit: self.config.memory_limit,
                });
            }
        }
        let frame = match answered {
            Ok(frame) => frame,
            Err(e) => {
                let status = worker
                    .child
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .try_wait()
                    .ok()
                    .flatten();
                return Err(died(match status {
                    Some(status) => format!("it exited ({status})"),
                    None => e.to_string(),
                }));
            }
        };
        let answer = wire::decode_answer(&frame).map_err(died)?;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.config.keep_idle.max(1) {
            idle.push(worker);
        }
        answer.map_err(|message| WorkerError::Raised { message })
    }
}

/// The resident memory of process `pid` (Linux's `/proc`; `None` elsewhere or once it is
/// gone).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn spawn(python: &PathBuf) -> std::io::Result<Worker> {
    let mut child = Command::new(python)
        .args(["-m", "tern.worker"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // What user code prints goes to the node's log, not into the protocol.
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdin = BufWriter::new(child.stdin.take().expect("piped stdin"));
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    Ok(Worker {
        child: Arc::new(Mutex::new(child)),
        stdin,
        stdout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker made of `sh`: it answers each task with what `script` prints.
    fn pool_of(script: &str, timeout: Duration) -> (WorkerPool, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("python");
        // `python -m tern.worker` runs the script; `$@` is ignored.
        std::fs::write(&fake, format!("#!/bin/sh\n{script}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = WorkerConfig {
            python: Some(fake),
            keep_idle: 2,
            task_timeout: timeout,
            memory_limit: 64 << 20,
        };
        (WorkerPool::new(config), dir)
    }

    #[test]
    fn a_node_without_python_says_so_in_one_line() {
        let pool = WorkerPool::new(WorkerConfig {
            python: None,
            keep_idle: 1,
            task_timeout: Duration::from_secs(1),
            memory_limit: 0,
        });
        let err = pool.run(PYTHON, b"f", &[]).unwrap_err();
        assert!(matches!(err, WorkerError::NoRuntime { .. }));
        assert!(err.to_string().contains("--python"), "{err}");
        assert!(!pool.runs(PYTHON));
    }

    #[test]
    fn a_worker_that_dies_or_hangs_fails_only_its_task() {
        let (pool, _dir) = pool_of("exit 3", Duration::from_secs(5));
        let err = pool.run(PYTHON, b"f", &[]).unwrap_err();
        assert!(matches!(err, WorkerError::Died { .. }), "{err}");
        let (pool, _dir) = pool_of("cat > /dev/null", Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = pool.run(PYTHON, b"f", &[]).unwrap_err();
        assert_eq!(err, WorkerError::TimedOut { secs: 0 });
        assert!(started.elapsed() < Duration::from_secs(5));
        // A huge announced answer is refused before it is read.
        let (pool, _dir) = pool_of(
            "printf '\\377\\377\\377\\377'; sleep 5",
            Duration::from_secs(5),
        );
        let err = pool.run(PYTHON, b"f", &[]).unwrap_err();
        assert!(err.to_string().contains("past the limit"), "{err}");
    }

    #[test]
    fn a_worker_past_its_memory_limit_is_stopped_saying_so() {
        // The worker grows to 256 MiB resident (a 64 MiB limit) and would then wait.
        let (pool, _dir) = pool_of(
            "exec python3 -c 'import time; b = bytearray(256 << 20); time.sleep(30)'",
            Duration::from_secs(20),
        );
        let started = std::time::Instant::now();
        let err = pool.run(PYTHON, b"f", &[]).unwrap_err();
        assert!(
            matches!(err, WorkerError::OutOfMemory { limit, .. } if limit == 64 << 20),
            "{err}"
        );
        assert!(err.to_string().contains("64.0 MiB"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(15));
    }
}
