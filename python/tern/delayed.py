"""``tern.delayed``: Dask's lazy function calls. ``delayed(fn)(*args)`` records a call
without running it; calls that take others' results make a task graph; ``.compute()`` runs
the whole graph on the cluster as one submission (each call on the least busy node holding
its inputs, shared sub-results computed once), or in this process with
``scheduler="sync"`` (one call at a time, for debugging) or ``"threads"`` (a thread pool), with
the same answers.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import re
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import cloudpickle

if TYPE_CHECKING:
    from .client import Client
    from .futures import Future

_names = itertools.count()


class Delayed:
    """One lazy call: ``fn(*args, **kwargs)`` where any argument may be another
    :class:`Delayed` (a list or tuple of them too)."""

    def __init__(self, fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any], name: Optional[str] = None):
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        base = getattr(fn, "__name__", None) or type(fn).__name__
        self._name = name or f"{re.sub(r'[^A-Za-z0-9_]', '_', base)[:40]}-{next(_names)}"

    @property
    def key(self) -> str:
        """This call's name in the graph (``visualize`` shows it)."""
        return self._name

    # -- the graph -----------------------------------------------------------------------

    def _graph(self) -> List["Delayed"]:
        """Every call this one needs, inputs before the calls reading them, each once."""
        order: List[Delayed] = []
        seen: set = set()
        stack: List[Tuple[Delayed, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in seen:
                continue
            if expanded:
                seen.add(id(node))
                order.append(node)
                continue
            stack.append((node, True))
            for dep in reversed(node._inputs()):
                if id(dep) not in seen:
                    stack.append((dep, False))
        return order

    def _inputs(self) -> List["Delayed"]:
        found = []
        for arg in self._args:
            if isinstance(arg, Delayed):
                found.append(arg)
            elif isinstance(arg, (list, tuple)):
                found.extend(a for a in arg if isinstance(a, Delayed))
        return found

    # -- running -------------------------------------------------------------------------

    def compute(self, scheduler: Optional[str] = None, client: Optional["Client"] = None) -> Any:
        """The call's value: on the cluster (``client`` or the default one), or in this
        process with ``scheduler="sync"`` or ``"threads"``."""
        return compute(self, scheduler=scheduler, client=client)[0]

    def persist(self, client: Optional["Client"] = None) -> "Future":
        """Run the graph on the cluster and keep the result there: a :class:`Future`."""
        from .client import get_client

        return _submit([self], client or get_client())[0]

    def visualize(self, filename: Optional[str] = None) -> str:
        """The graph in Graphviz's DOT language (written to ``filename`` when given; render it
        with ``dot -Tpng``)."""
        lines = ["digraph tern {", "  rankdir=BT;"]
        for node in self._graph():
            lines.append(f'  "{node.key}" [shape=box];')
            for dep in node._inputs():
                lines.append(f'  "{dep.key}" -> "{node.key}";')
        lines.append("}")
        dot = "\n".join(lines) + "\n"
        if filename is not None:
            with open(filename, "w") as out:
                out.write(dot)
        return dot

    def __repr__(self) -> str:
        return f"Delayed({self.key!r})"


def delayed(fn: Any = None, *, name: Optional[str] = None) -> Any:
    """``delayed(fn)(*args)`` or ``@delayed`` on a function: calls become lazy."""
    if fn is None:
        return lambda f: delayed(f, name=name)
    if isinstance(fn, Delayed):
        return fn

    def call(*args: Any, **kwargs: Any) -> Delayed:
        return Delayed(fn, args, kwargs, name)

    call.__name__ = getattr(fn, "__name__", "delayed")
    call.__doc__ = getattr(fn, "__doc__", None)
    return call


def _resolve(value: Any, results: Dict[int, Any]) -> Any:
    if isinstance(value, Delayed):
        return results[id(value)]
    if isinstance(value, (list, tuple)) and any(isinstance(v, Delayed) for v in value):
        return type(value)(_resolve(v, results) for v in value)
    return value


def _run_here(objs: Sequence[Delayed], threads: Optional[int], processes: bool = False) -> List[Any]:
    """The single-machine schedulers: each call once, inputs first; on this thread, a
    thread pool, or a process pool (calls and results travel with cloudpickle)."""
    order: List[Delayed] = []
    seen: set = set()
    for obj in objs:
        for node in obj._graph():
            if id(node) not in seen:
                seen.add(id(node))
                order.append(node)
    results: Dict[int, Any] = {}

    def run(node: Delayed) -> Any:
        args = [_resolve(a, results) for a in node._args]
        return node._fn(*args, **node._kwargs)

    if threads is None:
        for node in order:
            results[id(node)] = run(node)
    else:
        pending = {id(n): n for n in order}
        executor = concurrent.futures.ProcessPoolExecutor if processes else concurrent.futures.ThreadPoolExecutor
        with executor(max_workers=threads) as pool:
            running: Dict[concurrent.futures.Future, Delayed] = {}
            while pending or running:
                for key, node in list(pending.items()):
                    if all(id(d) in results for d in node._inputs()):
                        del pending[key]
                        if processes:
                            args = [_resolve(a, results) for a in node._args]
                            call = cloudpickle.dumps((node._fn, args, node._kwargs))
                            running[pool.submit(_run_pickled, call)] = node
                        else:
                            running[pool.submit(run, node)] = node
                done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for f in done:
                    results[id(running.pop(f))] = f.result()
    return [results[id(o)] for o in objs]


def _submit(objs: Sequence[Delayed], client: "Client") -> List["Future"]:
    """The graph of ``objs`` as one submission; a future for each of ``objs``."""
    from .futures import Future, _argument

    order: List[Delayed] = []
    index: Dict[int, int] = {}
    for obj in objs:
        for node in obj._graph():
            if id(node) not in index:
                index[id(node)] = len(order)
                order.append(node)
    tasks = []
    for node in order:
        args: List[Tuple[Any, ...]] = []
        layout: List[Tuple[str, int]] = []
        for arg in node._args:
            if isinstance(arg, (list, tuple)) and any(isinstance(a, Delayed) for a in arg):
                layout.append(("list" if isinstance(arg, list) else "tuple", len(arg)))
                items = list(arg)
            else:
                layout.append(("one", 1))
                items = [arg]
            for item in items:
                if isinstance(item, Delayed):
                    args.append(("task", index[id(item)]))
                else:
                    args.append(_argument(item))
        from .futures import _Call

        plain = all(kind == "one" for kind, _ in layout)
        fn = node._fn if plain else _Call(node._fn, tuple(layout))
        tasks.append((node.key.rsplit("-", 1)[0], cloudpickle.dumps((fn, node._kwargs)), args))
    wanted = [index[id(o)] for o in objs]
    natives = client._native.submit_python_graph(tasks, wanted)
    return [Future(n, client) for n in natives]


def _run_pickled(call: bytes) -> Any:
    """A call sent to a process pool with cloudpickle (the pool's own pickle cannot send
    lambdas or a script's functions)."""
    fn, args, kwargs = cloudpickle.loads(call)
    return fn(*args, **kwargs)


def _scheduler(named: Optional[str]) -> str:
    from . import client as clients
    from . import config

    chosen = named or config.get("scheduler")
    if chosen is None:
        # Dask computes local collections on threads unless a client exists.
        has_client = clients.current_client() is not None
        return "distributed" if has_client else "threads"
    aliases = {"single-threaded": "sync", "synchronous": "sync", "threading": "threads", "cluster": "distributed", "multiprocessing": "processes"}
    chosen = aliases.get(chosen, chosen)
    if chosen not in ("distributed", "sync", "threads", "processes"):
        raise ValueError(f"no scheduler {named!r}: distributed, sync, threads or processes")
    return chosen


def compute(*objs: Any, scheduler: Optional[str] = None, client: Optional["Client"] = None) -> Tuple[Any, ...]:
    """Compute several lazy values together, sharing what they share (Dask's
    ``dask.compute``): on the cluster (``client``, or the default one), or here with
    ``scheduler="sync"``, ``"threads"`` or ``"processes"`` (see :mod:`tern.config`)."""
    lazy = [o for o in objs if isinstance(o, Delayed)]
    chosen = "distributed" if client is not None and scheduler is None else _scheduler(scheduler)
    if chosen == "sync":
        values = _run_here(lazy, None)
    elif chosen == "threads":
        values = _run_here(lazy, 4)
    elif chosen == "processes":
        values = _run_here(lazy, 4, processes=True)
    else:
        from .client import get_client
        from .futures import gather

        values = gather(_submit(lazy, client or get_client())) if lazy else []
    answers = iter(values)
    return tuple(
        next(answers) if isinstance(o, Delayed) else _collection(o, scheduler) for o in objs
    )


def _collection(obj: Any, scheduler: Optional[str]) -> Any:
    """A DataFrame's, Series', Bag's or lazy scalar's value (each computes on its own), or
    ``obj`` itself when it is none of those, as Dask passes plain values through."""
    from .bag import Bag
    from .dataframe import Lazy, Mapped, _Frame

    if isinstance(obj, (_Frame, Lazy, Mapped, Bag)):
        return obj.compute(scheduler=scheduler)
    return obj
