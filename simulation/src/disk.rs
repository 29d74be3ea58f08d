//! [`SimDisk`]: the simulator's disk, behind the same [`Disk`] seam RocksDB sits behind.
//!
//! It keeps two images: what a reader sees now, and what would survive a crash. Unsynced
//! writes reach only the first; a synced write makes it and every earlier write durable (one
//! write-ahead log, as in RocksDB). [`SimDisk::crash`] keeps a prefix of the unsynced writes,
//! chosen by the seed, and drops the rest. It can also flip a bit in a stored value and refuse
//! writes as if full.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tern_store::disk::{Batch, Change, Disk, DiskError, Entries, Order};

type Image = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Default)]
struct State {
    current: Image,
    durable: Image,
    unsynced: Vec<Batch>,
    full: bool,
}

#[derive(Default)]
pub struct SimDisk {
    state: Mutex<State>,
}

fn apply(image: &mut Image, batch: &Batch) {
    for change in &batch.changes {
        match change {
            Change::Put { family, key, value } => {
                image
                    .entry(family.to_string())
                    .or_default()
                    .insert(key.clone(), value.clone());
            }
            Change::Delete { family, key } => {
                if let Some(f) = image.get_mut(*family) {
                    f.remove(key);
                }
            }
            Change::DeleteRange { family, from, to } => {
                if let Some(f) = image.get_mut(*family) {
                    let doomed: Vec<Vec<u8>> = f
                        .range(from.clone()..to.clone())
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        f.remove(&k);
                    }
                }
            }
        }
    }
}

impl SimDisk {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node crashed: of the writes not yet synced, the first `keep` survive (clamped).
    /// Returns how many were lost.
    pub fn crash(&self, keep: usize) -> usize {
        let mut s = self.state();
        let unsynced = std::mem::take(&mut s.unsynced);
        let keep = keep.min(unsynced.len());
        for batch in &unsynced[..keep] {
            apply(&mut s.durable, batch);
        }
        s.current = s.durable.clone();
        unsynced.len() - keep
    }

    /// Writes waiting for a sync.
    pub fn unsynced(&self) -> usize {
        self.state().unsynced.len()
    }

    /// Keys of `family`, for choosing what to damage.
    pub fn keys(&self, family: &str) -> Vec<Vec<u8>> {
        self.state()
            .current
            .get(family)
            .map(|f| f.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Flip bit `bit` (modulo its length) of the value under `key`, in both images: the damage
    /// is on the medium. Returns whether there was such a value.
    pub fn flip_bit(&self, family: &str, key: &[u8], bit: u64) -> bool {
        let mut s = self.state();
        let State {
            current, durable, ..
        } = &mut *s;
        let mut flipped = false;
        for image in [current, durable] {
            if let Some(value) = image.get_mut(family).and_then(|f| f.get_mut(key))
                && !value.is_empty()
            {
                let bit = bit % (value.len() as u64 * 8);
                value[(bit / 8) as usize] ^= 1 << (bit % 8);
                flipped = true;
            }
        }
        flipped
    }

    /// While full, every write fails with [`DiskError::Full`].
    pub fn set_full(&self, full: bool) {
        self.state().full = full;
    }
}

impl Disk for SimDisk {
    fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        Ok(self
            .state()
            .current
            .get(family)
            .and_then(|f| f.get(key))
            .cloned())
    }

    fn write(&self, batch: Batch, sync: bool) -> Result<(), DiskError> {
        let mut s = self.state();
        if s.full {
            return Err(DiskError::Full("simulated: no space left on device".into()));
        }
        apply(&mut s.current, &batch);
        s.unsynced.push(batch);
        if sync {
            let unsynced = std::mem::take(&mut s.unsynced);
            for batch in &unsynced {
                apply(&mut s.durable, batch);
            }
        }
        Ok(())
    }

    fn scan<'a>(
        &'a self,
        family: &str,
        from: &[u8],
        order: Order,
    ) -> Result<Entries<'a>, DiskError> {
        let s = self.state();
        let Some(f) = s.current.get(family) else {
            return Ok(Box::new(std::iter::empty()));
        };
        let entries: Vec<_> = match order {
            Order::Ascending => f
                .range(from.to_vec()..)
                .map(|(k, v)| Ok((k.clone(), v.clone())))
                .collect(),
            Order::DescendingFromEnd => f
                .iter()
                .rev()
                .map(|(k, v)| Ok((k.clone(), v.clone())))
                .collect(),
        };
        Ok(Box::new(entries.into_iter()))
    }

    fn used_bytes(&self) -> Result<u64, DiskError> {
        Ok(self
            .state()
            .current
            .values()
            .flat_map(|f| f.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum())
    }

    fn flush(&self) -> Result<(), DiskError> {
        self.write(Batch::default(), true)
    }

    fn blocks_thread(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_loses_unsynced_writes_but_never_a_synced_one() {
        let disk = SimDisk::default();
        let put = |k: &str, sync| {
            let mut b = Batch::default();
            b.put("f", k, k);
            disk.write(b, sync).unwrap();
        };
        put("a", true);
        put("b", false);
        put("c", false);
        assert!(
            disk.get("f", b"c").unwrap().is_some(),
            "readers see unsynced writes"
        );
        assert_eq!(disk.crash(1), 1);
        assert!(disk.get("f", b"a").unwrap().is_some());
        assert!(disk.get("f", b"b").unwrap().is_some(), "a prefix survives");
        assert!(disk.get("f", b"c").unwrap().is_none());
        put("d", false);
        put("e", true);
        assert_eq!(disk.crash(0), 0, "a sync carries the writes before it");
        assert!(disk.get("f", b"d").unwrap().is_some());
    }

    #[test]
    fn flipped_bits_and_full_disks() {
        let disk = SimDisk::default();
        let mut b = Batch::default();
        b.put("f", "k", [0u8; 4]);
        disk.write(b, true).unwrap();
        assert!(disk.flip_bit("f", b"k", 9));
        assert_eq!(disk.get("f", b"k").unwrap().unwrap(), vec![0, 2, 0, 0]);
        disk.set_full(true);
        assert!(matches!(
            disk.write(Batch::default(), false),
            Err(DiskError::Full(_))
        ));
    }
}
