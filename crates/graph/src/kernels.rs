//! The kernels compiled into every node: what a built-in task computes from its inputs. Each is
//! named and versioned (a graph names `sum/v1`); a kernel's output depends only on its inputs,
//! so a task can run on any node, again after a failure, or in the client's own process with
//! the same answer.
//!
//! | kernel | inputs | output |
//! |---|---|---|
//! | `identity` | any | the same |
//! | `inc` | a number | the number plus one |
//! | `add` | numbers | their sum (an integer unless one is a float) |
//! | `concat` | tables of one schema | one table |
//! | `sql` | a table, a query over `input` | the query's answer (DataFusion, in the task) |
//! | `row_count` | a table | its rows |
//! | `column_sum`, `column_min`, `column_max` | a table, a column name | the column's sum, least, greatest (nulls skipped) |
//! | `column_mean_partial` | a table, a column name | `[sum, count]` |
//! | `mean_final` | `[sum, count]` partials | their mean |
//! | `reduce` | an operator (`add`, `mul`, `min`, `max`), values | the values reduced, in order |
//! | `array_map`, `array_reduce`, `array_arg_combine`, `array_gather`, `array_create`, `array_matmul` | a spec, chunks of arrays | see [`crate::arrays`] |

use std::sync::Arc;

use tern_exec::arrow::array::{Array, ArrayRef, AsArray};
use tern_exec::arrow::compute;
use tern_exec::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use tern_exec::arrow::record_batch::RecordBatch;
use tern_proto::{Datum, Kernel, Value};

/// Why a task failed; it fails the task's future and those of the tasks that read it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("no kernel {kernel} in this version of tern")]
    Unknown { kernel: String },
    #[error("{kernel}: {reason}")]
    BadInput { kernel: String, reason: String },
    #[error("{kernel} runs in the {runtime} runtime, which this process does not have")]
    NoRuntime { kernel: String, runtime: String },
}

/// Every built-in kernel by name, for `tern` to list and nodes to check.
pub const BUILTINS: [&str; 20] = [
    "identity",
    "inc",
    "add",
    "concat",
    "sql",
    "row_count",
    "column_sum",
    "column_min",
    "column_max",
    "column_mean_partial",
    "mean_final",
    "reduce",
    "table_from_values",
    "array_map",
    "array_reduce",
    "array_arg_combine",
    "array_gather",
    "array_split",
    "array_create",
    "array_matmul",
];

/// Run `kernel` over its resolved inputs.
pub fn run(kernel: &Kernel, inputs: Vec<Datum>) -> Result<Datum, KernelError> {
    let (name, version) = match kernel {
        Kernel::Builtin { name, version } => (name.as_str(), *version),
        Kernel::External { runtime, .. } => {
            return Err(KernelError::NoRuntime {
                kernel: kernel.to_string(),
                runtime: runtime.clone(),
            });
        }
    };
    let bad = |reason: String| KernelError::BadInput {
        kernel: name.to_string(),
        reason,
    };
    if version != 1 || !BUILTINS.contains(&name) {
        return Err(KernelError::Unknown {
            kernel: kernel.to_string(),
        });
    }
    match name {
        "identity" => one(inputs).map_err(bad),
        "inc" => match one(inputs).map_err(bad)? {
            Datum::Value(Value::Int(x)) => x
                .checked_add(1)
                .map(|v| Datum::Value(Value::Int(v)))
                .ok_or_else(|| bad("integer overflow".into())),
            Datum::Value(Value::Float(x)) => Ok(Datum::Value(Value::Float(x + 1.0))),
            other => Err(bad(format!("expects a number, got {}", describe(&other)))),
        },
        "add" => reduce_values("add", values(inputs).map_err(bad)?)
            .map(Datum::Value)
            .map_err(bad),
        "reduce" => {
            let mut inputs = inputs.into_iter();
            let op = match inputs.next() {
                Some(Datum::Value(Value::Str(op))) => op,
                _ => return Err(bad("the first input names the operator".into())),
            };
            reduce_values(&op, values(inputs.collect()).map_err(bad)?)
                .map(Datum::Value)
                .map_err(bad)
        }
        "mean_final" => {
            let (mut sum, mut count) = (0.0f64, 0i64);
            for v in values(inputs).map_err(bad)? {
                match v {
                    Value::List(pair) if pair.len() == 2 => {
                        sum += number(&pair[0]).map_err(bad)?;
                        count += match pair[1] {
                            Value::Int(n) => n,
                            _ => return Err(bad("a partial's count is an integer".into())),
                        };
                    }
                    other => return Err(bad(format!("expects [sum, count], got {other:?}"))),
                }
            }
            Ok(Datum::Value(if count == 0 {
                Value::Null
            } else {
                Value::Float(sum / count as f64)
            }))
        }
        "concat" => {
            let mut schema: Option<SchemaRef> = None;
            let mut all = Vec::new();
            for input in inputs {
                let (s, batches) = table(input).map_err(bad)?;
                if let Some(first) = &schema {
                    if first.fields() != s.fields() {
                        return Err(bad("tables of different schemas".into()));
                    }
                }
                schema.get_or_insert(s);
                all.extend(batches);
            }
            let schema = schema.ok_or_else(|| bad("no tables".into()))?;
            to_table(&schema, &all).map_err(bad)
        }
        "row_count" => {
            let (_, batches) = table(one(inputs).map_err(bad)?).map_err(bad)?;
            Ok(Datum::Value(Value::Int(
                batches.iter().map(|b| b.num_rows() as i64).sum(),
            )))
        }
        "column_sum" | "column_min" | "column_max" | "column_mean_partial" => {
            let (batches, column) = table_and_column(inputs).map_err(bad)?;
            column_aggregate(name, &batches, &column).map_err(bad)
        }
        "sql" => {
            let mut inputs = inputs.into_iter();
            let input = inputs.next().ok_or_else(|| bad("no table".into()))?;
            let query = match inputs.next() {
                Some(Datum::Value(Value::Str(q))) => q,
                _ => return Err(bad("the second input is the query".into())),
            };
            let (schema, batches) = table(input).map_err(bad)?;
            crate::sql::run(schema, batches, &query).map_err(bad)
        }
        "array_map" => crate::arrays::map(inputs).map_err(bad),
        "array_reduce" => crate::arrays::reduce(inputs).map_err(bad),
        "array_arg_combine" => crate::arrays::arg_combine(inputs).map_err(bad),
        "array_gather" => crate::arrays::gather(inputs).map_err(bad),
        "array_split" => crate::arrays::split(inputs).map_err(bad),
        "array_create" => crate::arrays::create(inputs).map_err(bad),
        "array_matmul" => crate::arrays::matmul(inputs).map_err(bad),
        "table_from_values" => {
            // One Int64 column `value` from the values given (for tests and examples).
            let ints = values(inputs)
                .map_err(bad)?
                .into_iter()
                .map(|v| match v {
                    Value::Int(i) => Ok(Some(i)),
                    Value::Null => Ok(None),
                    other => Err(bad(format!("expects integers, got {other:?}"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let array: ArrayRef = Arc::new(tern_exec::arrow::array::Int64Array::from(ints));
            let batch =
                RecordBatch::try_from_iter([("value", array)]).map_err(|e| bad(e.to_string()))?;
            to_table(&batch.schema(), &[batch]).map_err(bad)
        }
        _ => Err(KernelError::Unknown {
            kernel: kernel.to_string(),
        }),
    }
}

fn describe(d: &Datum) -> String {
    match d {
        Datum::Value(v) => format!("{v:?}"),
        Datum::Table(bytes) => format!("a table of {} bytes", bytes.len()),
        Datum::Parts(parts) => format!("{} parts", parts.len()),
    }
}

fn one(inputs: Vec<Datum>) -> Result<Datum, String> {
    let count = inputs.len();
    let mut inputs = inputs.into_iter();
    match (inputs.next(), count) {
        (Some(d), 1) => Ok(d),
        _ => Err(format!("expects one input, got {count}")),
    }
}

fn values(inputs: Vec<Datum>) -> Result<Vec<Value>, String> {
    inputs
        .into_iter()
        .map(|d| match d {
            Datum::Value(v) => Ok(v),
            Datum::Table(_) => Err("expects values, got a table".to_string()),
            Datum::Parts(_) => Err("expects values, got parts".to_string()),
        })
        .collect()
}

fn number(v: &Value) -> Result<f64, String> {
    match v {
        Value::Int(i) => Ok(*i as f64),
        Value::Float(f) => Ok(*f),
        other => Err(format!("expects a number, got {other:?}")),
    }
}

/// `values` reduced with `op` in order: integers stay integers (checked) unless a float
/// joins; nulls are skipped; nothing left is null.
fn reduce_values(op: &str, values: Vec<Value>) -> Result<Value, String> {
    let mut acc: Option<Value> = None;
    for v in values {
        if v == Value::Null {
            continue;
        }
        acc = Some(match acc {
            None => match v {
                Value::Int(_) | Value::Float(_) => v,
                other => return Err(format!("expects numbers, got {other:?}")),
            },
            Some(a) => combine(op, a, v)?,
        });
    }
    Ok(acc.unwrap_or(Value::Null))
}

fn combine(op: &str, a: Value, b: Value) -> Result<Value, String> {
    Ok(match (a, b) {
        (Value::Int(x), Value::Int(y)) => Value::Int(match op {
            "add" => x.checked_add(y).ok_or("integer overflow")?,
            "mul" => x.checked_mul(y).ok_or("integer overflow")?,
            "min" => x.min(y),
            "max" => x.max(y),
            other => return Err(format!("unknown operator {other:?} (add, mul, min, max)")),
        }),
        (a, b) => {
            let (x, y) = (number(&a)?, number(&b)?);
            Value::Float(match op {
                "add" => x + y,
                "mul" => x * y,
                "min" => x.min(y),
                "max" => x.max(y),
                other => return Err(format!("unknown operator {other:?} (add, mul, min, max)")),
            })
        }
    })
}

/// A table input's schema and batches.
pub fn table(input: Datum) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    match input {
        Datum::Table(bytes) => {
            tern_exec::ipc_buffer_to_batches(bytes.into()).map_err(|e| e.to_string())
        }
        Datum::Value(v) => Err(format!("expects a table, got {v:?}")),
        Datum::Parts(parts) => Err(format!("expects a table, got {} parts", parts.len())),
    }
}

/// Batches as a table datum.
pub fn to_table(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Datum, String> {
    tern_exec::batches_to_ipc(schema, batches)
        .map(|bytes| Datum::Table(bytes.into()))
        .map_err(|e| e.to_string())
}

fn table_and_column(inputs: Vec<Datum>) -> Result<(Vec<RecordBatch>, String), String> {
    let mut inputs = inputs.into_iter();
    let (_, batches) = table(inputs.next().ok_or("no table")?)?;
    match inputs.next() {
        Some(Datum::Value(Value::Str(column))) => Ok((batches, column)),
        _ => Err("the second input names the column".into()),
    }
}

fn column_aggregate(name: &str, batches: &[RecordBatch], column: &str) -> Result<Datum, String> {
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for batch in batches {
        let array = batch
            .column_by_name(column)
            .ok_or_else(|| format!("no column {column:?}"))?;
        arrays.push(array.clone());
    }
    let float = arrays.first().is_some_and(|a| {
        matches!(
            a.data_type(),
            DataType::Float16 | DataType::Float32 | DataType::Float64
        )
    });
    let target = if float {
        DataType::Float64
    } else {
        DataType::Int64
    };
    let mut acc: Option<Value> = None;
    let mut count = 0i64;
    for array in &arrays {
        let cast = compute::cast(array, &target).map_err(|e| format!("column {column:?}: {e}"))?;
        count += (cast.len() - cast.null_count()) as i64;
        let part = if float {
            let a = cast.as_primitive::<Float64Type>();
            match name {
                "column_min" => compute::min(a).map(Value::Float),
                "column_max" => compute::max(a).map(Value::Float),
                _ => compute::sum(a).map(Value::Float),
            }
        } else {
            let a = cast.as_primitive::<Int64Type>();
            match name {
                "column_min" => compute::min(a).map(Value::Int),
                "column_max" => compute::max(a).map(Value::Int),
                _ => compute::sum_checked(a)
                    .map_err(|e| format!("column {column:?}: {e}"))?
                    .map(Value::Int),
            }
        };
        if let Some(part) = part {
            let op = match name {
                "column_min" => "min",
                "column_max" => "max",
                _ => "add",
            };
            acc = Some(match acc {
                None => part,
                Some(a) => combine(op, a, part)?,
            });
        }
    }
    Ok(Datum::Value(match name {
        "column_mean_partial" => Value::List(vec![
            acc.unwrap_or(if float {
                Value::Float(0.0)
            } else {
                Value::Int(0)
            }),
            Value::Int(count),
        ]),
        _ => acc.unwrap_or(Value::Null),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> Kernel {
        Kernel::builtin(name)
    }

    fn int(i: i64) -> Datum {
        Datum::Value(Value::Int(i))
    }

    fn numbers(values: &[i64]) -> Datum {
        run(
            &k("table_from_values"),
            values.iter().map(|&v| int(v)).collect(),
        )
        .unwrap()
    }

    #[test]
    fn value_kernels() {
        assert_eq!(run(&k("inc"), vec![int(41)]), Ok(int(42)));
        assert_eq!(run(&k("add"), vec![int(1), int(2), int(3)]), Ok(int(6)));
        assert_eq!(
            run(&k("add"), vec![int(1), Datum::Value(Value::Float(0.5))]),
            Ok(Datum::Value(Value::Float(1.5)))
        );
        let max = Datum::Value(Value::Str("max".into()));
        assert_eq!(
            run(&k("reduce"), vec![max, int(3), int(9), int(4)]),
            Ok(int(9))
        );
        assert!(matches!(
            run(&k("inc"), vec![int(i64::MAX)]),
            Err(KernelError::BadInput { .. })
        ));
        assert!(matches!(
            run(&k("nope"), vec![]),
            Err(KernelError::Unknown { .. })
        ));
        let external = Kernel::External {
            runtime: "python".into(),
            function: vec![1],
        };
        assert!(matches!(
            run(&external, vec![]),
            Err(KernelError::NoRuntime { .. })
        ));
    }

    #[test]
    fn table_kernels_partial_and_final() {
        let a = numbers(&[1, 2, 3]);
        let b = numbers(&[10, 20]);
        let both = run(&k("concat"), vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(run(&k("row_count"), vec![both.clone()]), Ok(int(5)));
        let col = || Datum::Value(Value::Str("value".into()));
        assert_eq!(
            run(&k("column_sum"), vec![both.clone(), col()]),
            Ok(int(36))
        );
        assert_eq!(run(&k("column_min"), vec![both.clone(), col()]), Ok(int(1)));
        assert_eq!(
            run(&k("column_max"), vec![both.clone(), col()]),
            Ok(int(20))
        );
        let pa = run(&k("column_mean_partial"), vec![a, col()]).unwrap();
        let pb = run(&k("column_mean_partial"), vec![b, col()]).unwrap();
        assert_eq!(
            run(&k("mean_final"), vec![pa, pb]),
            Ok(Datum::Value(Value::Float(36.0 / 5.0)))
        );
        let answer = run(
            &k("sql"),
            vec![
                both,
                Datum::Value(Value::Str(
                    "SELECT sum(value) AS s FROM input WHERE value > 2".into(),
                )),
            ],
        )
        .unwrap();
        let (_, batches) = table(answer).unwrap();
        let s = batches[0].column(0).as_primitive::<Int64Type>().value(0);
        assert_eq!(s, 33);
    }
}
