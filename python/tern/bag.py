"""``tern.bag``: Dask's Bag, a partitioned collection of Python objects (records, lines of
text, JSON documents) worked on with functions: ``map``, ``filter``, ``flatten``,
``frequencies``, ``foldby``... Each partition is a list made by one lazy call
(:class:`tern.Delayed`), so a bag's work is one task graph: ``compute()`` runs it on the
cluster (each partition's work on one node, the reductions combining partial results), or
here with ``scheduler="sync"`` or ``"threads"``.
"""

from __future__ import annotations

import glob as globbing
import heapq
import itertools
import math
import os
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .delayed import Delayed, compute, delayed

if TYPE_CHECKING:
    from .client import Client
    from .dataframe import DataFrame

_NO_INITIAL = object()

# The functions tasks run: module-level, so the nodes' workers import them from the package.


def _slice(items: List[Any]) -> List[Any]:
    return items


def _read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return f.readlines()


def _map(part: List[Any], fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> List[Any]:
    return [fn(x, *args, **kwargs) for x in part]


def _filter(part: List[Any], predicate: Callable[[Any], bool]) -> List[Any]:
    return [x for x in part if predicate(x)]


def _flatten(part: List[Any]) -> List[Any]:
    return [y for x in part for y in x]


def _pluck(part: List[Any], key: Any) -> List[Any]:
    return [x[key] for x in part]


def _map_partition(part: List[Any], fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> List[Any]:
    return list(fn(part, *args, **kwargs))


def _count_items(part: List[Any]) -> Dict[Any, int]:
    return dict(Counter(part))


def _merge_counts(partials: List[Dict[Any, int]]) -> List[Tuple[Any, int]]:
    total: Counter = Counter()
    for p in partials:
        total.update(p)
    return list(total.items())


def _fold_pairs(pairs: Iterable[Tuple[Any, Any]], op: Callable[[Any, Any], Any], initial: Any) -> Dict[Any, Any]:
    """Values folded per key with ``op``, starting from ``initial`` (or from a key's first
    value when there is none): elements within a partition, partial results across them."""
    out: Dict[Any, Any] = {}
    for k, v in pairs:
        if k in out:
            out[k] = op(out[k], v)
        elif initial is _NO_INITIAL:
            out[k] = v
        else:
            out[k] = op(initial, v)
    return out


def _fold(part: List[Any], key: Callable[[Any], Any], binop: Callable[[Any, Any], Any], initial: Any) -> Dict[Any, Any]:
    return _fold_pairs(((key(x), x) for x in part), binop, initial)


def _combine_folds(partials: List[Dict[Any, Any]], combine: Callable[[Any, Any], Any], initial: Any) -> List[Tuple[Any, Any]]:
    return list(_fold_pairs((kv for p in partials for kv in p.items()), combine, initial).items())


def _group(part: List[Any], key: Callable[[Any], Any]) -> Dict[Any, List[Any]]:
    out: Dict[Any, List[Any]] = defaultdict(list)
    for x in part:
        out[key(x)].append(x)
    return dict(out)


def _combine_groups(partials: List[Dict[Any, List[Any]]]) -> List[Tuple[Any, List[Any]]]:
    out: Dict[Any, List[Any]] = defaultdict(list)
    for p in partials:
        for k, v in p.items():
            out[k].extend(v)
    return list(out.items())


def _distinct_part(part: List[Any]) -> List[Any]:
    return list(dict.fromkeys(part))


def _distinct_all(partials: List[List[Any]]) -> List[Any]:
    return list(dict.fromkeys(x for p in partials for x in p))


def _stats(part: List[Any]) -> Tuple[int, Any, Any, Any]:
    """(count, sum, min, max) of one partition."""
    if not part:
        return (0, 0, None, None)
    return (len(part), sum(part), min(part), max(part))


def _reduce_stats(partials: List[Tuple[int, Any, Any, Any]], what: str) -> Any:
    count = sum(p[0] for p in partials)
    total = sum(p[1] for p in partials)
    present = [p for p in partials if p[0] > 0]
    if what == "count":
        return count
    if what == "sum":
        return total
    if what == "mean":
        if count == 0:
            raise ZeroDivisionError("the mean of an empty bag")
        return total / count
    if not present:
        raise ValueError(f"the {what} of an empty bag")
    return min(p[2] for p in present) if what == "min" else max(p[3] for p in present)


def _count(part: List[Any]) -> Tuple[int, int, None, None]:
    return (len(part), 0, None, None)


def _top(part: List[Any], k: int, key: Optional[Callable[[Any], Any]]) -> List[Any]:
    return heapq.nlargest(k, part, key=key)


def _top_all(partials: List[List[Any]], k: int, key: Optional[Callable[[Any], Any]]) -> List[Any]:
    return heapq.nlargest(k, itertools.chain.from_iterable(partials), key=key)


def _write_lines(part: List[Any], path: str) -> str:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for x in part:
            text = str(x)
            f.write(text if text.endswith("\n") else text + "\n")
    return path


class Bag:
    """A lazy, partitioned collection of Python objects (Dask's ``dask.bag.Bag``)."""

    def __init__(self, parts: Sequence[Delayed]):
        self._parts = list(parts)

    @property
    def npartitions(self) -> int:
        return len(self._parts)

    def _each(self, fn: Callable[..., Any], *args: Any) -> "Bag":
        return Bag([delayed(fn)(p, *args) for p in self._parts])

    # -- element-wise --------------------------------------------------------------------

    def map(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> "Bag":
        """``fn`` of every element (with ``args`` and ``kwargs``)."""
        return self._each(_map, fn, args, kwargs)

    def filter(self, predicate: Callable[[Any], bool]) -> "Bag":
        """The elements for which ``predicate`` holds."""
        return self._each(_filter, predicate)

    def flatten(self) -> "Bag":
        """The elements of every element (a bag of lists becomes a bag of their items)."""
        return self._each(_flatten)

    def pluck(self, key: Any) -> "Bag":
        """``element[key]`` of every element."""
        return self._each(_pluck, key)

    def map_partitions(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> "Bag":
        """``fn`` of every partition (a list), its result the new partition."""
        return self._each(_map_partition, fn, args, kwargs)

    # -- whole-bag -----------------------------------------------------------------------

    def frequencies(self) -> "Bag":
        """``(element, count)`` for each distinct element."""
        partials = [delayed(_count_items)(p) for p in self._parts]
        return Bag([delayed(_merge_counts)(partials)])

    def foldby(
        self,
        key: Callable[[Any], Any],
        binop: Callable[[Any, Any], Any],
        initial: Any = _NO_INITIAL,
        combine: Optional[Callable[[Any, Any], Any]] = None,
        combine_initial: Any = _NO_INITIAL,
    ) -> "Bag":
        """``(key, folded)`` for each key: elements folded with ``binop`` within partitions,
        partial results with ``combine`` (``binop`` when not given), as Dask's ``foldby``."""
        partials = [delayed(_fold)(p, key, binop, initial) for p in self._parts]
        return Bag([delayed(_combine_folds)(partials, combine or binop, combine_initial)])

    def groupby(self, key: Callable[[Any], Any]) -> "Bag":
        """``(key, [elements])`` for each key."""
        partials = [delayed(_group)(p, key) for p in self._parts]
        return Bag([delayed(_combine_groups)(partials)])

    def distinct(self) -> "Bag":
        """Each distinct element once."""
        partials = [delayed(_distinct_part)(p) for p in self._parts]
        return Bag([delayed(_distinct_all)(partials)])

    def topk(self, k: int, key: Optional[Callable[[Any], Any]] = None) -> "Bag":
        """The ``k`` largest elements (by ``key``), largest first."""
        partials = [delayed(_top)(p, k, key) for p in self._parts]
        return Bag([delayed(_top_all)(partials, k, key)])

    def _statistic(self, what: str, per_part: Callable[..., Any] = _stats) -> Delayed:
        partials = [delayed(per_part)(p) for p in self._parts]
        return delayed(_reduce_stats)(partials, what)

    def count(self) -> Delayed:
        return self._statistic("count", _count)

    def sum(self) -> Delayed:
        return self._statistic("sum")

    def mean(self) -> Delayed:
        return self._statistic("mean")

    def min(self) -> Delayed:
        return self._statistic("min")

    def max(self) -> Delayed:
        return self._statistic("max")

    # -- out -----------------------------------------------------------------------------

    def take(self, k: int, scheduler: Optional[str] = None) -> Tuple[Any, ...]:
        """The first ``k`` elements, from the first partition (as Dask's ``take``)."""
        if not self._parts:
            return ()
        (first,) = compute(self._parts[0], scheduler=scheduler)
        return tuple(first[:k])

    def compute(self, scheduler: Optional[str] = None, client: Optional["Client"] = None) -> List[Any]:
        """Every element, partition after partition."""
        parts = compute(*self._parts, scheduler=scheduler, client=client)
        return [x for part in parts for x in part]

    def to_textfiles(self, path: str, scheduler: Optional[str] = None) -> List[str]:
        """Each partition written as lines of text to ``path`` (a ``*`` in it becomes the
        partition's number), by the task that makes it; the paths written."""
        if "*" not in path:
            path = os.path.join(path, "*.part")
        writes = [delayed(_write_lines)(p, path.replace("*", str(i))) for i, p in enumerate(self._parts)]
        return list(compute(*writes, scheduler=scheduler))

    def to_dataframe(self, columns: Optional[Sequence[str]] = None, name: Optional[str] = None) -> "DataFrame":
        """The elements (dicts, or tuples with ``columns``) as a stored :class:`DataFrame`,
        a partition for each of the bag's."""
        import pandas

        from .dataframe import from_pandas

        rows = self.compute()
        df = pandas.DataFrame.from_records(rows, columns=columns)
        return from_pandas(df, npartitions=max(1, self.npartitions), name=name)

    def __repr__(self) -> str:
        return f"tern.bag<npartitions={self.npartitions}>"


def from_sequence(
    seq: Iterable[Any], npartitions: Optional[int] = None, partition_size: Optional[int] = None
) -> Bag:
    """A bag of ``seq``'s elements in ``npartitions`` partitions (or of ``partition_size``
    elements each; about 100 partitions at most by default, as Dask)."""
    items = list(seq)
    if partition_size is None:
        parts = npartitions or min(100, max(1, len(items)))
        partition_size = max(1, math.ceil(len(items) / parts))
    pieces = [items[i : i + partition_size] for i in range(0, len(items), partition_size)] or [[]]
    return Bag([delayed(_slice)(piece) for piece in pieces])


def read_text(paths: Any) -> Bag:
    """A bag of the lines of text files (a path, a glob, or a list of them), a partition per
    file, each read by the task that works on it."""
    listed = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files: List[str] = []
    for p in listed:
        p = os.fspath(p)
        matched = sorted(globbing.glob(p)) if any(c in p for c in "*?[") else [p]
        files.extend(os.path.abspath(m) for m in matched)
    if not files:
        raise FileNotFoundError(f"no files match {paths!r}")
    return Bag([delayed(_read_lines)(f) for f in files])
