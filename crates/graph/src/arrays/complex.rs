//! Complex numbers (NumPy's complex64 and complex128) in `array_map` and `array_reduce`:
//! arithmetic, `abs`, `conj`, `real`, `imag`, ufuncs, equality, sums and products, on
//! `num-complex`. A chunk of complex numbers is stored as the bytes NumPy has (pairs of
//! little-endian floats); real chunks and numbers among the operands are promoted, and complex
//! constants travel in the spec (`constants`: `[re, im]` where an operand is one). Both widths
//! compute in pairs of f64; complex64 results are rounded to pairs of f32, as NumPy stores them.

use std::cmp::Ordering;

use ndarray::{ArrayD, Axis, IxDyn, Zip};
use num_complex::Complex;
use tern_array::DType;
use tern_exec::arrow::array::{Array, AsArray};
use tern_exec::arrow::compute::cast;
use tern_exec::arrow::datatypes::{DataType, Float32Type, Float64Type, UInt8Type};
use tern_proto::{Datum, Value};

use super::{Spec, bytes_output, output};

type C = Complex<f64>;

/// A complex operand: a chunk decoded into complex numbers, or a number.
enum Operand {
    Chunk(ArrayD<C>),
    Scalar(C),
}

fn as_chunk(op: Operand, shape: &[usize]) -> Result<ArrayD<C>, String> {
    match op {
        Operand::Scalar(v) => Ok(ArrayD::from_elem(IxDyn(shape), v)),
        Operand::Chunk(a) if a.shape() == shape => Ok(a),
        Operand::Chunk(a) => a
            .broadcast(IxDyn(shape))
            .map(|b| b.to_owned())
            .ok_or_else(|| {
                format!(
                    "a chunk of shape {:?} does not broadcast to {shape:?}",
                    a.shape()
                )
            }),
    }
}

/// An operand: a chunk (complex or real) or a number, as complex numbers.
fn operand(
    input: Datum,
    shape: Option<&Vec<usize>>,
    constant: Option<C>,
) -> Result<Operand, String> {
    if let Some(c) = constant {
        return Ok(Operand::Scalar(c));
    }
    match (input, shape) {
        (Datum::Value(Value::Int(i)), _) => Ok(Operand::Scalar(C::new(i as f64, 0.0))),
        (Datum::Value(Value::Float(f)), _) => Ok(Operand::Scalar(C::new(f, 0.0))),
        (Datum::Value(Value::Bool(b)), _) => Ok(Operand::Scalar(C::new(b as u8 as f64, 0.0))),
        (table @ Datum::Table(_), Some(shape)) => {
            let (_, batches) = crate::kernels::table(table)?;
            let mut values: Vec<C> = Vec::new();
            for batch in &batches {
                let column = batch.column(0);
                match column.data_type() {
                    DataType::FixedSizeBinary(8) | DataType::FixedSizeBinary(16) => {
                        let binary = column.as_fixed_size_binary();
                        if binary.null_count() > 0 {
                            return Err("a chunk with missing values".into());
                        }
                        for item in binary.iter().flatten() {
                            values.push(if item.len() == 8 {
                                let re = f32::from_le_bytes(item[..4].try_into().expect("4 bytes"));
                                let im = f32::from_le_bytes(item[4..].try_into().expect("4 bytes"));
                                C::new(re as f64, im as f64)
                            } else {
                                let re = f64::from_le_bytes(item[..8].try_into().expect("8 bytes"));
                                let im = f64::from_le_bytes(item[8..].try_into().expect("8 bytes"));
                                C::new(re, im)
                            });
                        }
                    }
                    _ => {
                        let real = cast(column, &DataType::Float64)
                            .map_err(|e| format!("a chunk as complex numbers: {e}"))?;
                        values.extend(
                            real.as_primitive::<Float64Type>()
                                .values()
                                .iter()
                                .map(|&v| C::new(v, 0.0)),
                        );
                    }
                }
            }
            ArrayD::from_shape_vec(IxDyn(shape), values)
                .map(Operand::Chunk)
                .map_err(|e| format!("a chunk of shape {shape:?}: {e}"))
        }
        (other, _) => Err(format!(
            "an operand {other:?} that is neither a chunk nor a number"
        )),
    }
}

/// A complex chunk as its block holds it.
fn complex_output(dtype: &DType, values: ArrayD<C>) -> Result<Datum, String> {
    let mut bytes = Vec::with_capacity(values.len() * dtype.itemsize() as usize);
    for v in values.iter() {
        match dtype {
            DType::Complex(8) => {
                bytes.extend_from_slice(&(v.re as f32).to_le_bytes());
                bytes.extend_from_slice(&(v.im as f32).to_le_bytes());
            }
            _ => {
                bytes.extend_from_slice(&v.re.to_le_bytes());
                bytes.extend_from_slice(&v.im.to_le_bytes());
            }
        }
    }
    bytes_output(dtype, bytes)
}

/// A real result (`abs`, `real`, `imag`) in the spec's `out` dtype (float32 or float64).
fn real_output(spec: &Spec, values: ArrayD<f64>) -> Result<Datum, String> {
    let out = match spec.raw.get("out") {
        Some(o) => DType::from_json(o).map_err(|e| e.to_string())?,
        None => DType::Float(8),
    };
    match out {
        DType::Float(4) => output::<Float32Type>(&out, values.mapv(|v| v as f32)),
        DType::Float(8) => output::<Float64Type>(&out, values),
        other => Err(format!("a real result as {}", other.name())),
    }
}

fn constants(spec: &Spec) -> Result<Vec<Option<C>>, String> {
    let Some(list) = spec.raw.get("constants").and_then(|c| c.as_array()) else {
        return Ok(vec![None; spec.shapes.len()]);
    };
    list.iter()
        .map(|c| match c.as_array() {
            None => Ok(None),
            Some(pair) if pair.len() == 2 => Ok(Some(C::new(
                pair[0].as_f64().ok_or("a constant's real part")?,
                pair[1].as_f64().ok_or("a constant's imaginary part")?,
            ))),
            Some(_) => Err("a complex constant is [re, im]".to_string()),
        })
        .collect()
}

pub(super) fn map(spec: &Spec, inputs: Vec<Datum>) -> Result<Datum, String> {
    if inputs.len() != spec.shapes.len() {
        return Err(format!(
            "{} operands, {} shapes",
            inputs.len(),
            spec.shapes.len()
        ));
    }
    let constants = constants(spec)?;
    let shape = &spec.out_shape;
    let mut operands = Vec::with_capacity(inputs.len());
    for ((input, s), c) in inputs
        .into_iter()
        .zip(&spec.shapes)
        .zip(constants.into_iter().chain(std::iter::repeat(None)))
    {
        operands.push(as_chunk(operand(input, s.as_ref(), c)?, shape)?);
    }
    let mut it = operands.into_iter();
    let mut acc = it.next().ok_or("no operands")?;
    let rest: Vec<ArrayD<C>> = it.collect();
    let fold = |f: fn(C, C) -> C, mut acc: ArrayD<C>, rest: Vec<ArrayD<C>>| {
        for other in rest {
            Zip::from(&mut acc)
                .and(&other)
                .for_each(|a, &b| *a = f(*a, b));
        }
        acc
    };
    // Comparisons by NumPy's order (`None` when a NaN is compared: only `!=` holds then).
    let compare = |keep: fn(Option<Ordering>) -> bool, acc: ArrayD<C>, rest: Vec<ArrayD<C>>| {
        let other = rest
            .into_iter()
            .next()
            .ok_or("a comparison of one operand")?;
        let mut out = ArrayD::<u8>::zeros(IxDyn(shape));
        Zip::from(&mut out)
            .and(&acc)
            .and(&other)
            .for_each(|o, a, b| *o = keep(lexicographic(a, b)) as u8);
        output::<UInt8Type>(&DType::Bool, out)
    };
    let result = match spec.op.as_str() {
        "add" => fold(|a, b| a + b, acc, rest),
        "lt" => return compare(|o| o.is_some_and(Ordering::is_lt), acc, rest),
        "le" => return compare(|o| o.is_some_and(Ordering::is_le), acc, rest),
        "gt" => return compare(|o| o.is_some_and(Ordering::is_gt), acc, rest),
        "ge" => return compare(|o| o.is_some_and(Ordering::is_ge), acc, rest),
        "minimum" => fold(smaller, acc, rest),
        "maximum" => fold(larger, acc, rest),
        "sub" => fold(|a, b| a - b, acc, rest),
        "mul" => fold(|a, b| a * b, acc, rest),
        "truediv" => fold(|a, b| a / b, acc, rest),
        "pow" => fold(|a, b| a.powc(b), acc, rest),
        "eq" => return compare(|o| o == Some(Ordering::Equal), acc, rest),
        "ne" => return compare(|o| o != Some(Ordering::Equal), acc, rest),
        "neg" => acc.mapv(|v| -v),
        "conj" => acc.mapv(|v| v.conj()),
        "exp" => acc.mapv(|v| v.exp()),
        "log" => acc.mapv(|v| v.ln()),
        "sqrt" => acc.mapv(|v| v.sqrt()),
        "sin" => acc.mapv(|v| v.sin()),
        "cos" => acc.mapv(|v| v.cos()),
        "abs" => return real_output(spec, acc.mapv(|v| v.norm())),
        "real" => return real_output(spec, acc.mapv(|v| v.re)),
        "imag" => return real_output(spec, acc.mapv(|v| v.im)),
        "astype" => acc,
        "where" => {
            let [then, otherwise] = <[ArrayD<C>; 2]>::try_from(rest)
                .map_err(|_| "where takes a condition and two operands")?;
            Zip::from(&mut acc)
                .and(&then)
                .and(&otherwise)
                .for_each(|c, &t, &o| *c = if *c != C::new(0.0, 0.0) { t } else { o });
            acc
        }
        other => {
            return Err(format!(
                "no elementwise operation {other:?} on complex numbers"
            ));
        }
    };
    complex_output(&spec.compute, result)
}

pub(super) fn reduce(spec: &Spec, input: Datum) -> Result<Datum, String> {
    let shape = spec.first_shape()?;
    let Operand::Chunk(mut values) = operand(input, Some(&shape), None)? else {
        return Err("a reduction reads a chunk".into());
    };
    for &axis in &spec.axes {
        if axis >= values.ndim() {
            return Err(format!("axis {axis} of a {}-d chunk", values.ndim()));
        }
        let reduced = match spec.op.as_str() {
            "sum" => values.fold_axis(Axis(axis), C::new(0.0, 0.0), |a, &b| a + b),
            "prod" => values.fold_axis(Axis(axis), C::new(1.0, 0.0), |a, &b| a * b),
            "min" | "max" => {
                if values.len_of(Axis(axis)) == 0 {
                    return Err(format!("{} of an empty axis", spec.op));
                }
                let pick = if spec.op == "min" { smaller } else { larger };
                let first = values.index_axis(Axis(axis), 0).to_owned();
                values
                    .axis_iter(Axis(axis))
                    .skip(1)
                    .fold(first, |mut best, lane| {
                        Zip::from(&mut best)
                            .and(&lane)
                            .for_each(|a, &b| *a = pick(*a, b));
                        best
                    })
            }
            other => return Err(format!("no reduction {other:?} of complex numbers")),
        };
        values = reduced.insert_axis(Axis(axis));
    }
    complex_output(&spec.compute, values)
}

/// NumPy's order of complex numbers: by real part, then imaginary part; none when either
/// holds a NaN.
fn lexicographic(a: &C, b: &C) -> Option<Ordering> {
    if is_nan(a) || is_nan(b) {
        return None;
    }
    Some(a.re.partial_cmp(&b.re)?.then(a.im.partial_cmp(&b.im)?))
}

fn is_nan(c: &C) -> bool {
    c.re.is_nan() || c.im.is_nan()
}

/// NumPy's `minimum` of complex numbers: a NaN wins (the first one), else the lesser.
fn smaller(a: C, b: C) -> C {
    if is_nan(&a) || (!is_nan(&b) && lexicographic(&b, &a).is_some_and(|o| o.is_ge())) {
        a
    } else {
        b
    }
}

/// NumPy's `maximum` of complex numbers: a NaN wins (the first one), else the greater.
fn larger(a: C, b: C) -> C {
    if is_nan(&a) || (!is_nan(&b) && lexicographic(&b, &a).is_some_and(|o| o.is_le())) {
        a
    } else {
        b
    }
}
