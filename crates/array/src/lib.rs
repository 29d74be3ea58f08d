//! Chunked n-dimensional arrays as tern stores them (Dask's Array, NumPy's dtypes): an array
//! dataset has format [`FORMAT`], its schema is an [`ArrayMeta`] (dtype, shape, chunk shape)
//! as JSON, and partition `i` is chunk `i` of the chunk grid in C order, one block held by
//! three nodes like any partition.
//!
//! A chunk's block is an Arrow IPC stream of one column, `values`: the chunk's elements in C
//! order, little-endian, as NumPy lays them out (numbers as Arrow numbers, everything else as
//! fixed-size binary of the dtype's item size), compressed when it pays as every block is. So the store,
//! its integrity checks and the readers need nothing new, and pyarrow hands a chunk to NumPy
//! without a copy.
//!
//! It owns dtypes ([`DType`]: which NumPy types tern stores and why others are refused),
//! chunk grids ([`ArrayMeta`]), cutting C-order bytes into chunks and putting them back
//! ([`chunk`]) and `.npy` files ([`npy`]). It does not store, fetch or compute: the client
//! and the CLI store and fetch, the nodes' kernels compute.

pub mod chunk;
pub mod dtype;
pub mod meta;
pub mod npy;

pub use dtype::DType;
pub use meta::ArrayMeta;

/// The dataset format of arrays.
pub const FORMAT: &str = "ndarray";

#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    /// A NumPy dtype tern does not store, and why.
    #[error("dtype {dtype}: {why}")]
    UnsupportedDtype { dtype: String, why: String },
    /// An array's description does not hold together.
    #[error("array description: {reason}")]
    BadMeta { reason: String },
    /// A `.npy` file that cannot be read.
    #[error("not a .npy file tern can read: {reason}")]
    BadNpy { reason: String },
    /// A chunk's block is not what the array's description says it is.
    #[error("chunk {index}: {reason}")]
    BadChunk { index: usize, reason: String },
    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = ArrayError> = std::result::Result<T, E>;
