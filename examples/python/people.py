"""The walk-through of tern's design, in Python: a table of people split into partitions
(each kept on three nodes), a groupby that needs a shuffle between nodes, the answer brought
back to the client, then a Python function run on each partition where it is stored; all of
it checked against pandas on the same data.

    make python && TERN_BIN=target/debug/tern .venv/bin/python examples/python/people.py

With no cluster named (--cluster DIR, $TERN_CLUSTER or ./.tern), a local one is started for
the run and stopped after it. Exits non-zero when the cluster's answer differs from pandas'.
"""

import argparse
import sys

import numpy as np
import pandas as pd

import tern


def people(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    cities = np.array(["Lisbon", "Osaka", "Quito", "Nairobi", "Tromsø"])
    return pd.DataFrame(
        {
            "name": [f"person {i}" for i in range(rows)],
            "city": cities[rng.integers(0, len(cities), rows)],
            "age": rng.integers(18, 95, rows),
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", help="the cluster directory (default: as `tern` finds it)")
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    with tern.Client(args.cluster) as client:
        print(client)
        df = people(args.rows)
        stored = client.put(df, "people_example", npartitions=6, replace=True)
        print(stored)
        print(stored.head())
        by_city = client.sql(
            "SELECT city, count(*) AS people, avg(age) AS mean_age "
            "FROM people_example GROUP BY city ORDER BY city"
        ).compute()
        print(by_city.to_string(index=False))

        want = (
            df.groupby("city")
            .agg(people=("name", "size"), mean_age=("age", "mean"))
            .reset_index()
            .sort_values("city")
            .reset_index(drop=True)
        )
        same = (
            by_city["city"].tolist() == want["city"].tolist()
            and by_city["people"].tolist() == want["people"].tolist()
            and np.allclose(by_city["mean_age"], want["mean_age"])
        )
        # Your own Python function on each partition, run by a worker process on one of the
        # partition's three holders (as Dask's map_partitions).
        def decades(part: pd.DataFrame) -> pd.DataFrame:
            return part.assign(decade=part["age"] // 10 * 10)[["city", "decade"]]

        mapped = stored.map_partitions(decades).compute()
        by_decade = mapped.groupby("decade").size().sort_index()
        print(by_decade.to_string())
        want_decades = decades(df).groupby("decade").size().sort_index()
        same = same and by_decade.tolist() == want_decades.tolist()
        sizes = client.gather(client.map(len, stored.partitions))
        print(f"rows per partition, counted where each is stored: {sizes}")
        same = same and sum(sizes) == len(df)
        client.remove("people_example")
    if not same:
        print("the cluster's answer differs from pandas':", want, sep="\n", file=sys.stderr)
        return 1
    print("same answer as pandas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
