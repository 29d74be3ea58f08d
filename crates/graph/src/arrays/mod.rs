//! The array kernels: NumPy's elementwise arithmetic, comparisons, ufuncs, reductions, layout
//! changes and creation routines over the chunks of arrays (`tern_array`'s blocks), on
//! `ndarray`.
//!
//! A task says what to do in a spec (JSON text, its first input): the operation, the dtype to
//! compute in and each operand's chunk shape. The client works out result dtypes as NumPy
//! would (`np.result_type`) and plans which chunks each task reads, so a kernel only casts its
//! operands to the compute dtype, runs, and returns a chunk in the same stored form. Shapes in
//! a spec are checked against the largest chunk before anything is allocated: a spec comes
//! from a client, the memory is the node's.
//!
//! | kernel | inputs | output |
//! |---|---|---|
//! | `array_map` | spec `{op, compute, shapes, out_shape}`, operands (chunks or numbers) | the operands combined elementwise with NumPy broadcasting: `add`, `sub`, `mul`, `truediv`, `floordiv`, `pow`, `minimum`, `maximum` (folded over any number of operands), `eq`…`ge` (a bool chunk), `neg`, `abs`, `exp`, `log`, `sqrt`, `sin`, `cos`, `where` (condition, then, else), `astype` (one operand read as the compute dtype); `cumsum`/`cumprod` of one chunk along `axes[0]`; `transpose` of one chunk by `axes` |
//! | `array_reduce` | spec `{op, compute, shape, axes}`, one chunk | the chunk reduced over `axes` (kept as length 1): `sum`, `prod`, `min`, `max`; `argmin`/`argmax` along `axes[0]` (its start in the whole array at `offset`): the values and their indexes, for `array_arg_combine` |
//! | `array_arg_combine` | spec `{op, compute, shapes, final}`, partials of `argmin`/`argmax` | the partials combined (the first index among equals wins, NaN wins as in NumPy); with `final`, the indexes alone as an `<i8` chunk |
//! | `array_gather` | spec `{compute, out_shape, shapes, pieces}`, chunks | a new chunk assembled from pieces of the operands: each piece takes index lists along each axis of its operand (`take`, all when null) and lands at offsets `at`. Rechunking, slicing, concatenation, stacking and reshapes are plans of gathers; any dtype (moved as bytes) |
//! | `array_split` | spec `{compute, shapes, parts}`, one chunk | the chunk cut into `parts`, boxes given per axis as `[start, stop]` (all of it when null), each its own chunk in a `Datum::Parts` that later tasks read one part at a time (`Arg::Part`): a rechunk's first step, so every input chunk is read once; any dtype |
//! | `array_create` | spec `{op, compute, out_shape, start, …}` | a chunk made from nothing, its place in the whole array at `start`: `zeros`, `ones`, `full` (`value`), `arange` (`begin`, `step`), `linspace` (`begin`, `stop`, `num`, `endpoint`), `eye` (`k`), `random` (`seed`, `index`, `dist`: `uniform` or `normal`) |
//! | `array_matmul` | spec `{compute, shapes}`, two 2-d chunks | their matrix product |

mod boxes;
mod complex;
mod create;
mod elementwise;
mod layout;
mod reduce;
#[cfg(test)]
mod tests;

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use serde_json::Value as Json;
use tern_array::{DType, chunk};
use tern_exec::arrow::array::{Array, ArrayRef, PrimitiveArray};
use tern_exec::arrow::buffer::ScalarBuffer;
use tern_exec::arrow::compute::cast;
use tern_exec::arrow::datatypes::ArrowNativeType;
use tern_exec::arrow::datatypes::{
    ArrowPrimitiveType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use tern_proto::{Datum, Value};

use create::create_typed;
use elementwise::{map_typed, matmul_float, matmul_typed};
use reduce::{arg_combine_typed, reduce_typed};

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
    /// The whole spec, for what only some operations read.
    raw: Json,
}

impl Spec {
    /// The shape of the first operand, which most operations read alone.
    fn first_shape(&self) -> Result<Vec<usize>, String> {
        self.shapes
            .first()
            .cloned()
            .flatten()
            .ok_or_else(|| "no chunk shape".to_string())
    }
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
    let op = v["op"].as_str().unwrap_or_default().to_string();
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
        raw: v,
    })
}

/// An operand: a chunk of the compute type, or a number.
enum Operand<T: ArrowNativeType> {
    Chunk(Chunk<T>),
    Scalar(T),
}

/// A chunk's elements in C order and its shape. When its block holds them as the compute type
/// already they are the block's own (decoded in place), so reading a chunk copies nothing:
/// kernels look at it through [`Chunk::view`] and copy only what they write.
struct Chunk<T: ArrowNativeType> {
    values: ScalarBuffer<T>,
    shape: Vec<usize>,
}

impl<T: ArrowNativeType> Chunk<T> {
    fn new(values: ScalarBuffer<T>, shape: &[usize]) -> Result<Self, String> {
        let elements: usize = shape.iter().product();
        if values.len() != elements {
            return Err(format!(
                "a chunk of shape {shape:?} holds {} elements",
                values.len()
            ));
        }
        Ok(Self {
            values,
            shape: shape.to_vec(),
        })
    }

    fn view(&self) -> ArrayViewD<'_, T> {
        ArrayViewD::from_shape(IxDyn(&self.shape), &self.values)
            .expect("the length was checked against the shape when the chunk was read")
    }

    /// The elements as an array of their own (a copy, unless nothing else holds them).
    fn into_owned(self) -> ArrayD<T> {
        let Self { values, shape } = self;
        match values.into_inner().into_vec::<T>() {
            Ok(vec) => ArrayD::from_shape_vec(IxDyn(&shape), vec)
                .expect("the length was checked against the shape when the chunk was read"),
            Err(buffer) => ArrayViewD::from_shape(IxDyn(&shape), buffer.typed_data::<T>())
                .expect("the length was checked against the shape when the chunk was read")
                .to_owned(),
        }
    }
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
            let mut typed = Vec::with_capacity(batches.len());
            for batch in &batches {
                let column: ArrayRef = cast(batch.column(0), &P::DATA_TYPE)
                    .map_err(|e| format!("a chunk as {}: {e}", P::DATA_TYPE))?;
                let values = column
                    .as_any()
                    .downcast_ref::<PrimitiveArray<P>>()
                    .ok_or("a chunk of another type")?
                    .values()
                    .clone();
                typed.push(values);
            }
            let values = match <[ScalarBuffer<P::Native>; 1]>::try_from(typed) {
                Ok([one]) => one,
                Err(several) => several
                    .iter()
                    .flat_map(|v| v.iter().copied())
                    .collect::<Vec<_>>()
                    .into(),
            };
            Chunk::new(values, shape).map(Operand::Chunk)
        }
        (other, _) => Err(format!(
            "an operand {other:?} that is neither a chunk nor a number"
        )),
    }
}

/// An operand broadcast to `shape`, as an array of its own (the accumulator a kernel writes).
fn as_chunk<T: ArrowNativeType>(op: Operand<T>, shape: &[usize]) -> Result<ArrayD<T>, String> {
    match op {
        Operand::Scalar(v) => Ok(ArrayD::from_elem(IxDyn(shape), v)),
        Operand::Chunk(c) if c.shape == shape => Ok(c.into_owned()),
        Operand::Chunk(c) => c
            .view()
            .broadcast(IxDyn(shape))
            .map(|b| b.to_owned())
            .ok_or_else(|| {
                format!(
                    "a chunk of shape {:?} does not broadcast to {shape:?}",
                    c.shape
                )
            }),
    }
}

/// Run `f` on `operands` seen broadcast to `shape`: chunks in place (nothing is copied),
/// numbers as arrays of one element repeated.
fn with_broadcast<T: ArrowNativeType, R>(
    operands: &[Operand<T>],
    shape: &[usize],
    f: impl FnOnce(Vec<ArrayViewD<'_, T>>) -> R,
) -> Result<R, String> {
    let numbers: Vec<ArrayD<T>> = operands
        .iter()
        .map(|op| match op {
            Operand::Scalar(v) => ArrayD::from_elem(IxDyn(&[]), *v),
            Operand::Chunk(_) => ArrayD::from_elem(IxDyn(&[0]), T::default()),
        })
        .collect();
    let bases: Vec<ArrayViewD<'_, T>> = operands
        .iter()
        .zip(&numbers)
        .map(|(op, number)| match op {
            Operand::Chunk(c) => c.view(),
            Operand::Scalar(_) => number.view(),
        })
        .collect();
    let views = bases
        .iter()
        .map(|base| {
            base.broadcast(IxDyn(shape)).ok_or_else(|| {
                format!(
                    "a chunk of shape {:?} does not broadcast to {shape:?}",
                    base.shape()
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(f(views))
}

/// A result chunk as its block holds it.
fn output<P: ArrowPrimitiveType>(
    dtype: &DType,
    values: ArrayD<P::Native>,
) -> Result<Datum, String> {
    let flat = standard_vec(values);
    let column: ArrayRef = std::sync::Arc::new(PrimitiveArray::<P>::new(flat.into(), None));
    let stored = cast(&column, &dtype.arrow_type()).map_err(|e| e.to_string())?;
    let batch =
        tern_exec::arrow::record_batch::RecordBatch::try_new(chunk::schema(dtype), vec![stored])
            .map_err(|e| e.to_string())?;
    crate::kernels::to_table(&batch.schema(), &[batch])
}

/// An array's elements in C order: its own buffer when laid out so already (a fresh
/// result usually is), else copied in that order.
fn standard_vec<T: Clone>(array: ArrayD<T>) -> Vec<T> {
    let array = if array.is_standard_layout() {
        array
    } else {
        array.as_standard_layout().into_owned()
    };
    let len = array.len();
    let (mut values, offset) = array.into_raw_vec_and_offset();
    // An owned array cut in place keeps the elements around it in its buffer.
    match offset.unwrap_or(0) {
        0 => {
            values.truncate(len);
            values
        }
        start => values[start..start + len].to_vec(),
    }
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
    if spec.op == "transpose" && !computes_natively(&spec.compute) {
        return layout::transpose_bytes(&spec, inputs);
    }
    if matches!(spec.compute, DType::Complex(_)) {
        return complex::map(&spec, inputs);
    }
    by_dtype!(&spec.compute, map_typed, &spec, inputs)
}

/// `array_reduce`: see the module docs.
pub fn reduce(mut inputs: Vec<Datum>) -> Result<Datum, String> {
    if inputs.len() != 2 {
        return Err("a spec and one chunk".into());
    }
    let spec = spec(&inputs.remove(0))?;
    let chunk = inputs.remove(0);
    if matches!(spec.compute, DType::Complex(_)) {
        return complex::reduce(&spec, chunk);
    }
    by_dtype!(&spec.compute, reduce_typed, &spec, chunk)
}

/// `array_gather`: see the module docs.
pub fn gather(mut inputs: Vec<Datum>) -> Result<Datum, String> {
    if inputs.is_empty() {
        return Err("no spec".into());
    }
    let spec = spec(&inputs.remove(0))?;
    layout::gather(&spec, inputs)
}

/// `array_split`: see the module docs.
pub fn split(mut inputs: Vec<Datum>) -> Result<Datum, String> {
    if inputs.is_empty() {
        return Err("no spec".into());
    }
    let spec = spec(&inputs.remove(0))?;
    layout::split(&spec, inputs)
}

/// `array_create`: see the module docs.
pub fn create(inputs: Vec<Datum>) -> Result<Datum, String> {
    let [first] = <[Datum; 1]>::try_from(inputs).map_err(|_| "a spec alone")?;
    let spec = spec(&first)?;
    by_dtype!(&spec.compute, create_typed, &spec)
}

/// `array_matmul`: see the module docs.
pub fn matmul(mut inputs: Vec<Datum>) -> Result<Datum, String> {
    if inputs.len() != 3 {
        return Err("a spec and two chunks".into());
    }
    let spec = spec(&inputs.remove(0))?;
    match spec.compute {
        DType::Float(8) => matmul_float::<Float64Type>(&spec, inputs),
        DType::Float(4) => matmul_float::<Float32Type>(&spec, inputs),
        _ => by_dtype!(&spec.compute, matmul_typed, &spec, inputs),
    }
}

/// `array_arg_combine`: see the module docs.
pub fn arg_combine(mut inputs: Vec<Datum>) -> Result<Datum, String> {
    if inputs.len() < 2 {
        return Err("a spec and at least one partial".into());
    }
    let spec = spec(&inputs.remove(0))?;
    by_dtype!(&spec.compute, arg_combine_typed, &spec, inputs)
}

/// Whether `by_dtype!` computes in `dtype` (others move as bytes, or as complex numbers).
fn computes_natively(dtype: &DType) -> bool {
    matches!(
        dtype,
        DType::Bool | DType::Int(_) | DType::UInt(_) | DType::Float(4) | DType::Float(8)
    )
}

/// Refuse a result of `elements` elements of `dtype` larger than a chunk may be.
fn check_elements(elements: u64, dtype: &DType) -> Result<(), String> {
    if elements.saturating_mul(dtype.itemsize()) > tern_array::meta::MAX_CHUNK_BYTES {
        return Err(format!(
            "a result of {elements} elements is larger than a chunk may be ({})",
            tern_proto::human_bytes(tern_array::meta::MAX_CHUNK_BYTES)
        ));
    }
    Ok(())
}

/// The bytes of a chunk of `elements` elements of `dtype` (checked: one column of that
/// type, no missing values, that many elements).
fn chunk_bytes(input: Datum, dtype: &DType, elements: usize) -> Result<Vec<u8>, String> {
    let (_, batches) = crate::kernels::table(input)?;
    let meta = tern_array::ArrayMeta::new(
        dtype.clone(),
        vec![elements as u64],
        vec![elements.max(1) as u64],
    )
    .map_err(|e| e.to_string())?;
    chunk::from_batches(&meta, 0, &batches).map_err(|e| e.to_string())
}

/// A chunk of `dtype` from its bytes, as its block holds it.
fn bytes_output(dtype: &DType, bytes: Vec<u8>) -> Result<Datum, String> {
    let batch = chunk::to_batch(dtype, bytes).map_err(|e| e.to_string())?;
    crate::kernels::to_table(&batch.schema(), &[batch])
}
