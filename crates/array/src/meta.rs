//! An array's description: dtype, shape and chunk shape, and the grid of chunks they make.
//! Chunks are numbered in C order of the grid; the last chunk along an axis may be shorter
//! (Dask's "uneven" edge chunks).

use serde_json::{Value, json};

use crate::{ArrayError, DType, Result};

/// Dimensions an array may have (NumPy's own limit is 64).
pub const MAX_NDIM: usize = 32;
/// Bytes one chunk may hold (a block holds at most 512 MiB, compressed or not).
pub const MAX_CHUNK_BYTES: u64 = 256 << 20;
/// Chunks one array may have.
pub const MAX_CHUNKS: u64 = 1 << 22;
/// What [`ArrayMeta::auto_chunks`] aims a chunk at (Dask's `array.chunk-size` is 128 MiB;
/// smaller chunks spread an array over more nodes).
pub const AUTO_CHUNK_BYTES: u64 = 32 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayMeta {
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// The shape of every chunk but the last along each axis.
    pub chunks: Vec<u64>,
}

fn bad(reason: impl Into<String>) -> ArrayError {
    ArrayError::BadMeta {
        reason: reason.into(),
    }
}

impl ArrayMeta {
    /// A description, checked ([`Self::check`]).
    pub fn new(dtype: DType, shape: Vec<u64>, chunks: Vec<u64>) -> Result<Self> {
        let meta = Self {
            dtype,
            shape,
            chunks,
        };
        meta.check()?;
        Ok(meta)
    }

    /// Chunks of about [`AUTO_CHUNK_BYTES`]: the whole array, its longest axis halved until
    /// a chunk fits (so chunks stay about square, as Dask's "auto" keeps them).
    pub fn auto_chunks(dtype: &DType, shape: &[u64]) -> Vec<u64> {
        let mut chunks: Vec<u64> = shape.iter().map(|&n| n.max(1)).collect();
        let bytes = |c: &[u64]| c.iter().product::<u64>().saturating_mul(dtype.itemsize());
        while bytes(&chunks) > AUTO_CHUNK_BYTES {
            let Some((axis, _)) = chunks
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 1)
                .max_by_key(|(_, n)| **n)
            else {
                break;
            };
            chunks[axis] = chunks[axis].div_ceil(2);
        }
        chunks
    }

    /// Why this description cannot be stored, if it cannot.
    pub fn check(&self) -> Result<()> {
        if self.shape.len() > MAX_NDIM {
            return Err(bad(format!(
                "{} dimensions, more than {MAX_NDIM}",
                self.shape.len()
            )));
        }
        if self.chunks.len() != self.shape.len() {
            return Err(bad(format!(
                "chunks {:?} do not match shape {:?}",
                self.chunks, self.shape
            )));
        }
        if let Some(axis) = self.chunks.iter().position(|&c| c == 0) {
            return Err(bad(format!("chunks along axis {axis} are empty")));
        }
        let elements = self
            .chunks
            .iter()
            .try_fold(1u64, |n, &c| n.checked_mul(c))
            .ok_or_else(|| bad("a chunk's size overflows"))?;
        let bytes = elements.saturating_mul(self.dtype.itemsize());
        if bytes > MAX_CHUNK_BYTES {
            return Err(bad(format!(
                "chunks {:?} hold {} each, more than {} (choose smaller chunks)",
                self.chunks,
                tern_proto::human_bytes(bytes),
                tern_proto::human_bytes(MAX_CHUNK_BYTES)
            )));
        }
        let count = self
            .grid()
            .iter()
            .try_fold(1u64, |n, &g| n.checked_mul(g))
            .filter(|&n| n <= MAX_CHUNKS)
            .ok_or_else(|| {
                bad(format!(
                    "more than {MAX_CHUNKS} chunks (choose larger chunks)"
                ))
            })?;
        let _ = count;
        Ok(())
    }

    /// Chunks along each axis (at least one, even along an empty axis).
    pub fn grid(&self) -> Vec<u64> {
        self.shape
            .iter()
            .zip(&self.chunks)
            .map(|(&n, &c)| n.div_ceil(c).max(1))
            .collect()
    }

    /// How many chunks (and so partitions) the array has.
    pub fn chunk_count(&self) -> usize {
        self.grid().iter().product::<u64>() as usize
    }

    /// Elements in the whole array.
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// The grid position of chunk `index` (C order).
    pub fn chunk_position(&self, index: usize) -> Vec<u64> {
        let grid = self.grid();
        let mut left = index as u64;
        let mut position = vec![0; grid.len()];
        for axis in (0..grid.len()).rev() {
            position[axis] = left % grid[axis];
            left /= grid[axis];
        }
        position
    }

    /// Where chunk `index` starts along each axis, and its shape.
    pub fn chunk_bounds(&self, index: usize) -> (Vec<u64>, Vec<u64>) {
        let position = self.chunk_position(index);
        let start: Vec<u64> = position
            .iter()
            .zip(&self.chunks)
            .map(|(&p, &c)| p * c)
            .collect();
        let shape = start
            .iter()
            .zip(&self.chunks)
            .zip(&self.shape)
            .map(|((&s, &c), &n)| c.min(n.saturating_sub(s)))
            .collect();
        (start, shape)
    }

    /// Elements in chunk `index`.
    pub fn chunk_elements(&self, index: usize) -> u64 {
        self.chunk_bounds(index).1.iter().product()
    }

    /// The description as a dataset's schema.
    pub fn to_json(&self) -> String {
        json!({
            "dtype": self.dtype.to_json(),
            "shape": self.shape,
            "chunks": self.chunks,
        })
        .to_string()
    }

    /// A description from a dataset's schema, checked.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let dims = |key: &str| -> Result<Vec<u64>> {
            value
                .get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| bad(format!("no {key} list")))?
                .iter()
                .map(|v| v.as_u64().ok_or_else(|| bad(format!("{key} holds {v}"))))
                .collect()
        };
        let dtype = DType::from_json(value.get("dtype").ok_or_else(|| bad("no dtype"))?)?;
        Self::new(dtype, dims("shape")?, dims("chunks")?)
    }

    /// The array as people read it: `float64 (1000, 1000), 8 chunks of (250, 500), 7.6 MiB`.
    pub fn describe(&self) -> String {
        let count = self.chunk_count();
        format!(
            "{} {}, {count} chunk{} of {}, {}",
            self.dtype.name(),
            tuple(&self.shape),
            if count == 1 { "" } else { "s" },
            tuple(&self.chunks),
            tern_proto::human_bytes(self.elements().saturating_mul(self.dtype.itemsize()))
        )
    }
}

/// A shape as NumPy prints it: `(3,)`, `(2, 3)`, `()`.
pub fn tuple(dims: &[u64]) -> String {
    match dims {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            dims.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_has_uneven_edge_chunks_numbered_in_c_order() {
        let meta = ArrayMeta::new(DType::Float(8), vec![5, 7], vec![2, 3]).unwrap();
        assert_eq!(meta.grid(), vec![3, 3]);
        assert_eq!(meta.chunk_count(), 9);
        assert_eq!(meta.chunk_bounds(0), (vec![0, 0], vec![2, 3]));
        assert_eq!(meta.chunk_bounds(5), (vec![2, 6], vec![2, 1]));
        assert_eq!(meta.chunk_bounds(8), (vec![4, 6], vec![1, 1]));
        let back = ArrayMeta::from_json(&meta.to_json()).unwrap();
        assert_eq!(back, meta);
        // A 0-d array is one chunk of one element; an empty axis still one chunk.
        let scalar = ArrayMeta::new(DType::Int(4), vec![], vec![]).unwrap();
        assert_eq!((scalar.chunk_count(), scalar.chunk_elements(0)), (1, 1));
        let empty = ArrayMeta::new(DType::Int(4), vec![0, 3], vec![1, 3]).unwrap();
        assert_eq!((empty.chunk_count(), empty.chunk_elements(0)), (1, 0));
    }

    #[test]
    fn descriptions_that_do_not_hold_together_are_refused() {
        for (shape, chunks, says) in [
            (vec![4], vec![2, 2], "do not match"),
            (vec![4], vec![0], "empty"),
            (vec![1 << 40], vec![1 << 30], "more than 256.0 MiB"),
            (vec![1 << 40], vec![1], "more than"),
        ] {
            let err = ArrayMeta::new(DType::Float(8), shape, chunks).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
        assert!(
            ArrayMeta::from_json("{\"dtype\": \"|O\", \"shape\": [], \"chunks\": []}").is_err()
        );
    }

    #[test]
    fn auto_chunks_stay_square_and_under_the_target() {
        let chunks = ArrayMeta::auto_chunks(&DType::Float(8), &[20_000, 20_000]);
        assert_eq!(chunks, vec![2500, 1250]);
        assert!(chunks.iter().product::<u64>() * 8 <= AUTO_CHUNK_BYTES);
        assert_eq!(ArrayMeta::auto_chunks(&DType::Float(8), &[10]), vec![10]);
    }
}
