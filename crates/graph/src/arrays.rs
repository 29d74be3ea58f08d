//! The array kernels: NumPy's elementwise arithmetic, comparisons, ufuncs and reductions over
//! the chunks of stored arrays (`tern_array`'s blocks), on `ndarray`.
//!
//! A task says what to do in a spec (JSON text, its first input): the operation, the dtype to
//! compute in and each operand's chunk shape. The client works out result dtypes as NumPy
//! would (`np.result_type`), so a kernel only casts its operands to the compute dtype, runs,
//! and returns a chunk in the same stored form.
//!
//! | kernel | inputs | output |
//! |---|---|---|
//! | `array_map` | spec `{op, compute, shapes, out_shape}`, operands (chunks or numbers) | the operands combined elementwise with NumPy broadcasting: `add`, `sub`, `mul`, `truediv`, `pow`, `minimum`, `maximum` (folded over any number of operands), `eq`…`ge` (a bool chunk), `neg`, `abs`, `exp`, `log`, `sqrt`, `sin`, `cos`; or `transpose` of one chunk by `axes` |
//! | `array_reduce` | spec `{op, compute, shape, axes}`, one chunk | the chunk reduced over `axes` (kept as length 1): `sum`, `min`, `max` |

use ndarray::{ArrayD, Axis, IxDyn, Zip};
use serde_json::Value as Json;
use tern_array::{DType, chunk};
use tern_exec::arrow::array::{Array, ArrayRef, PrimitiveArray};
use tern_exec::arrow::compute::cast;
use tern_exec::arrow::datatypes::{
    ArrowPrimitiveType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use tern_proto::{Datum, Value};

/// The numbers kernels compute in, with NumPy's semantics: integers wrap on overflow.
trait Num: Copy + PartialOrd + Default + Send + Sync + 'static {
    const FLOAT: bool;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    fn pow(self, o: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn from_f64(v: f64) -> Self;
    fn from_i64(v: i64) -> Self;
    fn to_f64(self) -> f64;
}

macro_rules! int_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const FLOAT: bool = false;
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            // NumPy's integer floor division gives 0 for a zero divisor (with a warning).
            fn div(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_div(o) } }
            fn pow(self, o: Self) -> Self { self.wrapping_pow(o as u32) }
            #[allow(unused_comparisons)]
            fn neg(self) -> Self { (0 as $t).wrapping_sub(self) }
            #[allow(unused_comparisons)]
            fn abs(self) -> Self { if self < 0 { (0 as $t).wrapping_sub(self) } else { self } }
            fn from_f64(v: f64) -> Self { v as $t }
            fn from_i64(v: i64) -> Self { v as $t }
            fn to_f64(self) -> f64 { self as f64 }
        }
    )*};
}
int_num!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! float_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const FLOAT: bool = true;
            fn add(self, o: Self) -> Self { self + o }
            fn sub(self, o: Self) -> Self { self - o }
            fn mul(self, o: Self) -> Self { self * o }
            fn div(self, o: Self) -> Self { self / o }
            fn pow(self, o: Self) -> Self { self.powf(o) }
            fn neg(self) -> Self { -self }
            fn abs(self) -> Self { self.abs() }
            fn from_f64(v: f64) -> Self { v as $t }
            fn from_i64(v: i64) -> Self { v as $t }
            fn to_f64(self) -> f64 { self as f64 }
        }
    )*};
}
float_num!(f32, f64);

/// What a spec says, read.
struct Spec {
    op: String,
    compute: DType,
    shapes: Vec<Option<Vec<usize>>>,
    out_shape: Vec<usize>,
    axes: Vec<usize>,
}

fn dims(v: &Json) -> Result<Vec<usize>, String> {
    v.as_array()
        .ok_or_else(|| format!("a shape is a list, not {v}"))?
        .iter()
        .map(|d| {
            d.as_u64()
                .map(|d| d as usize)
                .ok_or_else(|| format!("a shape holds {d}"))
        })
        .collect()
}

fn spec(input: &Datum) -> Result<Spec, String> {
    let Datum::Value(Value::Str(text)) = input else {
        return Err("the first input is the task's spec (JSON text)".into());
    };
    let v: Json = serde_json::from_str(text).map_err(|e| format!("spec: {e}"))?;
    let op = v["op"].as_str().ok_or("spec: no op")?.to_string();
    let compute = DType::from_json(&v["compute"]).map_err(|e| e.to_string())?;
    let shapes = match v.get("shapes").and_then(Json::as_array) {
        Some(list) => list
            .iter()
            .map(|s| {
                if s.is_null() {
                    Ok(None)
                } else {
                    dims(s).map(Some)
                }
            })
            .collect::<Result<_, _>>()?,
        None => vec![v.get("shape").map(dims).transpose()?],
    };
    let out_shape = match v.get("out_shape") {
        Some(s) => dims(s)?,
        None => Vec::new(),
    };
    let axes = match v.get("axes") {
        Some(a) => dims(a)?,
        None => Vec::new(),
    };
    // Whatever the spec claims, no chunk made here may be larger than a stored chunk may be:
    // a task's spec comes from a client, and memory is the node's.
    for shape in shapes.iter().flatten().chain([&out_shape]) {
        let elements = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .filter(|_| shape.len() <= tern_array::meta::MAX_NDIM);
        let bytes = elements.map(|n| n.saturating_mul(compute.itemsize()));
        if bytes.is_none_or(|b| b > tern_array::meta::MAX_CHUNK_BYTES) {
            return Err(format!(
                "a chunk of shape {shape:?} is larger than a chunk may be ({})",
                tern_proto::human_bytes(tern_array::meta::MAX_CHUNK_BYTES)
            ));
        }
    }
    Ok(Spec {
        op,
        compute,
        shapes,
        out_shape,
        axes,
    })
}

/// An operand: a chunk as an n-d array of the compute type, or a number.
enum Operand<T> {
    Chunk(ArrayD<T>),
    Scalar(T),
}

fn operand<P: ArrowPrimitiveType>(
    input: Datum,
    shape: Option<&Vec<usize>>,
) -> Result<Operand<P::Native>, String>
where
    P::Native: Num,
{
    match (input, shape) {
        (Datum::Value(Value::Int(i)), _) => Ok(Operand::Scalar(P::Native::from_i64(i))),
        (Datum::Value(Value::Float(f)), _) => Ok(Operand::Scalar(P::Native::from_f64(f))),
        (Datum::Value(Value::Bool(b)), _) => Ok(Operand::Scalar(P::Native::from_i64(b as i64))),
        (table @ Datum::Table(_), Some(shape)) => {
            let (_, batches) = crate::kernels::table(table)?;
            let mut values: Vec<P::Native> = Vec::new();
            for batch in &batches {
                let column: ArrayRef = cast(batch.column(0), &P::DATA_TYPE)
                    .map_err(|e| format!("a chunk as {}: {e}", P::DATA_TYPE))?;
                let typed = column
                    .as_any()
                    .downcast_ref::<PrimitiveArray<P>>()
                    .ok_or("a chunk of another type")?;
                values.extend_from_slice(typed.values());
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

fn as_chunk<T: Num>(op: Operand<T>, shape: &[usize]) -> Result<ArrayD<T>, String> {
    match op {
        Operand::Scalar(v) => Ok(ArrayD::from_elem(IxDyn(shape), v)),
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

/// A result chunk as its block holds it.
fn output<P: ArrowPrimitiveType>(
    dtype: &DType,
    values: ArrayD<P::Native>,
) -> Result<Datum, String> {
    let flat: Vec<P::Native> = values.iter().copied().collect();
    let column: ArrayRef = std::sync::Arc::new(PrimitiveArray::<P>::from_iter_values(flat));
    let stored = cast(&column, &dtype.arrow_type()).map_err(|e| e.to_string())?;
    let batch =
        tern_exec::arrow::record_batch::RecordBatch::try_new(chunk::schema(dtype), vec![stored])
            .map_err(|e| e.to_string())?;
    crate::kernels::to_table(&batch.schema(), &[batch])
}

fn map_typed<P: ArrowPrimitiveType>(spec: &Spec, inputs: Vec<Datum>) -> Result<Datum, String>
where
    P::Native: Num,
{
    if inputs.len() != spec.shapes.len() {
        return Err(format!(
            "{} operands, {} shapes",
            inputs.len(),
            spec.shapes.len()
        ));
    }
    if spec.op == "transpose" {
        // One chunk, its axes permuted (`axes`, as NumPy's `transpose` takes them).
        let input = inputs.into_iter().next().ok_or("no operand")?;
        let Operand::Chunk(values) = operand::<P>(input, spec.shapes[0].as_ref())? else {
            return Err("a transpose reads a chunk".into());
        };
        let mut seen = spec.axes.clone();
        seen.sort_unstable();
        if seen != (0..values.ndim()).collect::<Vec<_>>() {
            return Err(format!(
                "axes {:?} do not permute a {}-d chunk",
                spec.axes,
                values.ndim()
            ));
        }
        let turned = values.permuted_axes(IxDyn(&spec.axes));
        return output::<P>(&spec.compute, turned.as_standard_layout().into_owned());
    }
    let shape = &spec.out_shape;
    let mut operands = Vec::with_capacity(inputs.len());
    for (input, s) in inputs.into_iter().zip(&spec.shapes) {
        operands.push(as_chunk(operand::<P>(input, s.as_ref())?, shape)?);
    }
    let mut it = operands.into_iter();
    let mut acc = it.next().ok_or("no operands")?;
    let binary = |f: fn(P::Native, P::Native) -> P::Native,
                  acc: &mut ArrayD<P::Native>,
                  rest: Vec<ArrayD<P::Native>>| {
        for other in rest {
            Zip::from(&mut *acc)
                .and(&other)
                .for_each(|a, &b| *a = f(*a, b));
        }
    };
    let rest: Vec<_> = it.collect();
    let compare = |f: fn(&P::Native, &P::Native) -> bool,
                   acc: ArrayD<P::Native>,
                   rest: Vec<ArrayD<P::Native>>| {
        let other = rest
            .into_iter()
            .next()
            .ok_or("a comparison of one operand")?;
        let mut out = ArrayD::<u8>::zeros(IxDyn(shape));
        Zip::from(&mut out)
            .and(&acc)
            .and(&other)
            .for_each(|o, a, b| *o = f(a, b) as u8);
        output::<UInt8Type>(&DType::Bool, out)
    };
    let unary_float = |f: fn(f64) -> f64, mut acc: ArrayD<P::Native>| {
        acc.mapv_inplace(|v| P::Native::from_f64(f(v.to_f64())));
        acc
    };
    let op = spec.op.as_str();
    let result = match op {
        "add" => {
            binary(Num::add, &mut acc, rest);
            acc
        }
        "sub" => {
            binary(Num::sub, &mut acc, rest);
            acc
        }
        "mul" => {
            binary(Num::mul, &mut acc, rest);
            acc
        }
        "truediv" | "floordiv" => {
            binary(Num::div, &mut acc, rest);
            if op == "floordiv" && P::Native::FLOAT {
                acc.mapv_inplace(|v| P::Native::from_f64(v.to_f64().floor()));
            }
            acc
        }
        "pow" => {
            binary(Num::pow, &mut acc, rest);
            acc
        }
        "minimum" => {
            binary(|a, b| if b < a || a != a { b } else { a }, &mut acc, rest);
            acc
        }
        "maximum" => {
            binary(|a, b| if b > a || a != a { b } else { a }, &mut acc, rest);
            acc
        }
        "eq" => return compare(|a, b| a == b, acc, rest),
        "ne" => return compare(|a, b| a != b, acc, rest),
        "lt" => return compare(|a, b| a < b, acc, rest),
        "le" => return compare(|a, b| a <= b, acc, rest),
        "gt" => return compare(|a, b| a > b, acc, rest),
        "ge" => return compare(|a, b| a >= b, acc, rest),
        "neg" => acc.mapv(Num::neg),
        "abs" => acc.mapv(Num::abs),
        "exp" | "log" | "sqrt" | "sin" | "cos" if !P::Native::FLOAT => {
            return Err(format!(
                "{op} computes in a float dtype, not {}",
                spec.compute.name()
            ));
        }
        "exp" => unary_float(f64::exp, acc),
        "log" => unary_float(f64::ln, acc),
        "sqrt" => unary_float(f64::sqrt, acc),
        "sin" => unary_float(f64::sin, acc),
        "cos" => unary_float(f64::cos, acc),
        other => return Err(format!("no elementwise operation {other:?}")),
    };
    output::<P>(&spec.compute, result)
}

fn reduce_typed<P: ArrowPrimitiveType>(spec: &Spec, input: Datum) -> Result<Datum, String>
where
    P::Native: Num,
{
    let shape = spec
        .shapes
        .first()
        .cloned()
        .flatten()
        .ok_or("no chunk shape")?;
    let Operand::Chunk(mut values) = operand::<P>(input, Some(&shape))? else {
        return Err("a reduction reads a chunk".into());
    };
    for &axis in &spec.axes {
        if axis >= values.ndim() {
            return Err(format!("axis {axis} of a {}-d chunk", values.ndim()));
        }
        let reduced = match spec.op.as_str() {
            "sum" => values.fold_axis(Axis(axis), P::Native::default(), |a, &b| a.add(b)),
            "min" | "max" if values.len_of(Axis(axis)) == 0 => {
                return Err(format!("{} of an empty axis has no identity", spec.op));
            }
            "min" => values.map_axis(Axis(axis), |lane| {
                lane.iter()
                    .copied()
                    .fold(lane[0], |a, b| if b < a || b != b { b } else { a })
            }),
            "max" => values.map_axis(Axis(axis), |lane| {
                lane.iter()
                    .copied()
                    .fold(lane[0], |a, b| if b > a || b != b { b } else { a })
            }),
            other => return Err(format!("no reduction {other:?}")),
        };
        values = reduced.insert_axis(Axis(axis));
    }
    output::<P>(&spec.compute, values)
}

/// Dispatch on the compute dtype.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {
        match $dtype {
            DType::Float(8) => $f::<Float64Type>($($arg),*),
            DType::Float(4) => $f::<Float32Type>($($arg),*),
            DType::Int(8) => $f::<Int64Type>($($arg),*),
            DType::Int(4) => $f::<Int32Type>($($arg),*),
            DType::Int(2) => $f::<Int16Type>($($arg),*),
            DType::Int(1) => $f::<Int8Type>($($arg),*),
            DType::UInt(8) => $f::<UInt64Type>($($arg),*),
            DType::UInt(4) => $f::<UInt32Type>($($arg),*),
            DType::UInt(2) => $f::<UInt16Type>($($arg),*),
            DType::UInt(1) | DType::Bool => $f::<UInt8Type>($($arg),*),
            other => Err(format!("arithmetic in {} is not supported yet", other.name())),
        }
    };
}

/// `array_map`: see the module docs.
pub fn map(mut inputs: Vec<Datum>) -> Result<Datum, String> {
    if inputs.is_empty() {
        return Err("no spec".into());
    }
    let spec = spec(&inputs.remove(0))?;
    by_dtype!(&spec.compute, map_typed, &spec, inputs)
}

/// `array_reduce`: see the module docs.
pub fn reduce(mut inputs: Vec<Datum>) -> Result<Datum, String> {
    if inputs.len() != 2 {
        return Err("a spec and one chunk".into());
    }
    let spec = spec(&inputs.remove(0))?;
    let chunk = inputs.remove(0);
    by_dtype!(&spec.compute, reduce_typed, &spec, chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_of(dtype: &DType, bytes: Vec<u8>) -> Datum {
        let batch = chunk::to_batch(dtype, bytes).unwrap();
        crate::kernels::to_table(&batch.schema(), &[batch]).unwrap()
    }

    fn f64s(datum: Datum, n: usize) -> Vec<f64> {
        let (_, batches) = crate::kernels::table(datum).unwrap();
        let meta =
            tern_array::ArrayMeta::new(DType::Float(8), vec![n as u64], vec![n as u64]).unwrap();
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
}
