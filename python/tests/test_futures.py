"""Python functions on the cluster's nodes: futures, map over stored partitions, failures."""

import collections
import os
import sys

import cloudpickle

import pandas as pd
import pandas.testing as pdt
import pytest
from people import people

import tern

# The workers cannot import this test module: its functions travel by value, as those of a
# script (`__main__`) do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def test_submit_map_and_gather_over_many_tasks(client):
    futures = client.map(inc, range(300))
    assert client.gather(futures) == [i + 1 for i in range(300)]
    # A list of futures: each read where it is kept, the list rebuilt for the function.
    assert client.submit(sum, futures[:10]).result() == sum(range(1, 11))
    chained = client.submit(add, futures[0], futures[1])  # read where they are kept
    assert chained.result() == 3
    assert set(f.result() for f in tern.as_completed(futures[:20])) == set(range(1, 21))
    tern.wait(futures)
    assert all(f.done() for f in futures)


def test_objects_of_any_kind_travel_with_cloudpickle(client):
    counter = client.submit(collections.Counter, "mississippi").result()
    assert counter == collections.Counter("mississippi")
    lam = client.submit(lambda s, times=1: s * times, "ab", times=3)
    assert lam.result() == "ababab"


def test_an_exception_is_raised_here_with_the_remote_traceback(client):
    def boom(x):
        raise ValueError(f"no good: {x}")

    future = client.submit(boom, 7)
    with pytest.raises(tern.TaskFailed, match="ValueError: no good: 7"):
        future.result()
    assert "Traceback" in future.traceback()
    assert isinstance(future.exception(), tern.TaskFailed)
    # Its dependents fail too; others go on.
    after = client.submit(inc, future)
    with pytest.raises(tern.TaskFailed):
        after.result()
    assert client.submit(inc, 1).result() == 2


def test_map_partitions_runs_on_the_holders_and_equals_pandas(client):
    df = people(400, seed=3)
    stored = client.put(df, "futures_people", npartitions=4, replace=True)

    def older(part, years):
        part = part.copy()
        part["age"] = part["age"] + years
        return part[part["team"] == 1]

    got = stored.map_partitions(older, 10).compute()
    want = older(df, 10)
    pdt.assert_frame_equal(
        got.sort_values("id").reset_index(drop=True),
        want.sort_values("id").reset_index(drop=True),
        check_dtype=False,
    )
    sizes = client.gather(client.map(len, stored.partitions))
    assert sum(sizes) == len(df) and len(sizes) == 4


def test_a_worker_that_dies_fails_only_its_task(client):
    def die(x):
        os._exit(3)

    doomed = client.submit(die, 1)
    with pytest.raises(tern.TaskFailed, match="died"):
        doomed.result()
    # The workers are replaced: the next tasks run.
    assert client.gather(client.map(inc, [10, 20])) == [11, 21]


def test_only_writers_run_code_on_the_nodes(cluster, tmp_path):
    """A reader's certificate reads data, and may not run functions on the nodes."""
    import pathlib

    config = (pathlib.Path(cluster.directory) / "client.toml").read_text()
    lines = []
    for line in config.splitlines():
        key = line.split("=")[0].strip()
        if key in ("ca", "cert", "key"):
            name = {"ca": "ca.pem", "cert": "reader.pem", "key": "reader.key"}[key]
            line = f'{key} = "{pathlib.Path(cluster.directory) / name}"'
        lines.append(line)
    (tmp_path / "client.toml").write_text("\n".join(lines) + "\n")
    reader = tern.Client(tmp_path)
    reader.list_datasets()
    with pytest.raises(tern.TernError, match="write"):
        reader.submit(inc, 1).result()


def test_a_node_killed_mid_map_costs_retries_not_answers():
    """SIGKILL a node while a map runs: every future still resolves to the right value."""
    import pathlib
    import signal
    import time

    def slow_inc(x):
        import time as t

        t.sleep(0.02)
        return x + 1

    with tern.LocalCluster(n_workers=3) as cluster, tern.Client(cluster) as client:
        client.gather(client.map(inc, range(10)))  # the workers are up
        futures = client.map(slow_inc, range(200))
        deadline = time.monotonic() + 30
        while sum(f.done() for f in futures) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        pid = int((pathlib.Path(cluster.directory) / "run" / "node-3.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        assert client.gather(futures) == [i + 1 for i in range(200)]


def test_scatter_and_progress(client):
    import io

    kept = client.scatter({"a": 1})
    assert client.submit(lambda d: d["a"] + 1, kept).result() == 2
    many = client.scatter([1, 2, 3])
    assert client.gather(client.map(inc, many)) == [2, 3, 4]
    futures = client.map(inc, range(50))
    shown = io.StringIO()
    tern.progress(futures, out=shown)
    assert shown.getvalue().rstrip().endswith("50/50 tasks")
    assert all(f.done() for f in futures)


def test_an_oversized_call_is_refused_in_one_line_and_the_cluster_goes_on(client):
    with pytest.raises(tern.TaskFailed, match="bytes of literals; at most"):
        client.submit(len, b"x" * 2_000_000).result()
    big = client.scatter(b"x" * 500_000)  # under the bound: kept on a node, read in place
    assert client.submit(len, big).result() == 500_000


def test_a_worker_past_its_memory_limit_fails_its_task_and_is_replaced():
    """As Dask's nanny does: the worker is stopped, the task fails saying why, the next
    task gets a fresh worker."""

    def hog(mib):
        import time

        held = b"x" * (mib << 20)
        time.sleep(3)
        return len(held)

    with tern.LocalCluster(n_workers=1, memory_limit="300MiB") as small, tern.Client(small) as c:
        with pytest.raises(tern.TaskFailed, match="memory limit of 300.0 MiB"):
            c.submit(hog, 800).result(timeout=60)
        assert c.submit(hog, 10).result(timeout=60) == 10 << 20
