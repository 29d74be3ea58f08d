//! `array_map` (operands combined elementwise with broadcasting, scans and transposes of one
//! chunk) and `array_matmul`.

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Axis, Ix2, IxDyn, Zip};
use tern_array::DType;
use tern_exec::arrow::datatypes::{ArrowNativeType, ArrowPrimitiveType, UInt8Type};
use tern_proto::Datum;

use super::{Chunk, Num, Operand, Spec, as_chunk, operand, output, with_broadcast};

pub(super) fn map_typed<P: ArrowPrimitiveType>(
    spec: &Spec,
    inputs: Vec<Datum>,
) -> Result<Datum, String>
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
        let Operand::Chunk(chunk) = operand::<P>(input, spec.shapes[0].as_ref())? else {
            return Err("a transpose reads a chunk".into());
        };
        let values = chunk.view();
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
    if spec.op == "cumsum" || spec.op == "cumprod" {
        // One chunk scanned along one axis; the client adds what came before it.
        let input = inputs.into_iter().next().ok_or("no operand")?;
        let Operand::Chunk(chunk) = operand::<P>(input, spec.shapes[0].as_ref())? else {
            return Err(format!("a {} reads a chunk", spec.op));
        };
        let mut values = chunk.into_owned();
        let axis = *spec.axes.first().ok_or("no axis to scan")?;
        if axis >= values.ndim() {
            return Err(format!("axis {axis} of a {}-d chunk", values.ndim()));
        }
        let step: fn(P::Native, P::Native) -> P::Native = if spec.op == "cumsum" {
            Num::add
        } else {
            Num::mul
        };
        values.accumulate_axis_inplace(Axis(axis), |&previous, current| {
            *current = step(previous, *current)
        });
        return output::<P>(&spec.compute, values);
    }
    let shape = &spec.out_shape;
    let mut operands = Vec::with_capacity(inputs.len());
    for (input, s) in inputs.into_iter().zip(&spec.shapes) {
        operands.push(operand::<P>(input, s.as_ref())?);
    }
    if operands.is_empty() {
        return Err("no operands".into());
    }
    // The first operand, copied once, becomes the result; the others are read in place.
    let acc = as_chunk(operands.remove(0), shape)?;
    with_broadcast(&operands, shape, |rest| combine::<P>(spec, acc, rest))?
}

/// `array_map`'s elementwise operations: `acc` (the first operand, broadcast to the result's
/// shape) combined with the `rest`.
fn combine<P: ArrowPrimitiveType>(
    spec: &Spec,
    mut acc: ArrayD<P::Native>,
    rest: Vec<ArrayViewD<'_, P::Native>>,
) -> Result<Datum, String>
where
    P::Native: Num,
{
    let shape = &spec.out_shape;
    let binary = |f: fn(P::Native, P::Native) -> P::Native,
                  acc: &mut ArrayD<P::Native>,
                  rest: Vec<ArrayViewD<'_, P::Native>>| {
        for other in rest {
            Zip::from(&mut *acc)
                .and(&other)
                .for_each(|a, &b| *a = f(*a, b));
        }
    };
    let compare = |f: fn(&P::Native, &P::Native) -> bool,
                   acc: ArrayD<P::Native>,
                   rest: Vec<ArrayViewD<'_, P::Native>>| {
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
        // NaN wins, as in NumPy's minimum and maximum.
        "minimum" => {
            #[allow(clippy::eq_op)]
            binary(|a, b| if b < a || b != b { b } else { a }, &mut acc, rest);
            acc
        }
        "maximum" => {
            #[allow(clippy::eq_op)]
            binary(|a, b| if b > a || b != b { b } else { a }, &mut acc, rest);
            acc
        }
        "where" => {
            let [then, otherwise] = <[ArrayViewD<'_, P::Native>; 2]>::try_from(rest)
                .map_err(|_| "where takes a condition and two operands")?;
            let zero = P::Native::default();
            Zip::from(&mut acc)
                .and(&then)
                .and(&otherwise)
                .for_each(|c, &t, &o| *c = if *c != zero { t } else { o });
            acc
        }
        // The operand was read as the compute dtype: that is the cast.
        "astype" if rest.is_empty() => acc,
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

/// The two 2-d chunks of an `array_matmul`, checked to multiply.
type Factors<T> = (Chunk<T>, Chunk<T>);

fn matrix<T: ArrowNativeType>(chunk: &Chunk<T>) -> Result<ArrayView2<'_, T>, String> {
    chunk
        .view()
        .into_dimensionality::<Ix2>()
        .map_err(|e| e.to_string())
}

fn factors<P: ArrowPrimitiveType>(
    spec: &Spec,
    inputs: Vec<Datum>,
) -> Result<Factors<P::Native>, String>
where
    P::Native: Num,
{
    if spec.shapes.len() != 2
        || spec
            .shapes
            .iter()
            .any(|s| s.as_ref().is_none_or(|s| s.len() != 2))
    {
        return Err("a matrix product reads two 2-d chunks".into());
    }
    let mut matrices = Vec::with_capacity(2);
    for (input, shape) in inputs.into_iter().zip(&spec.shapes) {
        let Operand::Chunk(values) = operand::<P>(input, shape.as_ref())? else {
            return Err("a matrix product reads chunks".into());
        };
        matrices.push(values);
    }
    let b = matrices.pop().ok_or("no right factor")?;
    let a = matrices.pop().ok_or("no left factor")?;
    let ((m, k), (k2, n)) = (matrix(&a)?.dim(), matrix(&b)?.dim());
    if k != k2 {
        return Err(format!(
            "chunks of shapes ({m}, {k}) and ({k2}, {n}) do not multiply"
        ));
    }
    super::check_elements((m * n) as u64, &spec.compute)?;
    Ok((a, b))
}

/// `array_matmul` in floats: ndarray's `dot`, a cache-blocked, vectorised GEMM
/// (`matrixmultiply`), several times the speed of the plain loop below on 1000-square chunks.
pub(super) fn matmul_float<P: ArrowPrimitiveType>(
    spec: &Spec,
    inputs: Vec<Datum>,
) -> Result<Datum, String>
where
    P::Native: Num + ndarray::LinalgScalar,
{
    let (a, b) = factors::<P>(spec, inputs)?;
    let product = matrix(&a)?.dot(&matrix(&b)?);
    output::<P>(&spec.compute, product.into_dyn())
}

/// `array_matmul`: the product of two 2-d chunks, `(m, k) @ (k, n)`.
pub(super) fn matmul_typed<P: ArrowPrimitiveType>(
    spec: &Spec,
    inputs: Vec<Datum>,
) -> Result<Datum, String>
where
    P::Native: Num,
{
    let (a, b) = factors::<P>(spec, inputs)?;
    let (a, b) = (matrix(&a)?, matrix(&b)?);
    let ((m, k), (_, n)) = (a.dim(), b.dim());
    // Row by row, each row of `b` scaled and added: the inner loop runs along contiguous
    // memory in both, and integers wrap as NumPy's do (ndarray's own product would panic on
    // overflow in a debug build).
    let mut out = Array2::<P::Native>::from_elem((m, n), P::Native::default());
    for i in 0..m {
        let mut row = out.row_mut(i);
        for p in 0..k {
            let scale = a[(i, p)];
            Zip::from(&mut row)
                .and(&b.row(p))
                .for_each(|o, &v| *o = o.add(scale.mul(v)));
        }
    }
    output::<P>(&spec.compute, out.into_dyn())
}
