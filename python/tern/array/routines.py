"""NumPy's routines over tern arrays, as task graphs: creation (``zeros``, ``arange``,
``linspace``, ``eye``...), ``where``, ``clip``, ``astype``, scans (``cumsum``, ``cumprod``),
the reductions built from others (``var``, ``std``, ``any``, ``all``), arg reductions and
matrix products (``matmul``, ``dot``, ``tensordot``)."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .core import (
    Array,
    Source,
    _binary,
    _chunk_bounds,
    _descr,
    _elementwise,
    _flat,
    _grid,
    _positions,
    _reduction,
    _result_dtype,
    _Task,
    normalize_chunks,
)
from .layout import _view, getitem, rechunk, reshape

if TYPE_CHECKING:
    from ..client import Client


# -- creation --------------------------------------------------------------------------------


def _shape_of(shape: Any) -> Tuple[int, ...]:
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)


def _created(
    op: str,
    shape: Any,
    dtype: Any,
    chunks: Any,
    params: Dict[str, Any],
    client: Optional["Client"],
    per_chunk: bool = False,
) -> Array:
    """An array whose every chunk is made on a node from ``params`` and its place."""
    from ..client import get_client

    shape = _shape_of(shape)
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise TypeError(f"tern makes arrays of booleans, integers and floats, not {dtype}")
    chunksize = normalize_chunks(chunks, shape, dtype)
    count = int(np.prod(_grid(shape, chunksize), dtype=np.int64))
    sources: List[Source] = []
    for index in range(count):
        start, size = _chunk_bounds(shape, chunksize, index)
        spec = {"op": op, "compute": _descr(dtype), "out_shape": size, "start": start, **params}
        if per_chunk:
            spec["index"] = index
        sources.append(_Task("array_create", [json.dumps(spec)]))
    return Array(client or get_client(), shape, chunksize, dtype, sources)


def zeros(shape: Any, dtype: Any = float, chunks: Any = "auto", client: Optional["Client"] = None) -> Array:
    return _created("zeros", shape, dtype, chunks, {}, client)


def ones(shape: Any, dtype: Any = float, chunks: Any = "auto", client: Optional["Client"] = None) -> Array:
    return _created("ones", shape, dtype, chunks, {}, client)


def empty(shape: Any, dtype: Any = float, chunks: Any = "auto", client: Optional["Client"] = None) -> Array:
    """As ``zeros``: a chunk made on a node is never left uninitialized."""
    return zeros(shape, dtype, chunks, client)


def full(shape: Any, fill_value: Any, dtype: Any = None, chunks: Any = "auto", client: Optional["Client"] = None) -> Array:
    dtype = np.dtype(dtype) if dtype is not None else np.array(fill_value).dtype
    value = np.array(fill_value).astype(dtype).item()
    return _created("full", shape, dtype, chunks, {"value": value}, client)


def zeros_like(a: Array, dtype: Any = None, chunks: Any = None) -> Array:
    return zeros(a.shape, dtype or a.dtype, chunks or a.chunksize, a._client)


def ones_like(a: Array, dtype: Any = None, chunks: Any = None) -> Array:
    return ones(a.shape, dtype or a.dtype, chunks or a.chunksize, a._client)


def full_like(a: Array, fill_value: Any, dtype: Any = None, chunks: Any = None) -> Array:
    return full(a.shape, fill_value, dtype or a.dtype, chunks or a.chunksize, a._client)


def arange(
    start: Any,
    stop: Any = None,
    step: Any = 1,
    dtype: Any = None,
    chunks: Any = "auto",
    client: Optional["Client"] = None,
) -> Array:
    """NumPy's ``arange``: values from ``start`` up to ``stop`` by ``step``, filled as NumPy
    fills them (so floats are NumPy's to the bit)."""
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ValueError("arange: the step may not be zero")
    natural = np.result_type(start, stop, step)
    dtype = np.dtype(dtype) if dtype is not None else natural
    length = max(0, math.ceil((stop - start) / step))
    if natural.kind in "iu" and dtype.kind in "iu":
        length = len(range(int(start), int(stop), int(step)))
    begin: Any = int(start) if dtype.kind in "iu" else float(start)
    step_value: Any = int(step) if dtype.kind in "iu" else float(step)
    return _created("arange", (length,), dtype, chunks, {"begin": begin, "step": step_value}, client)


def linspace(
    start: float,
    stop: float,
    num: int = 50,
    endpoint: bool = True,
    dtype: Any = None,
    chunks: Any = "auto",
    client: Optional["Client"] = None,
) -> Array:
    """NumPy's ``linspace``, with NumPy's formula (values equal to NumPy's)."""
    if num < 0:
        raise ValueError(f"Number of samples, {num}, must be non-negative.")
    dtype = np.dtype(dtype) if dtype is not None else np.result_type(float(start), float(stop))
    params = {"begin": float(start), "stop": float(stop), "num": int(num), "endpoint": bool(endpoint)}
    return _created("linspace", (num,), dtype, chunks, params, client)


def eye(
    N: int,
    chunks: Any = "auto",
    M: Optional[int] = None,
    k: int = 0,
    dtype: Any = float,
    client: Optional["Client"] = None,
) -> Array:
    return _created("eye", (N, N if M is None else M), dtype, chunks, {"k": int(k)}, client)


def _random(seed: int, shape: Any, chunks: Any, dist: str, client: Optional["Client"]) -> Array:
    return _created("random", shape, np.float64, chunks, {"seed": seed, "dist": dist}, client, per_chunk=True)


# -- elementwise -----------------------------------------------------------------------------


def where(condition: Any, x: Any = None, y: Any = None) -> Array:
    """NumPy's three-argument ``where``: ``x`` where ``condition`` holds, else ``y``."""
    if x is None or y is None:
        raise TypeError("where(condition) alone gives indexes whose count depends on the data: use np.nonzero(condition.compute())")
    if not isinstance(condition, Array):
        raise TypeError("where's condition is a tern array (x > 0, ...)")
    out = _result_dtype(lambda a, b: np.where(True, a, b), x, y)
    if out.kind == "b":
        compute = np.dtype(np.uint8)
    elif out.kind in "iufc":
        compute = out
    else:
        raise TypeError(f"where over {out}: tern computes in booleans, integers and floats")
    return _elementwise("where", [condition, x, y], compute, out)


def clip(x: Array, a_min: Any = None, a_max: Any = None) -> Array:
    """NumPy's ``clip``: ``minimum(maximum(x, a_min), a_max)``."""
    if a_min is None and a_max is None:
        raise ValueError("One of max or min must be given")
    out = x
    if a_min is not None:
        out = _binary("maximum", np.maximum, out, a_min)
    if a_max is not None:
        out = _binary("minimum", np.minimum, out, a_max)
    return out


def astype(x: Array, dtype: Any) -> Array:
    """The elements as ``dtype`` (integers from floats truncate toward zero, as NumPy's do;
    to bool, whether each is nonzero)."""
    dtype = np.dtype(dtype)
    if dtype == x.dtype:
        return x
    if dtype.kind == "b":
        return x != 0
    if x.dtype.kind == "c" and dtype.kind != "c":
        # NumPy drops the imaginary parts (with a warning).
        from .core import real

        return astype(real(x), dtype)
    if dtype.kind not in "iufc" or x.dtype.kind not in "biufc":
        raise TypeError(f"astype from {x.dtype} to {dtype}: tern casts between booleans, integers, floats and complex numbers")
    return _elementwise("astype", [x], dtype)


# -- scans -----------------------------------------------------------------------------------


def _scan(x: Array, how: str, axis: Optional[int], dtype: Any) -> Array:
    """Dask's scan: each chunk scanned where it is, then each chunk combined with the last
    values of the one before it along the axis, in a chain."""
    if axis is None:
        x = reshape(x, (-1,))
        axis = 0
    axis = axis % x.ndim
    sample = np.empty(0, dtype=x.dtype)
    compute = np.dtype(dtype) if dtype is not None else (np.cumsum(sample) if how == "cumsum" else np.cumprod(sample)).dtype
    if compute.kind not in "iuf":
        raise TypeError(f"{how} of {x.dtype}: tern scans integers and floats")
    combine = "add" if how == "cumsum" else "mul"
    grid = x.numblocks
    done: Dict[Tuple[int, ...], Tuple[Source, List[int]]] = {}
    sources: List[Source] = []
    for index, position in enumerate(_positions(grid)):
        shape = x._chunk_shape(index)
        spec = {"op": how, "compute": _descr(compute), "shapes": [shape], "axes": [axis]}
        scanned: Source = _Task("array_map", [json.dumps(spec), x._sources[index]])
        if position[axis] > 0:
            before_pos = tuple(p - (1 if k == axis else 0) for k, p in enumerate(position))
            before, before_shape = done[before_pos]
            last_shape = [1 if k == axis else n for k, n in enumerate(before_shape)]
            take: List[Any] = [None] * x.ndim
            take[axis] = [before_shape[axis] - 1]
            last = _Task(
                "array_gather",
                [
                    json.dumps(
                        {
                            "compute": _descr(compute),
                            "out_shape": last_shape,
                            "shapes": [before_shape],
                            "pieces": [{"take": take, "at": [0] * x.ndim}],
                        }
                    ),
                    before,
                ],
            )
            spec = {"op": combine, "compute": _descr(compute), "shapes": [shape, last_shape], "out_shape": shape}
            scanned = _Task("array_map", [json.dumps(spec), scanned, last])
        done[position] = (scanned, shape)
        sources.append(scanned)
    return Array(x._client, x.shape, x.chunksize, compute, sources)


def cumsum(x: Array, axis: Optional[int] = None, dtype: Any = None) -> Array:
    return _scan(x, "cumsum", axis, dtype)


def cumprod(x: Array, axis: Optional[int] = None, dtype: Any = None) -> Array:
    return _scan(x, "cumprod", axis, dtype)


# -- reductions made of others ---------------------------------------------------------------


def var(x: Array, axis: Any = None, ddof: int = 0, keepdims: bool = False, split_every: int = 8) -> Array:
    """NumPy's ``var`` in two passes (the mean, then the mean square deviation from it), as
    exact as NumPy's own. Of complex numbers, the mean squared modulus of the deviation (real,
    as NumPy's)."""
    if x.dtype.kind not in "biufc":
        raise TypeError(f"var of {x.dtype}: tern reduces integers, floats and complex numbers")
    mean = _reduction(x, "mean", axis, True, split_every)
    deviation = x - mean
    if x.dtype.kind == "c":
        # NumPy's (d * conj(d)).real, without the complex product.
        re, im = deviation.real, deviation.imag
        squared = re * re + im * im
    else:
        squared = deviation * deviation
    squares = _reduction(squared, "sum", axis, keepdims, split_every)
    axes = range(x.ndim) if axis is None else [a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis)]
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    return squares / max(count - ddof, 0) if count - ddof > 0 else squares * np.nan


def std(x: Array, axis: Any = None, ddof: int = 0, keepdims: bool = False, split_every: int = 8) -> Array:
    from .core import sqrt

    return sqrt(var(x, axis, ddof, keepdims, split_every))


def any_(x: Array, axis: Any = None, keepdims: bool = False, split_every: int = 8) -> Array:
    return _reduction(x != 0, "max", axis, keepdims, split_every)


def all_(x: Array, axis: Any = None, keepdims: bool = False, split_every: int = 8) -> Array:
    return _reduction(x != 0, "min", axis, keepdims, split_every)


def _arg(x: Array, how: str, axis: Optional[int], keepdims: bool, split_every: int) -> Array:
    """``argmin``/``argmax`` as a tree: each chunk's best values with their indexes in the whole
    array, combined ``split_every`` at a time in order along the axis (the first of equals wins,
    and a NaN wins, as in NumPy)."""
    if x.dtype.kind == "c":
        return _complex_arg(x, how, axis, keepdims, split_every)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{how} of {x.dtype}: tern reduces booleans, integers, floats and complex numbers")
    flat = axis is None
    original_ndim = x.ndim
    if axis is None:
        x = reshape(x, (-1,))
        axis = 0
    axis = axis % x.ndim
    if x.shape[axis] == 0:
        raise ValueError(f"attempt to get {how} of an empty sequence")
    kept_shape = tuple(1 if k == axis else n for k, n in enumerate(x.shape))
    kept_chunks = tuple(1 if k == axis else c for k, c in enumerate(x.chunksize))
    out_grid = _grid(kept_shape, kept_chunks)
    groups: Dict[int, List[Tuple[Source, List[int]]]] = {}
    for index, position in enumerate(_positions(x.numblocks)):
        start, shape = _chunk_bounds(x.shape, x.chunksize, index)
        spec = {"op": how, "compute": _descr(x.dtype), "shapes": [shape], "axes": [axis], "offset": start[axis]}
        part_shape = [1 if k == axis else n for k, n in enumerate(shape)]
        out_position = [0 if k == axis else p for k, p in enumerate(position)]
        groups.setdefault(_flat(out_position, out_grid), []).append((_Task("array_reduce", [json.dumps(spec), x._sources[index]]), part_shape))
    sources: List[Source] = []
    step = max(2, split_every)
    for out_index in range(len(groups)):
        level = groups[out_index]
        part_shape = level[0][1]
        while True:
            last = len(level) <= step
            combined: List[Tuple[Source, List[int]]] = []
            for i in range(0, len(level), step):
                spec = {"op": how, "compute": _descr(x.dtype), "shapes": [part_shape], "final": last}
                combined.append((_Task("array_arg_combine", [json.dumps(spec), *[s for s, _ in level[i : i + step]]]), part_shape))
            level = combined
            if last:
                break
        sources.append(level[0][0])
    result = Array(x._client, kept_shape, kept_chunks, np.dtype(np.int64), sources)
    if flat:
        return reshape(result, (1,) * original_ndim) if keepdims else reshape(result, ())
    if keepdims:
        return result
    return _view(result, [n for k, n in enumerate(kept_shape) if k != axis], [c for k, c in enumerate(kept_chunks) if k != axis])


def _complex_arg(x: Array, how: str, axis: Optional[int], keepdims: bool, split_every: int) -> Array:
    """NumPy's ``argmin``/``argmax`` of complex numbers (by real part, then imaginary part;
    the first NaN wins) from real reductions: the best real part, the best imaginary part
    among the elements holding it, then the first position holding both."""
    best = "min" if how == "argmin" else "max"
    worst = np.inf if how == "argmin" else -np.inf
    re, im = x.real, x.imag
    on_best = re == _reduction(re, best, axis, True, split_every)
    best_im = _reduction(where(on_best, im, worst), best, axis, True, split_every)
    first_hit = _arg(where(on_best, im == best_im, False), "argmax", axis, keepdims, split_every)
    nan = x != x
    first_nan = _arg(nan, "argmax", axis, keepdims, split_every)
    return where(any_(nan, axis, keepdims, split_every), first_nan, first_hit)


def argmin(x: Array, axis: Optional[int] = None, keepdims: bool = False, split_every: int = 8) -> Array:
    return _arg(x, "argmin", axis, keepdims, split_every)


def argmax(x: Array, axis: Optional[int] = None, keepdims: bool = False, split_every: int = 8) -> Array:
    return _arg(x, "argmax", axis, keepdims, split_every)


# -- matrix products -------------------------------------------------------------------------


def matmul(a: Array, b: Array, split_every: int = 8) -> Array:
    """NumPy's ``matmul`` (``a @ b``) of vectors and matrices: each result chunk the sum of the
    products of a row of ``a``'s chunks and a column of ``b``'s (``b`` rechunked to match
    ``a``'s columns when they differ)."""
    if not isinstance(a, Array) or not isinstance(b, Array):
        raise TypeError("matmul multiplies tern arrays")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: Input operand does not have enough dimensions")
    if a.ndim > 2 or b.ndim > 2:
        raise NotImplementedError("matmul of stacks of matrices (more than 2 dimensions) is not supported yet")
    compute = _result_dtype(np.matmul, a, b)
    if compute.kind not in "iuf":
        raise TypeError(f"matmul in {compute}: tern multiplies integers and floats")
    a2 = getitem(a, (None, slice(None))) if a.ndim == 1 else a
    b2 = getitem(b, (slice(None), None)) if b.ndim == 1 else b
    if a2.shape[1] != b2.shape[0]:
        raise ValueError(
            f"matmul: Input operand 1 has a mismatch in its core dimension 0 (size {b2.shape[0]} is different from {a2.shape[1]})"
        )
    if b2.chunksize[0] != a2.chunksize[1]:
        b2 = rechunk(b2, (a2.chunksize[1], b2.chunksize[1]))
    shape = (a2.shape[0], b2.shape[1])
    chunksize = (a2.chunksize[0], b2.chunksize[1])
    inner = a2.numblocks[1]
    sources: List[Source] = []
    for i, j in _positions(_grid(shape, chunksize)):
        out_shape = [min(chunksize[0], shape[0] - i * chunksize[0]), min(chunksize[1], shape[1] - j * chunksize[1])]
        level: List[Source] = []
        for p in range(inner):
            left = _flat((i, p), a2.numblocks)
            right = _flat((p, j), b2.numblocks)
            spec = {"compute": _descr(compute), "shapes": [a2._chunk_shape(left), b2._chunk_shape(right)]}
            level.append(_Task("array_matmul", [json.dumps(spec), a2._sources[left], b2._sources[right]]))
        step = max(2, split_every)
        while len(level) > 1:
            level = [
                _Task(
                    "array_map",
                    [
                        json.dumps({"op": "add", "compute": _descr(compute), "shapes": [out_shape] * len(batch), "out_shape": out_shape}),
                        *batch,
                    ],
                )
                for batch in (level[k : k + step] for k in range(0, len(level), step))
            ]
        sources.append(level[0])
    result = Array(a._client, shape, chunksize, compute, sources)
    if a.ndim == 1:
        result = getitem(result, (0, slice(None)))
    if b.ndim == 1:
        result = getitem(result, (Ellipsis, 0))
    return result


def dot(a: Any, b: Any) -> Array:
    """NumPy's ``dot``: ``matmul`` for vectors and matrices, a product with a scalar."""
    if not isinstance(a, Array) or not isinstance(b, Array) or a.ndim == 0 or b.ndim == 0:
        return a * b  # type: ignore[no-any-return]
    return matmul(a, b)


def tensordot(a: Array, b: Array, axes: Any = 2) -> Array:
    """NumPy's ``tensordot``: the contracted axes moved together, both sides reshaped into
    matrices, multiplied, and the result reshaped to the free axes."""
    if isinstance(axes, (int, np.integer)):
        a_axes = list(range(a.ndim - int(axes), a.ndim))
        b_axes = list(range(int(axes)))
    else:
        a_given, b_given = ([x] if isinstance(x, (int, np.integer)) else list(x) for x in axes)
        a_axes = [int(k) for k in a_given]
        b_axes = [int(k) for k in b_given]
    a_axes = [k % a.ndim for k in a_axes]
    b_axes = [k % b.ndim for k in b_axes]
    if len(a_axes) != len(b_axes) or any(a.shape[i] != b.shape[j] for i, j in zip(a_axes, b_axes)):
        raise ValueError("shape-mismatch for sum")
    a_free = [k for k in range(a.ndim) if k not in a_axes]
    b_free = [k for k in range(b.ndim) if k not in b_axes]
    inner = int(np.prod([a.shape[k] for k in a_axes], dtype=np.int64))
    left = reshape(a.transpose(a_free + a_axes), (-1, inner) if inner else (int(np.prod([a.shape[k] for k in a_free], dtype=np.int64)), 0))
    right = reshape(b.transpose(b_axes + b_free), (inner, -1) if inner else (0, int(np.prod([b.shape[k] for k in b_free], dtype=np.int64))))
    product = matmul(left, right)
    return reshape(product, [a.shape[k] for k in a_free] + [b.shape[k] for k in b_free])


__all__: Sequence[str] = []
