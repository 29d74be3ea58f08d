"""A Dask script whose imports were changed to tern's and nothing else: the four lines marked
`# was: ...` are all that differ from the Dask original. Prints what it computed and exits
non-zero if an answer is not pandas' or Python's.

    make python && TERN_BIN=target/debug/tern .venv/bin/python examples/python/dask_script.py
"""

import sys

import pandas as pd

import tern.bag as db  # was: import dask.bag as db
import tern.dataframe as dd  # was: import dask.dataframe as dd
from tern import delayed  # was: from dask import delayed
from tern.distributed import Client, LocalCluster  # was: from dask.distributed import ...


def main() -> int:
    cluster = LocalCluster(n_workers=3)
    client = Client(cluster)
    ok = True

    pdf = pd.DataFrame({"k": [i % 4 for i in range(1000)], "v": range(1000)})
    df = dd.from_pandas(pdf, npartitions=4)
    sums = df.groupby("k").v.sum().compute()
    print(sums.to_string())
    ok &= sums.tolist() == pdf.groupby("k").v.sum().tolist()

    futures = client.map(lambda x: x**2, range(100))
    total = client.submit(sum, futures).result()
    print("sum of squares:", total)
    ok &= total == sum(x**2 for x in range(100))

    @delayed
    def inc(x: int) -> int:
        return x + 1

    @delayed
    def add(x: int, y: int) -> int:
        return x + y

    answer = add(inc(1), inc(2)).compute()
    print("delayed:", answer)
    ok &= answer == 5

    words = db.from_sequence(["a b", "b c", "c a b"], npartitions=2).map(str.split).flatten()
    counts = dict(words.frequencies().compute())
    print("word counts:", counts)
    ok &= counts == {"a": 2, "b": 3, "c": 2}

    client.close()
    cluster.close()
    print("same answers as pandas and Python" if ok else "ANSWERS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
