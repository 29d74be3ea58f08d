//! What each partition's columns hold (least and greatest value, nulls), gathered as the
//! partition is cut, so a query's filter can skip the partitions it cannot match without
//! sending them a task (Parquet's row-group statistics, Iceberg's per-file bounds).
//!
//! The record's `bounds` is one Arrow IPC stream of one batch, a row per partition, with
//! `c.min`, `c.max` (of `c`'s type) and `c.nulls` for every column `c` of a type with an
//! order that filters and Arrow agree on (integers, decimals, dates, times, timestamps,
//! durations, strings, booleans). Floats are left out: `-0.0 = 0.0` and NaN make a bound
//! taken in Arrow's total order wrong for SQL's comparisons. Nodes read it with
//! `tern_exec::bounds`, which keeps the same rule.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, LargeStringArray, PrimitiveArray, StringArray,
    StringViewArray, downcast_primitive_array, new_null_array,
};
use arrow::compute::kernels::aggregate;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

/// A string bound longer than this is not kept (the partition's column has no bounds): a
/// bound must be exact, and bounds live in the catalog.
pub const MAX_STRING_BOUND: usize = 64;

/// Whether a column of this type gets bounds (see the module docs).
pub fn has_bounds(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Int8 | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Decimal32(..)
            | Decimal64(..)
            | Decimal128(..)
            | Decimal256(..)
            | Date32
            | Date64
            | Time32(_)
            | Time64(_)
            | Timestamp(..)
            | Duration(_)
            | Utf8
            | LargeUtf8
            | Utf8View
            | Boolean
    )
}

/// One partition's bounds, column by column (only the columns [`has_bounds`] takes).
#[derive(Debug, Clone)]
pub struct PartitionBounds {
    columns: Vec<ColumnBounds>,
}

#[derive(Debug, Clone)]
struct ColumnBounds {
    field: Arc<Field>,
    /// One value each; null when unknown (no non-null value, or a string too long).
    min: ArrayRef,
    max: ArrayRef,
    nulls: u64,
}

/// Gathers [`PartitionBounds`] batch by batch.
#[derive(Debug)]
pub struct BoundsBuilder {
    columns: Vec<ColumnBuilder>,
}

#[derive(Debug)]
struct ColumnBuilder {
    /// Its place in the schema.
    index: usize,
    field: Arc<Field>,
    /// Each batch's least and greatest values (null: none, or not kept).
    mins: Vec<ArrayRef>,
    maxs: Vec<ArrayRef>,
    /// A batch's least (greatest) value was not kept: the partition's is unknown.
    min_unknown: bool,
    max_unknown: bool,
    nulls: u64,
}

impl BoundsBuilder {
    pub fn new(schema: &Schema) -> Self {
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| has_bounds(f.data_type()))
            .map(|(index, field)| ColumnBuilder {
                index,
                field: field.clone(),
                mins: Vec::new(),
                maxs: Vec::new(),
                min_unknown: false,
                max_unknown: false,
                nulls: 0,
            })
            .collect();
        Self { columns }
    }

    pub fn push(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        for column in &mut self.columns {
            let values = batch.column(column.index);
            let (min, max) = min_max(values.as_ref())?;
            column.min_unknown |= min.is_none();
            column.max_unknown |= max.is_none();
            column.mins.extend(min);
            column.maxs.extend(max);
            column.nulls += values.null_count() as u64;
        }
        Ok(())
    }

    pub fn finish(self) -> Result<PartitionBounds, ArrowError> {
        let columns = self
            .columns
            .into_iter()
            .map(|column| {
                // The least of the batches' least values is the partition's.
                let reduce = |parts: &[ArrayRef],
                              unknown: bool|
                 -> Result<Option<(ArrayRef, ArrayRef)>, ArrowError> {
                    if unknown || parts.is_empty() {
                        return Ok(None);
                    }
                    let refs: Vec<&dyn Array> = parts.iter().map(|p| p.as_ref()).collect();
                    let (min, max) = min_max(arrow::compute::concat(&refs)?.as_ref())?;
                    Ok(min.zip(max))
                };
                let unknown = || new_null_array(column.field.data_type(), 1);
                let min = reduce(&column.mins, column.min_unknown)?.map_or_else(unknown, |b| b.0);
                let max = reduce(&column.maxs, column.max_unknown)?.map_or_else(unknown, |b| b.1);
                Ok(ColumnBounds {
                    field: column.field,
                    min,
                    max,
                    nulls: column.nulls,
                })
            })
            .collect::<Result<_, ArrowError>>()?;
        Ok(PartitionBounds { columns })
    }
}

/// The least and greatest non-null value of `array`, as one-value arrays of its type (null
/// when it has none); `None` for a string past [`MAX_STRING_BOUND`], which is not kept.
type Bound = Option<ArrayRef>;

fn min_max(array: &dyn Array) -> Result<(Bound, Bound), ArrowError> {
    fn one<T: arrow::datatypes::ArrowPrimitiveType>(
        array: &PrimitiveArray<T>,
        value: Option<T::Native>,
    ) -> Bound {
        Some(Arc::new(
            PrimitiveArray::<T>::from_iter([value]).with_data_type(array.data_type().clone()),
        ))
    }
    // A string bound: kept when short enough (null when there is no value at all).
    fn text<A: Array + From<Vec<Option<String>>> + 'static>(value: Option<&str>) -> Bound {
        match value {
            Some(s) if s.len() > MAX_STRING_BOUND => None,
            value => Some(Arc::new(A::from(vec![value.map(str::to_owned)]))),
        }
    }
    let bounds = downcast_primitive_array!(
        array => (
            one(array, aggregate::min(array)),
            one(array, aggregate::max(array)),
        ),
        DataType::Utf8 => {
            let strings = array.as_string::<i32>();
            (
                text::<StringArray>(aggregate::min_string(strings)),
                text::<StringArray>(aggregate::max_string(strings)),
            )
        }
        DataType::LargeUtf8 => {
            let strings = array.as_string::<i64>();
            (
                text::<LargeStringArray>(aggregate::min_string(strings)),
                text::<LargeStringArray>(aggregate::max_string(strings)),
            )
        }
        DataType::Utf8View => {
            let strings = array.as_string_view();
            (
                text::<StringViewArray>(aggregate::min_string_view(strings)),
                text::<StringViewArray>(aggregate::max_string_view(strings)),
            )
        }
        DataType::Boolean => {
            let values = array.as_boolean();
            let one = |v: Option<bool>| -> Bound { Some(Arc::new(BooleanArray::from(vec![v]))) };
            (one(aggregate::min_boolean(values)), one(aggregate::max_boolean(values)))
        }
        other => {
            return Err(ArrowError::InvalidArgumentError(format!(
                "no bounds for a column of type {other}"
            )));
        }
    );
    Ok(bounds)
}

/// Every partition's bounds as the record's `bounds` (see the module docs); empty when there
/// are none to give (no partition, or no column with bounds).
pub fn encode(partitions: &[PartitionBounds]) -> Result<Vec<u8>, ArrowError> {
    let Some(first) = partitions.first() else {
        return Ok(Vec::new());
    };
    if first.columns.is_empty() {
        return Ok(Vec::new());
    }
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (c, column) in first.columns.iter().enumerate() {
        let name = column.field.name();
        let data_type = column.field.data_type();
        let gather = |pick: fn(&ColumnBounds) -> &ArrayRef| -> Result<ArrayRef, ArrowError> {
            let parts: Vec<&dyn Array> = partitions
                .iter()
                .map(|p| pick(&p.columns[c]).as_ref())
                .collect();
            arrow::compute::concat(&parts)
        };
        fields.push(Field::new(format!("{name}.min"), data_type.clone(), true));
        arrays.push(gather(|c| &c.min)?);
        fields.push(Field::new(format!("{name}.max"), data_type.clone(), true));
        arrays.push(gather(|c| &c.max)?);
        fields.push(Field::new(format!("{name}.nulls"), DataType::UInt64, false));
        arrays.push(Arc::new(arrow::array::UInt64Array::from_iter_values(
            partitions.iter().map(|p| p.columns[c].nulls),
        )));
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    let mut writer = StreamWriter::try_new(Vec::new(), &schema)?;
    writer.write(&batch)?;
    writer.finish()?;
    writer.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Float64Array, Int64Array};
    use arrow::ipc::reader::StreamReader;

    fn batch(ids: Vec<Option<i64>>, names: Vec<Option<&str>>, days: Vec<i32>) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("day", DataType::Date32, false),
            Field::new("price", DataType::Float64, false),
        ]);
        let n = days.len();
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
                Arc::new(Date32Array::from(days)),
                Arc::new(Float64Array::from(vec![1.5; n])),
            ],
        )
        .unwrap()
    }

    fn decode(bytes: &[u8]) -> RecordBatch {
        let mut reader = StreamReader::try_new(bytes, None).unwrap();
        reader.next().unwrap().unwrap()
    }

    #[test]
    fn bounds_span_every_batch_and_skip_nulls_floats_and_long_strings() {
        let one = batch(
            vec![Some(5), None, Some(9)],
            vec![Some("m"), Some("b"), None],
            vec![10, 11, 12],
        );
        let two = batch(vec![Some(-3), Some(7)], vec![Some("z"), None], vec![3, 40]);
        let mut first = BoundsBuilder::new(&one.schema());
        first.push(&one).unwrap();
        first.push(&two).unwrap();
        let long = "x".repeat(MAX_STRING_BOUND + 1);
        let three = batch(
            vec![None, None],
            vec![Some("a"), Some(long.as_str())],
            vec![1, 2],
        );
        let mut second = BoundsBuilder::new(&three.schema());
        second.push(&three).unwrap();
        let mut empty = BoundsBuilder::new(&three.schema());
        empty.push(&three.slice(0, 0)).unwrap();

        let stats = decode(
            &encode(&[
                first.finish().unwrap(),
                second.finish().unwrap(),
                empty.finish().unwrap(),
            ])
            .unwrap(),
        );
        let names: Vec<&str> = stats
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "id.min",
                "id.max",
                "id.nulls",
                "name.min",
                "name.max",
                "name.nulls",
                "day.min",
                "day.max",
                "day.nulls"
            ],
            "no bounds for floats"
        );
        let ints = |name: &str| {
            stats
                .column_by_name(name)
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(ints("id.min"), [Some(-3), None, None]);
        assert_eq!(ints("id.max"), [Some(9), None, None]);
        let strings = |name: &str| {
            stats
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .iter()
                .map(|s| s.map(str::to_owned))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strings("name.min"),
            [Some("b".into()), Some("a".into()), None]
        );
        assert_eq!(
            strings("name.max"),
            [Some("z".into()), None, None],
            "a string past the limit leaves that side of the partition's column unbounded"
        );
        let counts = |name: &str| {
            stats
                .column_by_name(name)
                .unwrap()
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(counts("id.nulls"), [1, 2, 0]);
        assert_eq!(counts("name.nulls"), [2, 0, 0]);
        let days = stats
            .column_by_name("day.min")
            .unwrap()
            .as_primitive::<arrow::datatypes::Date32Type>();
        assert_eq!(days.values().to_vec(), [3, 1, 0]);
        assert!(days.is_null(2), "an empty partition has no bounds");
    }
}
