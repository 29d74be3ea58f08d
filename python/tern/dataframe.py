"""Lazy DataFrames over stored datasets and SQL, with Dask's names.

A :class:`DataFrame` is a description of work (a SQL query over stored datasets); nothing
runs until ``compute()``, ``head()`` or ``len()``. The work runs on the cluster: each
partition on the least busy of its three holders, shuffles between nodes, the answer
streamed back as Arrow data.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

import pyarrow as pa
import pyarrow.ipc

if TYPE_CHECKING:
    import pandas

    from .client import Client


def _ident(name: str) -> str:
    """``name`` quoted as a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _arrow_of(ipc: bytes) -> pa.Table:
    """An Arrow IPC stream as a table (its buffers point into ``ipc``: no copy)."""
    return pyarrow.ipc.open_stream(pa.py_buffer(ipc)).read_all()


def _partitions_of(df: "pandas.DataFrame", npartitions: int) -> List[bytes]:
    """``df`` cut into ``npartitions`` runs of rows (the last ones may be shorter), each an
    Arrow IPC stream. The index is not kept: partitions number their rows from 0 again."""
    if npartitions < 1:
        raise ValueError(f"npartitions must be at least 1, not {npartitions}")
    table = pa.Table.from_pandas(df, preserve_index=False)
    per = max(1, math.ceil(table.num_rows / npartitions))
    pieces = [table.slice(start, per) for start in range(0, table.num_rows, per)]
    if not pieces:
        pieces = [table]
    out = []
    for piece in pieces:
        sink = pa.BufferOutputStream()
        with pyarrow.ipc.new_stream(sink, piece.schema) as writer:
            writer.write_table(piece)
        out.append(sink.getvalue().to_pybytes())
    return out


def from_pandas(
    df: "pandas.DataFrame",
    npartitions: int = 1,
    name: Optional[str] = None,
    client: Optional["Client"] = None,
) -> "DataFrame":
    """Store pandas DataFrame ``df`` on the cluster in ``npartitions`` partitions (Dask's
    ``from_pandas``), through ``client`` or the default one, under ``name`` or a name made
    from its contents (the same data is stored once). Each partition is kept in triplicate."""
    from .client import get_client

    client = client or get_client()
    parts = _partitions_of(df, npartitions)
    if name is None:
        digest = hashlib.blake2b(digest_size=8)
        for part in parts:
            digest.update(part)
        name = f"from_pandas_{digest.hexdigest()}"
        if name in client.list_datasets():
            return client.table(name)
    client._native.put(name, parts, False)
    return client.table(name)


class DataFrame:
    """A lazy, partitioned DataFrame on the cluster (Dask's ``dask.dataframe.DataFrame``).

    Made by ``client.table(name)``, ``client.sql(query)``, ``client.put(df, name)`` or
    :func:`from_pandas`. ``compute()`` returns a pandas DataFrame.
    """

    def __init__(self, client: "Client", query: str, table: Optional[str], npartitions: Optional[int]):
        self._client = client
        self._query = query
        self._table = table
        self._npartitions = npartitions
        self._schema: Optional[pa.Schema] = None

    @classmethod
    def _of_table(cls, client: "Client", name: str, record: Dict[str, Any]) -> "DataFrame":
        return cls(client, f"SELECT * FROM {_ident(name)}", name, len(record["partitions"]))

    @classmethod
    def _of_query(cls, client: "Client", query: str) -> "DataFrame":
        return cls(client, query, None, None)

    def _derived(self, query: str) -> "DataFrame":
        return DataFrame(self._client, query, None, None)

    # -- structure -----------------------------------------------------------------------

    @property
    def sql(self) -> str:
        """The SQL this DataFrame runs."""
        return self._query

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the answer (asked of the cluster once, with no rows)."""
        if self._schema is None:
            empty = self._client._native.sql(f"SELECT * FROM ({self._query}) AS t LIMIT 0")
            self._schema = _arrow_of(empty).schema
        return self._schema

    @property
    def columns(self) -> "pandas.Index":
        import pandas

        return pandas.Index(self.schema.names)

    @property
    def dtypes(self) -> "pandas.Series":
        """The pandas dtypes ``compute()`` gives each column."""
        return self.schema.empty_table().to_pandas().dtypes

    @property
    def npartitions(self) -> int:
        """Partitions of the stored dataset; an answer of a query counts as one."""
        return self._npartitions if self._npartitions is not None else 1

    # -- selecting -----------------------------------------------------------------------

    def __getitem__(self, key: Union[str, Sequence[str]]) -> "DataFrame":
        """``df[["a", "b"]]`` (or ``df["a"]``, a one-column DataFrame for now): those columns."""
        names = [key] if isinstance(key, str) else list(key)
        missing = [n for n in names if n not in self.schema.names]
        if missing:
            raise KeyError(f"no column {missing[0]!r}; the columns are {self.schema.names}")
        columns = ", ".join(_ident(n) for n in names)
        return self._derived(f"SELECT {columns} FROM ({self._query}) AS t")

    # -- computing -----------------------------------------------------------------------

    def to_arrow(self) -> pa.Table:
        """The whole answer as a pyarrow Table."""
        return _arrow_of(self._client._native.sql(self._query))

    def compute(self) -> "pandas.DataFrame":
        """The whole answer as a pandas DataFrame (rows numbered from 0)."""
        return self.to_arrow().to_pandas()

    def head(self, n: int = 5) -> "pandas.DataFrame":
        """The first ``n`` rows. Of a stored dataset, from its first partition only (as Dask
        does: read from one holder, nothing else runs)."""
        if self._table is not None and self.npartitions > 0:
            part = self._client._native.read_partition(self._table, 0)
            return _arrow_of(part).slice(0, n).to_pandas()
        return _arrow_of(
            self._client._native.sql(f"SELECT * FROM ({self._query}) AS t LIMIT {int(n)}")
        ).to_pandas()

    def __len__(self) -> int:
        counted = _arrow_of(self._client._native.sql(f"SELECT count(*) AS n FROM ({self._query}) AS t"))
        return int(counted.column("n")[0].as_py())

    def explain(self) -> str:
        """The stages and tasks the cluster would run."""
        return self._client._native.explain(self._query)

    def __repr__(self) -> str:
        try:
            schema = self.schema
        except Exception as e:  # the repr must not raise
            return f"<tern DataFrame: {e}>"
        width = max([len("npartitions=" + str(self.npartitions))] + [len(n) for n in schema.names])
        lines = ["Tern DataFrame Structure:", f"{'npartitions=' + str(self.npartitions):<{width}}"]
        dtypes = self.dtypes
        for column in schema.names:
            lines.append(f"{column:<{width}}  {dtypes[column]}")
        name = self._table or "sql"
        lines.append(f"Tern Name: {name}, {self.npartitions} tasks")
        return "\n".join(lines)
