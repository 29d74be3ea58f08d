//! Verifying part of a block against its name without hashing the rest.
//!
//! A block's name is the blake3 hash of its bytes, and blake3 is a Merkle tree over 1 KiB
//! chunks. Every aligned run of [`GROUP_BYTES`] is a subtree of that tree, so the chaining
//! value of each such group (32 bytes per 16 KiB, 0.2 % of the block) is enough to check any
//! group on its own: the groups' values merge up to the root exactly as blake3 merges them,
//! and a root equal to the block's name proves every value in the [`Outboard`] (Bao's idea,
//! with the tree cut at groups instead of chunks). A reader checks the outboard once against
//! the name, then each group it reads against its value: a scan of two columns hashes those
//! columns' bytes, not the block.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::BlockHash;

/// Bytes per verified group: 16 chunks of blake3's 1 KiB, so a group is always one subtree.
pub const GROUP_BYTES: u64 = 16 * blake3::CHUNK_LEN as u64;

/// The chaining values of a block's groups, in order (none for a block of one group, which
/// is checked whole against its name).
#[derive(Clone, PartialEq, Eq)]
pub struct Outboard {
    groups: Vec<ChainingValue>,
}

/// Why an outboard or a group did not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboardError {
    /// The stored values do not merge to the block's name: the outboard itself is damaged.
    #[error("the block's group hashes do not merge to its name")]
    NotOfBlock,
    #[error("an outboard of {bytes} bytes does not fit a block of {len} bytes")]
    WrongSize { bytes: usize, len: u64 },
    /// A group's bytes are not the block's.
    #[error("bytes at offset {offset} do not match the block's name")]
    CorruptGroup { offset: u64 },
}

/// How many groups a block of `len` bytes has (at least one).
pub fn group_count(len: u64) -> u64 {
    len.div_ceil(GROUP_BYTES).max(1)
}

/// The chaining value of group `index` of a block, from its bytes (a whole group, or the
/// block's last, shorter one).
fn group_value(index: u64, bytes: &[u8]) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(index * GROUP_BYTES)
        .update(bytes)
        .finalize_non_root()
}

/// Where blake3 splits a run of `n > 1` subtrees: the left side takes the largest power of
/// two that leaves something on the right. A run of groups splits the way its chunks do,
/// since every split of more than one group falls on a multiple of 16 chunks.
fn left_len(n: usize) -> usize {
    n.div_ceil(2).next_power_of_two()
}

/// The chaining value of a run of subtrees (not the root).
fn merge_value(values: &[ChainingValue]) -> ChainingValue {
    match values {
        [one] => *one,
        _ => {
            let (left, right) = values.split_at(left_len(values.len()));
            merge_subtrees_non_root(&merge_value(left), &merge_value(right), Mode::Hash)
        }
    }
}

/// The root hash of more than one group.
fn merge_root(values: &[ChainingValue]) -> BlockHash {
    let (left, right) = values.split_at(left_len(values.len()));
    let root = merge_subtrees_root(&merge_value(left), &merge_value(right), Mode::Hash);
    BlockHash(*root.as_bytes())
}

impl Outboard {
    /// The outboard of `bytes`, and their name, in one pass over them.
    pub fn of(bytes: &[u8]) -> (Self, BlockHash) {
        let len = bytes.len() as u64;
        if len <= GROUP_BYTES {
            return (Self { groups: Vec::new() }, BlockHash::of(bytes));
        }
        let groups: Vec<ChainingValue> = bytes
            .chunks(GROUP_BYTES as usize)
            .enumerate()
            .map(|(i, group)| group_value(i as u64, group))
            .collect();
        let outboard = Self { groups };
        let name = outboard.root().expect("more than one group");
        (outboard, name)
    }

    /// The name the group values merge to (`None` for a block of one group).
    fn root(&self) -> Option<BlockHash> {
        (self.groups.len() > 1).then(|| merge_root(&self.groups))
    }

    /// The outboard as stored: the group values back to back.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.groups.concat()
    }

    /// A stored outboard of a block of `len` bytes named `name`, checked: its values must
    /// merge to the name, so each can then vouch for its group.
    pub fn from_bytes(bytes: &[u8], len: u64, name: &BlockHash) -> Result<Self, OutboardError> {
        let groups = if len <= GROUP_BYTES {
            0
        } else {
            group_count(len)
        };
        if bytes.len() as u64 != groups * 32 {
            return Err(OutboardError::WrongSize {
                bytes: bytes.len(),
                len,
            });
        }
        let outboard = Self {
            groups: bytes
                .chunks_exact(32)
                .map(|v| v.try_into().expect("32 bytes"))
                .collect(),
        };
        if groups > 0 && outboard.root().as_ref() != Some(name) {
            return Err(OutboardError::NotOfBlock);
        }
        Ok(outboard)
    }

    /// Whether the block is checked by groups (more than one) or only whole.
    pub fn has_groups(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Check group `index`'s bytes (the whole group, or the last one's remainder).
    pub fn check_group(&self, index: u64, bytes: &[u8]) -> Result<(), OutboardError> {
        match self.groups.get(index as usize) {
            Some(value) if group_value(index, bytes) == *value => Ok(()),
            _ => Err(OutboardError::CorruptGroup {
                offset: index * GROUP_BYTES,
            }),
        }
    }
}

impl std::fmt::Debug for Outboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Outboard({} groups)", self.groups.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
            .collect()
    }

    #[test]
    fn group_values_merge_to_blake3_at_every_boundary() {
        let g = GROUP_BYTES as usize;
        for len in [
            0,
            1,
            g - 1,
            g,
            g + 1,
            2 * g,
            2 * g + 1,
            3 * g,
            3 * g + 7,
            4 * g,
            5 * g - 1,
            8 * g,
            8 * g + 1024,
            13 * g + 5,
            64 * g + 1,
        ] {
            let data = bytes(len, len as u8);
            let (outboard, name) = Outboard::of(&data);
            assert_eq!(name, BlockHash::of(&data), "length {len}");
            let stored = Outboard::from_bytes(&outboard.to_bytes(), len as u64, &name).unwrap();
            for (i, group) in data.chunks(g).enumerate().filter(|_| stored.has_groups()) {
                stored.check_group(i as u64, group).unwrap();
            }
        }
    }

    #[test]
    fn a_damaged_group_or_outboard_is_caught() {
        let data = bytes(5 * GROUP_BYTES as usize + 100, 3);
        let (outboard, name) = Outboard::of(&data);
        let mut damaged = data[2 * GROUP_BYTES as usize..3 * GROUP_BYTES as usize].to_vec();
        damaged[17] ^= 0x10;
        assert_eq!(
            outboard.check_group(2, &damaged),
            Err(OutboardError::CorruptGroup {
                offset: 2 * GROUP_BYTES
            })
        );
        assert!(outboard.check_group(9, &damaged).is_err(), "no such group");
        let mut stored = outboard.to_bytes();
        stored[40] ^= 1;
        assert_eq!(
            Outboard::from_bytes(&stored, data.len() as u64, &name),
            Err(OutboardError::NotOfBlock)
        );
        assert!(matches!(
            Outboard::from_bytes(&stored[..64], data.len() as u64, &name),
            Err(OutboardError::WrongSize { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_length_names_the_same_as_blake3(len in 0usize..300_000, seed in any::<u8>()) {
            let data = bytes(len, seed);
            let (outboard, name) = Outboard::of(&data);
            prop_assert_eq!(name, BlockHash::of(&data));
            prop_assert!(Outboard::from_bytes(&outboard.to_bytes(), len as u64, &name).is_ok());
        }
    }
}
