"""The Python package against a real local cluster: every answer equals pandas'."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

import tern
from people import people


def same(got: pd.DataFrame, want: pd.DataFrame, by: list) -> None:
    """Equal as sets of rows (the cluster does not promise an order unless asked for one)."""
    got = got.sort_values(by).reset_index(drop=True)
    want = want.sort_values(by).reset_index(drop=True)
    pdt.assert_frame_equal(got, want, check_dtype=False)


def test_the_package_imports_without_a_cluster():
    code = "import tern; print(tern.DataFrame.__name__, tern.TernError.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["DataFrame", "TernError"]


def test_a_cluster_that_is_not_there_is_a_clear_error(tmp_path):
    with pytest.raises(tern.ClusterNotFound, match="client.toml"):
        tern.Client(tmp_path / "nowhere")


def test_a_stored_dataframe_computes_back_to_itself(client):
    df = people()
    stored = client.put(df, "people_roundtrip", npartitions=4)
    assert stored.npartitions == 4
    assert len(stored) == len(df)
    same(stored.compute(), df, ["id"])
    info = client.dataset_info("people_roundtrip")
    assert info["rows"] == len(df)
    assert all(len(p["holders"]) == 3 for p in info["partitions"])
    assert "people_roundtrip" in client.list_datasets()


def test_head_reads_the_first_partition_only(client):
    df = people(100)
    stored = client.put(df, "people_head", npartitions=4)
    first = stored.head(3)
    pdt.assert_frame_equal(first, df.iloc[:3].reset_index(drop=True), check_dtype=False)


def test_sql_groupby_equals_pandas(client):
    df = people()
    client.put(df, "people_groups", npartitions=3)
    got = client.sql(
        "SELECT name, count(*) AS n, avg(age) AS mean_age, sum(balance) AS total "
        "FROM people_groups GROUP BY name"
    ).compute()
    want = (
        df.groupby("name", dropna=False)
        .agg(n=("id", "size"), mean_age=("age", "mean"), total=("balance", "sum"))
        .reset_index()
    )
    got = got.sort_values("name", na_position="last").reset_index(drop=True)
    want = want.sort_values("name", na_position="last").reset_index(drop=True)
    pdt.assert_series_equal(got["n"], want["n"], check_dtype=False)
    pdt.assert_series_equal(got["mean_age"], want["mean_age"], check_dtype=False)
    np.testing.assert_allclose(got["total"], want["total"], rtol=1e-9)
    assert got["name"].isna().tolist() == want["name"].isna().tolist()


def test_from_pandas_stores_once_and_selects_columns(client):
    df = people(50)
    a = tern.from_pandas(df, npartitions=2)
    b = tern.from_pandas(df, npartitions=2)
    assert a.sql == b.sql, "the same data is stored once"
    picked = a[["id", "age"]]
    assert list(picked.columns) == ["id", "age"]
    same(picked.compute(), df[["id", "age"]], ["id"])
    with pytest.raises(KeyError, match="no column 'nope'"):
        a[["nope"]]


def test_a_taken_name_and_a_missing_dataset_are_typed_errors(client):
    df = people(10)
    client.put(df, "people_taken")
    with pytest.raises(tern.DatasetExists):
        client.put(df, "people_taken")
    client.put(df.iloc[:5], "people_taken", replace=True)
    assert len(client.table("people_taken")) == 5
    with pytest.raises(tern.NoSuchDataset):
        client.table("no_such_people")
    with pytest.raises(tern.TernError, match="(?i)column|field|schema"):
        client.sql("SELECT no_such_column FROM people_taken").compute()


def test_a_streamed_put_holds_one_partition_at_a_time_and_commits_only_on_commit(client):
    import pyarrow as pa

    part = pa.table({"x": np.arange(1000), "y": np.random.default_rng(3).random(1000)})
    put = client._native.put_stream("streamed_parts")
    for _ in range(3):
        put.add(part)
    assert "streamed_parts" not in client.list_datasets()  # nothing is seen before the commit
    put.commit()
    assert len(client.table("streamed_parts")) == 3000
    # A name taken, columns that differ from the first partition's: raised, nothing committed.
    with pytest.raises(tern.DatasetExists):
        taken = client._native.put_stream("streamed_parts")
        taken.add(part)
        taken.commit()
    other = client._native.put_stream("streamed_other")
    other.add(part)
    with pytest.raises(tern.TernError, match="columns"):
        other.add(pa.table({"z": [1]}))
    abandoned = client._native.put_stream("streamed_abandoned")
    abandoned.add(part)
    del abandoned
    assert "streamed_abandoned" not in client.list_datasets()


def test_reprs_show_the_structure(client):
    stored = client.put(people(20), "people_repr", npartitions=2)
    text = repr(stored)
    assert "npartitions=2" in text and "balance" in text and "Tern Name: people_repr" in text
    shown = repr(client)
    assert "nodes=3" in shown and "stored=" in shown and " of " in shown, shown
    # Each node runs a task per core unless told otherwise; memory is what they may hold.
    slots = int(shown.split("slots=")[1].split()[0])
    assert slots == 3 * (os.cpu_count() or 1), shown
    assert "memory=" in shown and "memory=0 B" not in shown, shown


def test_the_people_example_gives_pandas_answer(cluster):
    import pathlib

    example = pathlib.Path(__file__).parents[2] / "examples" / "python" / "people.py"
    out = subprocess.run(
        [sys.executable, str(example), "--cluster", cluster.directory, "--rows", "5000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "same answer as pandas" in out.stdout


def test_a_dask_script_runs_after_changing_its_imports():
    import pathlib

    script = pathlib.Path(__file__).parents[2] / "examples" / "python" / "dask_script.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "same answers as pandas and Python" in out.stdout


def test_closing_a_client_makes_the_one_before_it_current_again(client):
    """As in Dask: a second client, closed, leaves the first as the default (no new cluster)."""
    import tern.client as clients

    before = clients.get_client()
    with tern.LocalCluster(n_workers=1) as other, tern.Client(other) as second:
        assert clients.get_client() is second
    assert clients.get_client() is before
