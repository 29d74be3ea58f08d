//! Joining filtered small tables first: a logical optimizer rule.
//!
//! DataFusion joins the tables of a `FROM` list in the order written (it does not reorder
//! joins by cost). TPC-H Q21 names supplier, lineitem, orders, nation and keeps one nation:
//! as written, every late line item of every supplier joins its order, and only then are all
//! but one nation's suppliers dropped. This rule moves the join with such a table (a small
//! stored table under a filter) down the chain of inner joins, next to the input its keys
//! come from: supplier joins its one nation first, and the line item scan that joins the
//! few suppliers left keeps a twenty-fifth of its rows before anything is shuffled.
//!
//! Inner joins of a table's key with a small filtered table only drop rows, wherever in the
//! chain they happen, so the answer is the same; a projection on top restores the columns'
//! order.

use std::sync::Arc;

use datafusion::catalog::default_table_source::DefaultTableSource;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan, Projection};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use crate::StoredTable;

/// See the module's documentation.
#[derive(Debug, Default)]
pub struct SmallTablesFirst;

impl OptimizerRule for SmallTablesFirst {
    fn name(&self) -> &str {
        "tern_small_tables_first"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let Some(moved) = moved_down(join)? else {
            return Ok(Transformed::no(plan));
        };
        // The same columns in the same order as before.
        let columns = plan
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let restored = Projection::try_new(columns, Arc::new(moved))?;
        Ok(Transformed::yes(LogicalPlan::Projection(restored)))
    }
}

/// `outer` (an inner join of a chain of inner joins with a small filtered table) with the
/// small table joined to the input of the chain its keys come from; `None` when it is not
/// such a join or is already there.
fn moved_down(outer: &Join) -> Result<Option<LogicalPlan>> {
    if outer.join_type != JoinType::Inner
        || outer.filter.is_some()
        || outer.null_aware
        || !filtered_small_table(&outer.right)
    {
        return Ok(None);
    }
    let Some(inner) = inner_join_below(&outer.left) else {
        return Ok(None);
    };
    let keys: Vec<&Column> = outer
        .on
        .iter()
        .flat_map(|(left, _)| left.column_refs())
        .collect();
    if keys.is_empty() {
        return Ok(None);
    }
    let all_in = |side: &LogicalPlan| keys.iter().all(|c| side.schema().has_column(c));
    let (into_left, into_right) = (all_in(&inner.left), all_in(&inner.right));
    if into_left == into_right {
        return Ok(None);
    }
    let side = if into_left { &inner.left } else { &inner.right };
    let pushed = Join::try_new(
        side.clone(),
        outer.right.clone(),
        outer.on.clone(),
        None,
        JoinType::Inner,
        outer.join_constraint,
        outer.null_equality,
        false,
    )?;
    // Further down, while the side is itself such a chain.
    let pushed = match moved_down(&pushed)? {
        Some(further) => further,
        None => LogicalPlan::Join(pushed),
    };
    let (left, right) = if into_left {
        (Arc::new(pushed), inner.right.clone())
    } else {
        (inner.left.clone(), Arc::new(pushed))
    };
    Ok(Some(LogicalPlan::Join(Join::try_new(
        left,
        right,
        inner.on.clone(),
        inner.filter.clone(),
        JoinType::Inner,
        inner.join_constraint,
        inner.null_equality,
        false,
    )?)))
}

/// The inner join `plan` is, or that a projection of plain columns shows.
fn inner_join_below(plan: &LogicalPlan) -> Option<&Join> {
    match plan {
        LogicalPlan::Join(join) if join.join_type == JoinType::Inner && !join.null_aware => {
            Some(join)
        }
        LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
            inner_join_below(&p.input)
        }
        _ => None,
    }
}

/// Whether `plan` reads a small stored table (one DataFusion is told the size of) and keeps
/// only some of its rows.
fn filtered_small_table(plan: &LogicalPlan) -> bool {
    let mut filtered = false;
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Filter(f) => {
                filtered = true;
                node = &f.input;
            }
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::Projection(p) => node = &p.input,
            LogicalPlan::TableScan(scan) => {
                let small = scan
                    .source
                    .downcast_ref::<DefaultTableSource>()
                    .and_then(|s| s.table_provider.downcast_ref::<StoredTable>())
                    .is_some_and(StoredTable::is_small);
                return small && (filtered || !scan.filters.is_empty());
            }
            _ => return false,
        }
    }
}
