"""Zarr v3 stores in and out (through the ``zarr`` package): ``from_zarr`` reads a store a
chunk at a time into the cluster, ``to_zarr`` writes an array's chunks as they are fetched,
with the same chunking, so neither holds more than a chunk."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from .core import Array, from_array

if TYPE_CHECKING:
    from ..client import Client


def from_zarr(
    url: Any,
    component: Optional[str] = None,
    chunks: Any = None,
    name: Optional[str] = None,
    client: Optional["Client"] = None,
) -> Array:
    """Store the Zarr array at ``url`` (a path or any store ``zarr`` opens; ``component`` the
    array inside a group) in the cluster, with its own chunks unless ``chunks`` says others."""
    import zarr

    z = zarr.open_array(store=url, path=component or "", mode="r")
    return from_array(z, chunks=chunks if chunks is not None else tuple(z.chunks), name=name, client=client)


def to_zarr(x: Array, url: Any, component: Optional[str] = None, overwrite: bool = False) -> None:
    """Write ``x`` as a Zarr v3 array at ``url`` with its chunking, one chunk at a time."""
    import zarr

    z = zarr.create_array(
        store=url,
        name=component,
        shape=x.shape,
        chunks=tuple(max(1, c) for c in x.chunksize),
        dtype=x.dtype,
        overwrite=overwrite,
        zarr_format=3,
    )
    for where, values in x._blocks():
        z[where] = values
