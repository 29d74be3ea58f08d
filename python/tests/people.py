"""The tests' data: a table of people with missing names and balances (NaN), seeded."""

import numpy as np
import pandas as pd


def people(rows: int = 1000, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = np.array(["alice", "bob", "carol", "dan", None], dtype=object)
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "name": names[rng.integers(0, len(names), rows)],
            "age": rng.integers(18, 90, rows).astype(np.int64),
            "team": rng.integers(0, 4, rows).astype(np.int64),
            "balance": np.where(rng.random(rows) < 0.15, np.nan, rng.normal(100.0, 30.0, rows)),
        }
    )
