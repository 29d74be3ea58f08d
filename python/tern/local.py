"""DataFrames on the single-machine schedulers: the same SQL the cluster runs, run in this
process by the same engine (DataFusion with the nodes' settings, in the native module) over
tables held here.

A DataFrame made from local data (``from_pandas``, ``read_csv``, ``read_parquet``) while no
client exists is held here and computes on the thread pool, as Dask's collections do without
a client. Any DataFrame computes here when a single-machine scheduler is named
(``compute(scheduler="sync")``, ``tern.config.set(scheduler="threads")``); the stored
datasets it reads are fetched from their holders first. One made here computes on the
cluster when ``"distributed"`` is in effect (or a client was made since): its tables are
stored there first, under the same names.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import pyarrow as pa

from . import _tern

if TYPE_CHECKING:
    from .client import Client
    from .dataframe import DataFrame


class _Stream:
    """An Arrow stream capsule from the native module, as pyarrow imports it."""

    def __init__(self, capsule: Any):
        self._capsule = capsule

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self._capsule


def table_of(capsule: Any) -> pa.Table:
    """The Arrow stream in ``capsule`` as a pyarrow Table (its buffers are Rust's: no copy)."""
    return pa.RecordBatchReader.from_stream(_Stream(capsule)).read_all()


class LocalData:
    """Tables held in this process, and the SQL over them: where a :class:`~tern.Client`
    stands for DataFrames made with no client (one per process: :func:`local_data`)."""

    def __init__(self) -> None:
        self._session = _tern.LocalSession()
        # Stored datasets fetched from a cluster: name -> version held.
        self._fetched: Dict[str, int] = {}

    def hold(self, name: str, partitions: List[pa.Table]) -> None:
        """Hold ``partitions`` as table ``name`` (replacing one of that name)."""
        self._session.register(name, partitions)
        self._fetched.pop(name, None)

    def has(self, name: str) -> bool:
        return bool(self._session.has(name))

    def fetched(self, name: str) -> bool:
        """Whether table ``name`` is a copy of a cluster's dataset (not data made here)."""
        return name in self._fetched

    def npartitions(self, name: str) -> int:
        return int(self._session.partitions(name))

    def read_partition(self, name: str, index: int) -> pa.Table:
        return table_of(self._session.read_partition(name, index))

    def sql(self, query: str, threads: int) -> pa.Table:
        """``query``'s answer, run on ``threads`` threads (0: a thread per core; 1: this one)."""
        return table_of(self._session.sql(query, threads))

    def explain(self, query: str) -> str:
        return str(self._session.explain(query))

    def table(self, name: str) -> "DataFrame":
        from .dataframe import DataFrame
        from .expr import ident

        return DataFrame(self, f"SELECT * FROM {ident(name)}", name, self.npartitions(name))

    def fetch_for(self, query: str, client: "Client") -> None:
        """Hold here every stored dataset ``query`` reads from ``client``'s cluster (at its
        current version; read from its holders)."""
        for name in tables_of(query):
            found = client._native.dataset(name)
            if found is None:
                if self.has(name):
                    continue
                from ._tern import NoSuchDataset

                raise NoSuchDataset(f"no dataset {name!r}")
            record = json.loads(found)
            if self._fetched.get(name) == record["version"] and self.has(name):
                continue
            parts = [
                _ipc_table(client._native.read_partition(name, i))
                for i in range(len(record["partitions"]))
            ]
            self.hold(name, parts)
            self._fetched[name] = int(record["version"])

    def ship_for(self, query: str, client: "Client") -> None:
        """Store on ``client``'s cluster, under their names, the tables held here that
        ``query`` reads and it does not have yet."""
        for name in tables_of(query):
            if not self.has(name) or name in self._fetched:
                continue
            if client._native.dataset(name) is None:
                parts = [self.read_partition(name, i) for i in range(self.npartitions(name))]
                client._native.put(name, parts, False)


def _ipc_table(ipc: bytes) -> pa.Table:
    import pyarrow.ipc

    return pyarrow.ipc.open_stream(pa.py_buffer(ipc)).read_all()


def tables_of(query: str) -> List[str]:
    """The tables SQL ``query`` reads."""
    return list(_tern.tables_of(query))


_local: Optional[LocalData] = None


def local_data() -> LocalData:
    """This process's :class:`LocalData`, made on first use."""
    global _local
    if _local is None:
        _local = LocalData()
    return _local
