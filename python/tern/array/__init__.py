"""Chunked n-dimensional arrays stored in the cluster, with ``dask.array``'s names.

An array is cut into chunks (a regular chunk shape; the last chunk along an axis may be
shorter); each chunk is one block held by three nodes, its elements in C order and
little-endian, as NumPy lays them out. ``from_array`` stores any array-like a chunk at a time
(a NumPy array, a memory-mapped ``.npy``, an h5py dataset); creation routines (``zeros``,
``arange``, ``random``...) make chunks on the nodes; operations are task graphs whose tasks
run where their chunks are; ``compute()`` brings the result back as NumPy. The ``tern``
command reads and writes the same arrays: ``tern put x.npy``, ``tern get x --out x.npy``.

- ``core``: the :class:`Array`, storing and computing, elementwise operations, reductions;
- ``layout``: rechunk, indexing, concatenate, stack, reshape (plans of gathers);
- ``routines``: creation, where/clip/astype, scans, var/std, arg reductions, matrix products;
- ``blocks``: ``map_blocks`` and ``blockwise`` with Python functions, in the Python workers;
- ``stores``: Zarr v3 in and out;
- ``random``: seeded random arrays.
"""

from . import random
from .core import (
    Array,
    absolute,
    conj,
    cos,
    exp,
    from_array,
    from_npy,
    imag,
    log,
    maximum,
    minimum,
    normalize_chunks,
    real,
    sin,
    sqrt,
)
from .blocks import blockwise, map_blocks
from .layout import concatenate, getitem, rechunk, reshape, stack
from .stores import from_zarr, to_zarr
from .routines import (
    all_ as all,
    any_ as any,
    arange,
    argmax,
    argmin,
    astype,
    clip,
    cumprod,
    cumsum,
    dot,
    empty,
    eye,
    full,
    full_like,
    linspace,
    matmul,
    ones,
    ones_like,
    std,
    tensordot,
    var,
    where,
    zeros,
    zeros_like,
)


def sum(x: Array, axis: object = None, keepdims: bool = False) -> Array:
    return x.sum(axis=axis, keepdims=keepdims)


def mean(x: Array, axis: object = None, keepdims: bool = False) -> Array:
    return x.mean(axis=axis, keepdims=keepdims)


def min(x: Array, axis: object = None, keepdims: bool = False) -> Array:
    return x.min(axis=axis, keepdims=keepdims)


def max(x: Array, axis: object = None, keepdims: bool = False) -> Array:
    return x.max(axis=axis, keepdims=keepdims)


def prod(x: Array, axis: object = None, keepdims: bool = False) -> Array:
    return x.prod(axis=axis, keepdims=keepdims)


def transpose(x: Array, axes: object = None) -> Array:
    return x.transpose(axes) if axes is not None else x.transpose()


__all__ = [
    "Array",
    "absolute",
    "all",
    "any",
    "arange",
    "argmax",
    "argmin",
    "astype",
    "blockwise",
    "clip",
    "concatenate",
    "conj",
    "cos",
    "cumprod",
    "cumsum",
    "dot",
    "empty",
    "exp",
    "eye",
    "from_array",
    "from_npy",
    "from_zarr",
    "full",
    "full_like",
    "getitem",
    "imag",
    "linspace",
    "log",
    "map_blocks",
    "matmul",
    "max",
    "maximum",
    "mean",
    "min",
    "minimum",
    "normalize_chunks",
    "ones",
    "ones_like",
    "prod",
    "random",
    "real",
    "rechunk",
    "reshape",
    "sin",
    "sqrt",
    "stack",
    "std",
    "sum",
    "tensordot",
    "to_zarr",
    "transpose",
    "var",
    "where",
    "zeros",
    "zeros_like",
]
