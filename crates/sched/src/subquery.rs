//! Scalar subqueries answered before the query that reads them is cut into stages.
//!
//! DataFusion runs an uncorrelated scalar subquery (`WHERE c_acctbal > (SELECT avg(..))`)
//! inside a `ScalarSubqueryExec`, which hands the value to the expressions reading it through
//! shared memory. Such expressions cannot travel to a node, so the cut keeps every operator
//! reading the value, and everything above it, on the coordinator: TPC-H Q22 sent the keys of
//! all 1.5 million orders there for its anti join. Instead the coordinator runs each subquery
//! first, as a query of its own on the cluster, writes its value into the plan as a literal
//! where filters and projections read it, and cuts the plan again, now free of it.

use std::sync::Arc;

use tern_exec::arrow::datatypes::{Schema, SchemaRef};
use tern_exec::arrow::record_batch::RecordBatch;
use tern_exec::datafusion::common::ScalarValue;
use tern_exec::datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use tern_exec::datafusion::error::{DataFusionError, Result};
use tern_exec::datafusion::logical_expr::ColumnarValue;
use tern_exec::datafusion::physical_expr::PhysicalExpr;
use tern_exec::datafusion::physical_expr::expressions::Literal;
use tern_exec::datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use tern_exec::datafusion::physical_plan::ExecutionPlan;
use tern_exec::datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use tern_exec::datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use tern_exec::datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;

use crate::stages::uses_scalar_subquery;

/// The outermost scalar subquery node of `plan`, if it has one (those inside its subqueries
/// are answered when the subqueries run).
pub fn outermost(plan: &Arc<dyn ExecutionPlan>) -> Option<ScalarSubqueryExec> {
    let mut found = None;
    let _ = plan.apply(|node| {
        if let Some(exec) = node.downcast_ref::<ScalarSubqueryExec>() {
            found = Some(ScalarSubqueryExec::new(
                exec.input().clone(),
                exec.subqueries().to_vec(),
                exec.results().clone(),
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// A scalar subquery's value from its answer: its one row, or null when it found none.
pub fn value_of(batches: &[RecordBatch], schema: &SchemaRef) -> Result<ScalarValue> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if schema.fields().len() != 1 {
        return Err(DataFusionError::Plan(format!(
            "a scalar subquery must return one column, not {}",
            schema.fields().len()
        )));
    }
    match rows {
        0 => ScalarValue::try_from(schema.field(0).data_type()),
        1 => {
            let batch = batches
                .iter()
                .find(|b| b.num_rows() == 1)
                .ok_or_else(|| DataFusionError::Internal("the row went missing".into()))?;
            ScalarValue::try_from_array(batch.column(0), 0)
        }
        n => Err(DataFusionError::Execution(format!(
            "a scalar subquery returned {n} rows; it must return at most one"
        ))),
    }
}

/// `plan` with its outermost subquery node gone and the values its subqueries found (set in
/// their shared results) written in as literals; `None` when an operator other than a filter
/// or a projection reads one, or a value is missing.
pub fn written_in(plan: Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let written = plan
        .transform_up(|node| {
            if !uses_scalar_subquery(&node) {
                return Ok(Transformed::no(node));
            }
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                let predicate = literal(filter.predicate().clone())?;
                let built = FilterExecBuilder::from(filter)
                    .with_predicate(predicate)
                    .build()?;
                return Ok(Transformed::yes(Arc::new(built) as Arc<dyn ExecutionPlan>));
            }
            if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
                let exprs = projection
                    .expr()
                    .iter()
                    .map(|p| {
                        Ok(ProjectionExpr {
                            expr: literal(p.expr.clone())?,
                            alias: p.alias.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let built = ProjectionExec::try_new(exprs, projection.input().clone())?;
                return Ok(Transformed::yes(Arc::new(built) as Arc<dyn ExecutionPlan>));
            }
            Ok(Transformed::no(node))
        })?
        .data;
    // The outermost subquery node is the first one met going down (as `outermost` found it).
    let mut gone = false;
    let rewritten = written
        .transform_down(|node| match node.downcast_ref::<ScalarSubqueryExec>() {
            Some(found) if !gone => {
                gone = true;
                Ok(Transformed::new(
                    found.input().clone(),
                    true,
                    TreeNodeRecursion::Stop,
                ))
            }
            _ => Ok(Transformed::no(node)),
        })?
        .data;
    let mut left = false;
    let _ = rewritten.apply(|node| {
        left |= uses_scalar_subquery(node) || node.downcast_ref::<ScalarSubqueryExec>().is_some();
        Ok(TreeNodeRecursion::Continue)
    });
    Ok((gone && !left).then_some(rewritten))
}

/// `expr` with every scalar subquery whose value is known replaced by that value.
fn literal(expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(expr
        .transform_up(|e| {
            let Some(sub) = e.downcast_ref::<ScalarSubqueryExpr>() else {
                return Ok(Transformed::no(e));
            };
            // It reads its value from the results its subquery node filled, whatever the rows.
            let nothing = RecordBatch::new_empty(Arc::new(Schema::empty()));
            match sub.evaluate(&nothing) {
                Ok(ColumnarValue::Scalar(value)) => Ok(Transformed::yes(Arc::new(Literal::new(
                    value,
                ))
                    as Arc<dyn PhysicalExpr>)),
                _ => Ok(Transformed::no(e)),
            }
        })?
        .data)
}

#[cfg(test)]
mod tests {
    use tern_exec::datafusion::physical_plan::displayable;

    use super::*;
    use crate::stages::tests::staged;

    #[tokio::test]
    async fn a_subquerys_value_is_written_in_and_the_filter_runs_in_the_scan_tasks() {
        let plan = staged("SELECT k FROM big WHERE v > (SELECT avg(v) FROM dim)").await;
        let text = crate::describe(&plan);
        // As cut: the filter reading the value stays on the coordinator, with big's rows.
        assert!(
            !plan.stages.iter().any(|s| displayable(s.plan.as_ref())
                .indent(true)
                .to_string()
                .contains("FilterExec")),
            "{text}"
        );
        let exec = outermost(&plan.whole).expect("a scalar subquery");
        assert_eq!(exec.subqueries().len(), 1);
        let link = &exec.subqueries()[0];
        let value = value_of(&[], &link.plan.schema()).unwrap();
        assert!(value.is_null(), "no row is a null value");
        exec.results()
            .set(link.index, ScalarValue::Float64(Some(41.5)))
            .unwrap();

        let whole = written_in(plan.whole.clone()).unwrap().expect("written in");
        let cut = crate::cut(whole, 7).unwrap();
        let text = crate::describe(&cut);
        let filter_stage = cut
            .stages
            .iter()
            .find(|s| {
                displayable(s.plan.as_ref())
                    .indent(true)
                    .to_string()
                    .contains("FilterExec")
            })
            .unwrap_or_else(|| panic!("the filter runs as tasks: {text}"));
        assert_eq!(filter_stage.scan().unwrap().dataset(), "big", "{text}");
        assert!(text.contains("41.5"), "{text}");
        assert!(!text.contains("scalar_subquery"), "{text}");
    }

    #[test]
    fn more_than_one_row_is_an_error_naming_the_count() {
        use tern_exec::arrow::array::Int64Array;
        use tern_exec::arrow::datatypes::{DataType, Field};
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])
                .unwrap();
        let err = value_of(&[batch.clone()], &schema).unwrap_err().to_string();
        assert!(err.contains("returned 2 rows"), "{err}");
        let one = batch.slice(1, 1);
        assert_eq!(
            value_of(&[one], &schema).unwrap(),
            ScalarValue::Int64(Some(2))
        );
    }
}
