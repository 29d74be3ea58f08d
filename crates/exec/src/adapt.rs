//! Adapting a stage's plan to what its input stages made, before its tasks run.
//!
//! The plan is made before any data is read, and tern tells DataFusion the size of small
//! tables only (see `SIZED_TABLE_ROWS` in `scan.rs`), so a hash join over two shuffles builds
//! its table on whichever side the query named first. Once the input stages have run, their
//! shuffle readers know their exact rows ([`ShuffleReaderExec`]'s statistics), and a join
//! can build on the smaller side, as Spark's adaptive execution does: TPC-H Q18 otherwise
//! builds a hash table of six million joined rows to keep the 57 orders a subquery found.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::JoinType;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};

/// `plan` with every partitioned hash join building on its smaller input, by the rows (or
/// bytes, when both sides know theirs) that statistics give; joins whose sides' sizes are
/// unknown stay as planned. Both sides of such a join are hashed on the join keys into the
/// same partitions, so swapping them changes which side a task holds in memory, not which
/// rows meet. Joins whose output order something above may rely on are left alone.
pub fn build_on_smaller_sides(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if *join.partition_mode() != PartitionMode::Partitioned
                || !join.join_type().supports_swap()
                || join.properties().output_ordering().is_some()
                || !left_is_larger(join.left().as_ref(), join.right().as_ref())?
            {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(
                join.swap_inputs(PartitionMode::Partitioned)?,
            ))
        })?
        .data)
}

/// Whether statistics say `left` is the larger input (bytes when both sides have them,
/// else rows; unknown is never larger).
fn left_is_larger(left: &dyn ExecutionPlan, right: &dyn ExecutionPlan) -> Result<bool> {
    let context = StatisticsContext::new();
    let left = context.compute(left, &StatisticsArgs::new())?;
    let right = context.compute(right, &StatisticsArgs::new())?;
    Ok(
        match (
            left.total_byte_size.get_value(),
            right.total_byte_size.get_value(),
        ) {
            (Some(l), Some(r)) => l > r,
            _ => match (left.num_rows.get_value(), right.num_rows.get_value()) {
                (Some(l), Some(r)) => l > r,
                _ => false,
            },
        },
    )
}

/// `plan` with every semi or anti join on the keys of the partitioned inner join below it
/// moved under that join, onto the input its keys come from. TPC-H Q18 keeps the orders
/// whose line items add up past 300 (57 of 1.5 million): planned as written, all six
/// million line items join their orders and only then meet the 57; moved, the 57 keep their
/// orders first and the line items probe a table of 57. An inner join's row survives the
/// semi (anti) join exactly when its input's row would, as both carry the same key; the
/// inputs stay hashed on those keys, so the partitions still meet.
pub fn semi_joins_first(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            Ok(match semi_join_moved_down(&node)? {
                Some(moved) => Transformed::yes(moved),
                None => Transformed::no(node),
            })
        })?
        .data)
}

fn semi_join_moved_down(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(outer) = node.downcast_ref::<HashJoinExec>() else {
        return Ok(None);
    };
    let Some(inner) = outer.left().downcast_ref::<HashJoinExec>() else {
        return Ok(None);
    };
    if !matches!(outer.join_type(), JoinType::LeftSemi | JoinType::LeftAnti)
        || *outer.partition_mode() != PartitionMode::Partitioned
        || outer.null_aware
        || outer.filter().is_some()
        || outer.projection.is_some()
        || *inner.join_type() != JoinType::Inner
        || *inner.partition_mode() != PartitionMode::Partitioned
        || inner.on().len() != outer.on().len()
    {
        return Ok(None);
    }
    let columns = |exprs: Vec<&Arc<dyn PhysicalExpr>>| -> Option<Vec<usize>> {
        exprs
            .into_iter()
            .map(|e| e.downcast_ref::<Column>().map(Column::index))
            .collect()
    };
    let (Some(keys), Some(inner_left), Some(inner_right)) = (
        columns(outer.on().iter().map(|(l, _)| l).collect()),
        columns(inner.on().iter().map(|(l, _)| l).collect()),
        columns(inner.on().iter().map(|(_, r)| r).collect()),
    ) else {
        return Ok(None);
    };
    let keys: Option<Vec<usize>> = match &inner.projection {
        None => Some(keys),
        Some(p) => keys.iter().map(|&k| p.get(k).copied()).collect(),
    };
    let Some(keys) = keys else {
        return Ok(None);
    };
    let left_width = inner.left().schema().fields().len();
    let on_right: Vec<usize> = keys.iter().map(|&k| k.wrapping_sub(left_width)).collect();
    let (side, side_keys) = if keys == inner_left {
        (0, keys)
    } else if on_right == inner_right {
        (1, on_right)
    } else {
        return Ok(None);
    };
    let mut inputs: Vec<Arc<dyn ExecutionPlan>> = inner.children().into_iter().cloned().collect();
    let side_schema = inputs[side].schema();
    let on = side_keys
        .iter()
        .zip(outer.on())
        .map(|(&k, (_, other))| {
            let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new(side_schema.field(k).name(), k));
            (key, other.clone())
        })
        .collect();
    let moved: Arc<dyn ExecutionPlan> = Arc::new(HashJoinExec::try_new(
        inputs[side].clone(),
        outer.right().clone(),
        on,
        None,
        outer.join_type(),
        None,
        PartitionMode::Partitioned,
        outer.null_equality(),
        false,
    )?);
    if moved.schema().fields() != side_schema.fields() {
        return Ok(None);
    }
    inputs[side] = moved;
    let rebuilt = replace_children_if_necessary(outer.left().clone(), inputs)?;
    if rebuilt.schema().fields() != node.schema().fields() {
        return Ok(None);
    }
    Ok(Some(rebuilt))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::NullEquality;
    use datafusion::physical_plan::Partitioning;

    use super::*;
    use crate::{ReadMode, ShuffleReaderExec, TaskLocation};

    /// A reader of stage `stage` (columns `k` and `name_of`) whose two tasks made `rows`.
    fn reader(stage: u32, column: &str, rows: Option<u64>) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new(column, DataType::Utf8, true),
        ]));
        let partitioning = Partitioning::Hash(vec![Arc::new(Column::new("k", 0))], 4);
        let reader = ShuffleReaderExec::new(1, stage, ReadMode::Bucket, 2, schema, partitioning);
        let Some(rows) = rows else {
            return Arc::new(reader);
        };
        let at = |node| TaskLocation {
            node,
            addr: format!("127.0.0.1:{node}"),
            rows: rows / 2,
            bytes: rows * 8,
        };
        Arc::new(reader.located(vec![at(1), at(2)]))
    }

    fn join(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        join_type: JoinType,
    ) -> Arc<dyn ExecutionPlan> {
        let on = vec![(
            Arc::new(Column::new("k", 0)) as _,
            Arc::new(Column::new("k", 0)) as _,
        )];
        Arc::new(
            HashJoinExec::try_new(
                left,
                right,
                on,
                None,
                &join_type,
                None,
                PartitionMode::Partitioned,
                NullEquality::NullEqualsNothing,
                false,
            )
            .unwrap(),
        )
    }

    /// Which stage the join at the root builds on.
    fn build_stage(plan: &Arc<dyn ExecutionPlan>) -> u32 {
        let mut found = None;
        plan.apply(|node| {
            if let Some(join) = node.downcast_ref::<HashJoinExec>() {
                found = join
                    .left()
                    .downcast_ref::<ShuffleReaderExec>()
                    .map(|r| r.stage());
                return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        found.expect("a join over two readers")
    }

    #[test]
    fn a_join_builds_on_the_input_that_made_fewer_rows() {
        for join_type in [JoinType::Inner, JoinType::LeftSemi, JoinType::LeftAnti] {
            let planned = join(
                reader(0, "big", Some(6_000_000)),
                reader(1, "small", Some(60)),
                join_type,
            );
            let adapted = build_on_smaller_sides(planned.clone()).unwrap();
            assert_eq!(build_stage(&adapted), 1, "{join_type}");
            // The columns a join hands on stay those it was planned with.
            assert_eq!(adapted.schema(), planned.schema(), "{join_type}");
        }
    }

    #[test]
    fn a_join_already_building_on_the_smaller_side_or_of_unknown_sizes_is_kept() {
        let smaller_left = join(
            reader(0, "small", Some(60)),
            reader(1, "big", Some(6_000_000)),
            JoinType::Inner,
        );
        assert_eq!(
            build_stage(&build_on_smaller_sides(smaller_left).unwrap()),
            0
        );
        let unknown = join(
            reader(0, "big", None),
            reader(1, "small", Some(60)),
            JoinType::Inner,
        );
        assert_eq!(build_stage(&build_on_smaller_sides(unknown).unwrap()), 0);
    }

    #[test]
    fn a_semi_join_on_an_inner_joins_keys_moves_onto_the_input_they_come_from() {
        for join_type in [JoinType::LeftSemi, JoinType::LeftAnti] {
            let inner = join(
                reader(0, "orders", Some(1_500_000)),
                reader(1, "lineitem", Some(6_000_000)),
                JoinType::Inner,
            );
            let planned = join(inner, reader(2, "few", None), join_type);
            let moved = semi_joins_first(planned.clone()).unwrap();
            assert_eq!(moved.schema(), planned.schema(), "{join_type}");
            let top = moved.downcast_ref::<HashJoinExec>().unwrap();
            assert_eq!(*top.join_type(), JoinType::Inner, "{join_type}");
            let below = top.left().downcast_ref::<HashJoinExec>().unwrap();
            assert_eq!(*below.join_type(), join_type);
            assert_eq!(build_stage(top.left()), 0);
            assert_eq!(
                below
                    .right()
                    .downcast_ref::<ShuffleReaderExec>()
                    .unwrap()
                    .stage(),
                2
            );
            assert_eq!(
                top.right()
                    .downcast_ref::<ShuffleReaderExec>()
                    .unwrap()
                    .stage(),
                1
            );
        }
        // On another column than the inner join's key: stays.
        let inner = join(
            reader(0, "orders", None),
            reader(1, "lineitem", None),
            JoinType::Inner,
        );
        let on_other = Arc::new(
            HashJoinExec::try_new(
                inner,
                reader(2, "few", None),
                vec![(
                    Arc::new(Column::new("orders", 1)) as _,
                    Arc::new(Column::new("few", 1)) as _,
                )],
                None,
                &JoinType::LeftSemi,
                None,
                PartitionMode::Partitioned,
                NullEquality::NullEqualsNothing,
                false,
            )
            .unwrap(),
        ) as Arc<dyn ExecutionPlan>;
        let kept = semi_joins_first(on_other.clone()).unwrap();
        assert!(Arc::ptr_eq(&kept, &on_other));
    }
}
