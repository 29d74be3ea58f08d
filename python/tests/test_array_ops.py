"""Array operations against NumPy on the same data: layout (rechunk, indexing, concatenate,
stack, reshape), creation, where/clip/astype, scans, reductions (var, std, any, all, prod, arg
reductions) and matrix products; then hypothesis over random shapes, chunkings and dtypes,
uneven edge chunks included. Integers must be equal, floats close."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tern.array as ta

RNG = np.random.default_rng(5)


def close(got, want, dtype=None):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if got.dtype.kind in "fc":
        single = got.dtype in (np.float32, np.complex64)
        np.testing.assert_allclose(got, want, rtol=1e-5 if single else 1e-10, atol=1e-12)
    else:
        np.testing.assert_array_equal(got, want)


def close_sum(got, want, magnitude, terms):
    """Sums equal NumPy's up to the order of adding: in floats, a sum of ``terms`` terms added
    in another order (by chunks, then across them; NumPy adds pairwise) is within ``terms`` *
    eps * the sum of the terms' magnitudes, which near zero is far more than rtol of itself."""
    got, want = np.asarray(got), np.asarray(want)
    if got.dtype.kind != "f":
        return close(got, want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.dtype, want.dtype)
    bound = terms * np.finfo(got.dtype).eps * magnitude.astype(np.float64)
    assert np.all(np.abs(got.astype(np.float64) - want) <= np.maximum(bound, 1e-12)), (got, want)


def test_layout_rechunk_index_concatenate_stack_reshape(client):
    x = RNG.normal(size=(23, 17))
    a = ta.from_array(x, chunks=(5, 4), client=client, name="ops_layout", replace=True)
    for chunks in [(7, 3), (23, 1), (1, 17), (10, -1), {0: 4}]:
        b = a.rechunk(chunks)
        close(b.compute(), x)
    assert a.rechunk((7, 3)).chunksize == (7, 3)
    for key in [
        (slice(2, 19, 3), slice(None, None, -2)),
        (4,),
        (Ellipsis, 5),
        (slice(None), None, slice(1, 2)),
        ([0, 22, 3, 3], slice(None)),
        (slice(None), np.arange(17) % 3 == 0),
        (-1, -1),
        (slice(30, 40),),
    ]:
        close(a[key].compute(), x[key])
    # A lazy boolean mask over the whole array, computed first, as x[x > 0] in NumPy.
    close(a[a > 0.5].compute(), x[x > 0.5])
    with pytest.raises(IndexError, match="out of bounds"):
        a[23]
    with pytest.raises(NotImplementedError, match="one axis at a time"):
        a[[0, 1], [0, 1]]
    y = RNG.normal(size=(9, 17))
    b = ta.from_array(y, chunks=(4, 4), client=client)
    close(ta.concatenate([a, b], axis=0).compute(), np.concatenate([x, y]))
    close(ta.concatenate([a, a], axis=1).compute(), np.concatenate([x, x], axis=1))
    ints = ta.from_array(np.arange(17, dtype=np.int32), chunks=5, client=client)
    close(ta.concatenate([ints, ints.astype(np.float64)]).compute(), np.concatenate([np.arange(17, dtype=np.int32), np.arange(17.0)]))
    close(ta.stack([a, a * 2, a], axis=1).compute(), np.stack([x, x * 2, x], axis=1))
    # Stacking moves nothing: every chunk of the result is a chunk of an input.
    stacked = ta.stack([a, a])
    assert all(not hasattr(s, "kernel") for s in stacked._sources)
    for shape in [(17, 23), (-1,), (391,), (23, 17, 1), (1, 391), (17, -1)]:
        close(a.reshape(shape).compute(), x.reshape(shape))
    close(a.ravel().compute(), x.ravel())
    with pytest.raises(ValueError, match="cannot reshape"):
        a.reshape(5, 5)
    strings = np.array([["ab", "c"], ["d", "éf"], ["g", "h"]])
    s = ta.from_array(strings, chunks=(2, 1), client=client)
    close(s.rechunk((3, 2)).compute(), strings)
    close(s[::-1, 1].compute(), strings[::-1, 1])


def test_creation_routines_equal_numpys(client):
    close(ta.zeros((5, 7), chunks=3, client=client).compute(), np.zeros((5, 7)))
    close(ta.ones((4,), dtype=np.int16, chunks=3, client=client).compute(), np.ones(4, dtype=np.int16))
    close(ta.full((3, 3), 2.5, chunks=2, client=client).compute(), np.full((3, 3), 2.5))
    close(ta.arange(3, 50, 7, chunks=4, client=client).compute(), np.arange(3, 50, 7))
    close(ta.arange(0.1, 2.3, 0.13, chunks=5, client=client).compute(), np.arange(0.1, 2.3, 0.13))
    close(ta.arange(10, chunks=3, client=client).compute(), np.arange(10))
    for endpoint in (True, False):
        got = ta.linspace(-1.5, 3.25, 41, endpoint=endpoint, chunks=6, client=client).compute()
        np.testing.assert_array_equal(got, np.linspace(-1.5, 3.25, 41, endpoint=endpoint))
    close(ta.eye(7, chunks=3, M=9, k=2, client=client).compute(), np.eye(7, 9, k=2))
    close(ta.eye(5, chunks=2, dtype=np.int32, client=client).compute(), np.eye(5, dtype=np.int32))
    state = ta.random.RandomState(42, client=client)
    r = state.random((300, 200), chunks=(100, 100))
    values = r.compute()
    np.testing.assert_array_equal(values, r.compute())  # the same graph, the same numbers
    assert values.shape == (300, 200) and 0 <= values.min() and values.max() < 1
    assert abs(values.mean() - 0.5) < 0.01
    again = ta.random.RandomState(42, client=client).random((300, 200), chunks=(100, 100)).compute()
    np.testing.assert_array_equal(values, again)
    assert not np.array_equal(values, state.random((300, 200), chunks=(100, 100)).compute())
    normal = state.normal(10.0, 2.0, size=(100_000,), chunks=25_000).compute()
    assert abs(normal.mean() - 10) < 0.05 and abs(normal.std() - 2) < 0.05


def test_where_clip_astype_and_scans(client):
    x = RNG.normal(size=(31, 9)) * 10
    a = ta.from_array(x, chunks=(8, 4), client=client, name="ops_elementwise", replace=True)
    close(ta.where(a > 0, a, -1.0).compute(), np.where(x > 0, x, -1.0))
    close(ta.where(a > 0, 1, 0).compute(), np.where(x > 0, 1, 0))
    close(a.clip(-3, 4).compute(), x.clip(-3, 4))
    close(ta.clip(a, None, 0).compute(), np.clip(x, None, 0))
    close(a.astype(np.int32).compute(), x.astype(np.int32))
    close(a.astype(np.float32).compute(), x.astype(np.float32))
    close(a.astype(bool).compute(), x.astype(bool))
    for axis in (0, 1, None):
        close(a.cumsum(axis=axis).compute(), x.cumsum(axis=axis))
    small = ta.from_array(x[:6, :3] / 10, chunks=(4, 2), client=client)
    close(small.cumprod(axis=0).compute(), (x[:6, :3] / 10).cumprod(axis=0))
    ints = (x * 10).astype(np.int8)
    i = ta.from_array(ints, chunks=(8, 4), client=client)
    close(i.cumsum(axis=0).compute(), ints.cumsum(axis=0))


def test_reductions_var_std_any_all_prod_arg(client):
    x = RNG.normal(size=(40, 30))
    x[3, 7] = x.max() + 1
    a = ta.from_array(x, chunks=(9, 7), client=client, name="ops_reductions", replace=True)
    for axis in (None, 0, 1, (0, 1)):
        close(a.var(axis=axis).compute(), x.var(axis=axis))
        close(a.std(axis=axis, ddof=1).compute(), x.std(axis=axis, ddof=1))
        close(a.prod(axis=axis).compute(), x.prod(axis=axis))
        close((a > 2).any(axis=axis).compute(), (x > 2).any(axis=axis))
        close((a > -3).all(axis=axis).compute(), (x > -3).all(axis=axis))
    for axis in (None, 0, 1):
        close(a.argmax(axis=axis).compute(), x.argmax(axis=axis))
        close(a.argmin(axis=axis, split_every=2).compute(), x.argmin(axis=axis))
    # Ties keep the first index; a NaN wins, as in NumPy.
    ties = np.array([3, 1, 1, 5, 1, 0, 0, 9], dtype=np.int64)
    t = ta.from_array(ties, chunks=3, client=client)
    assert t.argmin().compute() == ties.argmin() and t.argmax().compute() == ties.argmax()
    nans = np.array([1.0, 5.0, np.nan, 7.0, np.nan])
    assert ta.from_array(nans, chunks=2, client=client).argmax().compute() == nans.argmax()
    close(a.argmax(axis=1, keepdims=True).compute(), x.argmax(axis=1, keepdims=True))


def test_matrix_products(client):
    x = RNG.normal(size=(25, 14))
    y = RNG.normal(size=(14, 11))
    v = RNG.normal(size=14)
    a = ta.from_array(x, chunks=(6, 5), client=client, name="ops_matmul_a", replace=True)
    b = ta.from_array(y, chunks=(4, 4), client=client, name="ops_matmul_b", replace=True)  # rechunked to match
    c = ta.from_array(v, chunks=3, client=client)
    close((a @ b).compute(), x @ y)
    close((a @ c).compute(), x @ v)
    close((c @ b).compute(), v @ y)
    close(ta.dot(c, c).compute(), v @ v)
    close(a.dot(b).compute(), x.dot(y))
    cube = RNG.normal(size=(4, 5, 6))
    k = ta.from_array(cube, chunks=(2, 3, 4), client=client)
    close(ta.tensordot(k, k, axes=([1, 2], [1, 2])).compute(), np.tensordot(cube, cube, axes=([1, 2], [1, 2])))
    close(ta.tensordot(k, b[:6, :], axes=1).compute(), np.tensordot(cube, y[:6, :], axes=1))
    ints = RNG.integers(-50, 50, (7, 7)).astype(np.int16)
    i = ta.from_array(ints, chunks=3, client=client)
    close((i @ i).compute(), ints @ ints)  # int16 products wrap as NumPy's do
    with pytest.raises(ValueError, match="mismatch"):
        a @ a


DTYPES = [np.int8, np.int32, np.uint16, np.float32, np.float64]


@st.composite
def arrays(draw, max_ndim=3):
    ndim = draw(st.integers(1, max_ndim))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    values = (np.random.default_rng(seed).normal(size=shape) * 40).astype(dtype)
    return values, chunks


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=arrays(), data=st.data())
def test_hypothesis_operations_equal_numpy(client, case, data):
    x, chunks = case
    a = ta.from_array(x, chunks=chunks, client=client)
    axis = data.draw(st.integers(0, x.ndim - 1))
    new_chunks = tuple(data.draw(st.integers(1, n)) for n in x.shape)
    close(a.rechunk(new_chunks).compute(), x)
    start = data.draw(st.integers(-x.shape[axis], x.shape[axis]))
    step = data.draw(st.sampled_from([1, 2, 3, -1, -2]))
    key = (slice(None),) * axis + (slice(start, None, step),)
    close(a[key].compute(), x[key])
    close_sum(a.sum(axis=axis).compute(), x.sum(axis=axis), np.abs(x).sum(axis=axis), x.shape[axis])
    close(a.max(axis=axis, keepdims=True).compute(), x.max(axis=axis, keepdims=True))
    close(a.argmin(axis=axis).compute(), x.argmin(axis=axis))
    close_sum(a.cumsum(axis=axis).compute(), x.cumsum(axis=axis), np.abs(x).cumsum(axis=axis), x.shape[axis])
    close(ta.concatenate([a, a], axis=axis).compute(), np.concatenate([x, x], axis=axis))
    close(a.reshape(-1).compute(), x.reshape(-1))
    close(ta.where(a > 0, a, 0).compute(), np.where(x > 0, x, 0))
    if x.dtype.kind == "f":
        close(a.var(axis=axis).compute(), x.var(axis=axis))
    if x.ndim == 2:
        got, want = (a @ a.T).compute(), x @ x.T
        if x.dtype.kind == "f":
            # Products' sums cancel: an element near zero may be off by much more than rtol of
            # itself. A sum of k terms in any order is within k * eps * the sum of |terms|.
            assert got.shape == want.shape and got.dtype == want.dtype
            bound = x.shape[1] * np.finfo(x.dtype).eps * (np.abs(x).astype(np.float64) @ np.abs(x).T)
            assert np.all(np.abs(got.astype(np.float64) - want) <= bound), (got, want)
        else:
            close(got, want)


def test_map_blocks_drops_and_adds_axes_as_dask_does(client):
    x = RNG.normal(size=(20, 12))
    a = ta.from_array(x, chunks=(6, 5), client=client)
    # A dropped axis reaches the function whole (Dask concatenates its blocks).
    close(a.map_blocks(lambda b: b.sum(axis=1), drop_axis=1).compute(), x.sum(axis=1))
    close(a.map_blocks(lambda b: b.max(axis=0), drop_axis=[-2]).compute(), x.max(axis=0))
    close(a.map_blocks(lambda b: b[None], new_axis=0).compute(), x[None])
    stacked = a.map_blocks(lambda b: np.stack([b, -b], axis=-1), new_axis=2, chunks=(6, 5, 2))
    assert stacked.shape == (20, 12, 2)
    close(stacked.compute(), np.stack([x, -x], axis=-1))
    per_row = a.map_blocks(
        lambda b: np.stack([b.sum(axis=1), b.mean(axis=1)], axis=1), drop_axis=1, new_axis=1, chunks=(6, 2)
    )
    close(per_row.compute(), np.stack([x.sum(axis=1), x.mean(axis=1)], axis=1))
    # A contracted index: its blocks as a list, or with concatenate=True one block spanning it.
    close(ta.blockwise(lambda bs: sum(b.sum(axis=1) for b in bs), "i", a, "ij", dtype=float).compute(), x.sum(axis=1))
    close(ta.blockwise(lambda b: b.sum(axis=1), "i", a, "ij", dtype=float, concatenate=True).compute(), x.sum(axis=1))
    with pytest.raises(ValueError, match="out of bounds"):
        a.map_blocks(np.sum, drop_axis=2)
    # Arrays of other shapes broadcast as NumPy's do, block by block.
    row, column = RNG.normal(size=12), RNG.normal(size=(20, 1))
    r = ta.from_array(row, chunks=4, client=client)  # rechunked to a's 5
    k = ta.from_array(column, chunks=(7, 1), client=client)
    close(ta.map_blocks(lambda p, q, s: p - q + s, a, r, k).compute(), x - row + column)
    top = ta.from_array(x[:1], chunks=(1, 6), client=client)
    close(ta.map_blocks(np.multiply, top, k).compute(), x[:1] * column)  # (1, 12) by (20, 1)
    with pytest.raises(ValueError, match="do not broadcast"):
        ta.map_blocks(np.add, a, ta.from_array(RNG.normal(size=5), chunks=5, client=client))


def test_map_blocks_and_blockwise_run_python_on_the_chunks(client):
    x = RNG.normal(size=(20, 12))
    y = RNG.normal(size=(20, 12))
    a = ta.from_array(x, chunks=(6, 5), client=client, name="ops_blocks_a", replace=True)
    b = ta.from_array(y, chunks=(7, 4), client=client, name="ops_blocks_b", replace=True)  # rechunked
    close(a.map_blocks(np.sin).compute(), np.sin(x))
    close(ta.map_blocks(lambda p, q, k: p * q + k, a, b, 3.0).compute(), x * y + 3.0)
    # Built-in kernels before and after a Python function, in one graph.
    close((ta.map_blocks(np.clip, a[::2] + 1, 0.5, 1.5) * 2).compute(), np.clip(x[::2] + 1, 0.5, 1.5) * 2)
    # Keyword arguments reach the function; each block is its own call.
    per_block = a.map_blocks(np.cumsum, axis=1).compute()
    close(per_block[:6, :5], np.cumsum(x[:6, :5], axis=1))
    # The dtype comes from a trial call, or as given.
    assert a.map_blocks(lambda p: p > 0).dtype == np.bool_
    close(a.map_blocks(lambda p: (p * 100).astype(np.int32), dtype=np.int32).compute(), (x * 100).astype(np.int32))
    # Blocks of another shape, said with chunks=.
    even = ta.from_array(x[:, :10], chunks=(5, 5), client=client)
    firsts = even.map_blocks(lambda p: p[:1, :], chunks=(1, 5))
    assert firsts.shape == (4, 10)
    close(firsts.compute(), x[0::5, :10])
    # Blocks lined up by index letters reach the function as they are stored (Dask's rule).
    xt = ta.from_array(x.T.copy(), chunks=(5, 6), client=client)
    close(ta.blockwise(lambda p, q: p + q.T, "ij", a, "ij", xt, "ji", dtype=float).compute(), x + x)
    # Dask's blockwise matmul, both ways: lists of blocks summed, or the rows and columns whole.
    y12 = RNG.normal(size=(12, 9))
    c = ta.from_array(y12, chunks=(4, 4), client=client)  # rechunked to a's 5 along j
    close(ta.blockwise(lambda ps, qs: sum(p @ q for p, q in zip(ps, qs)), "ik", a, "ij", c, "jk", dtype=float).compute(), x @ y12)
    close(ta.blockwise(np.dot, "ik", a, "ij", c, "jk", dtype=float, concatenate=True).compute(), x @ y12)
    # A block of the wrong shape fails its future with a message saying what to do.
    with pytest.raises(Exception, match="pass chunks="):
        a.map_blocks(lambda p: p[:1], dtype=float).compute()


def test_zarr_v3_in_and_out(client, tmp_path):
    import zarr

    x = RNG.normal(size=(30, 20)).astype(np.float32)
    path = str(tmp_path / "in.zarr")
    z = zarr.create_array(store=path, shape=x.shape, chunks=(8, 7), dtype=x.dtype, zarr_format=3)
    z[:] = x
    a = ta.from_zarr(path, client=client)
    assert a.chunksize == (8, 7)
    close(a.compute(), x)
    out = str(tmp_path / "out.zarr")
    (a * 2).to_zarr(out)
    back = zarr.open_array(out, mode="r")
    assert back.metadata.zarr_format == 3 and back.chunks == (8, 7)
    close(back[:], x * 2)


def test_persist_keeps_chunks_on_the_nodes(client):
    x = RNG.normal(size=(40, 30))
    a = ta.from_array(x, chunks=(10, 10), client=client, name="ops_persist", replace=True)
    kept = ((a + 1) * 2).persist()
    assert all(type(s).__name__ == "_Kept" for s in kept._sources)
    close(kept.compute(), (x + 1) * 2)
    # Later work reads the kept chunks where they are.
    close((kept.sum(axis=0) + kept[3]).compute(), ((x + 1) * 2).sum(axis=0) + (x[3] + 1) * 2)


def test_complex_numbers_and_strings(client):
    z = (RNG.normal(size=(12, 9)) + 1j * RNG.normal(size=(12, 9))).astype(np.complex128)
    w = (RNG.normal(size=(12, 9)) + 1j * RNG.normal(size=(12, 9))).astype(np.complex64)
    x = RNG.normal(size=(12, 9))
    a = ta.from_array(z, chunks=(5, 4), client=client, name="ops_complex", replace=True)
    b = ta.from_array(w, chunks=(5, 4), client=client)
    r = ta.from_array(x, chunks=(5, 4), client=client)
    close((a * b + r).compute(), z * w + x)
    close((a / (b + 2) - 1j).compute(), z / (w + 2) - 1j)
    close(abs(a).compute(), abs(z))
    close((b * 2).compute(), w * 2)
    close(abs(b).compute(), abs(w))
    close(a.real.compute(), z.real)
    close(b.imag.compute(), w.imag)
    close(a.conj().compute(), z.conj())
    close(ta.exp(a).compute(), np.exp(z))
    close((a == a).compute(), z == z)
    close(a.sum(axis=0).compute(), z.sum(axis=0))
    close(a.mean().compute(), z.mean())
    close(a.T.compute(), z.T)
    close(r.astype(np.complex64).compute(), x.astype(np.complex64))
    # var and std of complex numbers are real, as NumPy's.
    close(a.var(axis=1).compute(), z.var(axis=1))
    close(b.std().compute(), w.std())
    close(a.var(ddof=1, keepdims=True).compute(), z.var(ddof=1, keepdims=True))
    # Order as NumPy's: by real part, then imaginary part; a NaN wins min and max.
    close((a < b).compute(), z < w)
    close((a >= 0.5).compute(), z >= 0.5)
    close(a.min(axis=0).compute(), z.min(axis=0))
    close(b.max().compute(), w.max())
    close(ta.maximum(a, b).compute(), np.maximum(z, w))
    holed = z.copy()
    holed[3, 2] = complex(np.nan, 1)
    n = ta.from_array(holed, chunks=(5, 4), client=client)
    close(n.max(axis=0).compute(), holed.max(axis=0))
    close(n.min().compute(), holed.min())
    # argmin/argmax as NumPy's, ties on the real part broken by the imaginary one.
    tied = np.array([[2 + 1j, 1 + 5j, 1 - 2j, 3 + 0j], [1 + 1j, 1 + 1j, 0 + 9j, np.inf + 0j]] * 3)
    t = ta.from_array(tied, chunks=(4, 3), client=client)
    for axis in (None, 0, 1):
        close(t.argmin(axis=axis).compute(), tied.argmin(axis=axis))
        close(t.argmax(axis=axis).compute(), tied.argmax(axis=axis))
        close(n.argmin(axis=axis).compute(), holed.argmin(axis=axis))
        close(n.argmax(axis=axis).compute(), holed.argmax(axis=axis))
    strings = np.array([["ab", "c", "d"], ["e", "fg", "h"]])
    s = ta.from_array(strings, chunks=(1, 2), client=client)
    close(s.T.compute(), strings.T)
    # Arithmetic and comparisons of strings are NumPy's string ufuncs, run on the blocks.
    more = np.array([["x", "yz", ""], ["w", "v", "uuu"]])
    m = ta.from_array(more, chunks=(2, 1), client=client)
    close((s + m).compute(), strings + more)
    close(("<" + s + ">").compute(), "<" + strings + ">")
    close((s == "fg").compute(), strings == "fg")
    close((s < m).compute(), strings < more)
    with pytest.raises(TypeError, match="maximum of"):  # NumPy has no maximum of strings either
        ta.maximum(s, m)
    raw = ta.from_array(strings.astype("S"), chunks=(2, 2), client=client)
    close((raw + b"!").compute(), strings.astype("S") + b"!")
    with pytest.raises(TypeError, match="add of"):
        s + 1


def test_a_node_killed_mid_computation_still_gives_numpys_answer(tmp_path):
    """SIGKILL a node while the Python workers run blocks of an array's graph: its tasks are
    retried elsewhere, outputs it kept are made again, and the answer is still NumPy's."""
    import os
    import pathlib
    import signal
    import threading
    import time

    import tern

    started = tmp_path / "started"

    def slow_double(block):
        import pathlib as p
        import time as t

        p.Path(started).touch()
        t.sleep(0.2)
        return block * 2

    x = RNG.normal(size=(80, 80))
    with tern.LocalCluster(n_workers=3) as cluster, tern.Client(cluster) as client:
        a = ta.from_array(x, chunks=(10, 10), client=client, name="ops_chaos")
        lazy = (a.map_blocks(slow_double, dtype=float) + a).sum(axis=0)
        answer = {}
        worker = threading.Thread(target=lambda: answer.setdefault("sum", lazy.compute()))
        worker.start()
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started.exists(), "no block started"
        pid = int((pathlib.Path(cluster.directory) / "run" / "node-3.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        worker.join(timeout=120)
        assert not worker.is_alive(), "the computation did not finish after the kill"
        close(answer["sum"], (x * 2 + x).sum(axis=0))


def test_rechunk_of_an_array_larger_than_a_nodes_memory_stays_within_it():
    """Each node may hold 8 MiB for its tasks; the array is 48 MB. Rechunking (250, 500)
    chunks into (2000, 25) reads each input chunk once and cuts it into the pieces the result
    chunks need, so no task holds more than about two chunks (read whole by every result
    chunk, each task would need 16 MiB and fail)."""
    import tern

    x = RNG.random((2000, 3000))
    with tern.LocalCluster(n_workers=3, node_memory="8MiB") as cluster, tern.Client(cluster) as client:
        a = ta.from_array(x, chunks=(250, 500), client=client, name="ops_big_rechunk")
        b = a.rechunk((2000, 25))
        assert b.chunksize == (2000, 25)
        np.testing.assert_array_equal(b.compute(), x)
        # And back, through the same splits.
        np.testing.assert_array_equal(b.rechunk((250, 500)).compute(), x)
