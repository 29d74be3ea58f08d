"""tern.delayed: one graph per compute, shared calls run once, the same answers on the
cluster and on the single-machine schedulers."""

import sys

import cloudpickle
import pytest

import tern

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def logged(path, x):
    """x, leaving a line in `path` each time it runs (the nodes share this machine's disk)."""
    with open(path, "a") as log:
        log.write(f"{x}\n")
    return x


def tree(path):
    shared = tern.delayed(logged)(path, 10)
    left = tern.delayed(inc)(shared)
    right = tern.delayed(add)(shared, 5)
    leaves = [tern.delayed(inc)(i) for i in range(8)]
    total = tern.delayed(sum)(leaves)
    return tern.delayed(add)(tern.delayed(add)(left, right), total)


def test_the_same_answer_on_the_cluster_and_here(client, tmp_path):
    want = (11 + 15) + sum(range(1, 9))
    assert tree(tmp_path / "cluster.log").compute() == want
    assert tree(tmp_path / "sync.log").compute(scheduler="sync") == want
    assert tree(tmp_path / "threads.log").compute(scheduler="threads") == want
    # The call both branches read ran once on the cluster, as here.
    for run in ["cluster", "sync", "threads"]:
        assert (tmp_path / f"{run}.log").read_text().splitlines() == ["10"], run


def test_compute_several_persist_and_visualize(client, tmp_path):
    a = tern.delayed(inc)(1)
    b = tern.delayed(add)(a, 10)
    assert tern.compute(a, b, 7) == (2, 12, 7)
    assert tern.compute(a, b, scheduler="sync") == (2, 12)
    kept = b.persist()
    assert isinstance(kept, tern.Future) and kept.result() == 12
    # A later future reads the persisted value where it is kept.
    assert client.submit(inc, kept).result() == 13
    dot = b.visualize(str(tmp_path / "g.dot"))
    assert f'"{a.key}" -> "{b.key}"' in dot and dot.startswith("digraph")
    assert (tmp_path / "g.dot").read_text() == dot


def test_a_failing_call_fails_what_reads_it(client):
    @tern.delayed
    def bad(x):
        raise KeyError(x)

    with pytest.raises(tern.TaskFailed, match="KeyError"):
        tern.delayed(inc)(bad(3)).compute()
    with pytest.raises(KeyError):
        tern.delayed(inc)(bad(3)).compute(scheduler="sync")


def test_schedulers_by_config_and_without_a_cluster(client):
    import subprocess

    x = tern.delayed(add)(tern.delayed(inc)(1), tern.delayed(lambda v: v * 10)(3))
    assert x.compute(scheduler="processes") == 32
    with tern.config.set(scheduler="sync"):
        assert tern.compute(x) == (32,)
    with pytest.raises(ValueError, match="no scheduler"):
        tern.config.set(scheduler="gpu")
    # No client in a fresh process: a bag computes on threads here, as Dask's does, and no
    # cluster is started (there is no `tern` to start one with).
    code = (
        "import tern.bag as db; "
        "print(db.from_sequence(range(10), npartitions=3).map(lambda v: v * 2).sum().compute())"
    )
    env = {**__import__("os").environ, "TERN_BIN": "/nonexistent/tern", "TERN_CLUSTER": "/nonexistent"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "90"
