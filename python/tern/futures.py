"""Futures in ``distributed``'s manner: ``client.submit(fn, *args)`` and ``client.map(fn,
iterable)`` run your Python functions on the cluster's nodes (in each node's Python worker
processes, never in the node), each call on the least busy node holding its inputs: a stored
partition's holders, or the node keeping an earlier future's output. A :class:`Future`
resolves as its task ends; an exception is raised again here, with the remote traceback.
"""

from __future__ import annotations

import json
import pickle
import re
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import cloudpickle

from ._tern import NativeFuture, TaskFailed

if TYPE_CHECKING:
    from .client import Client


class Partition:
    """Partition ``index`` of version ``version`` of stored dataset ``dataset``, as an
    argument: the function gets it as a pandas DataFrame, on one of its holders."""

    def __init__(self, dataset: str, version: int, index: int):
        self.dataset = dataset
        self.version = version
        self.index = index

    def __repr__(self) -> str:
        return f"Partition({self.dataset!r}, version={self.version}, index={self.index})"


def _decode(kind: str, payload: Any) -> Any:
    if kind == "pickle":
        return pickle.loads(payload)
    if kind == "table":
        import pyarrow as pa
        import pyarrow.ipc

        return pyarrow.ipc.open_stream(pa.py_buffer(payload)).read_all().to_pandas()
    return json.loads(payload)


class Future:
    """One task's result, as it will be (Dask's ``Future``). While it lives its output stays
    kept on the node that made it, so later submissions read it there."""

    def __init__(self, native: NativeFuture, client: "Client"):
        self._native = native
        self.client = client
        self._value: Optional[Tuple[str, Any]] = None
        self._error: Optional[TaskFailed] = None

    @property
    def key(self) -> str:
        return self._native.key

    def done(self) -> bool:
        """Whether the task has ended (done or failed)."""
        return self._native.done()

    def _wait(self) -> None:
        if self._value is None and self._error is None:
            try:
                self._value = self._native.result()
            except TaskFailed as e:
                self._error = e

    def result(self, timeout: Optional[float] = None) -> Any:
        """The task's value; its exception (with the remote traceback) if it raised."""
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while not self.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.key} did not end within {timeout} s")
                time.sleep(0.005)
        self._wait()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return _decode(*self._value)

    def exception(self) -> Optional[BaseException]:
        """The task's exception, or None if it succeeded."""
        self._wait()
        return self._error

    def traceback(self) -> Optional[str]:
        """The remote traceback of the task's exception, or None."""
        error = self.exception()
        return None if error is None else str(error)

    def cancel(self) -> None:
        """Stop the submission this future belongs to."""
        self._native.cancel()

    def __repr__(self) -> str:
        if not self.done():
            state = "pending"
        else:
            state = "error" if self.exception() is not None else "finished"
        return f"<Future: {state}, key: {self.key}>"


def _name_of(fn: Any) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return re.sub(r"[^A-Za-z0-9_]", "_", name)[:60] or "function"


def _argument(value: Any) -> Tuple[Any, ...]:
    if isinstance(value, Future):
        return ("future", value._native)
    if isinstance(value, Partition):
        return ("partition", value.dataset, value.version, value.index)
    return ("pickle", cloudpickle.dumps(value))


class _Call:
    """``fn`` with its arguments put back together on the worker: a list or tuple that held
    futures travels as separate arguments (so each future is read where it is kept), and is
    rebuilt before ``fn`` sees it."""

    def __init__(self, fn: Any, layout: Tuple[Tuple[str, int], ...]):
        self.fn = fn
        self.layout = layout

    def __call__(self, *flat: Any, **kwargs: Any) -> Any:
        args: List[Any] = []
        i = 0
        for kind, n in self.layout:
            if kind == "one":
                args.append(flat[i])
                i += 1
            else:
                items = flat[i : i + n]
                i += n
                args.append(list(items) if kind == "list" else tuple(items))
        return self.fn(*args, **kwargs)


def _flatten(call: Sequence[Any]) -> Tuple[Tuple[Tuple[str, int], ...], List[Any]]:
    layout: List[Tuple[str, int]] = []
    flat: List[Any] = []
    for arg in call:
        if isinstance(arg, (list, tuple)) and any(isinstance(a, Future) for a in arg):
            layout.append(("list" if isinstance(arg, list) else "tuple", len(arg)))
            flat.extend(arg)
        else:
            layout.append(("one", 1))
            flat.append(arg)
    return tuple(layout), flat


def submit_calls(
    client: "Client", fn: Any, calls: Sequence[Sequence[Any]], kwargs: Dict[str, Any]
) -> List[Future]:
    """Calls of ``fn``, a task each; calls of one shape go as one graph. Identical calls
    are one task (as Dask's ``pure=True``). A list or tuple of futures among the arguments
    is read future by future where each is kept."""
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    by_layout: Dict[Tuple[Tuple[str, int], ...], List[Tuple[int, List[Any]]]] = {}
    for i, call in enumerate(calls):
        layout, flat = _flatten(call)
        by_layout.setdefault(layout, []).append((i, flat))
    out: List[Optional[Future]] = [None] * len(calls)
    for layout, group in by_layout.items():
        plain = all(kind == "one" for kind, _ in layout)
        function = cloudpickle.dumps((fn if plain else _Call(fn, layout), kwargs))
        listed = [[_argument(a) for a in flat] for _, flat in group]
        natives = client._native.submit_python(_name_of(fn), function, listed)
        for (i, _), native in zip(group, natives):
            out[i] = Future(native, client)
    return [f for f in out if f is not None]


def progress(futures: Iterable[Future], out: Any = None) -> None:
    """Wait for ``futures``, showing how many have ended as a bar (on stderr, or ``out``)
    that updates in place on a terminal and in Jupyter (Dask's ``progress``)."""
    import sys

    stream = out or sys.stderr
    listed = list(futures)
    total = len(listed)
    shown = -1
    while True:
        done = sum(f.done() for f in listed)
        if done != shown:
            width = 40
            filled = width * done // max(total, 1)
            stream.write(f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total} tasks")
            stream.flush()
            shown = done
        if done == total:
            stream.write("\n")
            stream.flush()
            return
        time.sleep(0.05)


def gather(futures: Iterable[Future]) -> List[Any]:
    """Every future's value, in order (an exception is raised at the first that failed)."""
    return [f.result() for f in futures]


def wait(futures: Iterable[Future], timeout: Optional[float] = None) -> None:
    """Wait until every future has ended (Dask's ``wait``)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for f in futures:
        while not f.done():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{f.key} did not end within {timeout} s")
            time.sleep(0.002)


def as_completed(futures: Iterable[Future]) -> Iterator[Future]:
    """The futures in the order they end (Dask's ``as_completed``)."""
    pending = list(futures)
    while pending:
        ended = [f for f in pending if f.done()]
        if not ended:
            time.sleep(0.002)
            continue
        for f in ended:
            pending.remove(f)
            yield f
