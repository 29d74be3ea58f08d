use super::*;

fn chunk_of(dtype: &DType, bytes: Vec<u8>) -> Datum {
    let batch = chunk::to_batch(dtype, bytes).unwrap();
    crate::kernels::to_table(&batch.schema(), &[batch]).unwrap()
}

fn f64s(datum: Datum, n: usize) -> Vec<f64> {
    let (_, batches) = crate::kernels::table(datum).unwrap();
    let meta = tern_array::ArrayMeta::new(DType::Float(8), vec![n as u64], vec![n as u64]).unwrap();
    let bytes = chunk::from_batches(&meta, 0, &batches).unwrap();
    bytes
        .chunks(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn floats(values: &[f64]) -> Datum {
    chunk_of(
        &DType::Float(8),
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

fn spec_of(v: Json) -> Datum {
    Datum::Value(Value::Str(v.to_string()))
}

#[test]
fn elementwise_with_broadcasting_and_a_scalar() {
    // [[1, 2, 3], [4, 5, 6]] - [[10], [20]] * 1 (a column broadcast along the rows).
    let spec = spec_of(serde_json::json!({
        "op": "sub", "compute": "<f8", "shapes": [[2, 3], [2, 1]], "out_shape": [2, 3]
    }));
    let got = map(vec![
        spec,
        floats(&[1., 2., 3., 4., 5., 6.]),
        floats(&[10., 20.]),
    ])
    .unwrap();
    assert_eq!(f64s(got, 6), vec![-9., -8., -7., -16., -15., -14.]);
    let spec = spec_of(serde_json::json!({
        "op": "pow", "compute": "<f8", "shapes": [[3], null], "out_shape": [3]
    }));
    let got = map(vec![
        spec,
        floats(&[1., 2., 3.]),
        Datum::Value(Value::Int(2)),
    ])
    .unwrap();
    assert_eq!(f64s(got, 3), vec![1., 4., 9.]);
}

#[test]
fn reductions_keep_the_reduced_axes_as_length_one() {
    let spec = spec_of(serde_json::json!({
        "op": "sum", "compute": "<f8", "shapes": [[2, 3]], "axes": [1]
    }));
    let got = reduce(vec![spec, floats(&[1., 2., 3., 4., 5., 6.])]).unwrap();
    assert_eq!(f64s(got, 2), vec![6., 15.]);
    let spec = spec_of(serde_json::json!({
        "op": "max", "compute": "<f8", "shapes": [[2, 3]], "axes": [0, 1]
    }));
    let got = reduce(vec![spec, floats(&[1., 9., 3., 4., 5., 6.])]).unwrap();
    assert_eq!(f64s(got, 1), vec![9.]);
}

#[test]
fn a_chunk_transposes_to_c_order() {
    let spec = spec_of(serde_json::json!({
        "op": "transpose", "compute": "<f8", "shapes": [[2, 3]], "axes": [1, 0]
    }));
    let got = map(vec![spec, floats(&[1., 2., 3., 4., 5., 6.])]).unwrap();
    assert_eq!(f64s(got, 6), vec![1., 4., 2., 5., 3., 6.]);
}

#[test]
fn integers_wrap_as_numpys_do_and_bad_specs_are_errors() {
    let spec = spec_of(serde_json::json!({
        "op": "add", "compute": "|i1", "shapes": [[2], [2]], "out_shape": [2]
    }));
    let ints = chunk_of(&DType::Int(1), vec![127, 1]);
    let got = map(vec![spec, ints.clone(), ints]).unwrap();
    let (_, batches) = crate::kernels::table(got).unwrap();
    let meta = tern_array::ArrayMeta::new(DType::Int(1), vec![2], vec![2]).unwrap();
    assert_eq!(
        chunk::from_batches(&meta, 0, &batches).unwrap(),
        vec![254u8, 2]
    );
    let spec = spec_of(serde_json::json!({
        "op": "exp", "compute": "<i8", "shapes": [[1]], "out_shape": [1]
    }));
    let err = map(vec![spec, chunk_of(&DType::Int(8), vec![0; 8])]).unwrap_err();
    assert!(err.contains("float"), "{err}");
    // A spec claiming a huge chunk is refused before anything is allocated.
    let spec = spec_of(serde_json::json!({
        "op": "add", "compute": "<f8", "shapes": [null], "out_shape": [1u64 << 40, 1u64 << 40]
    }));
    let err = map(vec![spec, Datum::Value(Value::Int(1))]).unwrap_err();
    assert!(err.contains("larger than a chunk may be"), "{err}");
}

fn i64s(datum: Datum, n: usize) -> Vec<i64> {
    let (_, batches) = crate::kernels::table(datum).unwrap();
    let meta = tern_array::ArrayMeta::new(DType::Int(8), vec![n as u64], vec![n as u64]).unwrap();
    chunk::from_batches(&meta, 0, &batches)
        .unwrap()
        .chunks(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn where_astype_and_scans_are_numpys() {
    let spec = spec_of(serde_json::json!({
        "op": "where", "compute": "<f8", "shapes": [[3], [3], null], "out_shape": [3]
    }));
    let cond = chunk_of(&DType::Bool, vec![1, 0, 1]);
    let got = map(vec![
        spec,
        cond,
        floats(&[1., 2., 3.]),
        Datum::Value(Value::Float(-1.)),
    ])
    .unwrap();
    assert_eq!(f64s(got, 3), vec![1., -1., 3.]);
    // float -> int truncates toward zero, as NumPy's astype does.
    let spec = spec_of(serde_json::json!({
        "op": "astype", "compute": "<i8", "shapes": [[3]], "out_shape": [3]
    }));
    assert_eq!(
        i64s(map(vec![spec, floats(&[1.7, -1.7, 3.])]).unwrap(), 3),
        vec![1, -1, 3]
    );
    let spec = spec_of(serde_json::json!({
        "op": "cumsum", "compute": "<f8", "shapes": [[2, 3]], "axes": [1]
    }));
    let got = map(vec![spec, floats(&[1., 2., 3., 4., 5., 6.])]).unwrap();
    assert_eq!(f64s(got, 6), vec![1., 3., 6., 4., 9., 15.]);
    let spec = spec_of(serde_json::json!({
        "op": "cumprod", "compute": "<f8", "shapes": [[2, 3]], "axes": [0]
    }));
    let got = map(vec![spec, floats(&[1., 2., 3., 4., 5., 6.])]).unwrap();
    assert_eq!(f64s(got, 6), vec![1., 2., 3., 4., 10., 18.]);
    // NaN wins in minimum and maximum, whichever side it is on.
    let spec = spec_of(serde_json::json!({
        "op": "maximum", "compute": "<f8", "shapes": [[2], [2]], "out_shape": [2]
    }));
    let got = f64s(
        map(vec![spec, floats(&[f64::NAN, 1.]), floats(&[0., f64::NAN])]).unwrap(),
        2,
    );
    assert!(got.iter().all(|v| v.is_nan()), "{got:?}");
}

#[test]
fn prod_and_arg_reductions_across_partials() {
    let spec = spec_of(serde_json::json!({
        "op": "prod", "compute": "<f8", "shapes": [[2, 2]], "axes": [0]
    }));
    assert_eq!(
        f64s(reduce(vec![spec, floats(&[1., 2., 3., 4.])]).unwrap(), 2),
        vec![3., 8.]
    );
    // Two chunks along axis 0 (rows 0-1 and 2-3) of a 4x2 array; argmin per column.
    let partial = |values: &[f64], offset: i64| {
        let spec = spec_of(serde_json::json!({
            "op": "argmin", "compute": "<f8", "shapes": [[2, 2]], "axes": [0], "offset": offset
        }));
        reduce(vec![spec, floats(values)]).unwrap()
    };
    let first = partial(&[5., 1., 2., 7.], 0);
    let second = partial(&[2., f64::NAN, 0., 9.], 2);
    let spec = spec_of(serde_json::json!({
        "op": "argmin", "compute": "<f8", "shapes": [[1, 2]], "final": true
    }));
    // Column 0: 2 at row 1 ties 2 at row 2, the first wins... then 0 at row 3 beats both.
    // Column 1: the NaN at row 2 wins over everything, as in NumPy.
    assert_eq!(
        i64s(arg_combine(vec![spec, first, second]).unwrap(), 2),
        vec![3, 2]
    );
}

#[test]
fn gather_assembles_pieces_of_any_dtype() {
    // Two 1x2 chunks of 3-byte strings land reversed and side by side in one 1x4 chunk.
    let dtype = DType::Bytes(3);
    let a = chunk_of(&dtype, b"aaabbb".to_vec());
    let b = chunk_of(&dtype, b"cccddd".to_vec());
    let spec = spec_of(serde_json::json!({
        "compute": "|S3", "out_shape": [1, 4], "shapes": [[1, 2], [1, 2]],
        "pieces": [{"take": [null, [1, 0]], "at": [0, 0]}, {"take": null, "at": [0, 2]}]
    }));
    let got = gather(vec![spec, a, b]).unwrap();
    let (_, batches) = crate::kernels::table(got).unwrap();
    let meta = tern_array::ArrayMeta::new(dtype, vec![4], vec![4]).unwrap();
    assert_eq!(
        chunk::from_batches(&meta, 0, &batches).unwrap(),
        b"bbbaaacccddd".to_vec()
    );
    // A piece that would overflow its chunk, or an index past its operand, is an error.
    let spec = spec_of(serde_json::json!({
        "compute": "<f8", "out_shape": [2], "shapes": [[2]],
        "pieces": [{"take": null, "at": [1]}]
    }));
    assert!(
        gather(vec![spec, floats(&[1., 2.])])
            .unwrap_err()
            .contains("overflows")
    );
    let spec = spec_of(serde_json::json!({
        "compute": "<f8", "out_shape": [2], "shapes": [[2]],
        "pieces": [{"take": [[0, 2]], "at": [0]}]
    }));
    assert!(
        gather(vec![spec, floats(&[1., 2.])])
            .unwrap_err()
            .contains("index 2")
    );
}

#[test]
fn creation_routines_fill_as_numpy_does() {
    let make = |v: Json| create(vec![spec_of(v)]).unwrap();
    let got = make(serde_json::json!({
        "op": "arange", "compute": "<f8", "out_shape": [3], "start": [2], "begin": 0.5, "step": 0.25
    }));
    assert_eq!(f64s(got, 3), vec![1.0, 1.25, 1.5]);
    let got = make(serde_json::json!({
        "op": "linspace", "compute": "<f8", "out_shape": [2], "start": [3],
        "begin": 0.0, "stop": 1.0, "num": 5, "endpoint": true
    }));
    assert_eq!(f64s(got, 2), vec![0.75, 1.0]);
    let got = make(serde_json::json!({
        "op": "eye", "compute": "<i8", "out_shape": [2, 2], "start": [2, 3], "k": 1
    }));
    assert_eq!(i64s(got, 4), vec![1, 0, 0, 1]);
    let random = |index: u64| {
        f64s(
            make(serde_json::json!({
                "op": "random", "compute": "<f8", "out_shape": [4], "seed": 7, "index": index
            })),
            4,
        )
    };
    assert_eq!(random(0), random(0), "seeded");
    assert_ne!(random(0), random(1), "each chunk its own stream");
    assert!(random(0).iter().all(|v| (0.0..1.0).contains(v)));
}

#[test]
fn split_cuts_a_chunk_into_boxes_read_one_at_a_time() {
    // A 3 x 4 chunk of 0..12 cut into its left two columns, the rest of row 0, and all of it.
    let spec = spec_of(serde_json::json!({
        "compute": "<f8", "shapes": [[3, 4]],
        "parts": [[null, [0, 2]], [[0, 1], [2, 4]], [null, null]]
    }));
    let values: Vec<f64> = (0..12).map(f64::from).collect();
    let Datum::Parts(parts) = split(vec![spec, floats(&values)]).unwrap() else {
        panic!("a split makes parts");
    };
    let mut parts = parts.into_iter();
    assert_eq!(f64s(parts.next().unwrap(), 6), vec![0., 1., 4., 5., 8., 9.]);
    assert_eq!(f64s(parts.next().unwrap(), 2), vec![2., 3.]);
    assert_eq!(f64s(parts.next().unwrap(), 12), values);
    // Ranges past the chunk, backwards, or of the wrong arity are errors, not panics.
    for parts in [
        serde_json::json!([[null, [0, 5]]]),
        serde_json::json!([[null, [3, 2]]]),
        serde_json::json!([[null, [0, 1, 2]]]),
        serde_json::json!([[null]]),
    ] {
        let spec =
            spec_of(serde_json::json!({"compute": "<f8", "shapes": [[3, 4]], "parts": parts}));
        assert!(split(vec![spec, floats(&values)]).is_err(), "{parts}");
    }
    // Many copies of the whole chunk are bounded before anything is copied.
    let many = vec![serde_json::json!([null, null]); 1 << 22];
    let spec = spec_of(serde_json::json!({"compute": "<f8", "shapes": [[3, 4]], "parts": many}));
    assert!(split(vec![spec, floats(&values)]).is_err());
}

#[test]
fn matmul_of_two_chunks() {
    let spec = spec_of(serde_json::json!({"compute": "<f8", "shapes": [[2, 3], [3, 1]]}));
    let got = matmul(vec![
        spec,
        floats(&[1., 2., 3., 4., 5., 6.]),
        floats(&[1., 0., -1.]),
    ])
    .unwrap();
    assert_eq!(f64s(got, 2), vec![-2., -2.]);
    let spec = spec_of(serde_json::json!({"compute": "<f8", "shapes": [[2, 3], [2, 1]]}));
    assert!(matmul(vec![spec, floats(&[0.; 6]), floats(&[0.; 2])]).is_err());
}

proptest::proptest! {
    /// Any take lists over a chunk give what indexing the whole does.
    #[test]
    fn gather_equals_indexing(
        rows in 1usize..6,
        cols in 1usize..6,
        picks in proptest::collection::vec((0usize..100, 0usize..100), 1..6),
    ) {
        let values: Vec<f64> = (0..rows * cols).map(|v| v as f64).collect();
        let take_rows: Vec<usize> = picks.iter().map(|(r, _)| r % rows).collect();
        let take_cols: Vec<usize> = picks.iter().map(|(_, c)| c % cols).collect();
        let spec = spec_of(serde_json::json!({
            "compute": "<f8", "out_shape": [take_rows.len(), take_cols.len()],
            "shapes": [[rows, cols]],
            "pieces": [{"take": [take_rows, take_cols], "at": [0, 0]}]
        }));
        let got = f64s(gather(vec![spec, floats(&values)]).unwrap(), picks.len() * picks.len());
        let want: Vec<f64> = take_rows
            .iter()
            .flat_map(|&r| take_cols.iter().map(move |&c| (r * cols + c) as f64))
            .collect();
        proptest::prop_assert_eq!(got, want);
    }

    /// The float product (a blocked GEMM) equals the textbook triple loop, on shapes that
    /// are not multiples of any kernel's block.
    #[test]
    fn float_matmul_equals_the_triple_loop(
        m in 1usize..40, k in 1usize..40, n in 1usize..40, seed in 0u64..1000,
    ) {
        // Small integers: every partial sum is exact in f64, so any order of adding agrees.
        let value = |i: usize| ((i as u64 * 2654435761 + seed) % 17) as f64 - 8.0;
        let a: Vec<f64> = (0..m * k).map(value).collect();
        let b: Vec<f64> = (0..k * n).map(|i| value(i + 7)).collect();
        let spec = spec_of(serde_json::json!({"compute": "<f8", "shapes": [[m, k], [k, n]]}));
        let got = f64s(matmul(vec![spec, floats(&a), floats(&b)]).unwrap(), m * n);
        let want: Vec<f64> = (0..m)
            .flat_map(|i| {
                let (a, b) = (&a, &b);
                (0..n).map(move |j| (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum())
            })
            .collect();
        proptest::prop_assert_eq!(got, want);
    }
}

/// A naive C-order index of `position` in `shape`, broadcasting axes of length 1.
fn flat_index(position: &[usize], shape: &[usize]) -> usize {
    let pad = position.len() - shape.len();
    shape.iter().enumerate().fold(0, |acc, (k, &n)| {
        let p = if n == 1 { 0 } else { position[k + pad] };
        acc * n + p
    })
}

fn all_positions(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for &n in shape {
        out = out
            .into_iter()
            .flat_map(|p| {
                (0..n).map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    out
}

proptest::proptest! {
    /// Elementwise operations with broadcasting (either operand may have length 1 along an
    /// axis, or fewer axes) equal the element-by-element computation; integers wrap.
    #[test]
    fn elementwise_equals_the_naive_computation(
        dims in proptest::collection::vec((1usize..4, 0u8..3), 1..4),
        seed in 0i64..1000,
    ) {
        let out: Vec<usize> = dims.iter().map(|(n, _)| *n).collect();
        // Operand b drops its leading axis when asked, and has length 1 where dims say 1.
        let b_shape: Vec<usize> = dims
            .iter()
            .enumerate()
            .filter(|(k, (_, how))| !(*k == 0 && *how == 2 && dims.len() > 1))
            .map(|(_, (n, how))| if *how == 1 { 1 } else { *n })
            .collect();
        let a_len: usize = out.iter().product();
        let b_len: usize = b_shape.iter().product();
        let a: Vec<i64> = (0..a_len as i64).map(|v| v * 7919 + seed - 500).collect();
        let b: Vec<i64> = (0..b_len as i64).map(|v| v * 104729 - seed).collect();
        let ints = |v: &[i64]| chunk_of(&DType::Int(8), v.iter().flat_map(|x| x.to_le_bytes()).collect());
        for (op, f) in [("add", i64::wrapping_add as fn(i64, i64) -> i64), ("sub", i64::wrapping_sub), ("mul", i64::wrapping_mul)] {
            let spec = spec_of(serde_json::json!({
                "op": op, "compute": "<i8", "shapes": [out, b_shape], "out_shape": out
            }));
            let got = i64s(map(vec![spec, ints(&a), ints(&b)]).unwrap(), a_len);
            let want: Vec<i64> = all_positions(&out)
                .iter()
                .map(|p| f(a[flat_index(p, &out)], b[flat_index(p, &b_shape)]))
                .collect();
            proptest::prop_assert_eq!(got, want, "{}", op);
        }
    }

    /// A sum over any set of axes keeps them as length 1 and equals the naive sum.
    #[test]
    fn sums_over_any_axes_equal_the_naive_sum(
        shape in proptest::collection::vec(1usize..5, 1..4),
        mask in 1u8..8,
    ) {
        let axes: Vec<usize> = (0..shape.len()).filter(|k| mask & (1 << k) != 0).collect();
        proptest::prop_assume!(!axes.is_empty());
        let n: usize = shape.iter().product();
        let values: Vec<f64> = (0..n).map(|v| (v * 37 % 11) as f64 - 4.5).collect();
        let spec = spec_of(serde_json::json!({
            "op": "sum", "compute": "<f8", "shapes": [shape], "axes": axes
        }));
        let kept: Vec<usize> = shape.iter().enumerate().map(|(k, &d)| if axes.contains(&k) { 1 } else { d }).collect();
        let got = f64s(reduce(vec![spec, floats(&values)]).unwrap(), kept.iter().product());
        let mut want = vec![0.0; kept.iter().product()];
        for p in all_positions(&shape) {
            let q: Vec<usize> = p.iter().enumerate().map(|(k, &i)| if axes.contains(&k) { 0 } else { i }).collect();
            want[flat_index(&q, &kept)] += values[flat_index(&p, &shape)];
        }
        for (g, w) in got.iter().zip(&want) {
            proptest::prop_assert!((g - w).abs() < 1e-9, "{got:?} {want:?}");
        }
    }
}

#[test]
fn complex_arithmetic_and_sums() {
    let c128 = |values: &[(f64, f64)]| {
        chunk_of(
            &DType::Complex(16),
            values
                .iter()
                .flat_map(|(re, im)| re.to_le_bytes().into_iter().chain(im.to_le_bytes()))
                .collect(),
        )
    };
    let pairs = |datum: Datum, n: usize| -> Vec<(f64, f64)> {
        let (_, batches) = crate::kernels::table(datum).unwrap();
        let meta =
            tern_array::ArrayMeta::new(DType::Complex(16), vec![n as u64], vec![n as u64]).unwrap();
        chunk::from_batches(&meta, 0, &batches)
            .unwrap()
            .chunks(16)
            .map(|b| {
                (
                    f64::from_le_bytes(b[..8].try_into().unwrap()),
                    f64::from_le_bytes(b[8..].try_into().unwrap()),
                )
            })
            .collect()
    };
    // (1+2i)(3-i) = 5+5i; (0+1i)(2+0i) = 0+2i; times a real chunk, plus the constant 1i.
    let spec = spec_of(serde_json::json!({
        "op": "mul", "compute": "<c16", "shapes": [[2], [2]], "out_shape": [2]
    }));
    let got = pairs(
        map(vec![
            spec,
            c128(&[(1., 2.), (0., 1.)]),
            c128(&[(3., -1.), (2., 0.)]),
        ])
        .unwrap(),
        2,
    );
    assert_eq!(got, vec![(5., 5.), (0., 2.)]);
    let spec = spec_of(serde_json::json!({
        "op": "add", "compute": "<c16", "shapes": [[2], null], "out_shape": [2], "constants": [null, [0.0, 1.0]]
    }));
    let got = pairs(
        map(vec![spec, floats(&[1., 2.]), Datum::Value(Value::Int(0))]).unwrap(),
        2,
    );
    assert_eq!(got, vec![(1., 1.), (2., 1.)]);
    let spec = spec_of(serde_json::json!({
        "op": "abs", "compute": "<c16", "shapes": [[1]], "out_shape": [1], "out": "<f8"
    }));
    assert_eq!(
        f64s(map(vec![spec, c128(&[(3., 4.)])]).unwrap(), 1),
        vec![5.]
    );
    let spec = spec_of(serde_json::json!({
        "op": "sum", "compute": "<c16", "shapes": [[3]], "axes": [0]
    }));
    let got = pairs(
        reduce(vec![spec, c128(&[(1., 1.), (2., -3.), (0.5, 0.)])]).unwrap(),
        1,
    );
    assert_eq!(got, vec![(3.5, -2.)]);
    // Strings transpose as bytes.
    let spec = spec_of(serde_json::json!({
        "op": "transpose", "compute": "|S2", "shapes": [[2, 2]], "axes": [1, 0]
    }));
    let got = map(vec![spec, chunk_of(&DType::Bytes(2), b"aabbccdd".to_vec())]).unwrap();
    let (_, batches) = crate::kernels::table(got).unwrap();
    let meta = tern_array::ArrayMeta::new(DType::Bytes(2), vec![4], vec![4]).unwrap();
    assert_eq!(
        chunk::from_batches(&meta, 0, &batches).unwrap(),
        b"aaccbbdd".to_vec()
    );
}

#[test]
fn hostile_offsets_are_errors_not_panics() {
    let spec = spec_of(serde_json::json!({
        "compute": "<f8", "out_shape": [2], "shapes": [[2]],
        "pieces": [{"take": null, "at": [u64::MAX]}]
    }));
    assert!(
        gather(vec![spec, floats(&[1., 2.])])
            .unwrap_err()
            .contains("overflows")
    );
    let spec = spec_of(serde_json::json!({
        "op": "eye", "compute": "<f8", "out_shape": [2, 2], "start": [u64::MAX, 0]
    }));
    assert!(
        create(vec![spec])
            .unwrap_err()
            .contains("past the largest array")
    );
    let spec = spec_of(serde_json::json!({
        "op": "argmax", "compute": "<f8", "shapes": [[2]], "axes": [0], "offset": i64::MAX
    }));
    assert!(reduce(vec![spec, floats(&[1., 2.])]).is_ok());
}
