"""The Array bench (`make bench`): issue 21's four operations side by side, in one run, on one
machine: NumPy on one thread (the floor), Dask Array on its threaded scheduler and on a
distributed LocalCluster, and tern.array on a 3-node local cluster.

- ``(x + x.T) - x.mean(axis=0)`` on N x N float64 in C x C chunks (Dask's headline);
- ``x.sum()``;
- ``x @ x.T`` on M x M (the top-left corner of x, same chunks);
- ``x.rechunk((N, C // 20))``.

Array results are made and kept where they were computed (``persist``), as a Dask user keeps
intermediate arrays; the sum comes back to the client. Every tern answer is checked against
NumPy's. Goal (issue 21): tern faster than Dask distributed on every operation and within
1.5x of Dask's threaded scheduler. ``--n 20000 --m 10000 --chunk 1000`` are the issue's sizes.
"""

import os

# One thread per BLAS call everywhere: NumPy is the one-thread floor, and Dask and tern
# parallelise across chunks (two cores).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402


def timed(runs, fn):
    """The fastest of ``runs`` calls of ``fn``, and the last call's result."""
    best, result = float("inf"), None
    for _ in range(runs):
        result = None  # the previous result's memory back before the next run
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def operations(x, m, rechunked):
    """The bench's four operations on an array ``x`` of any of the three libraries."""
    return {
        "headline": lambda: (x + x.T) - x.mean(axis=0),
        "sum": lambda: x.sum(),
        "matmul": lambda: x[:m, :m] @ x[:m, :m].T,
        "rechunk": lambda: x.rechunk(rechunked),
    }


def bench_numpy(x, m, runs):
    out = {}
    out["headline"] = timed(runs, lambda: (x + x.T) - x.mean(axis=0))[0]
    out["sum"] = timed(runs, lambda: x.sum())[0]
    corner = x[:m, :m]
    out["matmul"] = timed(runs, lambda: corner @ corner.T)[0]
    # NumPy's rechunk is a no-op; its floor is one copy of the array.
    out["rechunk"] = timed(runs, lambda: x.copy())[0]
    return out


def bench_dask(x, chunk, m, rechunked, runs, distributed):
    import dask
    import dask.array as da

    xd = da.from_array(x, chunks=(chunk, chunk))
    out = {}
    if distributed:
        import logging

        from dask.distributed import Client, LocalCluster, wait

        # Two single-threaded worker processes on two cores; its P2P rechunk logs a warning
        # per transfer.
        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, silence_logs=logging.ERROR
        ) as cluster, Client(cluster) as client:
            xd = client.persist(xd)
            wait(xd)

            def run(make):
                y = make()
                if y.ndim == 0:
                    return y.compute()
                y = client.persist(y)
                wait(y)
                return y

            for name, make in operations(xd, m, rechunked).items():
                out[name] = timed(runs, lambda: run(make))[0]
                client.run(lambda: __import__("gc").collect())
        return out
    with dask.config.set(scheduler="threads", num_workers=os.cpu_count()):
        for name, make in operations(xd, m, rechunked).items():
            out[name] = timed(runs, lambda: (lambda y: y.compute() if y.ndim == 0 else y.persist())(make()))[0]
    return out


def bench_tern(x, chunk, m, rechunked, runs, check):
    import numpy as np

    import tern
    import tern.array as ta

    out = {}
    with tern.LocalCluster(n_workers=3) as cluster, tern.Client(cluster) as client:
        start = time.perf_counter()
        xt = ta.from_array(x, chunks=(chunk, chunk), name="bench-x", client=client, replace=True)
        out["store"] = time.perf_counter() - start

        def run(make):
            y = make()
            return y.compute() if y.ndim == 0 else y.persist()

        for name, make in operations(xt, m, rechunked).items():
            out[name], result = timed(runs, lambda: run(make))
            if check:
                check(name, result if result.ndim == 0 else result.compute(), np)
            result = None
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="x is n x n float64")
    parser.add_argument("--m", type=int, default=10_000, help="x @ x.T on the m x m corner")
    parser.add_argument("--chunk", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import numpy as np

    n, m, chunk = args.n, args.m, args.chunk
    rechunked = (n, max(1, chunk // 20))
    x = np.random.default_rng(21).random((n, n))
    figures = {"numpy": bench_numpy(x, m, args.runs)}

    def check(name, got, np):
        if name == "headline":
            want = x + x.T  # in place below: one more copy of x, not two
            want -= x.mean(axis=0)
        elif name == "sum":
            want = x.sum()
        elif name == "matmul":
            want = x[:m, :m] @ x[:m, :m].T
        else:
            want = x
        assert got.shape == np.shape(want), (name, got.shape, np.shape(want))
        # By slabs of rows: allclose on the whole makes several temporaries the size of x.
        got, want = np.atleast_1d(got), np.atleast_1d(want)
        for i in range(0, len(got), 1000):
            close = np.allclose(got[i : i + 1000], want[i : i + 1000], rtol=1e-9, atol=1e-9)
            assert close, f"tern's {name} differs from NumPy's"

    figures["tern"] = bench_tern(x, chunk, m, rechunked, args.runs, check)
    figures["dask_threads"] = bench_dask(x, chunk, m, rechunked, args.runs, distributed=False)
    figures["dask_distributed"] = bench_dask(x, chunk, m, rechunked, args.runs, distributed=True)
    if args.json:
        print(json.dumps(figures))
        return
    gb = x.nbytes / 1e9
    print(f"Array: x {n} x {n} float64 ({gb:.1f} GB) in {chunk} x {chunk} chunks, x @ x.T on {m} x {m}, "
          f"rechunk to {rechunked}; best of {args.runs}; tern stored x in {figures['tern']['store']:.1f} s")
    print(f"{'operation':<12}{'NumPy 1 thread':>16}{'Dask threads':>14}{'Dask distributed':>18}{'tern':>10}"
          f"{'vs distributed':>16}{'vs threads':>12}")
    for name in ("headline", "sum", "matmul", "rechunk"):
        t = figures["tern"][name]
        print(f"{name:<12}{figures['numpy'][name]:>15.2f}s{figures['dask_threads'][name]:>13.2f}s"
              f"{figures['dask_distributed'][name]:>17.2f}s{t:>9.2f}s"
              f"{figures['dask_distributed'][name] / t:>15.2f}x{t / figures['dask_threads'][name]:>11.2f}x")
    print("goal: 'vs distributed' (Dask's time / tern's) above 1; 'vs threads' (tern's / Dask's) at most 1.5")


if __name__ == "__main__":
    main()
