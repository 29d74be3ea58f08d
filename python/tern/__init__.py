"""tern for Python: a replicated cluster's datasets, SQL and DataFrames, with Dask's names.

Connect with :class:`Client` (it finds the cluster as the ``tern`` command does, or starts a
:class:`LocalCluster` when none runs), store a pandas DataFrame with :func:`from_pandas` or
:meth:`Client.put` (each partition kept in triplicate), and work on stored data lazily with
:class:`DataFrame` (``client.table(name)``, ``client.sql(query)``); ``compute()`` brings a
pandas DataFrame back. :mod:`tern.array` stores chunked NumPy arrays the same way.

The work runs on the cluster's nodes, each task on the least busy holder of its data; this
package only describes it and converts what comes back (Arrow data, without copies where
pyarrow allows).
"""

from . import array, bag, config
from ._tern import ClusterNotFound, Conflict, DatasetExists, NoSuchDataset, TaskFailed, TernError
from .client import Client, LocalCluster, get_client
from .dataframe import DataFrame, GroupBy, Series, from_pandas, read_csv, read_parquet
from .delayed import Delayed, compute, delayed
from .futures import Future, Partition, as_completed, progress, wait

__all__ = [
    "Client",
    "ClusterNotFound",
    "Conflict",
    "DataFrame",
    "DatasetExists",
    "Delayed",
    "GroupBy",
    "LocalCluster",
    "NoSuchDataset",
    "Series",
    "TernError",
    "Future",
    "Partition",
    "TaskFailed",
    "array",
    "as_completed",
    "bag",
    "config",
    "compute",
    "delayed",
    "from_pandas",
    "progress",
    "read_csv",
    "read_parquet",
    "wait",
    "get_client",
]
