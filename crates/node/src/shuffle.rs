//! Shuffle outputs this node computed and keeps until the job that needs them ends: in memory
//! up to a limit, past it in files under `<data_dir>/shuffle`. Nothing here is replicated; a
//! lost output is recomputed by the coordinator from the task that made it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tern_exec::ShuffleKey;
use tern_exec::arrow::buffer::Buffer;

/// Jobs whose coordinator never released them (it died) are dropped after this long.
pub(crate) const ABANDONED_AFTER: Duration = Duration::from_secs(30 * 60);

enum Bucket {
    /// Shared with the node's own readers of it, which read its columns in place.
    Memory(Buffer),
    File(PathBuf),
}

struct Output {
    buckets: Vec<Bucket>,
    stored: Instant,
}

#[derive(Default)]
struct Kept {
    /// Keyed by (job, stage, task).
    outputs: HashMap<(u64, u32, u32), Output>,
    in_memory: u64,
}

pub(crate) struct ShuffleStore {
    dir: PathBuf,
    memory_limit: u64,
    kept: Mutex<Kept>,
    /// Numbers spill files, so a task kept again never writes over (and then deletes) the
    /// file of the output it replaces.
    files: std::sync::atomic::AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ShuffleError {
    #[error("no output of job {job:x} stage {stage} task {task} bucket {bucket} is kept here")]
    Missing {
        job: u64,
        stage: u32,
        task: u32,
        bucket: u32,
    },
    /// The output is kept, with fewer buckets than asked for: asking again will not help.
    #[error("job {job:x} stage {stage} task {task} keeps {buckets} buckets, not bucket {bucket}")]
    NoBucket {
        job: u64,
        stage: u32,
        task: u32,
        bucket: u32,
        buckets: usize,
    },
    #[error("shuffle file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl ShuffleStore {
    /// A store spilling under `dir`; files a previous run left there are removed.
    pub(crate) fn new(dir: &Path, memory_limit: u64) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        Self {
            dir: dir.to_path_buf(),
            memory_limit,
            kept: Mutex::default(),
            files: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep one task's buckets (replacing an earlier attempt's). Blocking: call off the
    /// async threads.
    pub(crate) fn put(
        &self,
        job: u64,
        stage: u32,
        task: u32,
        buckets: Vec<Vec<u8>>,
    ) -> Result<u64, ShuffleError> {
        let mut kept_buckets = Vec::with_capacity(buckets.len());
        let mut total = 0u64;
        for (i, bytes) in buckets.into_iter().enumerate() {
            let len = bytes.len() as u64;
            total += len;
            let fits = {
                let mut kept = self.lock();
                let fits = kept.in_memory + len <= self.memory_limit;
                if fits {
                    kept.in_memory += len;
                }
                fits
            };
            if fits {
                kept_buckets.push(Bucket::Memory(Buffer::from_vec(bytes)));
                continue;
            }
            let n = self
                .files
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = self.dir.join(format!("{job:016x}-{stage}-{task}-{i}-{n}"));
            let io = |source| ShuffleError::Io {
                path: path.display().to_string(),
                source,
            };
            std::fs::create_dir_all(&self.dir).map_err(io)?;
            std::fs::write(&path, &bytes).map_err(io)?;
            kept_buckets.push(Bucket::File(path));
        }
        let old = self.lock().outputs.insert(
            (job, stage, task),
            Output {
                buckets: kept_buckets,
                stored: Instant::now(),
            },
        );
        if let Some(old) = old {
            self.forget(old);
        }
        Ok(total)
    }

    /// One bucket's bytes. Blocking when it was spilled to a file.
    pub(crate) fn get(&self, key: ShuffleKey) -> Result<Buffer, ShuffleError> {
        let missing = || ShuffleError::Missing {
            job: key.job,
            stage: key.stage,
            task: key.task,
            bucket: key.bucket,
        };
        let path = {
            let kept = self.lock();
            let output = kept
                .outputs
                .get(&(key.job, key.stage, key.task))
                .ok_or_else(missing)?;
            let no_bucket = || ShuffleError::NoBucket {
                job: key.job,
                stage: key.stage,
                task: key.task,
                bucket: key.bucket,
                buckets: output.buckets.len(),
            };
            match output
                .buckets
                .get(key.bucket as usize)
                .ok_or_else(no_bucket)?
            {
                Bucket::Memory(bytes) => return Ok(bytes.clone()),
                Bucket::File(path) => path.clone(),
            }
        };
        std::fs::read(&path)
            .map(Buffer::from_vec)
            .map_err(|source| ShuffleError::Io {
                path: path.display().to_string(),
                source,
            })
    }

    /// Drop the outputs of `tasks` of `job`'s stage `stage` (those not kept are skipped).
    pub(crate) fn drop_tasks(&self, job: u64, stage: u32, tasks: &[u32]) {
        let dropped: Vec<Output> = {
            let mut kept = self.lock();
            tasks
                .iter()
                .filter_map(|&task| kept.outputs.remove(&(job, stage, task)))
                .collect()
        };
        for output in dropped {
            self.forget(output);
        }
    }

    /// `job` is still wanted: its outputs' age starts again (they are not expired).
    pub(crate) fn touch(&self, job: u64) {
        let now = Instant::now();
        for (_, output) in self.lock().outputs.iter_mut().filter(|(k, _)| k.0 == job) {
            output.stored = now;
        }
    }

    /// Drop every output of `job`.
    pub(crate) fn release(&self, job: u64) {
        let dropped: Vec<Output> = {
            let mut kept = self.lock();
            let keys: Vec<_> = kept
                .outputs
                .keys()
                .filter(|k| k.0 == job)
                .copied()
                .collect();
            keys.iter().filter_map(|k| kept.outputs.remove(k)).collect()
        };
        for output in dropped {
            self.forget(output);
        }
    }

    /// Drop outputs kept longer than `age` (their coordinator died without releasing them).
    pub(crate) fn expire(&self, age: Duration) {
        let dropped: Vec<Output> = {
            let mut kept = self.lock();
            let keys: Vec<_> = kept
                .outputs
                .iter()
                .filter(|(_, o)| o.stored.elapsed() > age)
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| kept.outputs.remove(k)).collect()
        };
        for output in dropped {
            self.forget(output);
        }
    }

    fn forget(&self, output: Output) {
        for bucket in output.buckets {
            match bucket {
                Bucket::Memory(bytes) => {
                    let mut kept = self.lock();
                    kept.in_memory = kept.in_memory.saturating_sub(bytes.len() as u64);
                }
                Bucket::File(path) => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }

    /// Task outputs kept now.
    pub(crate) fn outputs(&self) -> usize {
        self.lock().outputs.len()
    }

    /// Outputs kept, and bytes of them in memory.
    #[cfg(test)]
    fn usage(&self) -> (usize, u64) {
        let kept = self.lock();
        (kept.outputs.len(), kept.in_memory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(job: u64, task: u32, bucket: u32) -> ShuffleKey {
        ShuffleKey {
            job,
            stage: 0,
            task,
            bucket,
        }
    }

    #[test]
    fn buckets_past_the_memory_limit_go_to_files_and_come_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new(&dir.path().join("shuffle"), 10);
        store
            .put(7, 0, 0, vec![vec![1; 6], vec![2; 6], vec![]])
            .unwrap();
        assert_eq!(*store.get(key(7, 0, 0)).unwrap(), vec![1; 6]);
        assert_eq!(*store.get(key(7, 0, 1)).unwrap(), vec![2; 6]);
        assert!(store.get(key(7, 0, 2)).unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("shuffle"))
                .unwrap()
                .count(),
            1
        );
        let err = store.get(key(7, 1, 0)).unwrap_err().to_string();
        assert!(err.contains("task 1"), "{err}");
        // A retried task replaces its output; releasing the job drops memory and files.
        store.put(7, 0, 0, vec![vec![3; 4]]).unwrap();
        assert_eq!(*store.get(key(7, 0, 0)).unwrap(), vec![3; 4]);
        store.put(8, 0, 0, vec![vec![4; 2]]).unwrap();
        store.release(7);
        assert_eq!(store.usage(), (1, 2));
        assert!(store.get(key(7, 0, 0)).is_err());
        store.expire(Duration::ZERO);
        assert_eq!(store.usage(), (0, 0));
    }
}
