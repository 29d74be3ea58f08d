"""Chunked n-dimensional arrays stored in the cluster, with ``dask.array``'s names.

An array is cut into chunks (a regular chunk shape; the last chunk along an axis may be
shorter); each chunk is one block held by three nodes, its elements in C order and
little-endian, as NumPy lays them out. ``from_array`` stores any array-like a chunk at a
time (a NumPy array, a memory-mapped ``.npy``, an h5py dataset), ``compute()`` brings it
back as NumPy. The ``tern`` command reads and writes the same arrays: ``tern put x.npy``,
``tern get x --out x.npy``.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from . import _tern

if TYPE_CHECKING:
    from .client import Client

FORMAT = "ndarray"
# Numbers stay numbers in a chunk's block; every other dtype is its bytes, fixed-size.
_ARROW_NUMBERS = {
    "b1": pa.uint8(),
    "i1": pa.int8(),
    "i2": pa.int16(),
    "i4": pa.int32(),
    "i8": pa.int64(),
    "u1": pa.uint8(),
    "u2": pa.uint16(),
    "u4": pa.uint32(),
    "u8": pa.uint64(),
    "f2": pa.float16(),
    "f4": pa.float32(),
    "f8": pa.float64(),
}


def _little(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("<") if dtype.byteorder == ">" or dtype.fields else dtype


def _descr(dtype: np.dtype) -> Any:
    """NumPy's descr of ``dtype`` as tern stores it (little-endian; records as lists)."""
    dtype = _little(dtype)
    if dtype.fields is None:
        return dtype.str
    return [[name, _descr(dtype.fields[name][0])] for name in dtype.names or ()]


def _arrow_type(dtype: np.dtype) -> pa.DataType:
    found = _ARROW_NUMBERS.get(dtype.str[1:]) if dtype.fields is None else None
    return found if found is not None else pa.binary(dtype.itemsize)


def _chunk_bounds(shape: Sequence[int], chunksize: Sequence[int], index: int) -> Tuple[List[int], List[int]]:
    """Where chunk ``index`` (C order of the grid) starts along each axis, and its shape."""
    grid = [max(1, math.ceil(n / c)) for n, c in zip(shape, chunksize)]
    position = []
    for g in reversed(grid):
        position.append(index % g)
        index //= g
    position.reverse()
    start = [p * c for p, c in zip(position, chunksize)]
    size = [min(c, n - s) for s, c, n in zip(start, chunksize, shape)]
    return start, size


def normalize_chunks(chunks: Any, shape: Sequence[int], dtype: np.dtype) -> Tuple[int, ...]:
    """A regular chunk shape from what ``dask.array`` takes: ``"auto"``, an int for every
    axis, a tuple (``-1`` or ``None`` for a whole axis), or Dask's per-axis block lengths when
    they are regular."""
    if chunks is None or chunks == "auto":
        meta = json.loads(_tern.array_auto_chunks(json.dumps(_descr(dtype)), list(shape)))
        return tuple(int(c) for c in meta)
    if isinstance(chunks, int):
        chunks = (chunks,) * len(shape)
    chunks = tuple(chunks)
    if len(chunks) != len(shape):
        raise ValueError(f"chunks {chunks} do not match the shape {tuple(shape)}")
    out = []
    for axis, (c, n) in enumerate(zip(chunks, shape)):
        if isinstance(c, tuple):
            lengths = list(c)
            if sum(lengths) != n or any(x != lengths[0] for x in lengths[:-1]) or lengths[-1] > lengths[0]:
                raise ValueError(f"chunks along axis {axis}, {c}, are not regular (tern stores regular chunks)")
            c = lengths[0]
        if c is None or c == -1:
            c = n
        out.append(max(1, int(c)))
    return tuple(out)


def _chunk_table(values: np.ndarray) -> pa.Table:
    """A chunk (C-contiguous, little-endian) as the one-column table its block holds."""
    flat = values.reshape(-1)
    kind = _arrow_type(values.dtype)
    if pa.types.is_fixed_size_binary(kind):
        column = pa.Array.from_buffers(kind, len(flat), [None, pa.py_buffer(flat.tobytes())])
    else:
        column = pa.array(flat.view(kind.to_pandas_dtype()) if values.dtype.kind == "b" else flat, type=kind)
    schema = pa.schema([pa.field("values", kind, nullable=False)])
    return pa.Table.from_arrays([column], schema=schema)


def _chunk_values(table: pa.Table, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
    """A chunk's block as the NumPy array it holds."""
    column = table.column(0).combine_chunks()
    count = len(column)
    if pa.types.is_fixed_size_binary(column.type):
        data = column.buffers()[1]
        values = np.frombuffer(data, dtype=dtype, count=count, offset=column.offset * dtype.itemsize)
    else:
        values = column.to_numpy(zero_copy_only=False)
        if dtype.kind == "b":
            values = values.view(np.bool_)
    return values.reshape(shape)


class Array:
    """A chunked n-dimensional array stored in the cluster (Dask's ``dask.array.Array``):
    made by :func:`from_array`, :func:`from_npy` or ``client.array(name)``."""

    def __init__(self, client: "Client", name: str, record: Dict[str, Any]):
        if record["format"] != FORMAT:
            raise TypeError(f"{name!r} is a table, not an array: client.table({name!r}) reads it")
        meta = json.loads(record["schema"])
        self._client = client
        self.name = name
        self.version = int(record["version"])
        self.shape: Tuple[int, ...] = tuple(int(n) for n in meta["shape"])
        self.chunksize: Tuple[int, ...] = tuple(int(c) for c in meta["chunks"])
        self.dtype = _dtype_of(meta["dtype"])
        self._nchunks = len(record["partitions"])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def chunks(self) -> Tuple[Tuple[int, ...], ...]:
        """Block lengths along each axis, as Dask gives them: ``((300, 300, 300, 100), (700,))``."""
        out = []
        for n, c in zip(self.shape, self.chunksize):
            full, rest = divmod(n, c)
            out.append((c,) * full + ((rest,) if rest or n == 0 else ()))
        return tuple(out)

    @property
    def numblocks(self) -> Tuple[int, ...]:
        return tuple(max(1, len(c)) for c in self.chunks)

    @property
    def npartitions(self) -> int:
        return self._nchunks

    def _blocks(self) -> Iterator[Tuple[int, Tuple[slice, ...], List[int]]]:
        for index in range(self._nchunks):
            start, size = _chunk_bounds(self.shape, self.chunksize, index)
            yield index, tuple(slice(s, s + n) for s, n in zip(start, size)), size

    def compute(self) -> np.ndarray:
        """The whole array as NumPy, each chunk read from one of its holders."""
        import pyarrow.ipc

        out = np.empty(self.shape, dtype=self.dtype)
        for index, where, size in self._blocks():
            ipc = self._client._native.read_partition(self.name, index)
            table = pyarrow.ipc.open_stream(pa.py_buffer(ipc)).read_all()
            out[where] = _chunk_values(table, self.dtype, size)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.compute()
        return values if dtype is None else values.astype(dtype)

    def to_npy(self, path: str) -> None:
        """Write it to ``.npy`` file ``path`` (as ``tern get NAME --out path`` does)."""
        np.save(path, self.compute())

    def __repr__(self) -> str:
        return (
            f"tern.array<{self.name}, shape={self.shape}, dtype={self.dtype}, "
            f"chunksize={self.chunksize}, chunktype=numpy.ndarray>"
        )


def _dtype_of(descr: Any) -> np.dtype:
    if isinstance(descr, str):
        return np.dtype(descr)
    return np.dtype([(name, _dtype_of(inner)) for name, inner in descr])


def from_array(
    x: Any,
    chunks: Any = "auto",
    name: Optional[str] = None,
    client: Optional["Client"] = None,
    replace: bool = False,
) -> Array:
    """Store array-like ``x`` (anything with ``shape``, ``dtype`` and NumPy slicing: a NumPy
    array, a memory-mapped ``.npy``, an h5py dataset) in the cluster as array ``name`` (a
    name made from its contents when not given), cut into ``chunks``, one chunk read from
    ``x`` at a time. Object arrays are refused: their elements are Python objects, not
    values."""
    from .client import get_client

    client = client or get_client()
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    shape = tuple(int(n) for n in x.shape)
    dtype = _little(np.dtype(x.dtype))
    descr = json.dumps(_descr(dtype))
    chunksize = normalize_chunks(chunks, shape, dtype)
    meta = json.dumps({"dtype": json.loads(descr), "shape": list(shape), "chunks": list(chunksize)})
    _tern.array_check(meta)  # the refusals the cluster would make, before anything is sent
    count = int(np.prod([max(1, math.ceil(n / c)) for n, c in zip(shape, chunksize)], dtype=np.int64))
    parts = []
    digest = None
    if name is None:
        import hashlib

        digest = hashlib.blake2b(meta.encode(), digest_size=8)
    for index in range(count):
        start, size = _chunk_bounds(shape, chunksize, index)
        where = tuple(slice(s, s + n) for s, n in zip(start, size))
        values = np.ascontiguousarray(np.asarray(x[where] if where else x[()]), dtype=dtype).reshape(size)
        if digest is not None:
            digest.update(values.tobytes())
        parts.append(_chunk_table(values))
    if name is None and digest is not None:
        name = f"array_{digest.hexdigest()}"
        if name in client.list_datasets():
            return client.array(name)
    client._native.put(name, parts, replace, FORMAT, meta)
    return client.array(name)


def from_npy(path: str, chunks: Any = "auto", name: Optional[str] = None, client: Optional["Client"] = None) -> Array:
    """Store the array in ``.npy`` file ``path`` (memory-mapped: read a chunk at a time)."""
    return from_array(np.load(path, mmap_mode="r"), chunks=chunks, name=name, client=client)


__all__ = ["Array", "from_array", "from_npy", "normalize_chunks"]
