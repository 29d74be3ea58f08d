"""Layout changes, each a plan of ``array_gather`` tasks: ``rechunk``, indexing,
``concatenate``, ``stack``, ``reshape``.

Every one says, per axis, where each position of the result comes from (which input, for a
concatenation, and the index there). A task assembles one result chunk from the pieces of the
input chunks those positions fall in; a result chunk that is an input chunk as it stands is
that chunk, with no task (so ``stack`` and aligned ``concatenate`` move nothing). An input
chunk several tasks take boxes of is cut once into those boxes by an ``array_split`` task,
and each task fetches its box alone. Inserting or
dropping an axis of length 1 does not change a chunk's C order, so ``None`` in an index, an
integer index and ``stack``'s new axis cost nothing either.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .core import Array, Source, _chunk_bounds, _descr, _flat, _grid, _Part, _positions, _Task, normalize_chunks

# More chunks than an array may have.
_MAX_CHUNKS = 1 << 22

# Per axis of the result: the index in the input of each position, and which input (None when
# there is one).
AxisMap = Tuple[np.ndarray, Optional[np.ndarray]]


def _view(x: Array, shape: Sequence[int], chunksize: Sequence[int], dtype: Any = None) -> Array:
    """``x``'s chunks, read with another shape (the same flat order of chunks and elements)."""
    return Array(
        x._client,
        tuple(int(n) for n in shape),
        tuple(int(c) for c in chunksize),
        np.dtype(dtype) if dtype is not None else x.dtype,
        list(x._sources),
    )


def _insert_axes(x: Array, positions: Sequence[int]) -> Array:
    """``x`` with axes of length 1 inserted at ``positions`` (of the result)."""
    shape, chunks = list(x.shape), list(x.chunksize)
    for p in sorted(positions):
        shape.insert(p, 1)
        chunks.insert(p, 1)
    return _view(x, shape, chunks)


def _runs(index: np.ndarray, which: Optional[np.ndarray], chunk_len: Sequence[int]) -> List[Tuple[int, int, np.ndarray, int]]:
    """Runs of consecutive positions that read one input chunk: (input, chunk, indexes in the
    chunk, offset of the run). ``chunk_len`` is each input's chunk length along the axis."""
    if len(index) == 0:
        return []
    ks = which if which is not None else np.zeros(len(index), dtype=np.int64)
    lengths = np.asarray(chunk_len, dtype=np.int64)[ks]
    chunk = index // lengths
    local = index - chunk * lengths
    breaks = np.flatnonzero((np.diff(chunk) != 0) | (np.diff(ks) != 0)) + 1
    bounds = [0, *breaks.tolist(), len(index)]
    return [(int(ks[s]), int(chunk[s]), local[s:e], s) for s, e in zip(bounds[:-1], bounds[1:])]


def _gather(inputs: Sequence[Array], shape: Sequence[int], chunksize: Sequence[int], maps: Sequence[AxisMap]) -> Array:
    """The array of ``shape`` cut into ``chunksize`` whose positions come from ``inputs`` as
    ``maps`` say (all of the inputs' dtype, which they share). At most one axis (the
    concatenation's) says which input a position comes from; along the others, each input is
    cut by its own chunking."""
    dtype = inputs[0].dtype
    ndim = len(shape)
    out_grid = _grid(shape, chunksize)
    if int(np.prod(out_grid, dtype=np.int64)) > _MAX_CHUNKS:
        raise ValueError(f"{tuple(out_grid)} chunks are more than an array may have: choose larger chunks")
    in_grids = [_grid(a.shape, a.chunksize) for a in inputs]
    joined = next((axis for axis, (_, which) in enumerate(maps) if which is not None), None)
    cache: Dict[Tuple[int, int, int], List[Tuple[int, int, np.ndarray, int]]] = {}

    def runs(axis: int, start: int, stop: int, k: int) -> List[Tuple[int, int, np.ndarray, int]]:
        key = (axis, start, -1 if axis == joined else k)
        if key not in cache:
            index, which = maps[axis]
            if which is not None:
                lengths = [a.chunksize[axis] for a in inputs]
                cache[key] = _runs(np.asarray(index[start:stop], dtype=np.int64), np.asarray(which[start:stop], dtype=np.int64), lengths)
            else:
                cache[key] = _runs(np.asarray(index[start:stop], dtype=np.int64), None, [inputs[k].chunksize[axis]])
                cache[key] = [(k, c, loc, o) for _, c, loc, o in cache[key]]
        return cache[key]

    sources: List[Source] = []
    # Each result chunk that needs a task: its index in `sources`, shape and pieces (operand
    # source, its shape, the piece's spec, which input chunk it is).
    gathers: List[Tuple[int, List[int], List[List[Any]]]] = []
    for index, _ in enumerate(_positions(out_grid)):
        start, size = _chunk_bounds(shape, chunksize, index)
        pieces: List[Tuple[int, Tuple[Any, ...]]] = []
        heads = runs(joined, start[joined], start[joined] + size[joined], 0) if joined is not None else [None]
        for head in heads:
            k = head[0] if head is not None else 0
            per_axis = [
                [head] if axis == joined else runs(axis, start[axis], start[axis] + size[axis], k) for axis in range(ndim)
            ]
            pieces.extend((k, combo) for combo in _product(per_axis))
        planned: List[List[Any]] = []
        for k, combo in pieces:
            a = inputs[k]
            j = _flat([c for _, c, _, _ in combo], in_grids[k])
            own = _chunk_bounds(a.shape, a.chunksize, j)[1]
            take = [
                None if len(loc) == n and np.array_equal(loc, np.arange(n)) else loc.tolist()
                for (_, _, loc, _), n in zip(combo, own)
            ]
            planned.append([a._sources[j], own, {"take": take, "at": [o for _, _, _, o in combo]}, (k, j)])
        if len(planned) == 1 and all(t is None for t in planned[0][2]["take"]) and planned[0][1] == list(size):
            sources.append(planned[0][0])
            continue
        gathers.append((len(sources), list(size), planned))
        sources.append(None)  # type: ignore[arg-type]  # the gather task, made below
    _split_shared_chunks(dtype, [piece for _, _, planned in gathers for piece in planned])
    for at, size, planned in gathers:
        specs = [{"take": None if all(t is None for t in spec["take"]) else spec["take"], "at": spec["at"]} for _, _, spec, _ in planned]
        spec = {"compute": _descr(dtype), "out_shape": size, "shapes": [own for _, own, _, _ in planned], "pieces": specs}
        sources[at] = _Task("array_gather", [json.dumps(spec), *[operand for operand, _, _, _ in planned]])
    return Array(inputs[0]._client, tuple(int(n) for n in shape), tuple(int(c) for c in chunksize), dtype, sources)


def _contiguous(take: Optional[List[int]]) -> bool:
    return take is None or (len(take) > 0 and take == list(range(take[0], take[0] + len(take))))


def _split_shared_chunks(dtype: np.dtype, pieces: List[List[Any]]) -> None:
    """Where several gather tasks take boxes of one input chunk, that chunk is read once, by
    an ``array_split`` task that cuts it into those boxes, and each gather fetches only its
    box (Dask's rechunk split step). Without it a rechunk from (1000, 1000) to (20000, 50)
    chunks would read every input chunk twenty times. ``pieces`` are changed in place."""
    users: Dict[Tuple[int, int], List[List[Any]]] = {}
    for piece in pieces:
        users.setdefault(piece[3], []).append(piece)
    for shared in users.values():
        if len(shared) < 2 or not all(all(_contiguous(t) for t in piece[2]["take"]) for piece in shared):
            continue
        operand, own = shared[0][0], shared[0][1]
        boxes: Dict[Tuple[Any, ...], int] = {}
        chosen = [boxes.setdefault(tuple(None if t is None else (t[0], t[0] + len(t)) for t in piece[2]["take"]), len(boxes)) for piece in shared]
        if all(r is None for box in boxes for r in box):
            continue  # every task reads the whole chunk: nothing to cut
        spec = {
            "compute": _descr(dtype),
            "shapes": [own],
            "parts": [[None if r is None else list(r) for r in box] for box in boxes],
        }
        split = _Task("array_split", [json.dumps(spec), operand])
        shapes = [[n if r is None else r[1] - r[0] for r, n in zip(box, own)] for box in boxes]
        for piece, part in zip(shared, chosen):
            piece[0] = _Part(split, part)
            piece[1] = shapes[part]
            piece[2]["take"] = [None] * len(own)


def _product(per_axis: Sequence[Sequence[Any]]) -> List[Tuple[Any, ...]]:
    combos: List[Tuple[Any, ...]] = [()]
    for options in per_axis:
        combos = [c + (o,) for c in combos for o in options]
    return combos


def rechunk(x: Array, chunks: Any = "auto") -> Array:
    """``x`` cut into other chunks (Dask's ``rechunk``): an int, a tuple (``-1`` or ``None``
    for a whole axis), a dict ``{axis: length}`` or ``"auto"``. An input chunk that several
    result chunks share is cut once into their pieces (``array_split``), and each result chunk
    is assembled from its pieces alone: every task holds about one input or one result chunk,
    and every byte is read once and moved at most once."""
    if isinstance(chunks, dict):
        wanted = list(x.chunksize)
        for axis, c in chunks.items():
            wanted[int(axis) % x.ndim] = c
        chunks = tuple(wanted)
    chunksize = normalize_chunks(chunks, x.shape, x.dtype)
    if chunksize == tuple(min(c, max(1, n)) for c, n in zip(x.chunksize, x.shape)) or x.ndim == 0:
        return x
    maps: List[AxisMap] = [(np.arange(n), None) for n in x.shape]
    return _gather([x], x.shape, chunksize, maps)


def getitem(x: Array, key: Any) -> Array:
    """NumPy's basic and outer indexing: integers, slices with steps, ``None``, ``...``, one
    list of integers or a boolean mask per index (a lazy mask is computed first: the result's
    shape depends on it)."""
    if not isinstance(key, tuple):
        key = (key,)
    key = tuple(k.compute() if isinstance(k, Array) else k for k in key)
    if (
        len(key) == 1
        and isinstance(key[0], np.ndarray)
        and key[0].dtype == bool
        and key[0].ndim == x.ndim
        and x.ndim > 1
    ):
        if key[0].shape != x.shape:
            raise IndexError(f"a boolean index of shape {key[0].shape} does not match the array's {x.shape}")
        return getitem(reshape(x, (-1,)), np.flatnonzero(key[0].ravel()))
    real = [k for k in key if k is not None and k is not Ellipsis]
    if sum(1 for k in key if k is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if len(real) > x.ndim:
        raise IndexError(f"too many indices for array: array is {x.ndim}-dimensional, but {len(real)} were indexed")
    fill = (slice(None),) * (x.ndim - len(real))
    if Ellipsis in [k for k in key if not isinstance(k, np.ndarray)]:
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + fill + key[at + 1 :]
    else:
        key = key + fill
    if x.ndim == 0 and not key:
        return x
    maps: List[AxisMap] = []
    shape: List[int] = []
    chunks: List[int] = []
    kept: List[bool] = []
    inserted: List[int] = []
    lists = 0
    axis = 0
    for k in key:
        if k is None:
            inserted.append(len(maps))
            maps.append((np.zeros(1, dtype=np.int64), None))
            shape.append(1)
            chunks.append(1)
            kept.append(True)
            continue
        n, c = x.shape[axis], x.chunksize[axis]
        if isinstance(k, (bool, np.bool_)):
            raise TypeError("a boolean scalar index is not supported")
        if isinstance(k, (int, np.integer)):
            i = int(k)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
            maps.append((np.array([i % n]), None))
            shape.append(1)
            chunks.append(1)
            kept.append(False)
        elif isinstance(k, slice):
            index = np.arange(*k.indices(n))
            maps.append((index, None))
            shape.append(len(index))
            chunks.append(max(1, min(c, len(index))))
            kept.append(True)
        else:
            values = np.asarray(k)
            if values.dtype == bool:
                if values.shape != (n,):
                    raise IndexError(f"a boolean index of shape {values.shape} along axis {axis} of length {n}")
                index = np.flatnonzero(values)
            elif values.dtype.kind in "iu" and values.ndim == 1:
                if len(values) and (values.min() < -n or values.max() >= n):
                    raise IndexError(f"an index in {values.tolist()[:8]} is out of bounds for axis {axis} with size {n}")
                index = values.astype(np.int64) % max(n, 1)
            elif values.ndim > 1:
                raise NotImplementedError("indexing with a multi-dimensional array of integers is not supported")
            else:
                raise TypeError(f"an index of {values.dtype} along axis {axis}: integers, slices, None, ... or booleans")
            lists += 1
            maps.append((index, None))
            shape.append(len(index))
            chunks.append(max(1, min(c, len(index))))
            kept.append(True)
        axis += 1
    if lists > 1:
        raise NotImplementedError(
            "more than one list index (NumPy would pair them up, Dask does not support it either): index one axis at a time"
        )
    result = _gather([_insert_axes(x, inserted)], shape, chunks, maps)
    return _view(
        result,
        [s for s, k in zip(shape, kept) if k],
        [c for c, k in zip(chunks, kept) if k],
    )


def concatenate(seq: Sequence[Array], axis: int = 0) -> Array:
    """Arrays joined along ``axis`` (NumPy's ``concatenate``); the first one's chunking is the
    result's. Chunks that line up are the result's as they are."""
    arrays = list(seq)
    if not arrays:
        raise ValueError("need at least one array to concatenate")
    if not all(isinstance(a, Array) for a in arrays):
        raise TypeError("concatenate joins tern arrays: store NumPy arrays with from_array first")
    ndim = arrays[0].ndim
    if ndim == 0:
        raise ValueError("zero-dimensional arrays cannot be concatenated")
    if any(a.ndim != ndim for a in arrays):
        raise ValueError("all the input arrays must have the same number of dimensions")
    axis = _axis(axis, ndim)
    for a in arrays[1:]:
        for k in range(ndim):
            if k != axis and a.shape[k] != arrays[0].shape[k]:
                raise ValueError(
                    f"all the input array dimensions except for the concatenation axis must match exactly, "
                    f"but along dimension {k}, the array at index 0 has size {arrays[0].shape[k]} and another {a.shape[k]}"
                )
    dtype = np.result_type(*[a.dtype for a in arrays])
    arrays = [a if a.dtype == dtype else a.astype(dtype) for a in arrays]
    shape = list(arrays[0].shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    maps: List[AxisMap] = [(np.arange(n), None) for n in shape]
    maps[axis] = (
        np.concatenate([np.arange(a.shape[axis]) for a in arrays]),
        np.concatenate([np.full(a.shape[axis], k) for k, a in enumerate(arrays)]),
    )
    chunksize = [max(1, c) for c in arrays[0].chunksize]
    return _gather(arrays, shape, chunksize, maps)


def stack(seq: Sequence[Array], axis: int = 0) -> Array:
    """Arrays of one shape stacked along a new ``axis`` (NumPy's ``stack``)."""
    arrays = list(seq)
    if not arrays:
        raise ValueError("need at least one array to stack")
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError("all input arrays must have the same shape")
    axis = _axis(axis, arrays[0].ndim + 1)
    return concatenate([_insert_axes(a, [axis]) for a in arrays], axis=axis)


def reshape(x: Array, shape: Any) -> Array:
    """``x`` with another shape of the same size, in C order (NumPy's ``reshape``). Chunks that
    are rows of the array (every other axis whole) are reshaped as they are; others are
    rechunked into rows first."""
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = [int(n) for n in shape]
    if sum(1 for n in shape if n == -1) > 1:
        raise ValueError("can only specify one unknown dimension")
    size = x.size
    if -1 in shape:
        known = int(np.prod([n for n in shape if n != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape array of size {size} into shape {tuple(shape)}")
        shape[shape.index(-1)] = size // known
    if int(np.prod(shape, dtype=np.int64)) != size:
        raise ValueError(f"cannot reshape array of size {size} into shape {tuple(shape)}")
    if tuple(shape) == x.shape:
        return x
    if x.ndim == 0:
        flat = _view(x, (1,), (1,))
    else:
        row = int(np.prod(x.shape[1:], dtype=np.int64))
        if any(c < n for c, n in zip(x.chunksize[1:], x.shape[1:])):
            rows = max(1, int(np.prod(x.chunksize, dtype=np.int64)) // max(row, 1))
            x = rechunk(x, (min(rows, max(1, x.shape[0])), *x.shape[1:]))
        flat = _view(x, (size,), (max(1, x.chunksize[0] * row),))
    if not shape:
        return _view(flat, (), ())
    new_row = int(np.prod(shape[1:], dtype=np.int64))
    length = flat.chunksize[0]
    if new_row and length % new_row:
        flat = rechunk(flat, (max(1, length // new_row) * new_row,))
    rows = max(1, flat.chunksize[0] // max(new_row, 1))
    return _view(flat, shape, (min(rows, max(1, shape[0])), *[max(1, n) for n in shape[1:]]))


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of bounds for array of dimension {ndim}")
    return axis % ndim
