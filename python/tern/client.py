"""Connecting to a cluster: :class:`Client`, and :class:`LocalCluster` to start one here."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Union

from ._tern import ClusterNotFound, NativeClient

if TYPE_CHECKING:
    import pandas

    from .array import Array
    from .dataframe import DataFrame
    from .futures import Future

# The clients made in this process, oldest first (weakly: a dropped client goes too).
_clients: List["weakref.ref[Client]"] = []


def current_client() -> Optional["Client"]:
    """The newest client of this process that is still open, if any: closing a client makes
    the one before it current again, as in Dask."""
    while _clients:
        client = _clients[-1]()
        if client is not None and not client._closed:
            return client
        _clients.pop()
    return None


def _identity(x: Any) -> Any:
    return x


def get_client() -> "Client":
    """The client made last in this process (Dask's ``get_client``); one is made (and a local
    cluster started if none runs) when there is none yet."""
    return current_client() or Client()


def _tern_binary() -> str:
    """The ``tern`` command: ``$TERN_BIN``, else the one on ``PATH``."""
    named = os.environ.get("TERN_BIN")
    if named:
        if not os.access(named, os.X_OK):
            raise ClusterNotFound(f"TERN_BIN={named} is not an executable tern command")
        return named
    found = shutil.which("tern")
    if found is None:
        raise ClusterNotFound(
            "no `tern` command to start a local cluster with: build it (`make`) and put it "
            "on PATH, or set TERN_BIN to it"
        )
    return found


def _free_ports(count: int) -> int:
    """A base port with ``count`` free UDP ports after it (QUIC runs over UDP)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise ClusterNotFound(f"no {count} free UDP ports in a row on 127.0.0.1")


def _stop(tern: str, directory: str, owned: Optional[tempfile.TemporaryDirectory]) -> None:
    subprocess.run(
        [tern, "--cluster", directory, "down"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    if owned is not None:
        owned.cleanup()


class LocalCluster:
    """A cluster of ``n_workers`` tern nodes on this machine, on loopback (as Dask's
    ``LocalCluster``), in a temporary directory unless ``directory`` is given. The nodes
    are separate processes (``tern up --detach``); :meth:`close` (or leaving the ``with``
    block, or the end of the process) stops them. ``memory_limit`` (bytes, or text such as
    ``"2GiB"``) bounds each Python worker's resident memory, as Dask's does: a worker past it
    is stopped and its task fails saying so (default: the machine's memory shared among a
    node's task slots). ``node_memory`` bounds what all the tasks of a node may hold at once
    (``tern up --query-memory``): a task that needs more fails saying so."""

    def __init__(
        self,
        n_workers: int = 3,
        directory: Optional[Union[str, os.PathLike]] = None,
        memory_limit: Union[None, int, str] = None,
        node_memory: Union[None, int, str] = None,
    ):
        if n_workers < 1:
            raise ValueError(f"n_workers must be at least 1, not {n_workers}")
        self.n_workers = n_workers
        self._tern = _tern_binary()
        self._owned = None
        if directory is None:
            self._owned = tempfile.TemporaryDirectory(prefix="tern-local-")
            directory = self._owned.name
        self.directory = str(Path(directory).resolve())
        started = subprocess.run(
            [
                self._tern,
                "up",
                "--detach",
                "--dir",
                self.directory,
                "--nodes",
                str(n_workers),
                "--base-port",
                str(_free_ports(n_workers + 4)),
                # Python functions run in worker processes of this interpreter.
                "--python",
                sys.executable,
            ]
            + ([] if memory_limit is None else ["--worker-memory", str(memory_limit)])
            + ([] if node_memory is None else ["--query-memory", str(node_memory)]),
            capture_output=True,
            text=True,
            check=False,
        )
        self._closer = weakref.finalize(self, _stop, self._tern, self.directory, self._owned)
        if started.returncode != 0:
            self._closer()
            last = (started.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise ClusterNotFound(f"`tern up` could not start a local cluster: {last}")

    def close(self) -> None:
        """Stop the nodes (and remove the temporary directory)."""
        self._closer()

    @property
    def closed(self) -> bool:
        return not self._closer.alive

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "running"
        return f"LocalCluster({self.directory!r}, n_workers={self.n_workers}, {state})"


class Client:
    """A connection to a tern cluster, with Dask's names.

    ``cluster`` is a :class:`LocalCluster`, a cluster directory, or ``None``: then the
    cluster is found as the ``tern`` command finds it (``$TERN_CLUSTER``, else ``./.tern``),
    and if there is none a :class:`LocalCluster` is started for this client (and stopped
    with it), as Dask's ``Client()`` does. The client made last is the default one
    (:func:`get_client`) that :func:`tern.from_pandas` stores through.
    """

    def __init__(self, cluster: Union[None, str, os.PathLike, LocalCluster] = None):
        self._owned_cluster: Optional[LocalCluster] = None
        self._closed = False
        if isinstance(cluster, LocalCluster):
            self.cluster: Optional[LocalCluster] = cluster
            self._native = NativeClient(cluster.directory)
        elif cluster is None:
            self.cluster = None
            try:
                self._native = NativeClient(None)
            except ClusterNotFound:
                self._owned_cluster = LocalCluster()
                self.cluster = self._owned_cluster
                self._native = NativeClient(self._owned_cluster.directory)
        else:
            self.cluster = None
            self._native = NativeClient(os.fspath(cluster))
        _clients.append(weakref.ref(self))

    # -- the cluster ---------------------------------------------------------------------

    @property
    def directory(self) -> str:
        """The cluster directory this client's configuration came from."""
        return self._native.cluster

    def status(self) -> Dict[str, Any]:
        """The nodes (id, address, state, role, bytes), the leader and the health of the
        stored data (partitions under-replicated or missing)."""
        return json.loads(self._native.status())

    def list_datasets(self) -> List[str]:
        """The names of the stored datasets (Dask's ``list_datasets``)."""
        return [d["name"] for d in json.loads(self._native.datasets())]

    def dataset_info(self, name: str) -> Dict[str, Any]:
        """A stored dataset's record: version, rows, bytes, schema, and its partitions with
        their holders. Raises :class:`NoSuchDataset`."""
        found = self._native.dataset(name)
        if found is None:
            from ._tern import NoSuchDataset

            raise NoSuchDataset(f"no dataset named {name!r}")
        return json.loads(found)

    def remove(self, name: str) -> None:
        """Remove a stored dataset (its blocks are collected later)."""
        self._native.remove(name)

    # -- data ----------------------------------------------------------------------------

    def table(self, name: str) -> "DataFrame":
        """Stored dataset ``name`` as a lazy :class:`DataFrame`."""
        from .dataframe import DataFrame

        record = self.dataset_info(name)
        if record["format"] == "ndarray":
            raise TypeError(f"{name!r} is an array, not a table: client.array({name!r}) reads it")
        return DataFrame._of_table(self, name, record)

    def array(self, name: str) -> "Array":
        """Stored array ``name`` as a :class:`tern.array.Array`."""
        from .array import Array

        return Array._stored(self, name, self.dataset_info(name))

    def sql(self, query: str) -> "DataFrame":
        """A SQL query over the stored datasets, as a lazy :class:`DataFrame` (nothing runs
        until it is computed)."""
        from .dataframe import DataFrame

        return DataFrame._of_query(self, query)

    def put(
        self,
        df: "pandas.DataFrame",
        name: str,
        npartitions: int = 1,
        replace: bool = False,
    ) -> "DataFrame":
        """Store pandas DataFrame ``df`` as dataset ``name`` in ``npartitions`` partitions,
        each kept in triplicate; the stored dataset as a lazy :class:`DataFrame`. Raises
        :class:`DatasetExists` if the name is taken, unless ``replace``."""
        from .dataframe import _partitions_of

        self._native.put(name, _partitions_of(df, npartitions), replace)
        return self.table(name)

    # -- futures -------------------------------------------------------------------------

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> "Future":
        """Run ``fn(*args, **kwargs)`` on the cluster (Dask's ``submit``): on the least busy
        node holding its inputs (futures and partitions among ``args`` are read where they
        are). Returns at once with a :class:`Future`."""
        from .futures import submit_calls

        return submit_calls(self, fn, [args], kwargs)[0]

    def map(self, fn: Any, *iterables: Iterable[Any], **kwargs: Any) -> List["Future"]:
        """``fn`` over each element of ``iterables`` (zipped), one task each, submitted as one
        graph (Dask's ``map``); ``client.map(fn, df.partitions)`` runs ``fn`` on each stored
        partition where it is kept."""
        from .futures import submit_calls

        return submit_calls(self, fn, [list(call) for call in zip(*iterables)], kwargs)

    def scatter(self, data: Any) -> Any:
        """Data sent to the cluster now, kept on a node as a :class:`Future` (Dask's
        ``scatter``); a list gives a list of futures, one per element."""
        from .futures import submit_calls

        if isinstance(data, list):
            return submit_calls(self, _identity, [[x] for x in data], {})
        return submit_calls(self, _identity, [[data]], {})[0]

    def gather(self, futures: Iterable["Future"]) -> List[Any]:
        """Every future's value, in order."""
        from .futures import gather

        return gather(futures)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the client; a local cluster it started for itself is stopped."""
        self._closed = True
        if self._owned_cluster is not None:
            self._owned_cluster.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"<Client: {self.directory!r} closed>"
        try:
            status = self.status()
            datasets = len(self.list_datasets())
        except Exception as e:  # the repr must not raise
            return f"<Client: {self.directory!r} unreachable: {e}>"
        nodes = status["nodes"]
        up = sum(1 for n in nodes if n["state"] == "up")
        stored = sum(n["stored_bytes"] for n in nodes)
        capacity = sum(n["capacity_bytes"] for n in nodes)
        # What the nodes that answered run at once, and may hold while doing so.
        slots = sum(n.get("task_slots") or 0 for n in nodes)
        memory = sum(n.get("query_memory_bytes") or 0 for n in nodes)
        return (
            f"<Client: {self.directory!r} nodes={len(nodes)} up={up} "
            f"leader={status['leader']} slots={slots} memory={_size(memory)} "
            f"datasets={datasets} stored={_size(stored)} of {_size(capacity)}>"
        )


def _size(n: int) -> str:
    """Bytes as people read them: 1.5 GiB."""
    size = float(n)
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"]:
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
