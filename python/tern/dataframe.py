"""Lazy DataFrames over stored datasets and SQL, with Dask's names.

A :class:`DataFrame` is a description of work (a SQL query over stored datasets); nothing
runs until ``compute()``, ``head()`` or ``len()``. The work runs on the cluster: each
partition on the least busy of its three holders, shuffles between nodes, the answer
streamed back as Arrow data. With a single-machine scheduler named, or for data made here
with no client, the same query runs in this process instead (:mod:`tern.local`).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.ipc

from .expr import Column, ident, literal, sql_type
from .local import LocalData, local_data, table_of, tables_of

if TYPE_CHECKING:
    import pandas

    from .client import Client

# Where a DataFrame's data lives: a cluster (through its client) or this process.
Home = Union["Client", LocalData]


def _arrow_of(ipc: bytes) -> pa.Table:
    """An Arrow IPC stream as a table (its buffers point into ``ipc``: no copy)."""
    return pyarrow.ipc.open_stream(pa.py_buffer(ipc)).read_all()


def _partitions_of(df: "pandas.DataFrame", npartitions: int) -> List[pa.Table]:
    """``df`` cut into ``npartitions`` runs of rows (the last ones may be shorter), each a
    pyarrow Table over the same buffers. The index is not kept: partitions number their
    rows from 0 again."""
    if npartitions < 1:
        raise ValueError(f"npartitions must be at least 1, not {npartitions}")
    table = pa.Table.from_pandas(df, preserve_index=False)
    per = max(1, math.ceil(table.num_rows / npartitions))
    pieces = [table.slice(start, per) for start in range(0, table.num_rows, per)]
    return pieces or [table]


def _name_of(df: "pandas.DataFrame", npartitions: int) -> str:
    """A name made from ``df``'s contents and cut: the same data is stored once."""
    import pandas

    digest = hashlib.blake2b(digest_size=8)
    digest.update(repr((list(df.columns), [str(t) for t in df.dtypes], npartitions)).encode())
    digest.update(pandas.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return f"from_pandas_{digest.hexdigest()}"


def _scheduler_for(home: Home, named: Optional[str]) -> str:
    """The scheduler a DataFrame at ``home`` computes on: the one named, else the one
    ``tern.config`` sets, else its cluster's, else (data made here) the thread pool unless a
    client was made since (as Dask computes local collections on a client once there is one)."""
    from . import config
    from .delayed import _scheduler

    if named is None and config.get("scheduler") is None and not isinstance(home, LocalData):
        return "distributed"
    return _scheduler(named)


def from_pandas(
    df: "pandas.DataFrame",
    npartitions: int = 1,
    name: Optional[str] = None,
    client: Optional["Client"] = None,
) -> "DataFrame":
    """pandas DataFrame ``df`` in ``npartitions`` partitions (Dask's ``from_pandas``),
    under ``name`` or a name made from its contents (the same data is stored once).

    Stored on the cluster through ``client`` or the default one, each partition in
    triplicate; with no client made in this process (and no ``"distributed"`` scheduler set)
    it is held here instead and computes on the thread pool, as Dask's does without a client
    (see :mod:`tern.local`)."""
    from . import client as clients
    from . import config

    parts = _partitions_of(df, npartitions)
    auto_name = name is None
    name = name or _name_of(df, npartitions)
    has_client = clients.current_client() is not None
    if client is None and not has_client and config.get("scheduler") != "distributed":
        here = local_data()
        here.hold(name, parts)
        return here.table(name)
    client = client or clients.get_client()
    if auto_name and name in client.list_datasets():
        return client.table(name)
    client._native.put(name, parts, False)
    return client.table(name)


def _read(tables: List[pa.Table], npartitions: Optional[int], blocksize: int, name: Optional[str]) -> "DataFrame":
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    if npartitions is None:
        npartitions = max(1, math.ceil(table.nbytes / blocksize))
    return from_pandas(table.to_pandas(), npartitions=npartitions, name=name)


def read_csv(
    path: Union[str, Sequence[str]],
    npartitions: Optional[int] = None,
    blocksize: int = 64 << 20,
    name: Optional[str] = None,
    **kwargs: Any,
) -> "DataFrame":
    """CSV files (a path, a glob, or a list) read here with pandas (``kwargs`` go to
    ``pandas.read_csv``) and stored on the cluster, a partition per ``blocksize`` bytes of
    data (64 MiB) unless ``npartitions`` says otherwise."""
    import glob

    import pandas

    paths = _paths(path, glob)
    frames = [pa.Table.from_pandas(pandas.read_csv(p, **kwargs), preserve_index=False) for p in paths]
    return _read(frames, npartitions, blocksize, name)


def read_parquet(
    path: Union[str, Sequence[str]],
    npartitions: Optional[int] = None,
    blocksize: int = 64 << 20,
    name: Optional[str] = None,
    columns: Optional[Sequence[str]] = None,
) -> "DataFrame":
    """Parquet files (a path, a glob, or a list) read here with pyarrow and stored on the
    cluster, as :func:`read_csv` does."""
    import glob

    import pyarrow.parquet as pq

    paths = _paths(path, glob)
    return _read([pq.read_table(p, columns=columns) for p in paths], npartitions, blocksize, name)


def _paths(path: Union[str, Sequence[str]], glob: Any) -> List[str]:
    listed = [path] if isinstance(path, str) else list(path)
    found: List[str] = []
    for p in listed:
        found.extend(sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p])
    if not found:
        raise FileNotFoundError(f"no files match {path!r}")
    return found


class _ProgressBar:
    """A query's tasks done, as a bar on stderr redrawn in place (after half a second, so
    quick queries print nothing)."""

    def __init__(self) -> None:
        import time

        self._start = time.monotonic()
        self._drawn = False
        self._clock = time.monotonic

    @staticmethod
    def wanted() -> bool:
        import sys

        try:
            from IPython import get_ipython  # type: ignore[import-not-found]

            if get_ipython() is not None:
                return True
        except ImportError:
            pass
        return sys.stderr.isatty()

    def update(self, done: int, total: int) -> None:
        import sys

        if self._clock() - self._start < 0.5 or total == 0:
            return
        width = 30
        filled = width * min(done, total) // total
        sys.stderr.write(f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total} tasks")
        sys.stderr.flush()
        self._drawn = True

    def close(self) -> None:
        import sys

        if self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


class Lazy:
    """A value computed when asked (``compute()``), as Dask's scalars are: on the cluster,
    or here with ``scheduler="sync"`` or ``"threads"``."""

    def __init__(self, compute: Callable[[Optional[str]], Any], what: str):
        self._compute = compute
        self._what = what

    def compute(self, scheduler: Optional[str] = None) -> Any:
        return self._compute(scheduler)

    def __repr__(self) -> str:
        return f"<tern lazy {self._what}>"


def _as_list(value: Union[str, Sequence[str]]) -> List[str]:
    return [value] if isinstance(value, str) else list(value)


# How each reduction is written: (SQL of column c, whether only numbers take it).
_REDUCTIONS: Dict[str, Tuple[str, bool]] = {
    # pandas sums nothing (or only missing values) to 0; SQL to NULL.
    "sum": ("COALESCE(sum({c}), 0)", True),
    "mean": ("avg({c})", True),
    "min": ("min({c})", False),
    "max": ("max({c})", False),
    "count": ("count({c})", False),
    "std": ("stddev({c})", True),
    "var": ("var_samp({c})", True),
    "nunique": ("count(DISTINCT {c})", False),
}


def _reduce(function: str, column: str) -> str:
    try:
        template = _REDUCTIONS[function][0]
    except KeyError:
        known = ", ".join(sorted(list(_REDUCTIONS) + ["size"]))
        raise ValueError(f"no reduction {function!r}; tern has {known}") from None
    return template.format(c=ident(column))


class _Frame:
    """What DataFrame and Series share: a query, and the columns that become the index."""

    def __init__(self, client: Home, query: str, index: Optional[List[str]] = None):
        # Where the data lives: a cluster's client, or this process (LocalData).
        self._client = client
        self._query = query
        self._index = index
        self._schema: Optional[pa.Schema] = None
        # Two-level column names pandas gives several reductions of one column.
        self._multi_columns: Optional[List[Tuple[str, str]]] = None

    @property
    def sql(self) -> str:
        """The SQL this runs."""
        return self._query

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the answer (asked once, with no rows: here when every table
        it reads is held here, else of the cluster)."""
        if self._schema is None:
            query = f"SELECT * FROM ({self._query}) AS t LIMIT 0"
            here = local_data()
            if all(here.has(t) and not here.fetched(t) for t in tables_of(query)):
                self._schema = here.sql(query, 1).schema
            else:
                self._schema = self._arrow(query, scheduler="distributed").schema
        return self._schema

    def _select(
        self,
        items: Sequence[Tuple[str, str]],
        where: Optional[str] = None,
        group: Optional[Sequence[str]] = None,
        order: Optional[str] = None,
        distinct: bool = False,
    ) -> str:
        """SQL selecting ``items`` ((expression, name) pairs) over this frame."""
        listed = ", ".join(f"{sql} AS {ident(name)}" for sql, name in items)
        query = f"SELECT {'DISTINCT ' if distinct else ''}{listed} FROM ({self._query}) AS t"
        if where:
            query += f" WHERE {where}"
        if group:
            query += " GROUP BY " + ", ".join(group)
        if order:
            query += f" ORDER BY {order}"
        return query

    def _cluster(self) -> "Client":
        """The client of this frame's cluster (the default one for data held here)."""
        if isinstance(self._client, LocalData):
            from .client import get_client

            return get_client()
        return self._client

    def _arrow(
        self, query: Optional[str] = None, progress: Any = False, scheduler: Optional[str] = None
    ) -> pa.Table:
        """The answer of ``query`` (this frame's by default) on the scheduler in effect."""
        query = query or self._query
        chosen = _scheduler_for(self._client, scheduler)
        here = local_data()
        if chosen != "distributed":
            if not isinstance(self._client, LocalData):
                here.fetch_for(query, self._client)
            # "processes" too runs on threads: the engine is native code, not held by the GIL.
            return here.sql(query, 1 if chosen == "sync" else 0)
        client = self._cluster()
        here.ship_for(query, client)
        bar = _ProgressBar() if progress is None and _ProgressBar.wanted() else None
        callback = progress if callable(progress) else (bar.update if bar else None)
        try:
            return table_of(client._native.sql(query, callback))
        finally:
            if bar is not None:
                bar.close()

    def _pandas(self, table: pa.Table) -> "pandas.DataFrame":
        df = table.to_pandas()
        if self._index:
            df = df.set_index(self._index if len(self._index) > 1 else self._index[0])
        multi = self._multi_columns
        if multi:
            import pandas

            df.columns = pandas.MultiIndex.from_tuples(multi)
        return df

    def to_arrow(self, scheduler: Optional[str] = None) -> pa.Table:
        """The whole answer as a pyarrow Table."""
        return self._arrow(scheduler=scheduler)

    def __len__(self) -> int:
        counted = self._arrow(f"SELECT count(*) AS n FROM ({self._query}) AS t")
        return int(counted.column("n")[0].as_py())

    def explain(self) -> str:
        """The stages and tasks the cluster would run (for data held here: the plan this
        process would run)."""
        if isinstance(self._client, LocalData):
            return self._client.explain(self._query)
        return str(self._client._native.explain(self._query))


class DataFrame(_Frame):
    """A lazy, partitioned DataFrame on the cluster (Dask's ``dask.dataframe.DataFrame``).

    Made by ``client.table(name)``, ``client.sql(query)``, ``client.put(df, name)`` or
    :func:`from_pandas`; every method returns another lazy DataFrame (or Series) until
    ``compute()`` returns a pandas one. Missing values mean what they mean in pandas.
    """

    def __init__(
        self,
        client: Home,
        query: str,
        table: Optional[str] = None,
        npartitions: Optional[int] = None,
        index: Optional[List[str]] = None,
    ):
        super().__init__(client, query, index)
        self._table = table
        self._npartitions = npartitions
        self._version: Optional[int] = None

    @classmethod
    def _of_table(cls, client: "Client", name: str, record: Dict[str, Any]) -> "DataFrame":
        frame = cls(client, f"SELECT * FROM {ident(name)}", name, len(record["partitions"]))
        frame._version = record["version"]
        return frame

    @classmethod
    def _of_query(cls, client: "Client", query: str) -> "DataFrame":
        return cls(client, query)

    def _derived(self, query: str, index: Optional[List[str]] = "keep") -> "DataFrame":  # type: ignore[assignment]
        return DataFrame(self._client, query, None, None, self._index if index == "keep" else index)

    # -- structure -----------------------------------------------------------------------

    @property
    def columns(self) -> "pandas.Index":
        import pandas

        return pandas.Index([n for n in self.schema.names if n not in (self._index or [])])

    @property
    def dtypes(self) -> "pandas.Series":
        """The pandas dtypes ``compute()`` gives each column."""
        return self._pandas(self.schema.empty_table()).dtypes

    @property
    def divisions(self) -> Tuple[None, ...]:
        """The index values bounding each partition: unknown, as Dask says for data not
        sorted by its index (one ``None`` more than there are partitions)."""
        return (None,) * (self.npartitions + 1)

    @property
    def known_divisions(self) -> bool:
        return False

    @property
    def npartitions(self) -> int:
        """Partitions of the stored dataset; an answer of a query counts as one."""
        return self._npartitions if self._npartitions is not None else 1

    @property
    def partitions(self) -> List[Any]:
        """The stored dataset's partitions, as arguments for ``client.map`` and
        ``client.submit`` (each read on one of its holders). Data held here is stored on
        the default client's cluster first."""
        from .futures import Partition

        if self._table is None:
            raise NotImplementedError(
                "partitions of a query's answer: store it first (client.put(df.compute(), name))"
            )
        version = self._version
        if isinstance(self._client, LocalData):
            client = self._cluster()
            self._client.ship_for(self._query, client)
            record = client._native.dataset(self._table)
            version = None if record is None else int(json.loads(record)["version"])
        if version is None:
            raise RuntimeError(f"dataset {self._table!r} has no stored version")
        return [Partition(self._table, version, i) for i in range(self.npartitions)]

    def _pieces(self, scheduler: str) -> List["pandas.DataFrame"]:
        """Each partition as a pandas DataFrame, here (a query's answer is one piece)."""
        if self._table is None:
            return [self.compute(scheduler=scheduler)]
        here = local_data()
        if not isinstance(self._client, LocalData):
            here.fetch_for(self._query, self._client)
        return [here.read_partition(self._table, i).to_pandas() for i in range(self.npartitions)]

    def map_partitions(self, fn: Any, *args: Any, **kwargs: Any) -> "Mapped":
        """``fn`` over each partition as a pandas DataFrame (and ``args``), in Python on the
        least busy node holding it (Dask's ``map_partitions``). Lazy: ``compute()`` runs it
        and puts the pieces together."""
        return Mapped(self, fn, args, kwargs)

    def _column(self, name: str) -> Column:
        if name not in self.schema.names:
            raise KeyError(f"no column {name!r}; the columns are {self.schema.names}")
        floating = pa.types.is_floating(self.schema.field(name).type)
        return Column(self, ident(name), name, floating=floating)

    def _all(self) -> List[Tuple[str, str]]:
        return [(ident(n), n) for n in self.schema.names]

    def __getattr__(self, name: str) -> Column:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._column(name)
        except KeyError:
            raise AttributeError(f"DataFrame has no attribute or column {name!r}") from None

    def __getitem__(self, key: Union[str, Sequence[str], Column]) -> Any:
        """``df["a"]`` a column, ``df[["a", "b"]]`` those columns, ``df[df.a > 0]`` the rows
        where the condition holds."""
        if isinstance(key, Column):
            if not key._boolean:
                raise TypeError("a DataFrame is filtered by a condition such as df.x > 0")
            if key._frame is not self:
                raise ValueError("filter a DataFrame by a condition on its own columns")
            return self._derived(self._select(self._all(), where=key.sql))
        if isinstance(key, str):
            return self._column(key)
        names = list(key)
        for n in names:
            self._column(n)
        keep = [n for n in (self._index or []) if n not in names]
        return self._derived(self._select([(ident(n), n) for n in keep + names]))

    # -- making columns ------------------------------------------------------------------

    def assign(self, **columns: Any) -> "DataFrame":
        """New (or replaced) columns from expressions of this DataFrame's columns or values."""
        items = [(ident(n), n) for n in self.schema.names if n not in columns]
        for name, value in columns.items():
            sql = value.sql if isinstance(value, Column) else literal(value)
            items.append((sql, name))
        return self._derived(self._select(items))

    def astype(self, dtype: Any) -> "DataFrame":
        """Columns cast to a dtype: one for all, or ``{column: dtype}``."""
        targets = dtype if isinstance(dtype, dict) else {n: dtype for n in self.columns}
        for n in targets:
            self._column(n)
        items = [
            (f"CAST({ident(n)} AS {sql_type(targets[n])})" if n in targets else ident(n), n)
            for n in self.schema.names
        ]
        return self._derived(self._select(items))

    def fillna(self, value: Any) -> "DataFrame":
        """Missing values replaced: by one value, or per column ``{column: value}``."""
        fills = value if isinstance(value, dict) else {n: value for n in self.columns}
        items = []
        for n in self.schema.names:
            if n in fills:
                items.append((self._column(n).fillna(fills[n]).sql, n))
            else:
                items.append((ident(n), n))
        return self._derived(self._select(items))

    def dropna(self, how: str = "any", subset: Optional[Sequence[str]] = None) -> "DataFrame":
        """Rows with a missing value (``how="any"``) or only missing values (``"all"``)
        among ``subset`` (every column when not given) left out."""
        names = list(subset) if subset is not None else list(self.columns)
        present = [f"(NOT {self._column(n)._missing()})" for n in names]
        if not present:
            return self
        joiner = " AND " if how == "any" else " OR "
        if how not in ("any", "all"):
            raise ValueError(f"how must be 'any' or 'all', not {how!r}")
        return self._derived(self._select(self._all(), where=joiner.join(present)))

    # -- rows ----------------------------------------------------------------------------

    def sort_values(
        self, by: Union[str, Sequence[str]], ascending: Union[bool, Sequence[bool]] = True
    ) -> "DataFrame":
        """Rows ordered by ``by`` (missing values last, as pandas puts them)."""
        names = _as_list(by)
        ups = [ascending] * len(names) if isinstance(ascending, bool) else list(ascending)
        for n in names:
            self._column(n)
        order = ", ".join(
            f"{ident(n)} {'ASC' if up else 'DESC'} NULLS LAST" for n, up in zip(names, ups)
        )
        return self._derived(self._select(self._all(), order=order))

    def set_index(self, column: str) -> "DataFrame":
        """``column`` as the index, the rows sorted by it (as Dask sorts on ``set_index``)."""
        self._column(column)
        order = f"{ident(column)} ASC NULLS LAST"
        return self._derived(self._select(self._all(), order=order), index=[column])

    def drop_duplicates(self, subset: Optional[Sequence[str]] = None) -> "DataFrame":
        """Each distinct row once."""
        if subset is not None:
            raise NotImplementedError(
                "drop_duplicates(subset=...) is not supported yet: which row is kept would "
                "depend on the order partitions arrive in"
            )
        return self._derived(self._select(self._all(), distinct=True))

    def nunique(self) -> Lazy:
        """Distinct non-missing values per column (a pandas Series once computed)."""
        names = list(self.columns)
        query = self._select([(f"count(DISTINCT {ident(n)})", n) for n in names])

        def compute(scheduler: Optional[str]) -> Any:
            import pandas

            row = self._arrow(query, scheduler=scheduler).to_pylist()[0]
            return pandas.Series([row[n] for n in names], index=names, dtype="int64")

        return Lazy(compute, "nunique")

    def describe(self) -> Lazy:
        """count, mean, std, min, the quartiles (interpolated as pandas does) and max of each
        numeric column, computed on the cluster in one query (a pandas DataFrame once
        computed)."""
        schema = self.schema
        numeric = [
            n
            for n in self.columns
            if pa.types.is_integer(schema.field(n).type) or pa.types.is_floating(schema.field(n).type)
        ]
        if not numeric:
            raise ValueError("describe needs a numeric column")
        stats = [
            ("count", "count({c})"),
            ("mean", "avg({c})"),
            ("std", "stddev({c})"),
            ("min", "CAST(min({c}) AS DOUBLE)"),
            ("25%", "percentile_cont(CAST({c} AS DOUBLE), 0.25)"),
            ("50%", "percentile_cont(CAST({c} AS DOUBLE), 0.5)"),
            ("75%", "percentile_cont(CAST({c} AS DOUBLE), 0.75)"),
            ("max", "CAST(max({c}) AS DOUBLE)"),
        ]
        items = [(sql.format(c=ident(n)), f"{i}_{j}") for i, n in enumerate(numeric) for j, (_, sql) in enumerate(stats)]
        query = self._select(items)

        def compute(scheduler: Optional[str]) -> Any:
            import pandas

            row = self._arrow(query, scheduler=scheduler).to_pylist()[0]
            table = {
                n: [row[f"{i}_{j}"] for j in range(len(stats))] for i, n in enumerate(numeric)
            }
            return pandas.DataFrame(table, index=[name for name, _ in stats], dtype="float64")

        return Lazy(compute, "describe")

    def groupby(
        self, by: Union[str, Sequence[str]], dropna: bool = True, sort: bool = True
    ) -> "GroupBy":
        """Rows grouped by the values of ``by`` (rows whose key is missing left out unless
        ``dropna=False``), to reduce each group: ``.agg``, ``.sum()``, ``.mean()``..."""
        keys = _as_list(by)
        for k in keys:
            self._column(k)
        return GroupBy(self, keys, dropna, sort, None)

    def merge(
        self,
        right: "DataFrame",
        how: str = "inner",
        on: Union[None, str, Sequence[str]] = None,
        left_on: Union[None, str, Sequence[str]] = None,
        right_on: Union[None, str, Sequence[str]] = None,
        suffixes: Tuple[str, str] = ("_x", "_y"),
    ) -> "DataFrame":
        """Rows of this and ``right`` joined on equal keys (``how``: inner, left, right or
        outer). As in pandas, missing keys match each other, shared key columns appear once
        and other shared names take ``suffixes``."""
        joins = {"inner": "INNER", "left": "LEFT", "right": "RIGHT", "outer": "FULL"}
        if how not in joins:
            raise ValueError(f"how must be one of {sorted(joins)}, not {how!r}")
        if on is not None:
            lk = rk = _as_list(on)
            shared_keys = set(lk)
        elif left_on is not None and right_on is not None:
            lk, rk = _as_list(left_on), _as_list(right_on)
            shared_keys = set()
        else:
            lk = rk = [n for n in self.columns if n in set(right.columns)]
            shared_keys = set(lk)
            if not lk:
                raise ValueError("no common columns to merge on: pass on=, or left_on= and right_on=")
        for n in lk:
            self._column(n)
        for n in rk:
            right._column(n)
        left_names = list(self.schema.names)
        right_names = [n for n in right.schema.names if n not in shared_keys]
        overlap = set(left_names) & set(right_names)
        items = []
        for n in left_names:
            if n in shared_keys:
                if how == "outer":
                    sql = f"COALESCE(l.{ident(n)}, r.{ident(n)})"
                elif how == "right":
                    sql = f"r.{ident(n)}"
                else:
                    sql = f"l.{ident(n)}"
                items.append((sql, n))
            else:
                items.append((f"l.{ident(n)}", n + suffixes[0] if n in overlap else n))
        for n in right_names:
            items.append((f"r.{ident(n)}", n + suffixes[1] if n in overlap else n))
        condition = " AND ".join(
            f"l.{ident(a)} IS NOT DISTINCT FROM r.{ident(b)}" for a, b in zip(lk, rk)
        )
        listed = ", ".join(f"{sql} AS {ident(name)}" for sql, name in items)
        query = (
            f"SELECT {listed} FROM ({self._query}) AS l {joins[how]} JOIN "
            f"({right._query}) AS r ON {condition}"
        )
        return DataFrame(self._client, query)

    # -- computing -----------------------------------------------------------------------

    def compute(self, progress: Any = None, scheduler: Optional[str] = None) -> "pandas.DataFrame":
        """The whole answer as a pandas DataFrame (rows numbered from 0 unless it has an
        index). A query running past half a second shows its tasks done as a bar on a
        terminal or in Jupyter; ``progress=False`` hides it, a callable gets
        ``(done, total)`` instead. ``scheduler="sync"`` or ``"threads"`` runs it in this
        process (see :mod:`tern.local`)."""
        return self._pandas(self._arrow(progress=progress, scheduler=scheduler))

    def to_parquet(self, path: str, scheduler: Optional[str] = None) -> None:
        """The whole answer written here as one Parquet file."""
        import pyarrow.parquet as pq

        pq.write_table(self.to_arrow(scheduler=scheduler), path)

    def persist(self, name: Optional[str] = None, scheduler: Optional[str] = None) -> "DataFrame":
        """The answer kept as dataset ``name`` (a name made from the query when not given),
        and that dataset as a DataFrame: later work reads it instead of computing it again.
        On the cluster each partition is stored in triplicate; on a single-machine scheduler
        it is held in this process."""
        if self._table is not None and name is None:
            return self
        if name is None:
            name = "persist_" + hashlib.blake2b(self._query.encode(), digest_size=8).hexdigest()
        chosen = _scheduler_for(self._client, scheduler)
        parts = _partitions_of(self.compute(scheduler=chosen), max(1, self.npartitions))
        if chosen != "distributed":
            here = local_data()
            here.hold(name, parts)
            return here.table(name)
        client = self._cluster()
        client._native.put(name, parts, True)
        return client.table(name)

    def head(self, n: int = 5) -> "pandas.DataFrame":
        """The first ``n`` rows. Of a stored dataset, from its first partition only (as Dask
        does: read from one holder, nothing else runs)."""
        if self._table is not None and self.npartitions > 0:
            if isinstance(self._client, LocalData):
                return self._pandas(self._client.read_partition(self._table, 0).slice(0, n))
            part = self._client._native.read_partition(self._table, 0)
            return self._pandas(_arrow_of(part).slice(0, n))
        return self._pandas(self._arrow(f"SELECT * FROM ({self._query}) AS t LIMIT {int(n)}"))

    def __repr__(self) -> str:
        try:
            dtypes = self.dtypes
        except Exception as e:  # the repr must not raise
            return f"<tern DataFrame: {e}>"
        names = list(dtypes.index)
        head = "npartitions=" + str(self.npartitions)
        width = max([len(head)] + [len(str(n)) for n in names])
        lines = ["Tern DataFrame Structure:", head]
        for column in names:
            lines.append(f"{str(column):<{width}}  {dtypes[column]}")
        name = self._table or "sql"
        lines.append(f"Tern Name: {name}, {self.npartitions} tasks")
        return "\n".join(lines)


class Mapped:
    """A function mapped over a stored DataFrame's partitions (``df.map_partitions(fn)``)."""

    def __init__(self, frame: DataFrame, fn: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]):
        self._frame = frame
        self._fn = fn
        self._args = args
        self._kwargs = kwargs

    @property
    def npartitions(self) -> int:
        return self._frame.npartitions

    def compute(self, scheduler: Optional[str] = None) -> Any:
        """Every partition's result put together: DataFrames and Series concatenated (rows
        numbered from 0), anything else as a list in partition order. On the cluster each
        call runs on a holder of its partition; on a single-machine scheduler, here."""
        import pandas

        from .delayed import compute, delayed
        from .futures import gather, submit_calls

        chosen = _scheduler_for(self._frame._client, scheduler)
        pieces: List[Any]
        if chosen == "distributed":
            calls = [[p, *self._args] for p in self._frame.partitions]
            client = self._frame._cluster()
            pieces = gather(submit_calls(client, self._fn, calls, self._kwargs))
        else:
            fn = delayed(self._fn)
            work = [fn(piece, *self._args, **self._kwargs) for piece in self._frame._pieces(chosen)]
            pieces = list(compute(*work, scheduler=chosen))
        if pieces and all(isinstance(p, (pandas.DataFrame, pandas.Series)) for p in pieces):
            return pandas.concat(pieces, ignore_index=True)
        return pieces

    def __repr__(self) -> str:
        name = getattr(self._fn, "__name__", "function")
        return f"<tern map_partitions({name}) over {self.npartitions} partitions>"


class Series(_Frame):
    """One lazy column (Dask's ``Series``): the value column ``name`` of a query, indexed by
    its other columns when it has an index."""

    def __init__(self, client: Home, query: str, name: str, index: Optional[List[str]] = None):
        super().__init__(client, query, index)
        self.name = name

    def compute(self, progress: Any = None, scheduler: Optional[str] = None) -> "pandas.Series":
        """The column as a pandas Series (``progress`` and ``scheduler`` as for
        ``DataFrame.compute``)."""
        df = self._pandas(self._arrow(progress=progress, scheduler=scheduler))
        return df[self.name]

    def head(self, n: int = 5) -> "pandas.Series":
        df = self._pandas(self._arrow(f"SELECT * FROM ({self._query}) AS t LIMIT {int(n)}"))
        return df[self.name]

    def _reduction(self, function: str) -> Lazy:
        query = self._select([(_reduce(function, self.name), self.name)])
        return Lazy(
            lambda scheduler: self._arrow(query, scheduler=scheduler).column(0)[0].as_py(),
            f"{function} of {self.name}",
        )

    def sum(self) -> Lazy:
        return self._reduction("sum")

    def mean(self) -> Lazy:
        return self._reduction("mean")

    def min(self) -> Lazy:
        return self._reduction("min")

    def max(self) -> Lazy:
        return self._reduction("max")

    def count(self) -> Lazy:
        return self._reduction("count")

    def std(self) -> Lazy:
        return self._reduction("std")

    def var(self) -> Lazy:
        return self._reduction("var")

    def nunique(self) -> Lazy:
        return self._reduction("nunique")

    def value_counts(self) -> "Series":
        """How often each non-missing value occurs, most frequent first."""
        c = ident(self.name)
        query = (
            f"SELECT {c}, count(*) AS {ident('count')} FROM ({self._query}) AS t "
            f"WHERE {c} IS NOT NULL GROUP BY {c} ORDER BY {ident('count')} DESC, {c}"
        )
        return Series(self._client, query, "count", index=[self.name])

    def __repr__(self) -> str:
        return f"<tern Series {self.name!r}>"


class GroupBy:
    """A DataFrame's rows grouped by key columns (``df.groupby(...)``), to reduce."""

    def __init__(
        self,
        frame: DataFrame,
        keys: List[str],
        dropna: bool,
        sort: bool,
        selection: Optional[List[str]],
        single: bool = False,
    ):
        self._frame = frame
        self._keys = keys
        self._dropna = dropna
        self._sort = sort
        self._selection = selection
        # Selected as gb["x"] (one column): reductions give a Series.
        self._single = single

    def __getitem__(self, key: Union[str, Sequence[str]]) -> "GroupBy":
        names = _as_list(key)
        for n in names:
            self._frame._column(n)
        return GroupBy(self._frame, self._keys, self._dropna, self._sort, names, isinstance(key, str))

    def __getattr__(self, name: str) -> "GroupBy":
        if name.startswith("_") or name not in self._frame.schema.names:
            raise AttributeError(name)
        return self[name]

    def _values(self, numeric_only: bool) -> List[str]:
        names = self._selection or [n for n in self._frame.columns if n not in self._keys]
        if not numeric_only:
            return names
        schema = self._frame.schema
        return [
            n
            for n in names
            if pa.types.is_integer(schema.field(n).type)
            or pa.types.is_floating(schema.field(n).type)
            or pa.types.is_decimal(schema.field(n).type)
        ]

    def _run(self, items: List[Tuple[str, str]]) -> str:
        keys = [(ident(k), k) for k in self._keys]
        where = None
        if self._dropna:
            where = " AND ".join(f"{ident(k)} IS NOT NULL" for k in self._keys)
        order = None
        if self._sort:
            order = ", ".join(f"{ident(k)} ASC NULLS LAST" for k in self._keys)
        return self._frame._select(
            keys + items, where=where, group=[ident(k) for k in self._keys], order=order
        )

    def _one(self, function: str) -> Union[DataFrame, Series]:
        numeric_only = _REDUCTIONS.get(function, ("", False))[1]
        names = self._values(numeric_only)
        query = self._run([(_reduce(function, n), n) for n in names])
        if self._single:
            return Series(self._frame._client, query, names[0], index=list(self._keys))
        return DataFrame(self._frame._client, query, index=list(self._keys))

    def sum(self) -> Union[DataFrame, Series]:
        return self._one("sum")

    def mean(self) -> Union[DataFrame, Series]:
        return self._one("mean")

    def min(self) -> Union[DataFrame, Series]:
        return self._one("min")

    def max(self) -> Union[DataFrame, Series]:
        return self._one("max")

    def count(self) -> Union[DataFrame, Series]:
        return self._one("count")

    def std(self) -> Union[DataFrame, Series]:
        return self._one("std")

    def var(self) -> Union[DataFrame, Series]:
        return self._one("var")

    def nunique(self) -> Union[DataFrame, Series]:
        return self._one("nunique")

    def size(self) -> Series:
        """Rows per group."""
        query = self._run([("count(*)", "size")])
        return Series(self._frame._client, query, "size", index=list(self._keys))

    def agg(self, spec: Any = None, **named: Tuple[str, str]) -> Union[DataFrame, Series]:
        """Reduce each group: ``agg("sum")``, ``agg({"x": "sum", "y": "mean"})``, or named
        as pandas has it, ``agg(total=("x", "sum"), n=("y", "count"))``."""
        if named:
            items = [
                ("count(*)" if fn == "size" else _reduce(fn, col), out)
                for out, (col, fn) in named.items()
            ]
            return DataFrame(self._frame._client, self._run(items), index=list(self._keys))
        if isinstance(spec, str):
            return self.size() if spec == "size" else self._one(spec)
        if isinstance(spec, (list, tuple)):
            spec = {col: list(spec) for col in self._values(False)}
        if isinstance(spec, dict):
            items = []
            multi: List[Tuple[str, str]] = []
            several = any(not isinstance(fn, str) for fn in spec.values())
            for col, fns in spec.items():
                for fn in [fns] if isinstance(fns, str) else list(fns):
                    sql = "count(*)" if fn == "size" else _reduce(fn, col)
                    # Several reductions of a column: pandas' two-level columns.
                    items.append((sql, f"{col}\x1f{fn}" if several else col))
                    multi.append((col, fn))
            frame = DataFrame(self._frame._client, self._run(items), index=list(self._keys))
            if several:
                frame._multi_columns = multi
            return frame
        raise TypeError("agg takes a reduction's name, {column: name}, or named (column, name) pairs")

    aggregate = agg
