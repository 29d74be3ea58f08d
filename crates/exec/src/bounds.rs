//! Skipping the partitions a query's filters cannot match, by the bounds their writer
//! recorded: for each column of an ordered type, each partition's least and greatest value
//! and its nulls (`DatasetRecord::bounds`, written by `tern_client::bounds`, which keeps
//! the same rule for which columns have them). DataFusion's `PruningPredicate` turns a
//! filter such as `day >= '2026-01-01'` into a test of those numbers, as it does for
//! Parquet row groups; a partition it rules out gets no task and its block is not read.
//!
//! The leader checks the bounds when it commits a dataset ([`Bounds::decode`]): the bytes
//! are the writer's, decoded only after the walk of [`crate::check_block`].

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;

/// Why a record's bounds are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the partitions' bounds are not the table's: {reason}")]
pub struct BadBounds {
    pub reason: String,
}

/// Largest `bounds` a dataset may record (a few columns' bounds for 10,000s of partitions).
pub const MAX_BOUNDS_BYTES: usize = 16 << 20;

/// Whether a column of this type has bounds: an order that SQL's comparisons and Arrow's
/// `min`/`max` agree on. Floats are left out (`-0.0 = 0.0`, NaN).
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

/// The columns `bounds` of a table with `schema` must have, in order.
pub fn bounds_schema(schema: &Schema) -> Schema {
    let mut fields = Vec::new();
    for field in schema.fields() {
        if has_bounds(field.data_type()) {
            let name = field.name();
            fields.push(Field::new(
                format!("{name}.min"),
                field.data_type().clone(),
                true,
            ));
            fields.push(Field::new(
                format!("{name}.max"),
                field.data_type().clone(),
                true,
            ));
            fields.push(Field::new(format!("{name}.nulls"), DataType::UInt64, false));
        }
    }
    Schema::new(fields)
}

/// A dataset's bounds, decoded: row `i` for partition `i`.
#[derive(Debug, Clone)]
pub struct Bounds {
    batch: RecordBatch,
    rows: ArrayRef,
}

impl Bounds {
    /// The bounds of a table with `schema` and these partitions' rows, from the record's
    /// bytes; `None` when it has none. Refused unless they are one Arrow IPC stream of the
    /// columns [`bounds_schema`] names with a row per partition.
    pub fn decode(bytes: &[u8], schema: &Schema, rows: &[u64]) -> Result<Option<Self>, BadBounds> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let bad = |reason: String| BadBounds { reason };
        if bytes.len() > MAX_BOUNDS_BYTES {
            return Err(bad(format!(
                "{} bytes, more than {MAX_BOUNDS_BYTES}",
                bytes.len()
            )));
        }
        let expected = bounds_schema(schema);
        if expected.fields().is_empty() {
            return Err(bad("the table has no column with bounds".into()));
        }
        crate::check_block(bytes, &expected, rows.len() as u64).map_err(|e| bad(e.reason))?;
        let (_, batches) = crate::ipc_to_batches(bytes.to_vec()).map_err(|e| bad(e.to_string()))?;
        let batch = match batches.as_slice() {
            [] => RecordBatch::new_empty(Arc::new(expected)),
            [one] => one.clone(),
            more => arrow::compute::concat_batches(&Arc::new(expected), more)
                .map_err(|e| bad(e.to_string()))?,
        };
        if batch.num_rows() != rows.len() {
            return Err(bad(format!(
                "{} rows for {} partitions",
                batch.num_rows(),
                rows.len()
            )));
        }
        Ok(Some(Self {
            batch,
            rows: Arc::new(UInt64Array::from(rows.to_vec())),
        }))
    }

    /// Which partitions `filters` (all must hold) may match: `None` when they say nothing
    /// the bounds can test.
    pub fn keep(
        &self,
        filters: &[Expr],
        schema: &SchemaRef,
        state: &dyn Session,
    ) -> Option<Vec<bool>> {
        let filter = conjunction(filters.iter().cloned())?;
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).ok()?;
        let filter = state.create_physical_expr(filter, &df_schema).ok()?;
        // `None` when the filters test nothing bounds know (or cannot be turned into a test).
        let predicate = PruningPredicateBuilder::new()
            .with_file_schema(schema.clone())
            .build(filter)?;
        predicate.prune(self).ok()
    }

    fn column(&self, column: &Column, what: &str) -> Option<ArrayRef> {
        self.batch
            .column_by_name(&format!("{}.{what}", column.name))
            .cloned()
    }
}

impl PruningStatistics for Bounds {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.column(column, "min")
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.column(column, "max")
    }

    fn num_containers(&self) -> usize {
        self.rows.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        self.column(column, "nulls")
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(self.rows.clone())
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}
