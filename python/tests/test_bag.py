"""tern.bag against plain Python on the same data, on the cluster and here."""

import collections
import sys

import cloudpickle
import pandas as pd
import pytest

import tern
import tern.bag as db

cloudpickle.register_pickle_by_value(sys.modules[__name__])

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "the dog sleeps",
    "a fox is quick and a dog is lazy",
    "",
    "over and over the fox returns",
] * 7


def words(line):
    return line.split()


def test_word_count_equals_counter(client):
    bag = db.from_sequence(TEXT, npartitions=4).map(words).flatten()
    want = collections.Counter(w for line in TEXT for w in line.split())
    assert dict(bag.frequencies().compute()) == dict(want)
    assert dict(bag.frequencies().compute(scheduler="sync")) == dict(want)
    assert dict(bag.frequencies().compute(scheduler="threads")) == dict(want)


def test_every_operation_equals_python(client):
    records = [{"name": f"n{i % 7}", "value": i, "tags": list(range(i % 3))} for i in range(200)]
    bag = db.from_sequence(records, npartitions=5)
    assert bag.npartitions == 5
    values = [r["value"] for r in records]
    assert bag.pluck("value").compute() == values
    assert bag.filter(lambda r: r["value"] % 2 == 0).count().compute() == 100
    assert bag.pluck("tags").flatten().sum().compute() == sum(t for r in records for t in r["tags"])
    assert bag.pluck("value").mean().compute() == pytest.approx(sum(values) / len(values))
    assert (bag.pluck("value").min().compute(), bag.pluck("value").max().compute()) == (0, 199)
    assert sorted(bag.pluck("name").distinct().compute()) == sorted({r["name"] for r in records})
    folded = dict(bag.foldby(lambda r: r["name"], lambda acc, r: acc + r["value"], 0, lambda a, b: a + b, 0).compute())
    want = collections.defaultdict(int)
    for r in records:
        want[r["name"]] += r["value"]
    assert folded == dict(want)
    grouped = {k: sorted(x["value"] for x in v) for k, v in bag.groupby(lambda r: r["name"]).compute()}
    assert grouped == {k: sorted(r["value"] for r in records if r["name"] == k) for k in want}
    assert bag.pluck("value").topk(3).compute() == [199, 198, 197]
    assert bag.pluck("value").take(3) == (0, 1, 2)
    doubled = bag.pluck("value").map_partitions(lambda part: [2 * x for x in part])
    assert doubled.compute() == [2 * v for v in values]
    assert bag.map(lambda r, k: r[k], "value").compute(scheduler="sync") == values


def test_text_files_in_and_out(client, tmp_path):
    for i in range(3):
        (tmp_path / f"in-{i}.txt").write_text("".join(f"line {i}-{j}\n" for j in range(5)))
    bag = db.read_text(str(tmp_path / "in-*.txt"))
    assert bag.npartitions == 3
    lines = bag.map(str.strip).compute()
    assert lines == [f"line {i}-{j}" for i in range(3) for j in range(5)]
    written = bag.map(str.upper).to_textfiles(str(tmp_path / "out" / "*.txt"))
    assert len(written) == 3
    back = db.read_text(str(tmp_path / "out" / "*.txt")).map(str.strip).compute()
    assert back == [line.upper() for line in lines]
    with pytest.raises(FileNotFoundError):
        db.read_text(str(tmp_path / "nothing-*.txt"))


def test_a_bag_becomes_a_stored_dataframe(client):
    rows = [{"k": i % 3, "v": float(i)} for i in range(30)]
    df = db.from_sequence(rows, npartitions=3).to_dataframe()
    got = df.groupby("k").v.sum().compute()
    want = pd.DataFrame(rows).groupby("k").v.sum()
    pd.testing.assert_series_equal(got, want, check_dtype=False)
