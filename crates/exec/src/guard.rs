//! Guards against queries that allocate without bound. A function such as `repeat(s, n)` sizes
//! its output from its arguments, and DataFusion allocates that size at once: asked for 10 TB,
//! the allocation fails and the process aborts (one query used to take a node down, and its
//! retry the next). Nothing afterwards can catch it, so the size is checked before the call.
//!
//! - Functions whose output can outgrow their inputs are registered wrapped ([`guarded`]): the
//!   wrapper computes an upper bound of the bytes a call makes from its arguments (per row,
//!   summed over the batch, scalars counting in every row) and refuses a call past
//!   [`output_limit`] with an error naming the function and the limit. The same functions are
//!   registered on the coordinator (constant folding runs them while planning) and on every
//!   node (plans find functions by name).
//! - Casts to fixed-size types (`arrow_cast(x, 'FixedSizeBinary(…)')`) allocate their width
//!   for every row, nulls included: a type whose fixed part is too wide is refused when the
//!   query is planned ([`check_type_size`], also applied to datasets' schemas).
//! - A literal is copied into every row of a batch: [`check_plan_literals`] refuses a plan
//!   whose literals would make more than the limit per batch.
//!
//! Work that is only slow (a huge cross join, `generate_series` in FROM) streams in bounded
//! batches; a query's deadline ends it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ExprSchema, Result, ScalarValue, config::ConfigOptions};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping,
};
use datafusion::physical_plan::ExecutionPlan;

/// Bytes one function call (one batch) may make, unless the node sets another limit.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 512 << 20;
/// Bytes the fixed-width part of one row of a type may take.
pub const MAX_FIXED_ROW_BYTES: u64 = 1 << 20;
/// Rows a batch holds (DataFusion's default batch size), for literals copied into each.
const BATCH_ROWS: u64 = 8192;

static OUTPUT_LIMIT: AtomicU64 = AtomicU64::new(DEFAULT_OUTPUT_LIMIT);
/// The node's memory for queries, which every guarded call draws its bound from while it
/// runs (set by the node; none in a process that runs no node).
static NODE_MEMORY: OnceLock<Arc<crate::NodeMemory>> = OnceLock::new();

/// Count guarded calls against `memory` (the node's budget for queries, which operators'
/// reservations draw from too), once per process.
pub fn count_calls_against(memory: Arc<crate::NodeMemory>) {
    let _ = NODE_MEMORY.set(memory);
}

/// Bytes a guarded function may make in one call.
pub fn output_limit() -> u64 {
    OUTPUT_LIMIT.load(Ordering::Relaxed)
}

/// Set the process-wide limit (a node sets it from its task memory).
pub fn set_output_limit(bytes: u64) {
    OUTPUT_LIMIT.store(bytes.max(1 << 20), Ordering::Relaxed);
}

/// How a function's output is bounded from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bound {
    /// `repeat(s, n)`: each row's string `n` times.
    Repeat,
    /// `lpad/rpad(s, n[, fill])`: up to `n` characters (4 bytes each), and DataFusion reserves
    /// `n` for every row before it looks.
    Pad,
    /// `replace(s, from, to)`: every `from` in `s` may become `to`.
    Replace,
    /// `regexp_replace(s, pattern, replacement[, flags])`: a match at every position.
    RegexpReplace,
    /// `array_repeat(e, n)`: `n` copies of the element.
    ArrayRepeat,
    /// `array_resize(list, n[, fill])`: `n` elements.
    ArrayResize,
    /// `range/generate_series(start, stop[, step])` as a list per row.
    Range,
    /// `array_replace*(list, from, to[, n])`: each element may become `to`.
    ArrayReplace,
    /// `array_to_string(list, delimiter[, null])`: each element formatted, with delimiters.
    ArrayToString,
    /// `concat`, `concat_ws` and the like: about the sum of the arguments.
    Linear,
    /// Functions that make a few times what they are given (`encode` to hex doubles it,
    /// `upper` of some Unicode triples it, `to_char` makes tens of bytes per directive of
    /// its format): the arguments' bytes times the factor.
    Scaled(u64),
    /// `arrow_cast(x, 'Type')`: the type's fixed width for every row, checked at planning.
    Cast,
}

/// The functions that are guarded, by registered name.
const GUARDED: [(&str, Bound); 31] = [
    ("repeat", Bound::Repeat),
    ("lpad", Bound::Pad),
    ("rpad", Bound::Pad),
    ("replace", Bound::Replace),
    ("regexp_replace", Bound::RegexpReplace),
    ("array_repeat", Bound::ArrayRepeat),
    ("array_resize", Bound::ArrayResize),
    ("range", Bound::Range),
    ("generate_series", Bound::Range),
    ("array_replace", Bound::ArrayReplace),
    ("array_replace_n", Bound::ArrayReplace),
    ("array_replace_all", Bound::ArrayReplace),
    ("array_to_string", Bound::ArrayToString),
    ("concat", Bound::Linear),
    ("concat_ws", Bound::Linear),
    ("array_concat", Bound::Linear),
    ("array_append", Bound::Linear),
    ("array_prepend", Bound::Linear),
    ("flatten", Bound::Linear),
    ("encode", Bound::Scaled(2)),
    ("translate", Bound::Scaled(4)),
    ("upper", Bound::Scaled(3)),
    ("lower", Bound::Scaled(3)),
    ("initcap", Bound::Scaled(3)),
    ("overlay", Bound::Scaled(2)),
    ("string_to_array", Bound::Scaled(17)),
    ("regexp_match", Bound::Scaled(32)),
    ("to_char", Bound::Scaled(32)),
    ("date_format", Bound::Scaled(32)),
    ("arrow_cast", Bound::Cast),
    ("arrow_try_cast", Bound::Cast),
];

/// `functions` (DataFusion's scalar functions by name, aliases included) with the risky ones
/// replaced by their guarded versions.
pub fn guard_functions(functions: &mut HashMap<String, Arc<ScalarUDF>>) {
    for udf in functions.values_mut() {
        if let Some(guarded) = guarded(udf.name()) {
            *udf = guarded;
        }
    }
}

/// The guarded version of the function registered as `name`, if it is one that needs it.
pub fn guarded(name: &str) -> Option<Arc<ScalarUDF>> {
    static ALL: OnceLock<HashMap<&'static str, Arc<ScalarUDF>>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        let state = datafusion::prelude::SessionContext::new().state();
        GUARDED
            .iter()
            .filter_map(|(name, bound)| {
                let inner = state.scalar_functions().get(*name)?.as_ref().clone();
                Some((
                    *name,
                    Arc::new(ScalarUDF::new_from_impl(Guarded {
                        inner,
                        bound: *bound,
                    })),
                ))
            })
            .collect()
    });
    all.get(name).cloned()
}

/// Calls to unguarded functions that have guarded versions, replaced by those (DataFusion's
/// own simplifications build calls of the functions they know, bypassing the registry).
fn reguard(expr: Expr) -> Result<Expr> {
    expr.transform_up(|e| match e {
        Expr::ScalarFunction(mut call) if call.func.inner().downcast_ref::<Guarded>().is_none() => {
            match guarded(call.func.name()) {
                Some(g) => {
                    call.func = g;
                    Ok(Transformed::yes(Expr::ScalarFunction(call)))
                }
                None => Ok(Transformed::no(Expr::ScalarFunction(call))),
            }
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Guarded {
    inner: ScalarUDF,
    bound: Bound,
}

fn too_large(name: &str, bytes: u64) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "{name}() would make about {} in one batch, more than the {} a function may make; \
         ask for less (smaller counts or lengths, fewer rows at a time)",
        tern_proto::human_bytes(bytes),
        tern_proto::human_bytes(output_limit())
    ))
}

impl ScalarUDFImpl for Guarded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[allow(deprecated)]
        self.inner.inner().display_name(args)
    }
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }
    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let updated = self.inner.inner().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(Guarded {
            inner: updated,
            bound: self.bound,
        }))
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let field = self.inner.inner().return_field_from_args(args)?;
        if self.bound == Bound::Cast {
            check_type_size(field.data_type()).map_err(DataFusionError::Plan)?;
        }
        Ok(field)
    }
    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[allow(deprecated)]
        self.inner.inner().is_nullable(args, schema)
    }
    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = output_bound(self.bound, &args);
        if bytes > output_limit() {
            return Err(too_large(self.name(), bytes));
        }
        // While the call makes its output, that memory counts against the node's budget for
        // queries, with everything else its tasks hold: many calls at once cannot add up
        // past it.
        let held = usize::try_from(bytes).unwrap_or(usize::MAX);
        let memory = NODE_MEMORY.get();
        if let Some(memory) = memory {
            if !memory.try_take(held) {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "{}() would make about {}, and the node's memory for queries is taken by \
                     other work ({} of {} in use); retry when it is less busy",
                    self.name(),
                    tern_proto::human_bytes(bytes),
                    tern_proto::human_bytes(memory.used() as u64),
                    tern_proto::human_bytes(memory.limit() as u64)
                )));
            }
        }
        let made = self.inner.invoke_with_args(args);
        if let Some(memory) = memory {
            memory.give(held);
        }
        made
    }
    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        match self.inner.inner().simplify(args, info)? {
            ExprSimplifyResult::Simplified(expr) => {
                Ok(ExprSimplifyResult::Simplified(reguard(expr)?))
            }
            original => Ok(original),
        }
    }
    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.inner.inner().preimage(args, lit_expr, info)
    }
    fn short_circuits(&self) -> bool {
        self.inner.inner().short_circuits()
    }
    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.inner().conditional_arguments(args)
    }
    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.inner().evaluate_bounds(input)
    }
    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.inner.inner().propagate_constraints(interval, inputs)
    }
    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.inner().output_ordering(inputs)
    }
    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.inner().preserves_lex_ordering(inputs)
    }
    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.inner().strictly_order_preserving(inputs)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }
    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.inner.inner().struct_field_mapping(literal_args)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.inner().documentation()
    }
    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.inner().placement(args)
    }
}

/// One argument as the guard sees it: per row, its bytes, or its integer value.
struct Arg<'a> {
    value: &'a ColumnarValue,
    rows: usize,
}

impl Arg<'_> {
    /// Bytes of row `i` (a scalar's in every row): string and binary lengths, a list row's
    /// memory, a fixed width otherwise.
    fn bytes(&self, i: usize) -> u64 {
        match self.value {
            ColumnarValue::Scalar(s) => scalar_bytes(s),
            ColumnarValue::Array(a) => array_row_bytes(a, i),
        }
    }

    /// Row `i` as an integer (nulls and non-integers as 0).
    fn int(&self, i: usize) -> i64 {
        match self.value {
            ColumnarValue::Scalar(s) => scalar_int(s).unwrap_or(0),
            ColumnarValue::Array(a) => {
                if a.is_null(i) {
                    return 0;
                }
                match arrow::compute::cast(&a.slice(i, 1), &DataType::Int64) {
                    Ok(cast) => cast.as_primitive::<Int64Type>().value(0),
                    Err(_) => 0,
                }
            }
        }
    }

    /// Elements of the list in row `i`.
    fn list_len(&self, i: usize) -> u64 {
        let array = match self.value {
            ColumnarValue::Scalar(s) => match s.to_array_of_size(1) {
                Ok(a) => a,
                Err(_) => return 0,
            },
            ColumnarValue::Array(a) => a.slice(i, 1),
        };
        match array.data_type() {
            DataType::List(_) => array.as_list::<i32>().value_length(0) as u64,
            DataType::LargeList(_) => array.as_list::<i64>().value_length(0) as u64,
            DataType::FixedSizeList(_, n) => *n as u64,
            _ => 0,
        }
        .min(u32::MAX as u64)
        .max(0)
    }

    /// The same row for every `i`: an integer argument's rows, read once when scalar.
    fn each_int(&self) -> Vec<i64> {
        match self.value {
            ColumnarValue::Scalar(s) => vec![scalar_int(s).unwrap_or(0); self.rows],
            ColumnarValue::Array(a) => match arrow::compute::cast(a, &DataType::Int64) {
                Ok(cast) => {
                    let ints = cast.as_primitive::<Int64Type>();
                    (0..ints.len())
                        .map(|i| if ints.is_null(i) { 0 } else { ints.value(i) })
                        .collect()
                }
                Err(_) => (0..self.rows).map(|i| self.int(i)).collect(),
            },
        }
    }
}

fn scalar_int(s: &ScalarValue) -> Option<i64> {
    match s.cast_to(&DataType::Int64).ok()? {
        ScalarValue::Int64(v) => v,
        _ => None,
    }
}

fn scalar_bytes(s: &ScalarValue) -> u64 {
    match s {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
            v.as_ref().map_or(0, |v| v.len() as u64)
        }
        ScalarValue::Binary(v) | ScalarValue::LargeBinary(v) | ScalarValue::BinaryView(v) => {
            v.as_ref().map_or(0, |v| v.len() as u64)
        }
        other => {
            other
                .size()
                .saturating_sub(std::mem::size_of::<ScalarValue>()) as u64
                + 8
        }
    }
}

fn array_row_bytes(a: &ArrayRef, i: usize) -> u64 {
    if a.is_null(i) {
        return 0;
    }
    match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value_length(i) as u64,
        DataType::LargeUtf8 => a.as_string::<i64>().value_length(i) as u64,
        DataType::Utf8View => a.as_string_view().value(i).len() as u64,
        DataType::Binary => a.as_binary::<i32>().value_length(i) as u64,
        DataType::LargeBinary => a.as_binary::<i64>().value_length(i) as u64,
        DataType::BinaryView => a.as_binary_view().value(i).len() as u64,
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            a.slice(i, 1).get_array_memory_size() as u64
        }
        other => other.primitive_width().map_or(16, |w| w as u64),
    }
}

/// Rows of the batch a call covers, and its arguments.
fn args_of(args: &ScalarFunctionArgs) -> (usize, Vec<Arg<'_>>) {
    let rows = args
        .args
        .iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        // Only scalars: the call makes one value (a literal copied into every row is what
        // `check_plan_literals` bounds).
        .unwrap_or(1);
    let list = args.args.iter().map(|value| Arg { value, rows }).collect();
    (rows, list)
}

/// An upper bound of the bytes one call makes (saturating: a bound past u64 is past any limit).
fn output_bound(bound: Bound, args: &ScalarFunctionArgs) -> u64 {
    let (rows, a) = args_of(args);
    let arg = |i: usize| a.get(i);
    let sum = |f: &dyn Fn(usize) -> u64| -> u64 {
        (0..rows).fold(0u64, |total, i| total.saturating_add(f(i)))
    };
    let nonneg = |v: i64| v.max(0) as u64;
    match bound {
        Bound::Repeat => {
            let (Some(s), Some(n)) = (arg(0), arg(1)) else {
                return 0;
            };
            let counts = n.each_int();
            sum(&|i| s.bytes(i).saturating_mul(nonneg(counts[i])))
        }
        Bound::Pad => {
            let (Some(s), Some(n)) = (arg(0), arg(1)) else {
                return 0;
            };
            let counts = n.each_int();
            let fill = arg(2).map_or(0, |f| f.bytes(0));
            sum(&|i| {
                s.bytes(i)
                    .saturating_add(nonneg(counts[i]).saturating_mul(4))
                    .saturating_add(fill)
            })
        }
        Bound::Replace => {
            let (Some(s), Some(from), Some(to)) = (arg(0), arg(1), arg(2)) else {
                return 0;
            };
            sum(&|i| {
                let len = s.bytes(i);
                let matches = len / from.bytes(i).max(1);
                len.saturating_add(matches.saturating_mul(to.bytes(i)))
            })
        }
        Bound::RegexpReplace => {
            let (Some(s), Some(with)) = (arg(0), arg(2)) else {
                return 0;
            };
            sum(&|i| {
                let r = with.bytes(i).saturating_mul(2).saturating_add(2);
                r.saturating_add(1)
                    .saturating_mul(s.bytes(i).saturating_add(1))
            })
        }
        Bound::ArrayRepeat => {
            let (Some(e), Some(n)) = (arg(0), arg(1)) else {
                return 0;
            };
            let counts = n.each_int();
            sum(&|i| nonneg(counts[i]).saturating_mul(e.bytes(i).saturating_add(8)))
        }
        Bound::ArrayResize => {
            let (Some(list), Some(n)) = (arg(0), arg(1)) else {
                return 0;
            };
            let counts = n.each_int();
            let fill = arg(2).map_or(8, |f| f.bytes(0).max(8));
            sum(&|i| {
                let per = list.bytes(i) / list.list_len(i).max(1) + fill;
                nonneg(counts[i])
                    .max(list.list_len(i))
                    .saturating_mul(per.saturating_add(8))
            })
        }
        Bound::Range => {
            // Integers: (stop - start) / step values of 8 bytes. Dates and timestamps step by
            // intervals; their span in the same unit as a day step is bounded the same way,
            // taking the smallest step an interval can mean.
            let (Some(start), Some(stop)) = (arg(0), arg(1)) else {
                return 0;
            };
            let step = arg(2);
            sum(&|i| {
                let (Some(from), Some(to)) = (range_point(start, i), range_point(stop, i)) else {
                    return u64::MAX;
                };
                let stride = match step {
                    None => 1,
                    Some(s) => range_step(s, i),
                };
                if stride == 0 {
                    return 0;
                }
                let span =
                    (to as i128 - from as i128).unsigned_abs() / stride.unsigned_abs() as u128;
                (span.saturating_add(1))
                    .saturating_mul(8)
                    .min(u64::MAX as u128) as u64
            })
        }
        Bound::ArrayReplace => {
            let (Some(list), Some(to)) = (arg(0), arg(2)) else {
                return 0;
            };
            sum(&|i| {
                list.bytes(i).saturating_add(
                    list.list_len(i)
                        .saturating_mul(to.bytes(i).saturating_add(8)),
                )
            })
        }
        Bound::ArrayToString => {
            let Some(list) = arg(0) else {
                return 0;
            };
            let extra: u64 = (1..a.len()).map(|j| a[j].bytes(0)).sum();
            sum(&|i| {
                list.bytes(i)
                    .saturating_add(list.list_len(i).saturating_mul(extra.saturating_add(80)))
            })
        }
        Bound::Linear => sum(&|i| {
            a.iter()
                .fold(16u64, |total, arg| total.saturating_add(arg.bytes(i)))
        }),
        Bound::Scaled(factor) => sum(&|i| {
            a.iter()
                .fold(16u64, |total, arg| total.saturating_add(arg.bytes(i)))
                .saturating_mul(factor)
        }),
        Bound::Cast => 0,
    }
}

/// A range end as a number: an integer, or a date or timestamp in its own unit (days or
/// nanoseconds are what the step is compared in).
fn range_point(arg: &Arg, i: usize) -> Option<i64> {
    let value = match arg.value {
        ColumnarValue::Scalar(s) => s.clone(),
        ColumnarValue::Array(a) => ScalarValue::try_from_array(a, i).ok()?,
    };
    if value.is_null() {
        return Some(0);
    }
    let as_nanos = |v: ScalarValue| match v
        .cast_to(&DataType::Timestamp(
            arrow::datatypes::TimeUnit::Nanosecond,
            None,
        ))
        .ok()?
    {
        ScalarValue::TimestampNanosecond(v, _) => v,
        _ => None,
    };
    match value.data_type() {
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => as_nanos(value),
        _ => scalar_int(&value),
    }
}

/// A range step in the same units as [`range_point`]: an integer, or an interval in
/// nanoseconds, a month counted as its shortest (28 days) and a day as 23 hours.
fn range_step(arg: &Arg, i: usize) -> i64 {
    let value = match arg.value {
        ColumnarValue::Scalar(s) => s.clone(),
        ColumnarValue::Array(a) => match ScalarValue::try_from_array(a, i) {
            Ok(v) => v,
            Err(_) => return 0,
        },
    };
    const DAY: i64 = 23 * 3600 * 1_000_000_000;
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) => (v.months as i64 * 28 * DAY)
            .saturating_add(v.days as i64 * DAY)
            .saturating_add(v.nanoseconds),
        ScalarValue::IntervalDayTime(Some(v)) => {
            (v.days as i64 * DAY).saturating_add(v.milliseconds as i64 * 1_000_000)
        }
        ScalarValue::IntervalYearMonth(Some(v)) => v as i64 * 28 * DAY,
        other => scalar_int(&other).unwrap_or(0),
    }
}

/// Why a column of `data_type` is refused: the bytes of one row's fixed-width part (fixed-size
/// binaries and lists, nested) past [`MAX_FIXED_ROW_BYTES`], or nesting past 32 levels.
pub fn check_type_size(data_type: &DataType) -> std::result::Result<(), String> {
    fn fixed(t: &DataType, depth: usize) -> std::result::Result<u64, String> {
        if depth > 32 {
            return Err("types nest more than 32 levels deep".into());
        }
        Ok(match t {
            DataType::FixedSizeBinary(n) => (*n).max(0) as u64,
            DataType::FixedSizeList(child, n) => {
                ((*n).max(0) as u64).saturating_mul(fixed(child.data_type(), depth + 1)?.max(1))
            }
            DataType::Struct(fields) => fields.iter().try_fold(0u64, |total, f| {
                Ok::<_, String>(total.saturating_add(fixed(f.data_type(), depth + 1)?))
            })?,
            DataType::List(child)
            | DataType::LargeList(child)
            | DataType::ListView(child)
            | DataType::LargeListView(child)
            | DataType::Map(child, _) => {
                fixed(child.data_type(), depth + 1)?;
                8
            }
            DataType::Dictionary(_, value) => {
                fixed(value, depth + 1)?;
                8
            }
            other => other.primitive_width().unwrap_or(16) as u64,
        })
    }
    let bytes = fixed(data_type, 0)?;
    if bytes > MAX_FIXED_ROW_BYTES {
        return Err(format!(
            "the type {data_type} takes {} per row, more than the {} a row's fixed part may",
            tern_proto::human_bytes(bytes),
            tern_proto::human_bytes(MAX_FIXED_ROW_BYTES)
        ));
    }
    Ok(())
}

/// Refuse a plan whose literals, copied into every row of a batch, would make more than a
/// function may ([`output_limit`]): each operator's literals together (a projection of forty
/// copies of one large literal makes forty columns of it).
pub fn check_plan_literals(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    use datafusion::physical_expr::expressions::Literal;
    let mut found = None;
    plan.apply(|node| {
        let mut bytes = 0u64;
        node.apply_expressions(&mut |expr| {
            expr.apply(|e| {
                if let Some(lit) = e.downcast_ref::<Literal>() {
                    bytes = bytes.saturating_add(scalar_bytes(lit.value()));
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        if bytes.saturating_mul(BATCH_ROWS) > output_limit() {
            found = Some(bytes);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match found {
        Some(bytes) => Err(DataFusionError::ResourcesExhausted(format!(
            "values of {} in one step of the query would be copied into each of a batch's \
             {BATCH_ROWS} rows, more than the {} a batch may hold; the values of one step may \
             take up to {} together",
            tern_proto::human_bytes(bytes),
            tern_proto::human_bytes(output_limit()),
            tern_proto::human_bytes(output_limit() / BATCH_ROWS)
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    fn context() -> SessionContext {
        let ctx = SessionContext::new();
        for (name, _) in GUARDED {
            if let Some(g) = guarded(name) {
                ctx.register_udf(g.as_ref().clone());
            }
        }
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> std::result::Result<usize, String> {
        let frame = ctx.sql(sql).await.map_err(|e| e.to_string())?;
        let plan = frame
            .create_physical_plan()
            .await
            .map_err(|e| e.to_string())?;
        check_plan_literals(&plan).map_err(|e| e.to_string())?;
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .map_err(|e| e.to_string())?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    /// Every guarded function, on constants and on a column, past the limit: a clear error
    /// instead of an allocation that aborts. Within it, the same answers as unguarded.
    #[tokio::test]
    async fn bombs_fail_with_an_error_naming_the_function() {
        let ctx = context();
        ctx.sql(
            "CREATE TABLE t AS SELECT * FROM (VALUES ('ab', 3), ('xyz', 1000000000000)) AS v(s, n)",
        )
        .await
        .unwrap();
        let bombs = [
            "SELECT repeat(arrow_cast('x','LargeUtf8'), 10000000000000) AS s",
            "SELECT repeat(s, n) FROM t",
            "SELECT lpad(s, 2000000000) FROM t",
            "SELECT rpad('x', 2000000000, 'yz')",
            "SELECT replace(repeat('a', 100000), 'a', repeat('b', 100000))",
            "SELECT regexp_replace(repeat('a', 10000000), '', repeat('b', 100), 'g')",
            "SELECT array_repeat(s, n) FROM t",
            "SELECT array_resize([1, 2], 100000000000)",
            "SELECT range(0, 100000000000)",
            "SELECT generate_series(arrow_cast('1970-01-01', 'Timestamp(Nanosecond, None)'), arrow_cast('2200-01-01', 'Timestamp(Nanosecond, None)'), INTERVAL '1 nanosecond')",
            "SELECT array_replace_all(array_repeat('a', 1000000), 'a', repeat('b', 100000))",
            "SELECT array_to_string(array_repeat('a', 10000000), repeat(',', 100))",
            "SELECT arrow_cast(NULL, 'FixedSizeBinary(2147483647)')",
            "SELECT arrow_cast(NULL, 'FixedSizeList(2147483647, Int64)')",
            "SELECT length(encode(encode(encode(encode(repeat(s, 30000000), 'hex'), 'hex'), 'hex'), 'hex')) FROM t",
            "SELECT to_char(now(), repeat(s, 10000000)) FROM t",
            "SELECT upper(repeat(s, 60000000)) FROM t",
            "SELECT repeat('a', 40000) AS c1, repeat('b', 40000) AS c2 FROM t",
        ];
        for sql in bombs {
            let err = run(&ctx, sql).await.expect_err(sql);
            assert!(
                err.contains("more than") && !err.contains("panic"),
                "{sql}: {err}"
            );
        }
        // What fits runs as before.
        assert_eq!(run(&ctx, "SELECT repeat(s, 2) FROM t").await.unwrap(), 2);
        assert_eq!(
            run(&ctx, "SELECT lpad(s, 10, '-') FROM t").await.unwrap(),
            2
        );
        assert_eq!(run(&ctx, "SELECT range(0, 1000)").await.unwrap(), 1);
        assert_eq!(
            run(&ctx, "SELECT concat(s, 'x', s) FROM t").await.unwrap(),
            2
        );
    }

    #[test]
    fn wide_fixed_types_are_refused() {
        use arrow::datatypes::Field;
        assert!(check_type_size(&DataType::Int64).is_ok());
        assert!(check_type_size(&DataType::FixedSizeBinary(16)).is_ok());
        assert!(check_type_size(&DataType::FixedSizeBinary(1 << 30)).is_err());
        let list =
            DataType::FixedSizeList(Arc::new(Field::new("x", DataType::Int64, true)), 1 << 20);
        assert!(check_type_size(&list).unwrap_err().contains("per row"));
    }
}
