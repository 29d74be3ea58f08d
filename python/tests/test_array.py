"""Arrays stored in chunks, in triplicate: what goes in comes back, through Python and through
the `tern` command, for every dtype of the seed's table; what cannot be stored is refused in
one line."""

import os
import subprocess

import numpy as np
import pytest

import tern
import tern.array as ta

RNG = np.random.default_rng(3)

ARRAYS = {
    "bool": RNG.random((7, 5)) > 0.5,
    "int8": RNG.integers(-128, 127, (9,), dtype=np.int8),
    "int64": RNG.integers(-(2**62), 2**62, (4, 6, 5)),
    "uint16": RNG.integers(0, 2**16, (11, 3), dtype=np.uint16),
    "uint64": RNG.integers(0, 2**63, (6,), dtype=np.uint64),
    "float32": RNG.normal(size=(10, 10)).astype(np.float32),
    "float64 big-endian": RNG.normal(size=(5, 8)).astype(">f8"),
    "complex64": (RNG.normal(size=6) + 1j * RNG.normal(size=6)).astype(np.complex64),
    "complex128": RNG.normal(size=(3, 4)) * 1j,
    "unicode": np.array([["héllo", "a"], ["wörld", ""], ["z", "longer one"]]),
    "bytes": np.array([b"ab", b"", b"xyz"]),
    "record": np.array(
        [(1.5, 2, b"ab"), (3.0, -1, b"c"), (-0.5, 7, b"")], dtype=[("x", ">f8"), ("n", "<i4"), ("tag", "S2")]
    ),
    "0-d": np.array(3.25),
    "empty": np.zeros((0, 4)),
}


@pytest.mark.parametrize("kind", sorted(ARRAYS))
def test_every_dtype_comes_back_as_it_went_in(client, kind):
    x = ARRAYS[kind]
    chunks = tuple(max(1, n // 2) for n in x.shape)  # uneven edge chunks where n is odd
    stored = ta.from_array(x, chunks=chunks, name=f"array_{kind.replace(' ', '_').replace('-', '_')}", client=client, replace=True)
    assert stored.shape == x.shape and stored.dtype == x.dtype.newbyteorder("<") or stored.dtype == x.dtype
    got = stored.compute()
    assert got.shape == x.shape
    assert (got == x.astype(got.dtype)).all(), kind
    assert stored.npartitions == int(np.prod([len(c) or 1 for c in stored.chunks]))


def test_chunks_are_dasks(client):
    x = np.arange(1000 * 7, dtype=np.float64).reshape(1000, 7)
    a = ta.from_array(x, chunks=(300, -1), client=client, name="array_chunks", replace=True)
    assert a.chunks == ((300, 300, 300, 100), (7,))
    assert a.chunksize == (300, 7) and a.numblocks == (4, 1) and a.nbytes == x.nbytes
    assert "shape=(1000, 7)" in repr(a) and "chunksize=(300, 7)" in repr(a)
    np.testing.assert_array_equal(np.asarray(a), x)
    # The same contents under no name are stored once.
    assert ta.from_array(x, client=client).name == ta.from_array(x, client=client).name


def test_object_arrays_are_refused_in_one_line(client):
    with pytest.raises(tern.TernError) as refused:
        ta.from_array(np.array([1, "a", None], dtype=object), client=client)
    message = str(refused.value)
    assert "object arrays hold Python objects" in message and "\n" not in message
    with pytest.raises(TypeError, match="is an array"):
        client.table("array_chunks")


def tern_cli(cluster, *args):
    done = subprocess.run(
        [os.environ.get("TERN_BIN", "tern"), *args],
        env=dict(os.environ, TERN_CLUSTER=cluster.directory),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done


def test_npy_files_through_the_command_and_python(cluster, client, tmp_path):
    """`tern put x.npy` and `tern get`: NumPy reads back what it wrote (Fortran order and
    big-endian included), and Python reads what the command stored and the other way round."""
    cases = {
        "fortran": np.asfortranarray(RNG.integers(0, 100, (6, 5, 4), dtype=np.int16)),
        "records": ARRAYS["record"],
        "floats": RNG.normal(size=(500, 300)),
    }
    for name, x in cases.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, x)
        put = tern_cli(cluster, "put", str(path), "--name", f"npy_{name}", "--chunks", ",".join(str(max(1, n // 3)) for n in x.shape), "--replace")
        assert put.returncode == 0, put.stderr
        out = tmp_path / f"{name}_back.npy"
        got = tern_cli(cluster, "get", f"npy_{name}", "--out", str(out))
        assert got.returncode == 0, got.stderr
        back = np.load(out)
        assert back.shape == x.shape and (back == x.astype(back.dtype)).all(), name
        assert (client.array(f"npy_{name}").compute() == x.astype(back.dtype)).all(), name
    described = tern_cli(cluster, "describe", "npy_floats").stdout
    assert "array: float64 (500, 300), 12 chunks of (166, 100)" in described, described
    listed = tern_cli(cluster, "ls").stdout
    assert any(line.startswith("npy_floats") and line.rstrip().endswith("ndarray") for line in listed.splitlines()), listed
    from_python = ta.from_array(cases["floats"], chunks=(128, 128), client=client, name="array_from_python", replace=True)
    out = tmp_path / "from_python.npy"
    assert tern_cli(cluster, "get", from_python.name, "--out", str(out)).returncode == 0
    np.testing.assert_array_equal(np.load(out), cases["floats"])
    refused = tern_cli(cluster, "put", str(tmp_path / "o.npy"), "--name", "npy_objects")
    assert refused.returncode != 0
    np.save(tmp_path / "o.npy", np.array([1, None], dtype=object), allow_pickle=True)
    refused = tern_cli(cluster, "put", str(tmp_path / "o.npy"), "--name", "npy_objects")
    assert refused.returncode != 0 and "object arrays" in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr


def test_the_seeds_example_and_dasks_operations_equal_numpys(client):
    """`x - x.mean(axis=1, keepdims=True)`, arithmetic with broadcasting across chunk grids,
    comparisons, ufuncs and tree reductions, each against NumPy on the same data."""
    x = RNG.normal(size=(200, 150))
    a = ta.from_array(x, chunks=(60, 50), client=client, name="array_ops", replace=True)
    np.testing.assert_allclose((a - a.mean(axis=1, keepdims=True)).compute(), x - x.mean(axis=1, keepdims=True))
    np.testing.assert_allclose((a - a.mean(axis=0)).compute(), x - x.mean(axis=0))
    np.testing.assert_array_equal(a.T.compute(), x.T)
    # Dask's headline, on a square array chunked alike along both axes.
    s = ta.from_array(x[:150, :150], chunks=(50, 50), client=client, name="array_square", replace=True)
    np.testing.assert_allclose(((s + s.T) - s.mean(axis=0)).compute(), (x[:150, :150] + x[:150, :150].T) - x[:150, :150].mean(axis=0))
    cube = ta.from_array(np.arange(60, dtype=np.int16).reshape(3, 4, 5), chunks=(2, 3, 2), client=client)
    np.testing.assert_array_equal(cube.transpose(1, 2, 0).compute(), np.arange(60, dtype=np.int16).reshape(3, 4, 5).transpose(1, 2, 0))
    np.testing.assert_allclose(((a + 1) * 2 / 3 - a**2.0).compute(), (x + 1) * 2 / 3 - x**2.0)
    np.testing.assert_array_equal((a > 0.5).compute(), x > 0.5)
    np.testing.assert_allclose(ta.sqrt(abs(a)).compute(), np.sqrt(abs(x)))
    np.testing.assert_allclose(ta.maximum(a, 0).compute(), np.maximum(x, 0))
    row = RNG.normal(size=150)
    b = ta.from_array(row, chunks=50, client=client, name="array_row", replace=True)
    np.testing.assert_allclose((a * b).compute(), x * row)
    assert a.sum().compute() == pytest.approx(x.sum())
    np.testing.assert_array_equal(a.max(axis=0).compute(), x.max(axis=0))
    # A tree of partials, four at a time.
    np.testing.assert_allclose(a.sum(axis=0, split_every=2).compute(), x.sum(axis=0))
    # Operands chunked differently are rechunked to the first one's chunks, as in Dask.
    other = ta.from_array(x, chunks=(50, 40), client=client)
    np.testing.assert_allclose((a + other).compute(), x + x)


def test_random_shapes_chunkings_and_dtypes_equal_numpy(client):
    """Property-style: seeded random shapes (uneven chunks), dtypes and operations; integers
    exactly as NumPy computes them (wrapping included), floats closely."""
    rng = np.random.default_rng(11)
    for case in range(12):
        ndim = int(rng.integers(1, 4))
        shape = tuple(int(n) for n in rng.integers(1, 8, ndim))
        chunks = tuple(int(rng.integers(1, n + 1)) for n in shape)
        dtype = [np.int8, np.int32, np.uint16, np.float32, np.float64][case % 5]
        x = (rng.normal(size=shape) * 50).astype(dtype)
        y = (rng.normal(size=shape) * 50).astype(dtype)
        a = ta.from_array(x, chunks=chunks, client=client)
        b = ta.from_array(y, chunks=chunks, client=client)
        axis = int(rng.integers(0, ndim))
        checks = {
            "a + b": ((a + b), x + y),
            "a * 3": ((a * 3), x * dtype(3)),
            "a - b": ((a - b), x - y),
            "a <= b": ((a <= b), x <= y),
            "sum": (a.sum(axis=axis), x.sum(axis=axis)),
            "max keepdims": (a.max(axis=axis, keepdims=True), x.max(axis=axis, keepdims=True)),
            "mean": (a.mean(), x.mean()),
        }
        for what, (lazy, want) in checks.items():
            got = lazy.compute()
            assert got.dtype == np.asarray(want).dtype, (case, what, got.dtype, np.asarray(want).dtype)
            if got.dtype.kind == "f":
                np.testing.assert_allclose(got, want, rtol=1e-5 if got.dtype == np.float32 else 1e-12, err_msg=f"{case} {what}")
            else:
                np.testing.assert_array_equal(got, want, err_msg=f"{case} {what}")


def test_the_seeds_hdf5_example_end_to_end(client, tmp_path):
    """The seed document's example: an HDF5 dataset written with h5py, read into tern a chunk
    at a time with `from_array(f['/big-data'], chunks=(1000, 1000))`, `x - x.mean(axis=1)`."""
    import h5py

    data = RNG.normal(size=(2500, 2500))
    with h5py.File(tmp_path / "big.hdf5", "w") as f:
        f.create_dataset("/big-data", data=data)
    with h5py.File(tmp_path / "big.hdf5", "r") as f:
        x = ta.from_array(f["/big-data"], chunks=(1000, 1000), client=client, name="seed_big_data", replace=True)
    assert x.chunks == ((1000, 1000, 500), (1000, 1000, 500))
    np.testing.assert_allclose((x - x.mean(axis=1)).compute(), data - data.mean(axis=1))


def test_sql_sees_an_array_as_its_elements(client):
    """A query over an array reads its elements in C order, one column `values`."""
    x = RNG.integers(-1000, 1000, (40, 30))
    ta.from_array(x, chunks=(16, 16), client=client, name="array_sql", replace=True)
    got = client.sql('SELECT count(*) AS n, sum("values") AS s, max("values") AS m FROM array_sql').compute()
    assert (int(got.n[0]), int(got.s[0]), int(got.m[0])) == (x.size, int(x.sum()), int(x.max()))
