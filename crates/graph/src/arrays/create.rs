//! `array_create`: chunks made from nothing but their place in the whole array, as NumPy's
//! creation routines fill them (the same formulas, so the values are NumPy's to the bit).

use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use serde_json::Value as Json;
use tern_exec::arrow::datatypes::ArrowPrimitiveType;
use tern_proto::Datum;

use super::{Num, Spec, dims, output};

fn number(v: &Json, what: &str) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("spec: {what} is not a number"))
}

/// A JSON number as the compute type: integers exactly, floats converted.
fn native<T: Num>(v: &Json, what: &str) -> Result<T, String> {
    match v {
        Json::Bool(b) => Ok(T::from_i64(*b as i64)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Ok(T::from_i64(i)),
            None => Ok(T::from_f64(number(v, what)?)),
        },
        _ => Err(format!("spec: {what} is not a number")),
    }
}

pub(super) fn create_typed<P: ArrowPrimitiveType>(spec: &Spec) -> Result<Datum, String>
where
    P::Native: Num,
{
    let shape = &spec.out_shape;
    let start = match spec.raw.get("start") {
        Some(s) => dims(s)?,
        None => vec![0; shape.len()],
    };
    if start.len() != shape.len() {
        return Err(format!(
            "a start of {} axes for a chunk of {}",
            start.len(),
            shape.len()
        ));
    }
    // Every position computed below (start + index) must fit: a spec comes from a client.
    let too_far =
        |(&s, &n): (&usize, &usize)| s.checked_add(n).is_none_or(|end| end > i64::MAX as usize);
    if start.iter().zip(shape).any(too_far) {
        return Err(format!(
            "a chunk starting at {start:?} lies past the largest array"
        ));
    }
    let r = &spec.raw;
    let one_d = || {
        if shape.len() == 1 {
            Ok(start[0])
        } else {
            Err(format!("{} makes 1-d chunks", spec.op))
        }
    };
    let values: ArrayD<P::Native> = match spec.op.as_str() {
        "zeros" => ArrayD::from_elem(IxDyn(shape), P::Native::default()),
        "ones" => ArrayD::from_elem(IxDyn(shape), P::Native::from_i64(1)),
        "full" => ArrayD::from_elem(IxDyn(shape), native::<P::Native>(&r["value"], "value")?),
        "arange" => {
            let first = one_d()?;
            if P::Native::FLOAT {
                // NumPy fills from its first two values: begin, then begin + delta.
                let begin = number(&r["begin"], "begin")?;
                let delta = (begin + number(&r["step"], "step")?) - begin;
                ArrayD::from_shape_fn(IxDyn(shape), |i| {
                    P::Native::from_f64(begin + (first + i[0]) as f64 * delta)
                })
            } else {
                let begin: P::Native = native(&r["begin"], "begin")?;
                let step: P::Native = native(&r["step"], "step")?;
                ArrayD::from_shape_fn(IxDyn(shape), |i| {
                    begin.add(step.mul(P::Native::from_i64((first + i[0]) as i64)))
                })
            }
        }
        "linspace" => {
            let first = one_d()?;
            let (begin, stop) = (number(&r["begin"], "begin")?, number(&r["stop"], "stop")?);
            let num = r["num"].as_u64().ok_or("spec: num")? as usize;
            let endpoint = r["endpoint"].as_bool().unwrap_or(true);
            let div = if endpoint { num.saturating_sub(1) } else { num } as f64;
            let delta = stop - begin;
            let step = delta / div;
            ArrayD::from_shape_fn(IxDyn(shape), |i| {
                let k = first + i[0];
                let y = if endpoint && num > 1 && k == num - 1 {
                    stop
                } else if div == 0.0 {
                    begin
                } else if step == 0.0 {
                    k as f64 / div * delta + begin
                } else {
                    k as f64 * step + begin
                };
                // NumPy 2 rounds toward minus infinity into integers.
                P::Native::from_f64(if P::Native::FLOAT { y } else { y.floor() })
            })
        }
        "eye" => {
            if shape.len() != 2 {
                return Err("eye makes 2-d chunks".into());
            }
            let k = r["k"].as_i64().unwrap_or(0);
            ArrayD::from_shape_fn(IxDyn(shape), |i| {
                let (row, col) = ((start[0] + i[0]) as i64, (start[1] + i[1]) as i64);
                P::Native::from_i64((col - row == k) as i64)
            })
        }
        "random" => {
            let seed = r["seed"].as_u64().ok_or("spec: seed")?;
            let index = r["index"].as_u64().ok_or("spec: index")?;
            // One stream per chunk: the same seed and chunking give the same numbers wherever
            // and in whatever order the chunks are made.
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(index),
            );
            let normal = match r["dist"].as_str().unwrap_or("uniform") {
                "uniform" => false,
                "normal" => true,
                other => return Err(format!("no random distribution {other:?}")),
            };
            ArrayD::from_shape_simple_fn(IxDyn(shape), || {
                let v = if normal {
                    // Box-Muller: two uniforms, one standard normal.
                    let u1: f64 = 1.0 - rng.r#gen::<f64>();
                    let u2: f64 = rng.r#gen();
                    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                } else {
                    rng.r#gen()
                };
                P::Native::from_f64(v)
            })
        }
        other => return Err(format!("no creation routine {other:?}")),
    };
    output::<P>(&spec.compute, values)
}
