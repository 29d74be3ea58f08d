//! Chunks in and out: the bytes of a chunk cut from an array's C-order bytes (or from a band
//! of it: the rows of one row of chunks, so a file is read and written a band at a time),
//! placed back, and carried as the one-column Arrow batch a block holds.

use std::sync::Arc;

use arrow::array::{ArrayData, make_array};
use arrow::buffer::Buffer;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::{ArrayError, ArrayMeta, DType, Result};

/// The name of a chunk's one column.
pub const COLUMN: &str = "values";

/// The Arrow schema of every chunk of an array of `dtype`.
pub fn schema(dtype: &DType) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        COLUMN,
        dtype.arrow_type(),
        false,
    )]))
}

/// The chunk schema as a dataset record keeps a table's (`[{"name", "type", "nullable"}]`),
/// what a node checks a chunk's block against before a kernel reads it.
pub fn schema_json(dtype: &DType) -> String {
    serde_json::json!([{
        "name": COLUMN,
        "type": dtype.arrow_type().to_string(),
        "nullable": false,
    }])
    .to_string()
}

/// Copy the box of shape `size` at `from` in C-order array `src` (shape `src_shape`) to `at`
/// in C-order array `dst` (shape `dst_shape`); elements of `itemsize` bytes.
#[allow(clippy::too_many_arguments)]
fn copy_box(
    src: &[u8],
    src_shape: &[u64],
    from: &[u64],
    dst: &mut [u8],
    dst_shape: &[u64],
    at: &[u64],
    size: &[u64],
    itemsize: u64,
) {
    let ndim = size.len();
    if size.contains(&0) {
        return;
    }
    if ndim == 0 {
        dst[..itemsize as usize].copy_from_slice(&src[..itemsize as usize]);
        return;
    }
    let strides = |shape: &[u64]| {
        let mut s = vec![itemsize; shape.len()];
        for axis in (0..shape.len().saturating_sub(1)).rev() {
            s[axis] = s[axis + 1] * shape[axis + 1];
        }
        s
    };
    let (src_strides, dst_strides) = (strides(src_shape), strides(dst_shape));
    let run = (size[ndim - 1] * itemsize) as usize;
    // An odometer over every axis but the last: each position is one contiguous run.
    let mut position = vec![0u64; ndim - 1];
    loop {
        let mut s = from[ndim - 1] * itemsize;
        let mut d = at[ndim - 1] * itemsize;
        for axis in 0..ndim - 1 {
            s += (from[axis] + position[axis]) * src_strides[axis];
            d += (at[axis] + position[axis]) * dst_strides[axis];
        }
        let (s, d) = (s as usize, d as usize);
        dst[d..d + run].copy_from_slice(&src[s..s + run]);
        let mut axis = ndim - 1;
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            position[axis] += 1;
            if position[axis] < size[axis] {
                break;
            }
            position[axis] = 0;
        }
    }
}

/// The rows of axis 0 that row `band` of the chunk grid covers: (first row, rows). A 0-d
/// array is one band of its one element.
pub fn band_rows(meta: &ArrayMeta, band: u64) -> (u64, u64) {
    match (meta.shape.first(), meta.chunks.first()) {
        (Some(&n), Some(&c)) => (band * c, c.min(n.saturating_sub(band * c))),
        _ => (0, 1),
    }
}

/// How many bands (rows of the chunk grid) the array has.
pub fn bands(meta: &ArrayMeta) -> u64 {
    meta.grid().first().copied().unwrap_or(1)
}

/// The chunks of band `band`, in order.
pub fn band_chunks(meta: &ArrayMeta, band: u64) -> std::ops::Range<usize> {
    let per_band = meta.grid().iter().skip(1).product::<u64>() as usize;
    let first = band as usize * per_band;
    first..first + per_band
}

/// The shape of band `band` as an array of its own.
fn band_shape(meta: &ArrayMeta, band: u64) -> Vec<u64> {
    let mut shape = meta.shape.clone();
    if let Some(rows) = shape.first_mut() {
        *rows = band_rows(meta, band).1;
    }
    shape
}

/// Bytes of band `band` (C order).
pub fn band_bytes(meta: &ArrayMeta, band: u64) -> u64 {
    band_shape(meta, band).iter().product::<u64>() * meta.dtype.itemsize()
}

/// Chunk `index`'s bytes, cut from the C-order bytes of its band `data`.
pub fn cut_from_band(meta: &ArrayMeta, data: &[u8], index: usize) -> Vec<u8> {
    let (start, size) = meta.chunk_bounds(index);
    let band = meta.chunk_position(index).first().copied().unwrap_or(0);
    let mut from = start;
    if let Some(row) = from.first_mut() {
        *row -= band_rows(meta, band).0;
    }
    let itemsize = meta.dtype.itemsize();
    let mut out = vec![0u8; (size.iter().product::<u64>() * itemsize) as usize];
    copy_box(
        data,
        &band_shape(meta, band),
        &from,
        &mut out,
        &size,
        &vec![0; size.len()],
        &size,
        itemsize,
    );
    out
}

/// Put chunk `index`'s bytes in their place in the C-order bytes of its band `data`.
pub fn place_in_band(meta: &ArrayMeta, data: &mut [u8], index: usize, chunk: &[u8]) {
    let (start, size) = meta.chunk_bounds(index);
    let band = meta.chunk_position(index).first().copied().unwrap_or(0);
    let mut at = start;
    if let Some(row) = at.first_mut() {
        *row -= band_rows(meta, band).0;
    }
    copy_box(
        chunk,
        &size,
        &vec![0; size.len()],
        data,
        &band_shape(meta, band),
        &at,
        &size,
        meta.dtype.itemsize(),
    );
}

/// Elements per batch of a chunk's block (the node's reader takes at most 16 million rows
/// in one batch).
pub const BATCH_ELEMENTS: usize = 1 << 20;

/// A chunk's bytes as the batches its block holds, [`BATCH_ELEMENTS`] elements each at most.
pub fn to_batches(dtype: &DType, bytes: Vec<u8>) -> Result<Vec<RecordBatch>> {
    let whole = to_batch(dtype, bytes)?;
    let rows = whole.num_rows();
    if rows == 0 {
        return Ok(vec![whole]);
    }
    Ok((0..rows)
        .step_by(BATCH_ELEMENTS)
        .map(|start| whole.slice(start, BATCH_ELEMENTS.min(rows - start)))
        .collect())
}

/// A chunk's bytes as one batch.
pub fn to_batch(dtype: &DType, bytes: Vec<u8>) -> Result<RecordBatch> {
    let itemsize = dtype.itemsize() as usize;
    if bytes.len() % itemsize != 0 {
        return Err(ArrayError::BadChunk {
            index: 0,
            reason: format!(
                "{} bytes are not whole {itemsize}-byte elements",
                bytes.len()
            ),
        });
    }
    let data = ArrayData::builder(dtype.arrow_type())
        .len(bytes.len() / itemsize)
        .add_buffer(Buffer::from_vec(bytes))
        // Bytes read from a file are aligned to 1; Arrow's numbers want their own alignment
        // (copied only when they do not have it).
        .align_buffers(true)
        .build()?;
    Ok(RecordBatch::try_new(schema(dtype), vec![make_array(data)])?)
}

/// Chunk `index`'s bytes from the batches of its block, checked against `meta`: the column's
/// type, no missing values, the element count its place in the grid says.
pub fn from_batches(meta: &ArrayMeta, index: usize, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let bad = |reason: String| ArrayError::BadChunk { index, reason };
    let itemsize = meta.dtype.itemsize() as usize;
    let want = meta.chunk_elements(index) as usize;
    let mut out = Vec::with_capacity(want * itemsize);
    for batch in batches {
        if batch.num_columns() != 1 {
            return Err(bad(format!("{} columns, not one", batch.num_columns())));
        }
        let column = batch.column(0);
        if column.data_type() != &meta.dtype.arrow_type() {
            return Err(bad(format!(
                "values of type {}, not {}",
                column.data_type(),
                meta.dtype.arrow_type()
            )));
        }
        if column.null_count() > 0 {
            return Err(bad("missing values".into()));
        }
        let data = column.to_data();
        let values = &data.buffers()[0];
        let (start, len) = (data.offset() * itemsize, data.len() * itemsize);
        out.extend_from_slice(&values.as_slice()[start..start + len]);
    }
    if out.len() != want * itemsize {
        return Err(bad(format!(
            "{} elements where its place in the grid has {want}",
            out.len() / itemsize
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// An array's C-order bytes cut into chunks band by band and placed back is the array.
    fn round_trip(meta: &ArrayMeta, data: &[u8]) -> Vec<u8> {
        let mut whole = Vec::new();
        for band in 0..bands(meta) {
            let (first, _) = band_rows(meta, band);
            let row_bytes = meta.shape.iter().skip(1).product::<u64>() * meta.dtype.itemsize();
            let start = (first * row_bytes) as usize;
            let source = &data[start..start + band_bytes(meta, band) as usize];
            let mut rebuilt = vec![0u8; source.len()];
            for index in band_chunks(meta, band) {
                let chunk = cut_from_band(meta, source, index);
                assert_eq!(
                    chunk.len() as u64,
                    meta.chunk_elements(index) * meta.dtype.itemsize()
                );
                let batch = to_batch(&meta.dtype, chunk.clone()).unwrap();
                assert_eq!(from_batches(meta, index, &[batch]).unwrap(), chunk);
                place_in_band(meta, &mut rebuilt, index, &chunk);
            }
            whole.extend(rebuilt);
        }
        whole
    }

    #[test]
    fn a_chunk_holds_its_box_of_the_array() {
        // 3 x 4 of u8 counting up, chunks 2 x 3: chunk 1 is rows 0-1, column 3.
        let meta = ArrayMeta::new(DType::UInt(1), vec![3, 4], vec![2, 3]).unwrap();
        let data: Vec<u8> = (0..12).collect();
        assert_eq!(cut_from_band(&meta, &data[..8], 0), vec![0, 1, 2, 4, 5, 6]);
        assert_eq!(cut_from_band(&meta, &data[..8], 1), vec![3, 7]);
        assert_eq!(cut_from_band(&meta, &data[8..], 3), vec![11]);
        assert_eq!(round_trip(&meta, &data), data);
    }

    #[test]
    fn a_chunk_of_the_wrong_size_or_type_is_refused() {
        let meta = ArrayMeta::new(DType::Int(4), vec![10], vec![4]).unwrap();
        let short = to_batch(&meta.dtype, vec![0; 8]).unwrap();
        let err = from_batches(&meta, 0, &[short]).unwrap_err().to_string();
        assert!(
            err.contains("2 elements where its place in the grid has 4"),
            "{err}"
        );
        let other = to_batch(&DType::Float(4), vec![0; 16]).unwrap();
        assert!(from_batches(&meta, 0, &[other]).is_err());
    }

    proptest! {
        #[test]
        fn any_chunking_of_any_shape_round_trips(
            shape in proptest::collection::vec(0u64..7, 0..4),
            seeds in proptest::collection::vec(1u64..5, 4),
            itemsize in prop::sample::select(vec![1u8, 2, 4, 8]),
        ) {
            let chunks: Vec<u64> = shape.iter().zip(&seeds).map(|(_, &c)| c).collect();
            let meta = ArrayMeta::new(DType::Int(itemsize), shape.clone(), chunks).unwrap();
            let bytes = (meta.elements() * meta.dtype.itemsize()) as usize;
            let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + 3) as u8).collect();
            prop_assert_eq!(round_trip(&meta, &data), data);
        }
    }
}
