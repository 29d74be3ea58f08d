"""``map_blocks`` and ``blockwise``: the user's Python function over chunks, run in the Python
workers of the node that holds each task's largest input chunk (never inside a node), in the
same graph as the built-in kernels around it."""

from __future__ import annotations

import string
from typing import Any, Dict, List, Sequence, Tuple

import cloudpickle  # type: ignore[import-untyped]
import numpy as np

from .core import Array, Source, _chunk_bounds, _chunk_table, _flat, _grid, _positions, _Task
from .layout import rechunk


class _Pickled:
    """A value a Python task gets as it is (pickled)."""

    __slots__ = ("data",)

    def __init__(self, value: Any):
        self.data = cloudpickle.dumps(value)


class _OnChunks:
    """``fn`` over chunks as NumPy arrays. A chunk reaches the worker as the table its block
    holds; it is read back with its dtype and shape (the first argument says which argument
    is which), and the result is checked and sent on as a chunk."""

    def __init__(self, fn: Any, kwargs: Dict[str, Any], out_dtype: np.dtype):
        self.fn = fn
        self.kwargs = kwargs
        self.out_dtype = out_dtype

    def __call__(self, layout: Tuple[Any, ...], *inputs: Any) -> Any:
        kinds, out_shape = layout
        values = iter(inputs)

        def take(kind: Any) -> Any:
            if kind is None:
                return next(values)
            if kind[0] == "list":  # the blocks along a contracted index, in order
                return [take(k) for k in kind[1]]
            return _from_frame(next(values), kind[1], kind[2])

        args = [take(kind) for kind in kinds]
        result = np.asarray(self.fn(*args, **self.kwargs))
        if result.shape != tuple(out_shape):
            name = getattr(self.fn, "__name__", "the function")
            raise ValueError(
                f"{name} gave a block of shape {result.shape} where {tuple(out_shape)} was expected: "
                "pass chunks= with the shape of the blocks it makes"
            )
        return _chunk_table(np.ascontiguousarray(result, dtype=self.out_dtype))


def _from_frame(frame: Any, descr: str, shape: Sequence[int]) -> np.ndarray:
    """A chunk from the pandas frame the worker made of its table (one column, ``values``)."""
    dtype = np.dtype(descr)
    column = frame["values"]
    if dtype.kind in "iuf":
        values = column.to_numpy(dtype=dtype)
    elif dtype.kind == "b":
        values = column.to_numpy(dtype=np.uint8).view(np.bool_)
    else:
        values = np.frombuffer(b"".join(column.tolist()), dtype=dtype)
    shaped: np.ndarray = values.reshape(shape)
    return shaped


def _block_kinds(a: Array, ind: str, at: Dict[str, int], contracted: Sequence[str], task_args: List[Any]) -> Any:
    """What the function gets of ``a`` at block position ``at``: one block, or for each
    contracted letter of ``ind`` (in order) the list of blocks along it. Their sources are
    appended to ``task_args`` in the order the worker reads them back."""
    for k, letter in enumerate(ind):
        if letter in contracted and letter not in at:
            return (
                "list",
                [_block_kinds(a, ind, {**at, letter: b}, contracted, task_args) for b in range(a.numblocks[k])],
            )
    # A letter left out spans one block; an axis of length 1 broadcasts its one block.
    position = [at.get(letter, 0) if blocks > 1 else 0 for letter, blocks in zip(ind, a.numblocks)]
    j = _flat(position, a.numblocks)
    task_args.append(a._sources[j])
    return ("chunk", a.dtype.str if a.dtype.fields is None else a.dtype.descr, a._chunk_shape(j))


def _meta_dtype(fn: Any, args: Sequence[Any], kwargs: Dict[str, Any]) -> np.dtype:
    samples = [np.ones((1,) * a.ndim, dtype=a.dtype) if isinstance(a, Array) else a for a in args]
    try:
        return np.dtype(np.asarray(fn(*samples, **kwargs)).dtype)
    except Exception as e:
        raise ValueError(f"cannot tell the dtype of what the function makes ({e}): pass dtype=") from None


def blockwise(
    func: Any,
    out_ind: str,
    *args: Any,
    dtype: Any = None,
    chunks: Any = None,
    concatenate: Any = None,
    new_axes: Any = None,
    **kwargs: Any,
) -> Array:
    """Dask's ``blockwise``: ``func`` over blocks lined up by index letters, as
    ``blockwise(f, "ij", x, "ij", y, "ji")``; ``args`` alternate arrays (or values, with index
    ``None``) and their indexes. A letter of an input that is not in ``out_ind`` is contracted,
    as in Dask: ``func`` gets the list of the blocks along it (nested, one level per such
    letter), or with ``concatenate=True`` one block spanning it. ``new_axes`` gives the length
    of output letters no input has (one block each). ``chunks`` is the shape of every block
    ``func`` makes, when it is not that of the inputs' blocks."""
    pairs = list(zip(args[::2], args[1::2]))
    if len(args) % 2:
        raise TypeError("blockwise takes arrays and their indexes in pairs")
    arrays = [(a, ind) for a, ind in pairs if isinstance(a, Array)]
    for a, ind in arrays:
        if ind is None or len(ind) != a.ndim:
            raise ValueError(f"an index {ind!r} for an array of {a.ndim} dimensions")
    # Each letter's length and chunk length from the first array that has it at more than
    # length 1; the others are rechunked to it, and one of length 1 broadcasts (NumPy's rule).
    length: Dict[str, int] = {}
    chunk: Dict[str, int] = {}
    for broadcasting in (False, True):
        for a, ind in arrays:
            for letter, n, c in zip(ind, a.shape, a.chunksize):
                if (n == 1) != broadcasting:
                    continue
                if letter in length and n not in (length[letter], 1):
                    raise ValueError(f"index {letter!r} has lengths {length[letter]} and {n}")
                length.setdefault(letter, n)
                chunk.setdefault(letter, min(c, max(1, n)))
    contracted = [letter for letter in length if letter not in out_ind]
    if concatenate:
        for letter in contracted:  # one block spanning it: Dask concatenates them
            chunk[letter] = max(1, length[letter])
    lined: List[Any] = []
    for a, ind in pairs:
        if isinstance(a, Array):
            want = tuple(chunk[letter] if n == length[letter] else 1 for letter, n in zip(ind, a.shape))
            if want != tuple(min(c, max(1, n)) for c, n in zip(a.chunksize, a.shape)):
                a = rechunk(a, want)
        lined.append((a, ind))
    for letter, n in dict(new_axes or {}).items():
        if letter in length:
            raise ValueError(f"new axis {letter!r} is an input's index too")
        length[letter], chunk[letter] = int(n), max(1, int(n))
    if any(letter not in length for letter in out_ind):
        raise ValueError(f"an output index in {out_ind!r} that no input has (give its length in new_axes)")
    in_shape = tuple(length[letter] for letter in out_ind)
    in_chunks = tuple(chunk[letter] for letter in out_ind)
    grid = _grid(in_shape, in_chunks)
    if chunks is None:
        shape, chunksize = in_shape, in_chunks
    else:
        chunksize = tuple(int(c) for c in chunks)
        if len(chunksize) != len(out_ind):
            raise ValueError(f"chunks {chunks} for {len(out_ind)} output dimensions")
        # Where the function keeps the blocks' length, the edge blocks keep theirs too.
        shape = tuple(n if c == ic else g * c for n, ic, g, c in zip(in_shape, in_chunks, grid, chunksize))
    out_dtype = np.dtype(dtype) if dtype is not None else _meta_dtype(func, [a for a, _ in pairs], kwargs)
    function = cloudpickle.dumps((_OnChunks(func, kwargs, out_dtype), {}))
    name = getattr(func, "__name__", "map_blocks")
    sources: List[Source] = []
    for index, position in enumerate(_positions(grid)):
        at = dict(zip(out_ind, position))
        kinds: List[Any] = []
        task_args: List[Any] = []
        for a, ind in lined:
            if not isinstance(a, Array):
                kinds.append(None)
                task_args.append(_Pickled(a))
                continue
            kinds.append(_block_kinds(a, ind, dict(at), contracted if not concatenate else [], task_args))
        out_shape = _chunk_bounds(shape, chunksize, index)[1]
        sources.append(_Task(function, [_Pickled((kinds, out_shape)), *task_args], name=name))
    client = arrays[0][0]._client if arrays else None
    if client is None:
        raise ValueError("blockwise needs at least one array")
    return Array(client, shape, chunksize, out_dtype, sources)


def map_blocks(func: Any, *args: Any, dtype: Any = None, chunks: Any = None, **kwargs: Any) -> Array:
    """Dask's ``map_blocks``: ``func`` over each block of the arrays in ``args`` (lined up block
    by block, broadcast as NumPy does; other values pass as they are), as a NumPy array, in Python on
    the node holding it. ``chunks`` is the shape of each block ``func`` makes when it differs
    from its input's; ``dtype`` what it makes (found by calling it on a small block when not
    given). ``drop_axis``: axes ``func``'s blocks lose (each block then spans the whole of
    them, as Dask concatenates them); ``new_axis``: axes its blocks gain, of length 1 unless
    ``chunks`` says otherwise."""
    drop_axis = kwargs.pop("drop_axis", None)
    new_axis = kwargs.pop("new_axis", None)
    arrays = [a for a in args if isinstance(a, Array)]
    if not arrays:
        raise ValueError("map_blocks needs at least one array")
    try:
        np.broadcast_shapes(*[a.shape for a in arrays])
    except ValueError:
        raise ValueError(f"map_blocks over arrays of shapes {[a.shape for a in arrays]}, which do not broadcast") from None
    ndim = max(a.ndim for a in arrays)
    letters = string.ascii_lowercase[:ndim]
    dropped = sorted({_axis(k, ndim) for k in _axes(drop_axis)})
    out = [letter for k, letter in enumerate(letters) if k not in dropped]
    added = _axes(new_axis)
    out_ndim = len(out) + len(added)
    new_axes: Dict[str, int] = {}
    for i, k in enumerate(sorted(_axis(k, out_ndim) for k in added)):
        letter = string.ascii_lowercase[ndim + i]
        out.insert(k, letter)
        new_axes[letter] = int(chunks[k]) if chunks is not None else 1
    paired: List[Any] = []
    for a in args:
        # Lined up by their last axes; the axes dropped are contracted (concatenated) below.
        paired += [a, letters[ndim - a.ndim :] if isinstance(a, Array) else None]
    return blockwise(
        func, "".join(out), *paired, dtype=dtype, chunks=chunks, new_axes=new_axes, concatenate=True, **kwargs
    )


def _axes(axes: Any) -> List[int]:
    if axes is None:
        return []
    return [int(axes)] if np.ndim(axes) == 0 else [int(k) for k in axes]


def _axis(k: int, ndim: int) -> int:
    if not -ndim <= k < ndim:
        raise ValueError(f"axis {k} is out of bounds for {ndim} dimensions")
    return k % ndim
