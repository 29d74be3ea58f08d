//! `array_reduce` (one chunk reduced over axes, or the partials of an arg reduction) and
//! `array_arg_combine`.

use std::sync::Arc;

use ndarray::{ArrayD, Axis, CowArray, IxDyn};
use tern_array::DType;
use tern_exec::arrow::array::{Array, ArrayRef, Int64Array, PrimitiveArray};
use tern_exec::arrow::compute::cast;
use tern_exec::arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Int64Type, Schema};
use tern_exec::arrow::record_batch::RecordBatch;
use tern_proto::Datum;

use super::{Num, Operand, Spec, operand, output};

// `b != b` is how a generic number says NaN.
#[allow(clippy::eq_op)]
pub(super) fn reduce_typed<P: ArrowPrimitiveType>(
    spec: &Spec,
    input: Datum,
) -> Result<Datum, String>
where
    P::Native: Num,
{
    let shape = spec.first_shape()?;
    let Operand::Chunk(chunk) = operand::<P>(input, Some(&shape))? else {
        return Err("a reduction reads a chunk".into());
    };
    // Read in place; each axis reduced makes a smaller array of its own.
    let mut values = CowArray::from(chunk.view());
    if spec.op == "argmin" || spec.op == "argmax" {
        let axis = *spec.axes.first().ok_or("no axis")?;
        if axis >= values.ndim() || values.len_of(Axis(axis)) == 0 {
            return Err(format!(
                "{} along axis {axis} of a chunk of shape {shape:?}",
                spec.op
            ));
        }
        let offset = spec.raw["offset"].as_i64().unwrap_or(0);
        let min = spec.op == "argmin";
        let mut best = Vec::new();
        let mut at = Vec::new();
        // Lanes in C order of what remains, as the kept axis (length 1) leaves them.
        let lanes = values.lanes(Axis(axis));
        let mut kept_shape = shape.clone();
        kept_shape[axis] = 1;
        for lane in lanes {
            let (mut value, mut index) = (lane[0], 0usize);
            for (i, &v) in lane.iter().enumerate().skip(1) {
                if better(v, value, min) {
                    (value, index) = (v, i);
                }
            }
            best.push(value);
            at.push(offset.saturating_add(index as i64));
        }
        let values = ArrayD::from_shape_vec(IxDyn(&kept_shape), best).map_err(|e| e.to_string())?;
        return arg_partial::<P>(values, at);
    }
    for &axis in &spec.axes {
        if axis >= values.ndim() {
            return Err(format!("axis {axis} of a {}-d chunk", values.ndim()));
        }
        let reduced = match spec.op.as_str() {
            "sum" => values.fold_axis(Axis(axis), P::Native::default(), |a, &b| a.add(b)),
            "prod" => values.fold_axis(Axis(axis), P::Native::from_i64(1), |a, &b| a.mul(b)),
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
        values = CowArray::from(reduced.insert_axis(Axis(axis)));
    }
    output::<P>(&spec.compute, values.into_owned())
}

/// Whether `candidate` beats `best` in an arg reduction scanned in order: a NaN wins (and
/// the first NaN stays), ties keep the earlier index, as NumPy's `argmin` and `argmax` do.
#[allow(clippy::eq_op)]
fn better<T: Num>(candidate: T, best: T, min: bool) -> bool {
    if best != best {
        return false;
    }
    if candidate != candidate {
        return true;
    }
    if min {
        candidate < best
    } else {
        candidate > best
    }
}

/// The partial of an arg reduction: the best values and their indexes along the axis.
fn arg_partial<P: ArrowPrimitiveType>(
    values: ArrayD<P::Native>,
    at: Vec<i64>,
) -> Result<Datum, String> {
    let flat: Vec<P::Native> = values.iter().copied().collect();
    let values: ArrayRef = Arc::new(PrimitiveArray::<P>::from_iter_values(flat));
    let schema = Arc::new(Schema::new(vec![
        Field::new("values", P::DATA_TYPE, false),
        Field::new("index", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(schema.clone(), vec![values, Arc::new(Int64Array::from(at))])
        .map_err(|e| e.to_string())?;
    crate::kernels::to_table(&schema, &[batch])
}

/// A partial read back: values and indexes, in C order.
fn read_partial<P: ArrowPrimitiveType>(input: Datum) -> Result<(Vec<P::Native>, Vec<i64>), String> {
    let (_, batches) = crate::kernels::table(input)?;
    let (mut values, mut at) = (Vec::new(), Vec::new());
    for batch in &batches {
        if batch.num_columns() != 2 {
            return Err("a partial of an arg reduction has values and indexes".into());
        }
        let column = cast(batch.column(0), &P::DATA_TYPE).map_err(|e| e.to_string())?;
        let typed = column
            .as_any()
            .downcast_ref::<PrimitiveArray<P>>()
            .ok_or("values of another type")?;
        let index = batch
            .column(1)
            .as_any()
            .downcast_ref::<PrimitiveArray<Int64Type>>()
            .ok_or("indexes that are not int64")?;
        values.extend_from_slice(typed.values());
        at.extend_from_slice(index.values());
    }
    if values.len() != at.len() {
        return Err("a partial with as many values as indexes".into());
    }
    Ok((values, at))
}

/// `array_arg_combine`: partials in the order of their place along the axis.
pub(super) fn arg_combine_typed<P: ArrowPrimitiveType>(
    spec: &Spec,
    inputs: Vec<Datum>,
) -> Result<Datum, String>
where
    P::Native: Num,
{
    let min = match spec.op.as_str() {
        "argmin" => true,
        "argmax" => false,
        other => return Err(format!("no arg reduction {other:?}")),
    };
    let shape = spec.first_shape()?;
    let elements: usize = shape.iter().product();
    let mut best: Option<(Vec<P::Native>, Vec<i64>)> = None;
    for input in inputs {
        let (values, at) = read_partial::<P>(input)?;
        if values.len() != elements {
            return Err(format!(
                "a partial of {} values, not {elements}",
                values.len()
            ));
        }
        best = Some(match best {
            None => (values, at),
            Some((mut bv, mut ba)) => {
                for i in 0..elements {
                    if better(values[i], bv[i], min) {
                        bv[i] = values[i];
                        ba[i] = at[i];
                    }
                }
                (bv, ba)
            }
        });
    }
    let (values, at) = best.ok_or("no partials")?;
    if spec.raw["final"].as_bool().unwrap_or(false) {
        let index = ArrayD::from_shape_vec(IxDyn(&shape), at).map_err(|e| e.to_string())?;
        return output::<Int64Type>(&DType::Int(8), index);
    }
    let values = ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| e.to_string())?;
    arg_partial::<P>(values, at)
}
