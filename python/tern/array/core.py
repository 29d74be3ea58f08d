"""Chunked n-dimensional arrays stored in the cluster, with ``dask.array``'s names.

An array is cut into chunks (a regular chunk shape; the last chunk along an axis may be
shorter); each chunk is one block held by three nodes, its elements in C order and
little-endian, as NumPy lays them out. ``from_array`` stores any array-like a chunk at a
time (a NumPy array, a memory-mapped ``.npy``, an h5py dataset), ``compute()`` brings it
back as NumPy. The ``tern`` command reads and writes the same arrays: ``tern put x.npy``,
``tern get x --out x.npy``.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa

from .. import _tern
from .._tern import TernError

if TYPE_CHECKING:
    from ..client import Client

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


class _Task:
    """One task of an array's graph: a built-in kernel (by name) or a pickled Python function
    (``map_blocks``) over chunks (its sources) and values."""

    __slots__ = ("kernel", "args", "name")

    def __init__(self, kernel: Union[str, bytes], args: List[Any], name: Optional[str] = None):
        self.kernel = kernel
        self.args = args
        self.name = name or (kernel if isinstance(kernel, str) else "python")


class _Part:
    """Part ``index`` of what a task makes as several parts (``array_split``: an input chunk
    cut into the pieces result chunks need), read alone by the task that needs it."""

    __slots__ = ("task", "index")

    def __init__(self, task: _Task, index: int):
        self.task = task
        self.index = index


class _Kept:
    """A chunk computed earlier and kept on the node that made it (``persist``), while this
    future lives."""

    __slots__ = ("native",)

    def __init__(self, native: Any):
        self.native = native


# Where a chunk comes from: a stored partition ``("partition", dataset, version, index)``,
# the task that makes it, or a kept result.
Source = Union[Tuple[str, str, int, int], _Task, _Kept]


def _grid(shape: Sequence[int], chunksize: Sequence[int]) -> List[int]:
    return [max(1, math.ceil(n / c)) for n, c in zip(shape, chunksize)]


def _flat(position: Sequence[int], grid: Sequence[int]) -> int:
    index = 0
    for p, g in zip(position, grid):
        index = index * g + p
    return index


def _positions(grid: Sequence[int]) -> List[Tuple[int, ...]]:
    return list(itertools.product(*[range(g) for g in grid]))


class Array:
    """A chunked n-dimensional array (Dask's ``dask.array.Array``): stored in the cluster
    (:func:`from_array`, :func:`from_npy`, ``client.array(name)``) or computed from stored
    ones by NumPy's operations, lazily: ``compute()`` sends the graph, each chunk's task to
    the least busy holder of its largest input."""

    def __init__(
        self,
        client: "Client",
        shape: Tuple[int, ...],
        chunksize: Tuple[int, ...],
        dtype: np.dtype,
        sources: List[Source],
        name: Optional[str] = None,
        version: Optional[int] = None,
    ):
        self._client = client
        self.shape = shape
        self.chunksize = chunksize
        self.dtype = dtype
        self._sources = sources
        self.name = name
        self.version = version

    @classmethod
    def _stored(cls, client: "Client", name: str, record: Dict[str, Any]) -> "Array":
        if record["format"] != FORMAT:
            raise TypeError(f"{name!r} is a table, not an array: client.table({name!r}) reads it")
        meta = json.loads(record["schema"])
        version = int(record["version"])
        sources: List[Source] = [("partition", name, version, i) for i in range(len(record["partitions"]))]
        shape = tuple(int(n) for n in meta["shape"])
        chunksize = tuple(int(c) for c in meta["chunks"])
        return cls(client, shape, chunksize, _dtype_of(meta["dtype"]), sources, name, version)

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
        return tuple(_grid(self.shape, self.chunksize))

    @property
    def npartitions(self) -> int:
        return len(self._sources)

    def _chunk_shape(self, index: int) -> List[int]:
        return _chunk_bounds(self.shape, self.chunksize, index)[1]

    # -- computing -------------------------------------------------------------------------

    def compute(self) -> np.ndarray:
        """The whole array as NumPy. Stored chunks are read from one of their holders; the
        chunks of an operation's result are computed on the cluster (one graph) and fetched
        from the nodes that made them."""
        out = np.empty(self.shape, dtype=self.dtype)
        for where, values in self._blocks():
            out[where] = values
        return out

    def _submit(self, stay: bool = False, fetch_kept: bool = False) -> List[Any]:
        """Send the graph that makes this array's computed chunks: a future for each, in
        order of the chunks that are tasks. With ``stay`` the chunks stay on the nodes that
        made them (``persist``); with ``fetch_kept`` chunks kept earlier are wanted too (each
        read by an ``identity`` task beside it, as their own futures resolved to nothing)."""
        tasks: List[Tuple[str, Union[str, bytes], List[Tuple[Any, ...]]]] = []
        made: Dict[int, int] = {}

        def arg(source: Any) -> Tuple[Any, ...]:
            if isinstance(source, _Task):
                return ("task", add(source))
            if isinstance(source, _Part):
                return ("part", add(source.task), source.index)
            if isinstance(source, tuple) and source and source[0] == "partition":
                return source
            if isinstance(source, _Kept):
                return ("future", source.native)
            data = getattr(source, "data", None)
            if isinstance(data, bytes) and type(source).__name__ == "_Pickled":
                return ("pickle", data)
            return ("value", source)

        def add(task: _Task) -> int:
            known = made.get(id(task))
            if known is not None:
                return known
            args = [arg(a) for a in task.args]
            tasks.append((task.name, task.kernel, args))
            made[id(task)] = len(tasks) - 1
            return made[id(task)]

        # Held in a list: `made` knows tasks by id(), which a freed wrapper would pass on.
        chunks = [
            s if isinstance(s, _Task) else _Task("identity", [s])
            for s in self._sources
            if isinstance(s, _Task) or (fetch_kept and isinstance(s, _Kept))
        ]
        wanted = [add(s) for s in chunks]
        return list(self._client._native.submit_builtin_graph(tasks, wanted, stay) if tasks else [])

    def _blocks(self) -> Iterator[Tuple[Tuple[slice, ...], np.ndarray]]:
        """Each chunk with where it goes, one at a time (the graph is sent first; results stay
        on the nodes until fetched), so a writer holds one chunk, not the array."""
        import pyarrow.ipc

        futures = iter(self._submit(fetch_kept=True))
        for index, source in enumerate(self._sources):
            start, size = _chunk_bounds(self.shape, self.chunksize, index)
            where = tuple(slice(s, s + n) for s, n in zip(start, size))
            if isinstance(source, (_Task, _Kept)):
                kind, ipc = next(futures).result()
                if kind != "table":
                    raise TernError(f"chunk {index} came back as {kind}, not a chunk")
            else:
                ipc = self._client._native.read_partition(source[1], source[3])
            table = pyarrow.ipc.open_stream(pa.py_buffer(ipc)).read_all()
            yield where, _chunk_values(table, self.dtype, size)

    def persist(self) -> "Array":
        """The same array with its computed chunks made now and kept on the nodes that made
        them (Dask's ``persist``): later work and ``compute()`` read them there instead of
        computing them again. They are released when no array made from this one is left.
        Nothing comes back here but that each chunk was made."""
        futures = iter(self._submit(stay=True))
        sources: List[Source] = [_Kept(next(futures)) if isinstance(s, _Task) else s for s in self._sources]
        for source in sources:
            if isinstance(source, _Kept):
                source.native.result()  # made, or its error raised here
        return Array(self._client, self.shape, self.chunksize, self.dtype, sources, self.name, self.version)

    def to_zarr(self, url: str, component: Optional[str] = None, overwrite: bool = False) -> None:
        from .stores import to_zarr

        to_zarr(self, url, component, overwrite)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.compute()
        return values if dtype is None else values.astype(dtype)

    def to_npy(self, path: str) -> None:
        """Write it to ``.npy`` file ``path`` (as ``tern get NAME --out path`` does)."""
        np.save(path, self.compute())

    def store(self, name: str, replace: bool = False) -> "Array":
        """Compute it and store the result as array ``name`` (each chunk in triplicate)."""
        return from_array(self.compute(), chunks=self.chunksize, name=name, client=self._client, replace=replace)

    def __repr__(self) -> str:
        return (
            f"tern.array<{self.name or 'array'}, shape={self.shape}, dtype={self.dtype}, "
            f"chunksize={self.chunksize}, chunktype=numpy.ndarray>"
        )

    # -- elementwise -----------------------------------------------------------------------

    def _map(self, op: str, others: Sequence[Any], compute: np.dtype, out: Optional[np.dtype] = None) -> "Array":
        return _elementwise(op, [self, *others], compute, out)

    def __add__(self, other: Any) -> "Array":
        return _binary("add", np.add, self, other)

    def __radd__(self, other: Any) -> "Array":
        return _binary("add", np.add, other, self)

    def __sub__(self, other: Any) -> "Array":
        return _binary("sub", np.subtract, self, other)

    def __rsub__(self, other: Any) -> "Array":
        return _binary("sub", np.subtract, other, self)

    def __mul__(self, other: Any) -> "Array":
        return _binary("mul", np.multiply, self, other)

    def __rmul__(self, other: Any) -> "Array":
        return _binary("mul", np.multiply, other, self)

    def __truediv__(self, other: Any) -> "Array":
        return _binary("truediv", np.true_divide, self, other)

    def __rtruediv__(self, other: Any) -> "Array":
        return _binary("truediv", np.true_divide, other, self)

    def __pow__(self, other: Any) -> "Array":
        return _binary("pow", np.power, self, other)

    def __neg__(self) -> "Array":
        return _unary("neg", np.negative, self)

    def __abs__(self) -> "Array":
        return _unary("abs", np.absolute, self)

    def __eq__(self, other: Any) -> "Array":  # type: ignore[override]
        return _binary("eq", np.equal, self, other)

    def __ne__(self, other: Any) -> "Array":  # type: ignore[override]
        return _binary("ne", np.not_equal, self, other)

    def __lt__(self, other: Any) -> "Array":
        return _binary("lt", np.less, self, other)

    def __le__(self, other: Any) -> "Array":
        return _binary("le", np.less_equal, self, other)

    def __gt__(self, other: Any) -> "Array":
        return _binary("gt", np.greater, self, other)

    def __ge__(self, other: Any) -> "Array":
        return _binary("ge", np.greater_equal, self, other)

    __hash__ = None  # type: ignore[assignment]

    # -- shape -----------------------------------------------------------------------------

    def transpose(self, *axes: Any) -> "Array":
        """The axes permuted (reversed when none are given), as NumPy's ``transpose``: chunk
        ``(i, j)`` of the result is chunk ``(j, i)`` transposed, where it is kept."""
        order = list(axes[0]) if len(axes) == 1 and isinstance(axes[0], (list, tuple)) else list(axes)
        if not order:
            order = list(reversed(range(self.ndim)))
        order = [a % self.ndim for a in order] if self.ndim else []
        if sorted(order) != list(range(self.ndim)):
            raise ValueError(f"axes {tuple(axes)} do not permute {self.ndim} axes")
        shape = tuple(self.shape[a] for a in order)
        chunksize = tuple(self.chunksize[a] for a in order)
        grid = self.numblocks
        sources: List[Source] = []
        for position in _positions(_grid(shape, chunksize)):
            own = [0] * self.ndim
            for k, a in enumerate(order):
                own[a] = position[k]
            j = _flat(own, grid)
            spec = {"op": "transpose", "compute": _descr(self.dtype), "shapes": [self._chunk_shape(j)], "axes": order}
            sources.append(_Task("array_map", [json.dumps(spec), self._sources[j]]))
        return Array(self._client, shape, chunksize, self.dtype, sources)

    @property
    def T(self) -> "Array":
        return self.transpose()

    # -- reductions ------------------------------------------------------------------------

    def sum(self, axis: Any = None, keepdims: bool = False, split_every: int = 8) -> "Array":
        return _reduction(self, "sum", axis, keepdims, split_every)

    def min(self, axis: Any = None, keepdims: bool = False, split_every: int = 8) -> "Array":
        return _reduction(self, "min", axis, keepdims, split_every)

    def max(self, axis: Any = None, keepdims: bool = False, split_every: int = 8) -> "Array":
        return _reduction(self, "max", axis, keepdims, split_every)

    def mean(self, axis: Any = None, keepdims: bool = False, split_every: int = 8) -> "Array":
        return _reduction(self, "mean", axis, keepdims, split_every)

    @property
    def real(self) -> "Array":
        return real(self)

    @property
    def imag(self) -> "Array":
        return imag(self)

    def conj(self) -> "Array":
        return conj(self)

    def prod(self, axis: Any = None, keepdims: bool = False, split_every: int = 8) -> "Array":
        return _reduction(self, "prod", axis, keepdims, split_every)

    def var(self, axis: Any = None, ddof: int = 0, keepdims: bool = False, split_every: int = 8) -> "Array":
        from .routines import var

        return var(self, axis, ddof, keepdims, split_every)

    def std(self, axis: Any = None, ddof: int = 0, keepdims: bool = False, split_every: int = 8) -> "Array":
        from .routines import std

        return std(self, axis, ddof, keepdims, split_every)

    def any(self, axis: Any = None, keepdims: bool = False, split_every: int = 8) -> "Array":
        from .routines import any_

        return any_(self, axis, keepdims, split_every)

    def all(self, axis: Any = None, keepdims: bool = False, split_every: int = 8) -> "Array":
        from .routines import all_

        return all_(self, axis, keepdims, split_every)

    def argmin(self, axis: Optional[int] = None, keepdims: bool = False, split_every: int = 8) -> "Array":
        from .routines import argmin

        return argmin(self, axis, keepdims, split_every)

    def argmax(self, axis: Optional[int] = None, keepdims: bool = False, split_every: int = 8) -> "Array":
        from .routines import argmax

        return argmax(self, axis, keepdims, split_every)

    def cumsum(self, axis: Optional[int] = None, dtype: Any = None) -> "Array":
        from .routines import cumsum

        return cumsum(self, axis, dtype)

    def cumprod(self, axis: Optional[int] = None, dtype: Any = None) -> "Array":
        from .routines import cumprod

        return cumprod(self, axis, dtype)

    # -- more NumPy methods ----------------------------------------------------------------

    def astype(self, dtype: Any) -> "Array":
        from .routines import astype

        return astype(self, dtype)

    def clip(self, min: Any = None, max: Any = None) -> "Array":
        from .routines import clip

        return clip(self, min, max)

    def dot(self, other: "Array") -> "Array":
        from .routines import dot

        return dot(self, other)

    def __matmul__(self, other: Any) -> "Array":
        from .routines import matmul

        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> "Array":
        from .routines import matmul

        return matmul(other, self)

    def map_blocks(self, func: Any, *args: Any, dtype: Any = None, chunks: Any = None, **kwargs: Any) -> "Array":
        from .blocks import map_blocks

        return map_blocks(func, self, *args, dtype=dtype, chunks=chunks, **kwargs)

    def rechunk(self, chunks: Any = "auto") -> "Array":
        from .layout import rechunk

        return rechunk(self, chunks)

    def reshape(self, *shape: Any) -> "Array":
        from .layout import reshape

        return reshape(self, shape[0] if len(shape) == 1 else shape)

    def ravel(self) -> "Array":
        from .layout import reshape

        return reshape(self, (-1,))

    flatten = ravel

    def __getitem__(self, key: Any) -> "Array":
        from .layout import getitem

        return getitem(self, key)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]


def _result_dtype(ufunc: Any, *operands: Any) -> np.dtype:
    """The dtype NumPy gives ``ufunc`` over these operands (arrays by dtype, scalars as
    themselves, NEP 50's weak scalars)."""
    samples = [np.empty(0, dtype=o.dtype) if isinstance(o, Array) else o for o in operands]
    result: np.dtype = np.dtype(ufunc(*samples).dtype)
    return result


def _elementwise(op: str, operands: Sequence[Any], compute: np.dtype, out: Optional[np.dtype] = None) -> "Array":
    arrays = [o for o in operands if isinstance(o, Array)]
    first = arrays[0]
    shape = tuple(int(n) for n in np.broadcast_shapes(*[a.shape for a in arrays]))
    ndim = len(shape)
    # The chunk length along each axis: that of the first operand spanning it; the others are
    # rechunked to it where they differ (as Dask unifies chunks).
    chunksize: List[int] = []
    for axis in range(ndim):
        lengths = []
        for a in arrays:
            k = axis - (ndim - a.ndim)
            if k >= 0 and a.shape[k] == shape[axis] and shape[axis] != 1:
                lengths.append(min(a.chunksize[k], max(1, a.shape[k])))
        chunksize.append(lengths[0] if lengths else max(1, shape[axis]))
    unified = []
    for o in operands:
        if isinstance(o, Array) and o.ndim:
            pad = ndim - o.ndim
            want = tuple(chunksize[k + pad] if o.shape[k] == shape[k + pad] and shape[k + pad] != 1 else o.chunksize[k] for k in range(o.ndim))
            if want != tuple(min(c, max(1, n)) for c, n in zip(o.chunksize, o.shape)):
                from .layout import rechunk

                o = rechunk(o, want)
        unified.append(o)
    operands = unified
    grid = _grid(shape, chunksize)
    compute = np.dtype(compute)
    sources: List[Source] = []
    for index, position in enumerate(_positions(grid) if ndim else [()]):
        out_shape = _chunk_bounds(shape, chunksize, index)[1] if ndim else []
        shapes: List[Any] = []
        args: List[Any] = []
        constants: List[Any] = []
        for o in operands:
            if not isinstance(o, Array):
                value = o.item() if isinstance(o, np.generic) else o
                shapes.append(None)
                # A complex number travels in the spec; the argument only holds its place.
                constants.append([value.real, value.imag] if isinstance(value, complex) else None)
                args.append(0 if isinstance(value, complex) else value)
                continue
            constants.append(None)
            pad = ndim - o.ndim
            own = [0 if o.shape[k] == 1 and shape[k + pad] != 1 else position[k + pad] for k in range(o.ndim)]
            j = _flat(own, _grid(o.shape, o.chunksize)) if o.ndim else 0
            shapes.append(o._chunk_shape(j) if o.ndim else [])
            args.append(o._sources[j])
        spec = {"op": op, "compute": _descr(compute), "shapes": shapes, "out_shape": out_shape}
        if any(c is not None for c in constants):
            spec["constants"] = constants
        if out is not None:
            spec["out"] = _descr(np.dtype(out))
        sources.append(_Task("array_map", [json.dumps(spec), *args]))
    return Array(first._client, shape, tuple(chunksize), np.dtype(out or compute), sources)


_COMPARISONS = {"eq", "ne", "lt", "le", "gt", "ge"}


def _on_strings(ufunc: Any, a: Any, b: Any) -> "Array":
    """``ufunc`` over arrays of strings: NumPy's own string ufuncs on the blocks, in the
    Python workers of the nodes holding them (so the answers are NumPy's to the character)."""
    for o in (a, b):
        if not isinstance(o, (Array, str, bytes, int, float, complex, np.generic)):
            return NotImplemented  # type: ignore[no-any-return]
    try:
        out = _result_dtype(ufunc, a, b)
    except TypeError as e:  # NumPy's UFuncTypeError is one
        raise TypeError(f"{ufunc.__name__} of {a!r} and {b!r}: {e}") from None
    from .blocks import map_blocks

    return map_blocks(ufunc, a, b, dtype=out)


def _binary(op: str, ufunc: Any, a: Any, b: Any) -> "Array":
    if any(isinstance(o, Array) and o.dtype.kind in "US" for o in (a, b)):
        return _on_strings(ufunc, a, b)
    for o in (a, b):
        if not isinstance(o, (Array, int, float, bool, complex, np.generic)):
            return NotImplemented  # type: ignore[no-any-return]
    if op in _COMPARISONS:
        compute = _result_dtype(np.add, a, b) if not any(
            isinstance(o, Array) and o.dtype.kind == "b" for o in (a, b)
        ) else np.dtype(np.uint8)
        return _elementwise(op, [a, b], compute, np.dtype(bool))
    compute = _result_dtype(ufunc, a, b)
    if compute.kind not in "iufc" or (compute.kind == "c" and op == "floordiv"):
        raise TypeError(f"{op} of {a!r} and {b!r} gives {compute}: tern computes in integers, floats and complex numbers")
    if op == "pow" and compute.kind not in "fc":
        raise TypeError("integer powers are not supported yet: make one operand a float")
    return _elementwise(op, [a, b], compute)


def _unary(op: str, ufunc: Any, x: "Array") -> "Array":
    out = _result_dtype(ufunc, x)
    if x.dtype.kind == "c":
        # Computed in complex numbers; abs gives floats.
        return _elementwise(op, [x], x.dtype, out)
    if out.kind not in "iuf":
        raise TypeError(f"{op} of {x.dtype}: tern computes in integers, floats and complex numbers")
    return _elementwise(op, [x], out)


def real(x: Array) -> Array:
    """The real parts (the array itself when it is not complex)."""
    return _elementwise("real", [x], x.dtype, np.real(np.empty(0, x.dtype)).dtype) if x.dtype.kind == "c" else x


def imag(x: Array) -> Array:
    """The imaginary parts (zeros when it is not complex)."""
    if x.dtype.kind == "c":
        return _elementwise("imag", [x], x.dtype, np.imag(np.empty(0, x.dtype)).dtype)
    return x * 0


def conj(x: Array) -> Array:
    return _elementwise("conj", [x], x.dtype) if x.dtype.kind == "c" else x


def exp(x: Array) -> Array:
    return _unary("exp", np.exp, x)


def log(x: Array) -> Array:
    return _unary("log", np.log, x)


def sqrt(x: Array) -> Array:
    return _unary("sqrt", np.sqrt, x)


def sin(x: Array) -> Array:
    return _unary("sin", np.sin, x)


def cos(x: Array) -> Array:
    return _unary("cos", np.cos, x)


def absolute(x: Array) -> Array:
    return _unary("abs", np.absolute, x)


def maximum(a: Any, b: Any) -> Array:
    return _binary("maximum", np.maximum, a, b)


def minimum(a: Any, b: Any) -> Array:
    return _binary("minimum", np.minimum, a, b)


def _reduction(x: Array, how: str, axis: Any, keepdims: bool, split_every: int) -> Array:
    """A tree reduction (Dask's): each chunk reduced over ``axis`` where it is, then the
    partials of each output chunk combined ``split_every`` at a time."""
    if axis is None:
        axes = list(range(x.ndim))
    else:
        axes = sorted({a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis)})
    if how in ("min", "max") and any(x.shape[a] == 0 for a in axes) and x.dtype.kind != "b":
        raise ValueError(f"{how} of an empty axis has no identity (as in NumPy)")
    sample = np.empty(0, dtype=x.dtype)
    if how == "sum":
        compute = np.sum(sample).dtype
    elif how == "prod":
        compute = np.prod(sample).dtype
    elif how == "mean":
        compute = np.dtype(np.float64) if x.dtype.kind in "biu" else x.dtype
    else:
        compute = x.dtype
    if np.dtype(compute).kind not in "iufc" and not (how in ("min", "max") and x.dtype.kind == "b"):
        raise TypeError(f"{how} of {x.dtype}: tern reduces integers and floats")
    partial_op = "sum" if how == "mean" else how
    combine_op = {"sum": "add", "mean": "add", "prod": "mul", "min": "minimum", "max": "maximum"}[how]
    kept_shape = tuple(1 if k in axes else n for k, n in enumerate(x.shape))
    kept_chunks = tuple(1 if k in axes else c for k, c in enumerate(x.chunksize))
    out_grid = _grid(kept_shape, kept_chunks)
    groups: Dict[int, List[Tuple[Source, List[int]]]] = {}
    for index, position in enumerate(_positions(x.numblocks) if x.ndim else [()]):
        shape = x._chunk_shape(index) if x.ndim else []
        spec = {"op": partial_op, "compute": _descr(np.dtype(compute)), "shapes": [shape], "axes": axes}
        partial = _Task("array_reduce", [json.dumps(spec), x._sources[index]])
        out_position = [0 if k in axes else p for k, p in enumerate(position)]
        part_shape = [1 if k in axes else n for k, n in enumerate(shape)]
        groups.setdefault(_flat(out_position, out_grid) if x.ndim else 0, []).append((partial, part_shape))
    sources: List[Source] = []
    total = int(np.prod([x.shape[a] for a in axes], dtype=np.int64)) if axes else 1
    for out_index in range(len(groups)):
        level = groups[out_index]
        part_shape = level[0][1]
        while len(level) > 1:
            combined: List[Tuple[Source, List[int]]] = []
            for i in range(0, len(level), max(2, split_every)):
                batch = level[i : i + max(2, split_every)]
                spec = {
                    "op": combine_op,
                    "compute": _descr(np.dtype(compute)),
                    "shapes": [part_shape] * len(batch),
                    "out_shape": part_shape,
                }
                combined.append((_Task("array_map", [json.dumps(spec), *[s for s, _ in batch]]), part_shape))
            level = combined
        source: Source = level[0][0]
        if how == "mean":
            spec = {"op": "truediv", "compute": _descr(np.dtype(compute)), "shapes": [part_shape, None], "out_shape": part_shape}
            source = _Task("array_map", [json.dumps(spec), source, total])
        sources.append(source)
    out_shape = kept_shape if keepdims else tuple(n for k, n in enumerate(x.shape) if k not in axes)
    chunking = kept_chunks if keepdims else tuple(c for k, c in enumerate(x.chunksize) if k not in axes)
    return Array(x._client, tuple(int(n) for n in out_shape), tuple(int(c) for c in chunking), np.dtype(compute), sources)


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
    from ..client import get_client

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

    def chunk(index: int) -> np.ndarray:
        start, size = _chunk_bounds(shape, chunksize, index)
        where = tuple(slice(s, s + n) for s, n in zip(start, size))
        return np.ascontiguousarray(np.asarray(x[where] if where else x[()]), dtype=dtype).reshape(size)

    if name is None:
        # Named by its contents: read once to name it (one chunk at a time), once to store.
        import hashlib

        digest = hashlib.blake2b(meta.encode(), digest_size=8)
        for index in range(count):
            digest.update(chunk(index).tobytes())
        name = f"array_{digest.hexdigest()}"
        if name in client.list_datasets():
            return client.array(name)
    # One chunk at a time: x may be larger than this process's memory (an h5py dataset).
    put = client._native.put_stream(name, replace, FORMAT, meta)
    for index in range(count):
        put.add(_chunk_table(chunk(index)))
    put.commit()
    return client.array(name)


def from_npy(path: str, chunks: Any = "auto", name: Optional[str] = None, client: Optional["Client"] = None) -> Array:
    """Store the array in ``.npy`` file ``path`` (memory-mapped: read a chunk at a time)."""
    return from_array(np.load(path, mmap_mode="r"), chunks=chunks, name=name, client=client)


__all__ = [
    "Array",
    "absolute",
    "cos",
    "exp",
    "from_array",
    "from_npy",
    "log",
    "maximum",
    "minimum",
    "normalize_chunks",
    "sin",
    "sqrt",
]
