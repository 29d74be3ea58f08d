//! Broadcast joins chosen while a query runs.
//!
//! tern tells DataFusion the size of small tables only, so a join of two large tables, or of
//! a large table with what a filter left of another, is planned as a partitioned hash join:
//! both inputs hashed on the join keys into buckets, one shuffle each. Often one input turns
//! out small (TPC-H Q5 joins six million line items with the 227 thousand orders of one
//! region's customers). So before the large input's scan stage starts, the coordinator
//! waits for the other input's stage when that is expected to be small; if it made at most
//! [`BROADCAST_BYTES`], the join moves into the scan's tasks, each building its hash table
//! on the whole small output (a broadcast) and probing it with the rows of its own block:
//! the large input is never shuffled, and the stage that would have joined the two buckets
//! is the scan stage now.
//!
//! Spark's adaptive execution makes the same switch, after shuffling both sides. Holding a
//! large scan back costs the overlap of the two stages, which on a cluster whose nodes are
//! busy with the other stage's tasks is little.
//!
//! What a join may be moved: the stage above must use its rows one by one (projections,
//! filters, partial aggregates, joins that probe with them against other broadcasts) and
//! hash its output for a later stage, so nothing relied on the join's output being hashed;
//! the large input must be a scan stage that only this join reads; and the join must not
//! emit build-side rows at its end (a task cannot know which rows of the whole small side
//! another task matched), which leaves inner, right outer, right semi and right anti joins
//! with the small side building.

use std::collections::BTreeSet;
use std::sync::Arc;

use tern_exec::ShuffleReaderExec;
use tern_exec::datafusion::common::JoinType;
use tern_exec::datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use tern_exec::datafusion::error::{DataFusionError, Result};
use tern_exec::datafusion::physical_plan::Partitioning;
use tern_exec::datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use tern_exec::datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use tern_exec::datafusion::physical_plan::filter::FilterExec;
use tern_exec::datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use tern_exec::datafusion::physical_plan::projection::ProjectionExec;
use tern_exec::datafusion::physical_plan::repartition::RepartitionExec;
use tern_exec::datafusion::physical_plan::sorts::sort::SortExec;
use tern_exec::datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, replace_children_if_necessary,
};

use crate::stages::{Stage, StageOutput, find_scan, hash_exchange, readers_in};
use tern_exec::ReadMode;

/// The most a stage may have made (Arrow IPC bytes) for every task of a large scan to fetch
/// all of it and build a hash table on it. The scan's tasks are sent in one batch per slot,
/// which builds one table; every batch fetches the whole small side, so this is what
/// bounds the cost against shuffling the large side.
pub const BROADCAST_BYTES: u64 = 8 << 20;

/// Whether the large side of `b` should wait for its small side: only when that is expected
/// to make at most half as much (see [`estimated_bytes`]), as waiting for a side that then
/// turns out too large to broadcast costs the overlap of the two stages for nothing.
pub fn worth_waiting(stages: &[Stage], b: &Broadcastable) -> bool {
    estimated_bytes(stages, b.small).saturating_mul(2) <= estimated_bytes(stages, b.large)
}

/// A partitioned join in stage `consumer` that could run in the scan tasks of stage `large`,
/// building on the whole output of stage `small`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broadcastable {
    pub consumer: usize,
    pub small: usize,
    pub large: usize,
    /// The consumer aggregates the join's rows by groups relying on the join's hashing: the
    /// aggregate is split, partial in the large scan's tasks (which then hash their output
    /// by the groups) and final in the consumer, which keeps its tasks.
    pub split: bool,
}

/// The joins of `stages` that could become broadcasts, each with the input expected to be
/// smaller (see [`estimated_bytes`]) as the one to broadcast.
///
/// `gathered` are the stages whose outputs the coordinator reads through a gather (a merge
/// or a coalesce), which does not care how those outputs were hashed.
pub fn broadcastable(stages: &[Stage], gathered: &BTreeSet<usize>) -> Vec<Broadcastable> {
    stages
        .iter()
        .filter_map(|consumer| {
            let shape = moved_join(consumer, gathered)?;
            let join = shape.join.downcast_ref::<HashJoinExec>()?;
            let left = bucket_reader(join.left())?;
            let right = bucket_reader(join.right())?;
            [
                (left, right, *join.join_type()),
                (right, left, join.join_type().swap()),
            ]
            .into_iter()
            .filter(|&(small, large, join_type)| {
                (small == left || join.join_type().supports_swap())
                    && probes_with_small_building(join_type)
                    && can_absorb(stages, consumer.id, large)
                    && !reads(stages, small, large)
                    && estimated_bytes(stages, small) < estimated_bytes(stages, large)
            })
            .min_by_key(|&(small, _, _)| estimated_bytes(stages, small))
            .map(|(small, large, _)| Broadcastable {
                consumer: consumer.id,
                small,
                large,
                split: shape.aggregate.is_some(),
            })
        })
        .collect()
}

/// Make `b`'s join a broadcast: its consumer stage now runs in the large input's scan tasks,
/// the large stage runs no tasks of its own, and the readers of the consumer's outputs expect
/// its new number of tasks.
///
/// With `b.split`, the large stage instead runs the join and a partial aggregate, hashed by
/// the groups, and the consumer's final aggregate reads it. Nothing changes on an error.
pub fn broadcast(stages: &mut [Stage], b: Broadcastable) -> Result<()> {
    let large_input = stages[b.large]
        .plan
        .children()
        .first()
        .map(|c| (*c).clone())
        .ok_or_else(|| DataFusionError::Internal("a scan stage without a scan".into()))?;
    if b.split {
        return split_at_aggregate(stages, b, &large_input);
    }
    let tasks = large_input.output_partitioning().partition_count();
    let plan = rewrite(stages[b.consumer].plan.clone(), b, &large_input)?;
    let consumer = &mut stages[b.consumer];
    consumer.inputs = readers_in(&plan);
    consumer.plan = plan;
    consumer.tasks = tasks;
    consumer.broadcast = Some(b.small);
    stages[b.large].tasks = 0;
    for stage in stages.iter_mut() {
        stage.plan = stage
            .plan
            .clone()
            .transform_up(|node| match node.downcast_ref::<ShuffleReaderExec>() {
                Some(reader) if reader.stage() as usize == b.consumer => Ok(Transformed::yes(
                    Arc::new(reader.producing(tasks)) as Arc<dyn ExecutionPlan>,
                )),
                _ => Ok(Transformed::no(node)),
            })?
            .data;
    }
    Ok(())
}

/// What a broadcast would change in a stage: the partitioned join, and the aggregate above
/// it to split, if there is one.
struct Shape<'a> {
    join: &'a Arc<dyn ExecutionPlan>,
    aggregate: Option<&'a Arc<dyn ExecutionPlan>>,
}

/// The partitioned join a broadcast would move, if `stage` is shaped for it: from the join
/// up, rows used one by one (projections, filters, partial aggregates, probing broadcast
/// joins) to a hash exchange for a later stage; or up to an aggregate by groups that relied
/// on the join's hashing, above which only operators that keep to their partition (sorts)
/// before a hash exchange or the coordinator's gather.
fn moved_join<'a>(stage: &'a Stage, gathered: &BTreeSet<usize>) -> Option<Shape<'a>> {
    if stage.broadcast.is_some() || find_scan(&stage.plan).is_some() {
        return None;
    }
    let (mut node, rehashed) = match (&stage.output, hash_exchange(&stage.plan)) {
        (StageOutput::Kept, Some(exchange)) => (exchange.input(), true),
        (StageOutput::Coordinator(_), _) if gathered.contains(&stage.id) => (&stage.plan, false),
        _ => return None,
    };
    let mut aggregate = None;
    let mut sorted = false;
    loop {
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            match join.partition_mode() {
                PartitionMode::Partitioned => {
                    // Without an aggregate to split, the consumer takes the large side's
                    // tasks, and only a later stage's hashing can take another count.
                    let fits = match aggregate {
                        Some(_) => true,
                        None => rehashed && !sorted,
                    };
                    return fits.then_some(Shape {
                        join: node,
                        aggregate,
                    });
                }
                PartitionMode::CollectLeft
                    if join.left().output_partitioning().partition_count() == 1 =>
                {
                    node = join.right();
                    continue;
                }
                _ => return None,
            }
        }
        if let Some(agg) = node.downcast_ref::<AggregateExec>() {
            match agg.mode() {
                AggregateMode::Partial => {}
                AggregateMode::SinglePartitioned if aggregate.is_none() && splits(agg) => {
                    aggregate = Some(node);
                }
                _ => return None,
            }
        } else if node.downcast_ref::<SortExec>().is_some() && aggregate.is_none() {
            sorted = true;
        } else if node.downcast_ref::<ProjectionExec>().is_none()
            && node.downcast_ref::<FilterExec>().is_none()
        {
            return None;
        }
        node = node.children().into_iter().next()?;
    }
}

/// Whether an aggregate can run as a partial and a final one: plain groups, and aggregate
/// functions that merge partial states (no DISTINCT, no ORDER BY within them).
fn splits(agg: &AggregateExec) -> bool {
    agg.group_expr().is_single()
        && !agg.group_expr().expr().is_empty()
        && agg.limit_options().is_none()
        && agg
            .aggr_expr()
            .iter()
            .all(|f| !f.is_distinct() && f.order_bys().is_empty())
}

/// The split broadcast: stage `b.large` runs its scan into the join built on all of
/// `b.small`, then a partial aggregate hashed by the groups; the consumer's aggregate is the
/// final one over those buckets.
fn split_at_aggregate(
    stages: &mut [Stage],
    b: Broadcastable,
    large_input: &Arc<dyn ExecutionPlan>,
) -> Result<()> {
    let missing = || DataFusionError::Internal("no aggregate over the join to split".into());
    let consumer = &stages[b.consumer];
    let shape = moved_join(consumer, &BTreeSet::from([b.consumer])).ok_or_else(missing)?;
    let aggregate = shape.aggregate.ok_or_else(missing)?.clone();
    let agg = aggregate
        .downcast_ref::<AggregateExec>()
        .ok_or_else(missing)?;
    let job = shape
        .join
        .children()
        .into_iter()
        .find_map(|c| {
            c.downcast_ref::<ShuffleReaderExec>()
                .map(ShuffleReaderExec::job)
        })
        .ok_or_else(missing)?;
    let buckets = aggregate.output_partitioning().partition_count();
    let joined = rewrite(agg.input().clone(), b, large_input)?;
    let partial: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
        AggregateMode::Partial,
        agg.group_expr().clone(),
        agg.aggr_expr().to_vec(),
        agg.filter_expr().to_vec(),
        joined,
        agg.input_schema(),
    )?);
    let groups = agg.group_expr().as_final();
    let by_groups = groups.expr().iter().map(|(e, _)| e.clone()).collect();
    let exchange: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        partial,
        Partitioning::Hash(by_groups, buckets),
    )?);
    let tasks = large_input.output_partitioning().partition_count();
    let reader: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::with_properties(
        job,
        b.large as u32,
        ReadMode::Bucket,
        tasks,
        exchange.properties().clone(),
    ));
    let last: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
        AggregateMode::FinalPartitioned,
        groups,
        agg.aggr_expr().to_vec(),
        agg.filter_expr().to_vec(),
        reader,
        agg.input_schema(),
    )?);
    if last.schema() != aggregate.schema() {
        return Err(DataFusionError::Internal(
            "a split aggregate's output differs from the whole one's".into(),
        ));
    }
    let plan = replace_on_path(consumer.plan.clone(), &aggregate, last)?;
    let consumer = &mut stages[b.consumer];
    consumer.inputs = readers_in(&plan);
    consumer.plan = plan;
    let large = &mut stages[b.large];
    large.inputs = readers_in(&exchange);
    large.plan = exchange;
    large.broadcast = Some(b.small);
    Ok(())
}

/// `plan` with `target` (a node on the path `moved_join` walks) replaced by `with`.
fn replace_on_path(
    plan: Arc<dyn ExecutionPlan>,
    target: &Arc<dyn ExecutionPlan>,
    with: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if Arc::ptr_eq(&plan, target) {
        return Ok(with);
    }
    let mut children: Vec<Arc<dyn ExecutionPlan>> =
        plan.children().iter().map(|c| (*c).clone()).collect();
    let on_path = path_child(&plan);
    let child = children
        .get(on_path)
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("the aggregate to split is gone".into()))?;
    children[on_path] = replace_on_path(child, target, with)?;
    replace_children_if_necessary(plan, children)
}

/// The input `moved_join` walks down: a broadcast join's probe side, else the only input.
fn path_child(plan: &Arc<dyn ExecutionPlan>) -> usize {
    usize::from(plan.downcast_ref::<HashJoinExec>().is_some())
}

/// `plan` with the join `moved_join` found built on all of `b.small`'s output and probed
/// by `large_input`, every operator above it told of its new input.
fn rewrite(
    plan: Arc<dyn ExecutionPlan>,
    b: Broadcastable,
    large_input: &Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && *join.partition_mode() == PartitionMode::Partitioned
    {
        let oriented = if bucket_reader(join.left()) == Some(b.small) {
            plan.clone()
        } else {
            join.swap_inputs(PartitionMode::Partitioned)?
        };
        return oriented
            .transform_down(|node| {
                let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                    return Ok(Transformed::no(node));
                };
                let small: Arc<dyn ExecutionPlan> =
                    Arc::new(CoalescePartitionsExec::new(join.left().clone()));
                let built = join
                    .builder()
                    .with_partition_mode(PartitionMode::CollectLeft)
                    .with_new_children(vec![small, large_input.clone()])?
                    .recompute_properties()
                    .build_exec()?;
                // Not into the new inputs: the large side's own joins stay as they are.
                Ok(Transformed::new(built, true, TreeNodeRecursion::Jump))
            })
            .map(|t| t.data);
    }
    let children = plan.children();
    let mut rewritten: Vec<Arc<dyn ExecutionPlan>> =
        children.iter().map(|c| (*c).clone()).collect();
    let on_path = path_child(&plan);
    rewritten[on_path] = rewrite(rewritten[on_path].clone(), b, large_input)?;
    replace_children_if_necessary(plan, rewritten)
}

/// The stage a join input reads bucket by bucket, if that is all it is.
fn bucket_reader(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    plan.downcast_ref::<ShuffleReaderExec>()
        .filter(|r| r.mode() == ReadMode::Bucket)
        .map(|r| r.stage() as usize)
}

/// Join types whose every output row comes from a probe row, with the build (left) side
/// whole in each task: each task's output is its own probe rows' share.
fn probes_with_small_building(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Inner | JoinType::Right | JoinType::RightSemi | JoinType::RightAnti
    )
}

/// Whether stage `large` could run its rows straight into `consumer`'s join: a scan stage
/// hashing its output for that join alone.
fn can_absorb(stages: &[Stage], consumer: usize, large: usize) -> bool {
    let stage = &stages[large];
    stage.tasks > 0
        && stage.scan().is_some()
        && hash_exchange(&stage.plan).is_some()
        && matches!(stage.output, StageOutput::Kept)
        && stages
            .iter()
            .all(|s| s.id == consumer || !s.inputs.contains(&large))
}

/// Whether stage `from` reads stage `of`'s outputs, directly or through other stages.
pub(crate) fn reads(stages: &[Stage], from: usize, of: usize) -> bool {
    stages[from]
        .inputs
        .iter()
        .any(|&i| i == of || reads(stages, i, of))
}

/// About what stage `s` will make, before it runs: the least of what its scan reads (the
/// columns it reads of the stored bytes) and what its inputs make (a join of a key with a
/// foreign key makes at most the rows of the foreign side), as for a scan joined with a
/// broadcast here, or with a filtered small table (TPC-H Q21's line items of one nation's
/// suppliers). A guess, only for choosing which side of a join to hold back, and whether to.
pub fn estimated_bytes(stages: &[Stage], s: usize) -> u64 {
    let stage = &stages[s];
    let inputs = stage.inputs.iter().map(|&i| estimated_bytes(stages, i));
    match stage.scan() {
        Some(scan) => inputs.fold(scan.estimated_bytes(), u64::min),
        None => inputs.min().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::tests::{shown, staged};

    #[tokio::test]
    async fn a_join_moves_into_the_large_scan_building_on_the_small_side() {
        // Both tables too large for planning statistics: a partitioned join, then a partial
        // aggregate hashed for the final one.
        let mut plan =
            staged("SELECT big.v, count(*) FROM big JOIN mid ON big.k = mid.k GROUP BY big.v")
                .await;
        let found = broadcastable(&plan.stages, &BTreeSet::new());
        assert_eq!(found.len(), 1, "{}", crate::describe(&plan));
        let b = found[0];
        assert_eq!(plan.stages[b.small].scan().unwrap().dataset(), "mid");
        assert_eq!(plan.stages[b.large].scan().unwrap().dataset(), "big");
        let reader_of_consumer = plan
            .stages
            .iter()
            .position(|s| s.inputs.contains(&b.consumer))
            .expect("the final aggregate reads the join's stage");

        broadcast(&mut plan.stages, b).unwrap();
        let consumer = &plan.stages[b.consumer];
        let text = shown(&consumer.plan);
        assert_eq!(consumer.tasks, 8, "one task per block of big: {text}");
        assert_eq!(consumer.scan().unwrap().dataset(), "big", "{text}");
        assert_eq!(
            consumer.buckets(),
            6,
            "still hashed for the final aggregate: {text}"
        );
        assert!(text.contains("mode=CollectLeft"), "{text}");
        assert!(!text.contains("mode=Partitioned"), "{text}");
        assert_eq!(consumer.inputs, vec![b.small], "{text}");
        assert_eq!(consumer.broadcast, Some(b.small));
        assert_eq!(plan.stages[b.large].tasks, 0);
        assert!(broadcastable(&plan.stages, &BTreeSet::new()).is_empty());
        // The final aggregate's tasks read bucket j of each of the 8 tasks now.
        let mut producers = Vec::new();
        let _ = plan.stages[reader_of_consumer].plan.apply(|node| {
            if let Some(r) = node.downcast_ref::<ShuffleReaderExec>() {
                producers.push(r.stage() as usize);
                // A located reader of 8 outputs runs; 6 would be refused as "not run".
                let at = vec![
                    tern_exec::TaskLocation {
                        node: 1,
                        addr: String::new(),
                        rows: 1,
                        bytes: 8,
                    };
                    8
                ];
                assert_eq!(r.located(at).rows(), Some(8));
            }
            Ok(TreeNodeRecursion::Continue)
        });
        assert_eq!(producers, vec![b.consumer]);
    }

    #[tokio::test]
    async fn a_join_that_emits_unmatched_small_rows_stays_shuffled() {
        // A left join keeping every row of the smaller side: each task would emit the rows
        // of mid it did not match, though another task matched them.
        let plan = staged(
            "SELECT mid.v, count(big.v) FROM mid LEFT JOIN big ON big.k = mid.k GROUP BY mid.v",
        )
        .await;
        let text = crate::describe(&plan);
        assert!(text.contains("mode=Partitioned"), "{text}");
        assert!(
            broadcastable(&plan.stages, &BTreeSet::new()).is_empty(),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_aggregate_relying_on_the_joins_hashing_is_split_around_the_broadcast() {
        // Grouped by the join key: the aggregate runs on the join's hashed output directly,
        // and its stage sends the top rows to the coordinator's merge.
        let mut plan = staged(
            "SELECT big.k, sum(big.v) FROM big JOIN mid ON big.k = mid.k \
             GROUP BY big.k ORDER BY 2 DESC LIMIT 5",
        )
        .await;
        let text = crate::describe(&plan);
        assert!(text.contains("SinglePartitioned"), "{text}");
        // Unless the coordinator only merges the stage's outputs, their hashing may matter.
        assert!(broadcastable(&plan.stages, &BTreeSet::new()).is_empty());
        let gathered = crate::StageInputExec::gathered(&plan.root);
        let found = broadcastable(&plan.stages, &gathered);
        assert_eq!(found.len(), 1, "{text}");
        let b = found[0];
        assert!(b.split);
        let tasks = plan.stages[b.consumer].tasks;

        broadcast(&mut plan.stages, b).unwrap();
        let large = &plan.stages[b.large];
        let shown_large = shown(&large.plan);
        assert_eq!(large.tasks, 8, "{shown_large}");
        assert_eq!(large.buckets(), 6, "{shown_large}");
        assert!(shown_large.contains("mode=CollectLeft"), "{shown_large}");
        assert!(shown_large.contains("mode=Partial"), "{shown_large}");
        assert_eq!(large.inputs, vec![b.small]);
        let consumer = &plan.stages[b.consumer];
        let shown_consumer = shown(&consumer.plan);
        assert_eq!(consumer.tasks, tasks, "{shown_consumer}");
        assert!(
            shown_consumer.contains("FinalPartitioned"),
            "{shown_consumer}"
        );
        assert!(!shown_consumer.contains("HashJoinExec"), "{shown_consumer}");
        assert_eq!(consumer.inputs, vec![b.large]);
    }
}
