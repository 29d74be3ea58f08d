"""``tern.distributed``: the names ``dask.distributed`` scripts import, so that
``from dask.distributed import Client, LocalCluster`` becomes
``from tern.distributed import Client, LocalCluster``."""

from .client import Client, LocalCluster, get_client
from .futures import Future, as_completed, wait

__all__ = ["Client", "Future", "LocalCluster", "as_completed", "get_client", "wait"]
