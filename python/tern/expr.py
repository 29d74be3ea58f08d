"""Column expressions: what ``df.x > 0`` or ``df.a + df.b`` describe, as SQL that keeps
pandas' meaning.

pandas and SQL disagree about missing values in comparisons: in pandas ``NaN > 0`` is
``False`` and ``NaN != 0`` is ``True``; in SQL both are ``NULL``. Comparisons are written so
the cluster answers as pandas would (a comparison is never missing), and ``/`` divides as
floats, as pandas' does.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np


def ident(name: str) -> str:
    """``name`` quoted as a SQL identifier."""
    return '"' + str(name).replace('"', '""') + '"'


def literal(value: Any) -> str:
    """A Python value as a SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "CAST(NULL AS DOUBLE)"
        if math.isinf(value):
            return "CAST('inf' AS DOUBLE)" if value > 0 else "CAST('-inf' AS DOUBLE)"
        return repr(float(value))
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    import datetime

    if isinstance(value, datetime.datetime):  # pandas' Timestamp too
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, datetime.date):
        return f"DATE '{value.isoformat()}'"
    raise TypeError(f"cannot use {type(value).__name__} {value!r} in a tern expression")


# numpy / pandas dtypes → SQL types (astype).
_SQL_TYPES = {
    "int8": "TINYINT",
    "int16": "SMALLINT",
    "int32": "INT",
    "int64": "BIGINT",
    "uint8": "TINYINT UNSIGNED",
    "uint16": "SMALLINT UNSIGNED",
    "uint32": "INT UNSIGNED",
    "uint64": "BIGINT UNSIGNED",
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "float": "DOUBLE",
    "int": "BIGINT",
    "bool": "BOOLEAN",
    "str": "VARCHAR",
    "string": "VARCHAR",
    "object": "VARCHAR",
}


def sql_type(dtype: Any) -> str:
    """The SQL type a pandas ``astype`` target becomes."""
    name = dtype.__name__ if isinstance(dtype, type) else str(dtype)
    try:
        return _SQL_TYPES[np.dtype(name).name if name not in _SQL_TYPES else name]
    except (TypeError, KeyError):
        raise TypeError(f"astype to {dtype!r} is not supported yet") from None


class Column:
    """A lazy column expression over one DataFrame: arithmetic, comparisons, ``&``, ``|``,
    ``~``, ``isna``/``notna``. Used to filter (``df[df.x > 0]``) or to make columns
    (``df.assign(y=df.x * 2)``)."""

    def __init__(
        self,
        frame: Any,
        sql: str,
        name: Optional[str],
        boolean: bool = False,
        floating: bool = False,
    ):
        self._frame = frame
        self.sql = sql
        self.name = name
        self._boolean = boolean
        # A float column may hold NaN as well as NULL: pandas calls both missing.
        self._floating = floating

    def _other(self, other: Any) -> str:
        if isinstance(other, Column):
            if other._frame is not self._frame:
                raise ValueError("columns of two different DataFrames cannot be combined yet")
            return other.sql
        return literal(other)

    def _derived(self, sql: str, boolean: bool = False) -> "Column":
        return Column(self._frame, sql, None, boolean)

    # Arithmetic: missing in, missing out, as in pandas.
    def __add__(self, other: Any) -> "Column":
        return self._derived(f"({self.sql} + {self._other(other)})")

    def __radd__(self, other: Any) -> "Column":
        return self._derived(f"({self._other(other)} + {self.sql})")

    def __sub__(self, other: Any) -> "Column":
        return self._derived(f"({self.sql} - {self._other(other)})")

    def __rsub__(self, other: Any) -> "Column":
        return self._derived(f"({self._other(other)} - {self.sql})")

    def __mul__(self, other: Any) -> "Column":
        return self._derived(f"({self.sql} * {self._other(other)})")

    def __rmul__(self, other: Any) -> "Column":
        return self._derived(f"({self._other(other)} * {self.sql})")

    def __truediv__(self, other: Any) -> "Column":
        return self._derived(f"(CAST({self.sql} AS DOUBLE) / {self._other(other)})")

    def __rtruediv__(self, other: Any) -> "Column":
        return self._derived(f"(CAST({self._other(other)} AS DOUBLE) / {self.sql})")

    def __neg__(self) -> "Column":
        return self._derived(f"(- {self.sql})")

    # Comparisons: never missing, as in pandas (NaN compares unequal to everything).
    def _compare(self, op: str, other: Any) -> "Column":
        missing_means = "TRUE" if op == "<>" else "FALSE"
        return self._derived(
            f"COALESCE(({self.sql} {op} {self._other(other)}), {missing_means})", boolean=True
        )

    def __gt__(self, other: Any) -> "Column":  # type: ignore[override]
        return self._compare(">", other)

    def __ge__(self, other: Any) -> "Column":  # type: ignore[override]
        return self._compare(">=", other)

    def __lt__(self, other: Any) -> "Column":  # type: ignore[override]
        return self._compare("<", other)

    def __le__(self, other: Any) -> "Column":  # type: ignore[override]
        return self._compare("<=", other)

    def __eq__(self, other: Any) -> "Column":  # type: ignore[override]
        return self._compare("=", other)

    def __ne__(self, other: Any) -> "Column":  # type: ignore[override]
        return self._compare("<>", other)

    def __and__(self, other: "Column") -> "Column":
        return self._derived(f"({self.sql} AND {self._other(other)})", boolean=True)

    def __or__(self, other: "Column") -> "Column":
        return self._derived(f"({self.sql} OR {self._other(other)})", boolean=True)

    def __invert__(self) -> "Column":
        return self._derived(f"(NOT COALESCE({self.sql}, FALSE))", boolean=True)

    def _missing(self) -> str:
        if self._floating:
            return f"({self.sql} IS NULL OR isnan({self.sql}))"
        return f"({self.sql} IS NULL)"

    def isna(self) -> "Column":
        return self._derived(self._missing(), boolean=True)

    def notna(self) -> "Column":
        return self._derived(f"(NOT {self._missing()})", boolean=True)

    def fillna(self, value: Any) -> "Column":
        return Column(
            self._frame,
            f"(CASE WHEN {self._missing()} THEN {literal(value)} ELSE {self.sql} END)",
            self.name,
        )

    isnull = isna
    notnull = notna

    def isin(self, values: Any) -> "Column":
        listed = ", ".join(literal(v) for v in values)
        if not listed:
            return self._derived("FALSE", boolean=True)
        return self._derived(f"COALESCE(({self.sql} IN ({listed})), FALSE)", boolean=True)

    def __bool__(self) -> bool:
        raise TypeError(
            "the truth value of a tern column is ambiguous: use & | ~ rather than and/or/not"
        )

    __hash__ = None  # type: ignore[assignment]

    # A column on its own: a one-column view of its DataFrame.
    def _series(self) -> Any:
        from .dataframe import Series

        name = self.name if self.name is not None else "value"
        return Series(self._frame._client, self._frame._select([(self.sql, name)]), name)

    def compute(self) -> Any:
        """The column's values as a pandas Series."""
        return self._series().compute()

    def __getattr__(self, attribute: str) -> Any:
        # Reductions and the rest of a Series' methods (sum, mean, value_counts...).
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self._series(), attribute)

    def __repr__(self) -> str:
        return f"<tern column {self.name or self.sql}>"
