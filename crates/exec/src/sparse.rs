//! Reading a stored partition by column. A block is an Arrow IPC stream; its messages'
//! metadata says where each column's buffers lie in each batch's body, so a scan of a few
//! columns needs only the metadata, the dictionaries and those columns' buffers.
//! [`read_columns_sparse`] walks the stream through a [`GroupSource`] (the node's store, which
//! checks every group it reads against the block's name) and returns a buffer of the block's
//! length holding what it read; the rest stays zeros, which [`check_block_columns`] and the
//! projected decoder never look into.
//!
//! [`check_block_columns`]: crate::validate::check_block_columns

use std::collections::BTreeSet;

use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Schema};
use arrow::ipc;
use memmap2::MmapMut;
use tern_proto::GROUP_BYTES;

use crate::validate::{BadBlock, MAX_METADATA_BYTES, column_spans};

/// A block's bytes a group ([`GROUP_BYTES`]) at a time, each checked against its name.
pub trait GroupSource {
    /// The block's size in bytes.
    fn len(&self) -> u64;
    /// Read groups `groups` (ascending indexes) into `out`, which is the block's length, at
    /// their offsets.
    fn read_groups(&mut self, groups: &[u64], out: &mut [u8]) -> Result<(), String>;
}

/// Why a block could not be read by column.
#[derive(Debug, thiserror::Error)]
pub enum SparseError {
    /// Reading failed, or a group was not the block's: another copy may do.
    #[error("{0}")]
    Read(String),
    /// The bytes, checked against the block's name, are not a valid stream: so is every copy.
    #[error(transparent)]
    Bad(#[from] BadBlock),
}

/// The bytes of `columns` (positions in `schema`) of the block `source` reads, with every
/// message's metadata and every dictionary, in a buffer of the block's length: see the
/// module docs.
pub fn read_columns_sparse(
    source: &mut dyn GroupSource,
    schema: &Schema,
    columns: &[usize],
) -> Result<Buffer, SparseError> {
    let len = source.len();
    let types: Vec<DataType> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    if len == 0 {
        return Err(SparseError::Bad(BadBlock {
            reason: "the block is empty".into(),
        }));
    }
    // Pages the kernel hands over zeroed, faulted in only where groups land: a heap buffer
    // would be cleared whole for every read (glibc reuses freed memory below 32 MiB).
    let bytes = MmapMut::map_anon(len as usize)
        .map_err(|e| SparseError::Read(format!("no memory for a {len}-byte block: {e}")))?;
    // Small pages: a 2 MiB huge page would be cleared whole for the one group read into it
    // (every batch's metadata is a group, so most would be). Only advice: ignored if refused.
    #[cfg(target_os = "linux")]
    let _ = bytes.advise(memmap2::Advice::NoHugePage);
    let mut sparse = Sparse {
        bytes,
        have: vec![false; len.div_ceil(GROUP_BYTES) as usize],
        source,
    };
    let bad = |reason: String| SparseError::Bad(BadBlock { reason });
    let mut at = 0u64;
    // The schema message and the first batch's metadata are usually in the first group.
    sparse.ensure(&[(0, 8)])?;
    while at < len {
        sparse.ensure(&[(at, at + 8)])?;
        let word = sparse.le_u32(at)?;
        let (prefix, meta_len) = if word == u32::MAX {
            (8, sparse.le_u32(at + 4)?)
        } else {
            (4, word)
        };
        let meta_len = meta_len as u64;
        if meta_len == 0 {
            break;
        }
        let meta_start = at + prefix;
        if meta_len > MAX_METADATA_BYTES as u64 || meta_len > len.saturating_sub(meta_start) {
            return Err(bad(format!(
                "a message's metadata of {meta_len} bytes runs past the block's end"
            )));
        }
        let body_start = meta_start + meta_len;
        sparse.ensure(&[(meta_start, body_start)])?;
        let metadata = &sparse.bytes[meta_start as usize..body_start as usize];
        let message = ipc::root_as_message(metadata)
            .map_err(|e| bad(format!("undecodable message metadata: {e}")))?;
        let body_len = message.bodyLength();
        if body_len < 0 || body_len as u64 > len - body_start {
            return Err(bad(format!(
                "a message body of {body_len} bytes runs past the block's end"
            )));
        }
        let body_end = body_start + body_len as u64;
        // The next message's length prefix comes with this message's columns.
        let mut wanted = vec![(body_end, body_end + 8)];
        match message.header_as_record_batch() {
            Some(batch) => {
                let spans = column_spans(batch, body_len as u64, &types)?;
                for &c in columns {
                    let span = spans
                        .get(c)
                        .ok_or_else(|| bad(format!("the block has no column {c}")))?;
                    if let Some((from, to)) = span {
                        wanted.push((body_start + from, body_start + to));
                    }
                }
            }
            // The schema (no body) and dictionaries (read whole, as any column may use them).
            None => wanted.push((body_start, body_end)),
        }
        sparse.ensure(&wanted)?;
        at = body_end;
    }
    Ok(Buffer::from(bytes::Bytes::from_owner(sparse.bytes)))
}

/// A block being read: its bytes so far, and which groups are in.
struct Sparse<'a> {
    bytes: MmapMut,
    have: Vec<bool>,
    source: &'a mut dyn GroupSource,
}

impl Sparse<'_> {
    /// Read the groups covering `ranges` (start, end; clipped to the block) not read yet.
    fn ensure(&mut self, ranges: &[(u64, u64)]) -> Result<(), SparseError> {
        let len = self.bytes.len() as u64;
        let mut missing = BTreeSet::new();
        for &(start, end) in ranges {
            let end = end.min(len);
            if start >= end {
                continue;
            }
            for group in start / GROUP_BYTES..=(end - 1) / GROUP_BYTES {
                if !self.have[group as usize] {
                    missing.insert(group);
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let missing: Vec<u64> = missing.into_iter().collect();
        self.source
            .read_groups(&missing, &mut self.bytes[..])
            .map_err(SparseError::Read)?;
        for group in missing {
            self.have[group as usize] = true;
        }
        Ok(())
    }

    fn le_u32(&self, at: u64) -> Result<u32, SparseError> {
        self.bytes
            .get(at as usize..at as usize + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")))
            .ok_or_else(|| {
                SparseError::Bad(BadBlock {
                    reason: "the stream is cut short".into(),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;
    use arrow::record_batch::RecordBatch;

    use super::*;
    use crate::validate::check_block_columns;

    /// A block in memory, counting the bytes read.
    struct InMemory {
        bytes: Vec<u8>,
        read: u64,
    }

    impl GroupSource for InMemory {
        fn len(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn read_groups(&mut self, groups: &[u64], out: &mut [u8]) -> Result<(), String> {
            assert!(groups.is_sorted());
            for &g in groups {
                let start = (g * GROUP_BYTES) as usize;
                let end = (start + GROUP_BYTES as usize).min(self.bytes.len());
                out[start..end].copy_from_slice(&self.bytes[start..end]);
                self.read += (end - start) as u64;
            }
            Ok(())
        }
    }

    fn wide() -> (Arc<Schema>, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(
            (0..8)
                .map(|c| {
                    if c == 3 {
                        Field::new(format!("c{c}"), DataType::Utf8, true)
                    } else {
                        Field::new(format!("c{c}"), DataType::Int64, false)
                    }
                })
                .collect::<Vec<_>>(),
        ));
        let batches = (0..6)
            .map(|b| {
                let columns = (0..8)
                    .map(|c| {
                        if c == 3 {
                            Arc::new(StringArray::from_iter_values(
                                (0..8192).map(|i| format!("row {b} {i}")),
                            )) as _
                        } else {
                            Arc::new(Int64Array::from_iter_values(
                                (0..8192).map(|i| (i * 7919 + b * 31 + c) % 1_000_003),
                            )) as _
                        }
                    })
                    .collect();
                RecordBatch::try_new(schema.clone(), columns).unwrap()
            })
            .collect();
        (schema, batches)
    }

    /// The batches as a stored block is written: zstd, or plain.
    fn block(schema: &Arc<Schema>, batches: &[RecordBatch], zstd: bool) -> Vec<u8> {
        use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
        let compression = zstd.then_some(arrow::ipc::CompressionType::ZSTD);
        let options = IpcWriteOptions::default()
            .try_with_compression(compression)
            .unwrap();
        let mut writer = StreamWriter::try_new_with_options(Vec::new(), schema, options).unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.finish().unwrap();
        writer.into_inner().unwrap()
    }

    /// The bytes of `columns`' buffers in every batch of `block`, and its batches.
    fn column_bytes(block: &[u8], schema: &Schema, columns: &[usize]) -> (u64, u64) {
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let (mut at, mut bytes, mut batches) = (0usize, 0u64, 0u64);
        while at + 8 <= block.len() {
            let meta = u32::from_le_bytes(block[at + 4..at + 8].try_into().unwrap()) as usize;
            if meta == 0 {
                break;
            }
            let message = ipc::root_as_message(&block[at + 8..at + 8 + meta]).unwrap();
            if let Some(batch) = message.header_as_record_batch() {
                let spans = column_spans(batch, message.bodyLength() as u64, &types).unwrap();
                bytes += columns
                    .iter()
                    .filter_map(|&c| spans[c])
                    .map(|(from, to)| to - from)
                    .sum::<u64>();
                batches += 1;
            }
            at += 8 + meta + message.bodyLength() as usize;
        }
        (bytes, batches)
    }

    #[test]
    fn columns_read_are_their_bytes_rounded_to_groups_and_decode_the_same() {
        let (schema, batches) = wide();
        for zstd in [false, true] {
            let bytes = block(&schema, &batches, zstd);
            for columns in [vec![5], vec![3, 0], vec![]] {
                let mut source = InMemory {
                    bytes: bytes.clone(),
                    read: 0,
                };
                let sparse = read_columns_sparse(&mut source, &schema, &columns).unwrap();
                // Each span rounds out to at most two more groups; each message's metadata
                // (read with the batch before it) to one or two.
                let (wanted, count) = column_bytes(&bytes, &schema, &columns);
                let bound = wanted + (2 * columns.len() as u64 + 2) * (count + 1) * GROUP_BYTES;
                assert!(
                    source.read >= wanted && source.read <= bound,
                    "columns {columns:?}, zstd {zstd}: read {} for {wanted} wanted, of {}",
                    source.read,
                    bytes.len()
                );
                assert!(
                    source.read < bytes.len() as u64 * 3 / 4,
                    "columns {columns:?}: read {} of {}",
                    source.read,
                    bytes.len()
                );
                check_block_columns(&sparse, &schema, 6 * 8192, Some(&columns)).unwrap();
                let (_, decoded) =
                    crate::ipc::ipc_to_batches_projected(sparse, Some(columns.clone())).unwrap();
                let expected: Vec<RecordBatch> = batches
                    .iter()
                    .map(|b| b.project(&columns).unwrap())
                    .collect();
                assert_eq!(decoded, expected, "columns {columns:?}");
            }
        }
    }

    #[test]
    fn a_column_not_read_is_not_checked_but_the_metadata_always_is() {
        let (schema, batches) = wide();
        let bytes = block(&schema, &batches, true);
        let mut source = InMemory {
            bytes: bytes.clone(),
            read: 0,
        };
        let sparse = read_columns_sparse(&mut source, &schema, &[1]).unwrap();
        // Column 3's compressed buffers are zeros here: they declare no length.
        assert!(check_block_columns(&sparse, &schema, 6 * 8192, Some(&[3])).is_err());
        assert!(check_block_columns(&sparse, &schema, 6 * 8192 + 1, Some(&[1])).is_err());
        let mut cut = InMemory {
            bytes: bytes[..bytes.len() / 2].to_vec(),
            read: 0,
        };
        assert!(matches!(
            read_columns_sparse(&mut cut, &schema, &[1]),
            Err(SparseError::Bad(_))
        ));
    }
}
