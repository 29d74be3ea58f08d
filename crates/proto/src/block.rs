//! Block names: a block is named by the blake3 hash of its bytes, so copies, retries and
//! repairs are idempotent and corruption is always detectable.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The largest block a node accepts (partitions are cut well below this).
pub const MAX_BLOCK_BYTES: u64 = 512 << 20;

/// A block's name: the blake3 hash of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The first `n` hex digits, for display next to a partition.
    pub fn prefix(&self, n: usize) -> String {
        let mut s = self.to_string();
        s.truncate(n);
        s
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockHash({})", self.prefix(12))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a block hash (64 hex digits)")]
pub struct BadBlockHash {
    pub text: String,
}

impl FromStr for BlockHash {
    type Err = BadBlockHash;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadBlockHash {
            text: s.chars().take(80).collect(),
        };
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn hash_text_round_trips_and_bad_text_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..256), text in ".{0,70}") {
            let hash = BlockHash::of(&bytes);
            prop_assert_eq!(hash.to_string().parse::<BlockHash>().unwrap(), hash);
            if text.len() != 64 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
                prop_assert!(text.parse::<BlockHash>().is_err());
            }
        }
    }
}

/// `n` bytes for people: `512 B`, `1.5 MiB`, `3.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
