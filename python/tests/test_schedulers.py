"""The single-machine schedulers run a DataFrame's work in this process with the answers the
cluster gives; data made with no client stays here and computes on threads, as Dask's does."""

import os
import subprocess
import sys
import textwrap

import cloudpickle
import pandas as pd
import pandas.testing as pdt
import pytest
from people import people

import tern

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SCHEDULERS = ["distributed", "sync", "threads", "processes"]


def rows(df):
    df = df.reset_index(drop=True)
    return df.sort_values(list(df.columns), na_position="last").reset_index(drop=True)


def older_half(part):
    """A map_partitions function: the rows of a partition older than its median age."""
    return part[part.age > part.age.median()]


@pytest.fixture(scope="module")
def data():
    return people(500, seed=23)


@pytest.fixture(scope="module")
def stored(client, data):
    return client.put(data, "schedulers_people", npartitions=4, replace=True)


def work(df):
    """Collections of each kind over ``df`` (a tern or a pandas DataFrame)."""
    return {
        "filter": df[(df.age > 30) & df.name.notna()][["id", "name", "age"]],
        "assign": df.assign(double=df.age * 2).fillna({"balance": 0.0}),
        "groupby": df.groupby("team").agg(total=("balance", "sum"), n=("id", "count")),
        "sorted": df.sort_values(["age", "id"]),
        "counts": df.name.value_counts(),
        "mean": df.balance.mean(),
        "nunique": df.nunique(),
    }


def same(got, want, what):
    if isinstance(want, pd.DataFrame):
        if want.index.names == [None]:
            got, want = rows(got), rows(want)
        pdt.assert_frame_equal(got, want, check_dtype=False, check_exact=False, obj=what)
    elif isinstance(want, pd.Series):
        pdt.assert_series_equal(got.sort_index(), want.sort_index(), check_dtype=False, check_names=False, obj=what)
    else:
        assert got == pytest.approx(want), what


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_scheduler_gives_pandas_answers(stored, data, scheduler):
    expected = work(data)
    for what, lazy in work(stored).items():
        same(lazy.compute(scheduler=scheduler), expected[what], f"{what} on {scheduler}")
    mapped = stored.map_partitions(older_half).compute(scheduler=scheduler)
    pieces = [older_half(p) for p in (data.iloc[i : i + 125] for i in range(0, 500, 125))]
    same(mapped, pd.concat(pieces, ignore_index=True), f"map_partitions on {scheduler}")


def test_config_and_tern_compute_choose_the_scheduler(client, stored, data):
    teams = stored.groupby("team").age.max()
    with tern.config.set(scheduler="sync"):
        got, total = tern.compute(teams, stored.age.sum())
    pdt.assert_series_equal(got, data.groupby("team").age.max(), check_dtype=False, check_names=False)
    assert total == data.age.sum()
    # Outside the block the cluster computes again; a merge with data held here ships it.
    cities = pd.DataFrame({"team": [0, 1, 2], "city": ["Lisbon", "Osaka", "Quito"]})
    here = tern.local.local_data()
    here.hold("schedulers_cities", [tern.dataframe._partitions_of(cities, 1)[0]])
    joined = stored.merge(here.table("schedulers_cities"), on="team")
    same(joined.compute(), data.merge(cities, on="team"), "a merge of stored and local data")
    assert "schedulers_cities" in client.list_datasets()


def run_script(code, env_extra):
    env = dict(os.environ, **env_extra)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_data_made_without_a_client_computes_here(tmp_path):
    """A Dask script with no Client: nothing starts a cluster, and the answers are pandas'."""
    nowhere = tmp_path / "no-cluster"
    nowhere.mkdir()
    code = f"""
        import os
        os.chdir({str(tmp_path)!r})
        import pandas as pd
        import tern
        import tern.dataframe as dd
        import tern.client as clients
        from people import people

        data = people(300, seed=5)
        df = dd.from_pandas(data, npartitions=3)
        got = df[df.age > 20].groupby("name").balance.sum().compute()
        want = data[data.age > 20].groupby("name").balance.sum()
        pd.testing.assert_series_equal(got, want, check_dtype=False, check_names=False)
        data.to_csv("people.csv", index=False)
        again = dd.read_csv("people.csv")
        assert len(again) == len(data), len(again)
        assert again.team.nunique().compute() == data.team.nunique()
        print(repr(df).splitlines()[1], df.head(2).shape, clients.current_client())
        """
    out = run_script(
        code,
        {"TERN_CLUSTER": str(nowhere), "TERN_BIN": "/nonexistent/tern", "PYTHONPATH": os.path.dirname(__file__)},
    )
    assert out.split() == ["npartitions=3", "(2,", "5)", "None"]


def test_data_made_here_computes_on_a_client_made_since(cluster, tmp_path):
    out = run_script(
        f"""
        import pandas as pd
        import tern
        import tern.dataframe as dd

        data = pd.DataFrame({{"k": ["a", "b", "a", None], "v": [1.0, 2.0, None, 4.0]}})
        df = dd.from_pandas(data, npartitions=2)
        client = tern.Client({cluster.directory!r})
        got = df.groupby("k").v.sum().compute()
        pd.testing.assert_series_equal(got, data.groupby("k").v.sum(), check_names=False)
        print(df._table in client.list_datasets())
        """,
        {},
    )
    assert out.strip() == "True"
