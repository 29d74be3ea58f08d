//! Large scans filtered by the join keys of the other side, chosen while a query runs.
//!
//! A partitioned join shuffles both of its inputs. When one input turns out small but the
//! join cannot become a broadcast ([`crate::broadcast`]: it emits rows of the small side
//! that no task alone can decide, as a semi, anti or outer join keeping the small side
//! does), the large input's scan can still drop every row whose keys the small side lacks
//! before it shuffles, as such a row can never match. TPC-H Q4 asks which of 58 thousand
//! orders have a late line item: its scan of six million line items keeps only those of
//! these orders, and the shuffle carries a few hundred thousand rows instead of millions.
//! The join itself is unchanged and still decides; the filter only removes rows it would
//! not have used. Databases call this a semi-join reduction (Spark: a runtime filter).
//!
//! The filter is a join of its own in the scan's tasks: a right semi join building on the
//! key columns of the small side's whole output, probed by the scan's rows. The small side
//! may be any input that passes rows of one shuffled stage through, with the key columns
//! unchanged (filters, projections, inner, semi and anti joins): its rows' keys are then
//! among that stage's, and filtering by more keys than needed is still right.
//!
//! Not for joins that emit the large side's unmatched rows (outer joins keeping it, anti
//! joins of it, NOT IN's null-aware anti join, mark joins).

use std::sync::Arc;

use tern_exec::datafusion::common::JoinType;
use tern_exec::datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use tern_exec::datafusion::error::{DataFusionError, Result};
use tern_exec::datafusion::physical_expr::PhysicalExpr;
use tern_exec::datafusion::physical_expr::expressions::Column;
use tern_exec::datafusion::physical_plan::aggregates::AggregateExec;
use tern_exec::datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use tern_exec::datafusion::physical_plan::filter::FilterExec;
use tern_exec::datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use tern_exec::datafusion::physical_plan::projection::ProjectionExec;
use tern_exec::datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};
use tern_exec::{ReadMode, ShuffleReaderExec};

use crate::broadcast::{estimated_bytes, reads};
use crate::stages::{Stage, StageOutput, find_scan, hash_exchange, readers_in};

/// The most a stage may have made (Arrow IPC bytes) for every batch of a large scan's tasks
/// to fetch all of it and build a hash table on its keys. Larger than for a broadcast, as
/// the table holds the keys only (TPC-H Q10's small side, 57 thousand orders with their
/// customers' names and addresses, is 13 MB).
pub const KEY_FILTER_BYTES: u64 = 32 << 20;

/// A partitioned join in stage `consumer` whose input from stage `large`, a scan, could be
/// filtered by the keys of stage `small`'s output.
#[derive(Debug, Clone)]
pub struct KeyFilter {
    pub consumer: usize,
    pub small: usize,
    pub large: usize,
    /// A reader of all of `small`'s output, as the consumer reads it.
    small_reader: Arc<dyn ExecutionPlan>,
    /// The join keys: columns of `small_reader`, and the matching columns of what the large
    /// stage hashes.
    small_keys: Vec<usize>,
    large_keys: Vec<usize>,
    null_equality: tern_exec::datafusion::common::NullEquality,
}

/// Whether the large side should wait for the small side's keys: only when that is expected
/// to make at most half as much (see [`estimated_bytes`]).
pub fn worth_waiting(stages: &[Stage], f: &KeyFilter) -> bool {
    estimated_bytes(stages, f.small).saturating_mul(2) <= estimated_bytes(stages, f.large)
}

/// Whether stage `f.small`, having made `rows`, likely lacks most keys of the large side: it
/// kept at most a quarter of the rows of the largest table it read. Line items joined with
/// all the orders would keep every row, at the cost of a hash table of every order in each
/// task. (A guess: an aggregate by the join key keeps few rows and every key.)
pub fn selective(stages: &[Stage], f: &KeyFilter, rows: u64) -> bool {
    rows.saturating_mul(4) <= largest_table_rows(stages, f.small)
}

/// The rows of the largest stored table stage `s` reads, itself or through its inputs.
fn largest_table_rows(stages: &[Stage], s: usize) -> u64 {
    let stage = &stages[s];
    let own = stage
        .scan()
        .map_or(0, |scan| scan.partitions().iter().map(|p| p.rows).sum());
    stage
        .inputs
        .iter()
        .map(|&i| largest_table_rows(stages, i))
        .fold(own, u64::max)
}

/// The joins of `stages` whose larger input, a scan stage, could be filtered by the keys of
/// the smaller one (see the module's documentation). For one join, a filter by the keys of
/// the stage the smaller input is comes first, then filters by the same keys in the stages
/// that one read them from (see [`deeper_keys`]).
pub fn filterable(stages: &[Stage]) -> Vec<KeyFilter> {
    let mut found = Vec::new();
    for consumer in stages.iter().filter(|s| s.scan().is_none()) {
        let _ = consumer.plan.apply(|node| {
            if let Some(join) = node.downcast_ref::<HashJoinExec>() {
                found.extend(filter_for(stages, consumer.id, join));
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    found
}

/// The filters for one side of `join`, if either side can take one (the one expected to be
/// larger when both could): by the keys of the other side's stage, then of earlier stages.
fn filter_for(stages: &[Stage], consumer: usize, join: &HashJoinExec) -> Vec<KeyFilter> {
    if *join.partition_mode() != PartitionMode::Partitioned || join.null_aware {
        return Vec::new();
    }
    let columns = |exprs: Vec<&Arc<dyn PhysicalExpr>>| -> Option<Vec<usize>> {
        exprs
            .into_iter()
            .map(|e| e.downcast_ref::<Column>().map(Column::index))
            .collect()
    };
    let (Some(left_keys), Some(right_keys)) = (
        columns(join.on().iter().map(|(l, _)| l).collect()),
        columns(join.on().iter().map(|(_, r)| r).collect()),
    ) else {
        return Vec::new();
    };
    let sides = [
        (join.right(), &right_keys, join.left(), &left_keys, true),
        (join.left(), &left_keys, join.right(), &right_keys, false),
    ];
    sides
        .into_iter()
        .filter_map(
            |(large_side, large_keys, small_side, small_keys, large_is_right)| {
                if emits_unmatched(*join.join_type(), large_is_right) {
                    return None;
                }
                let (large, large_keys) = large_source(large_side, large_keys.clone())?;
                if !can_filter(stages, consumer, large) {
                    return None;
                }
                let mut source = key_source(small_side, small_keys.clone());
                let mut filters = Vec::new();
                while let Some((small_reader, small_keys)) = source {
                    let small = small_reader.downcast_ref::<ShuffleReaderExec>()?.stage() as usize;
                    if small == large
                        || reads(stages, small, large)
                        || estimated_bytes(stages, small) >= estimated_bytes(stages, large)
                    {
                        break;
                    }
                    source = deeper_keys(stages, small, &small_keys);
                    filters.push(KeyFilter {
                        consumer,
                        small,
                        large,
                        small_reader,
                        small_keys,
                        large_keys: large_keys.clone(),
                        null_equality: join.null_equality(),
                    });
                }
                (!filters.is_empty()).then_some(filters)
            },
        )
        .max_by_key(|filters| estimated_bytes(stages, filters[0].large))
        .unwrap_or_default()
}

/// The same keys one stage further down: when stage `small` is not a scan and hashes rows
/// whose columns `keys` come unchanged from an earlier stage's output (through its joins,
/// filters and projections), a reader of that stage and the columns there. Those keys are
/// known sooner and include every key of `small`'s: TPC-H Q10's line items can be filtered
/// by the orders of the quarter as soon as they are read, instead of once they are joined
/// with their customers.
fn deeper_keys(
    stages: &[Stage],
    small: usize,
    keys: &[usize],
) -> Option<(Arc<dyn ExecutionPlan>, Vec<usize>)> {
    let stage = &stages[small];
    if stage.scan().is_some() {
        return None;
    }
    key_source(hash_exchange(&stage.plan)?.input(), keys.to_vec())
}

/// The stage whose bucket reader is under `plan`, the large side of a join, and the columns
/// `keys` of `plan`'s rows as columns of what that stage hashes: through filters,
/// projections and final aggregates grouping by the keys (TPC-H Q17's average quantity per
/// part: dropping every line item of a part the other side lacks drops that part's group).
fn large_source(plan: &Arc<dyn ExecutionPlan>, keys: Vec<usize>) -> Option<(usize, Vec<usize>)> {
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        return (reader.mode() == ReadMode::Bucket).then_some((reader.stage() as usize, keys));
    }
    let (input, keys) = column_source(plan, keys)?;
    large_source(input, keys)
}

/// The input of `plan` that its columns `keys` are columns of, unchanged, and where: through
/// filters, projections and aggregates grouping by them (their rows' keys are among the
/// input's, and every input row of a key is in that key's group).
fn column_source(
    plan: &Arc<dyn ExecutionPlan>,
    keys: Vec<usize>,
) -> Option<(&Arc<dyn ExecutionPlan>, Vec<usize>)> {
    let column = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Column>().map(Column::index);
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let keys = match filter.projection() {
            None => keys,
            Some(projection) => keys
                .iter()
                .map(|&k| projection.get(k).copied())
                .collect::<Option<_>>()?,
        };
        return Some((filter.input(), keys));
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let exprs = projection.expr();
        let keys = keys
            .iter()
            .map(|&k| column(&exprs.get(k)?.expr))
            .collect::<Option<_>>()?;
        return Some((projection.input(), keys));
    }
    let agg = plan.downcast_ref::<AggregateExec>()?;
    let groups = agg.group_expr();
    if !groups.is_single() {
        return None;
    }
    let keys = keys
        .iter()
        .map(|&k| column(&groups.expr().get(k)?.0))
        .collect::<Option<_>>()?;
    Some((agg.input(), keys))
}

/// `plan` with `filter_on` (which makes a filter of rows whose `keys` are these columns)
/// put below the partial aggregates and projections the columns can be followed through,
/// so they see only the rows kept (above filters, which are cheaper than a hash lookup).
fn filtered_below(
    plan: Arc<dyn ExecutionPlan>,
    keys: Vec<usize>,
    filter_on: &dyn Fn(Arc<dyn ExecutionPlan>, &[usize]) -> Result<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let below = column_source(&plan, keys.clone())
        .filter(|(input, _)| {
            plan.downcast_ref::<FilterExec>().is_none() && find_scan(input).is_some()
        })
        .map(|(input, keys)| (input.clone(), keys));
    match below {
        Some((input, keys)) => {
            let input = filtered_below(input, keys, filter_on)?;
            replace_children_if_necessary(plan, vec![input])
        }
        None => filter_on(plan, &keys),
    }
}

/// Whether a join of this type emits rows of its large input that matched nothing (which a
/// filter by the small side's keys would drop).
fn emits_unmatched(join_type: JoinType, large_is_right: bool) -> bool {
    if large_is_right {
        matches!(
            join_type,
            JoinType::Right | JoinType::Full | JoinType::RightAnti | JoinType::RightMark
        )
    } else {
        matches!(
            join_type,
            JoinType::Left | JoinType::Full | JoinType::LeftAnti | JoinType::LeftMark
        )
    }
}

/// The shuffle reader under `plan` whose rows `plan` passes through with the columns `keys`
/// unchanged, and where those columns are in the reader's rows.
fn key_source(
    plan: &Arc<dyn ExecutionPlan>,
    keys: Vec<usize>,
) -> Option<(Arc<dyn ExecutionPlan>, Vec<usize>)> {
    if plan.downcast_ref::<ShuffleReaderExec>().is_some() {
        return Some((plan.clone(), keys));
    }
    let Some(join) = plan.downcast_ref::<HashJoinExec>() else {
        let (input, keys) = column_source(plan, keys)?;
        return key_source(input, keys);
    };
    let keys: Vec<usize> = match &join.projection {
        None => keys,
        Some(projection) => keys
            .iter()
            .map(|&k| projection.get(k).copied())
            .collect::<Option<_>>()?,
    };
    let left_width = join.left().schema().fields().len();
    match join.join_type() {
        JoinType::LeftSemi | JoinType::LeftAnti => key_source(join.left(), keys),
        JoinType::RightSemi | JoinType::RightAnti => key_source(join.right(), keys),
        // Every output row matched: its keys are among either input's.
        JoinType::Inner if keys.iter().all(|&k| k < left_width) => key_source(join.left(), keys),
        JoinType::Inner if keys.iter().all(|&k| k >= left_width) => {
            key_source(join.right(), keys.iter().map(|&k| k - left_width).collect())
        }
        _ => None,
    }
}

/// Whether stage `large` is a scan hashing its output for `consumer` alone, which reads it
/// once, and nothing was done to it yet.
fn can_filter(stages: &[Stage], consumer: usize, large: usize) -> bool {
    let stage = &stages[large];
    let mut reads_in_consumer = 0;
    let _ = stages[consumer].plan.apply(|node| {
        if node
            .downcast_ref::<ShuffleReaderExec>()
            .is_some_and(|r| r.stage() as usize == large)
        {
            reads_in_consumer += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    stage.tasks > 0
        && stage.scan().is_some()
        && stage.broadcast.is_none()
        && stage.filtered_by.is_none()
        && hash_exchange(&stage.plan).is_some()
        && matches!(stage.output, StageOutput::Kept)
        && reads_in_consumer == 1
        && stages
            .iter()
            .all(|s| s.id == consumer || !s.inputs.contains(&large))
}

/// Filter stage `f.large`'s rows, before it hashes them, by the keys of all of `f.small`'s
/// output. Nothing changes on an error.
pub fn filter(stages: &mut [Stage], f: &KeyFilter) -> Result<()> {
    let stage = &stages[f.large];
    let exchange = hash_exchange(&stage.plan)
        .ok_or_else(|| DataFusionError::Internal("a scan stage without its exchange".into()))?;
    let rows = exchange.input().clone();
    // Only the key columns cross the network: the producing nodes cut their buckets down.
    let keys = f
        .small_reader
        .downcast_ref::<ShuffleReaderExec>()
        .ok_or_else(|| DataFusionError::Internal("a key filter reads no stage output".into()))?
        .projected(f.small_keys.clone())?;
    let build: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(Arc::new(keys)));
    let filter_on = |rows: Arc<dyn ExecutionPlan>, keys: &[usize]| {
        let schema = rows.schema();
        let on = keys
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let built: Arc<dyn PhysicalExpr> =
                    Arc::new(Column::new(build.schema().field(i).name(), i));
                let probed: Arc<dyn PhysicalExpr> =
                    Arc::new(Column::new(schema.field(k).name(), k));
                (built, probed)
            })
            .collect();
        let filtered: Arc<dyn ExecutionPlan> = Arc::new(HashJoinExec::try_new(
            build.clone(),
            rows,
            on,
            None,
            &JoinType::RightSemi,
            None,
            PartitionMode::CollectLeft,
            f.null_equality,
            false,
        )?);
        if filtered.schema() != schema {
            return Err(DataFusionError::Internal(
                "a key filter changed the rows' columns".into(),
            ));
        }
        Ok(filtered)
    };
    let filtered = filtered_below(rows, f.large_keys.clone(), &filter_on)?;
    let plan = replace_children_if_necessary(stage.plan.clone(), vec![filtered])?;
    let stage = &mut stages[f.large];
    stage.inputs = readers_in(&plan);
    stage.plan = plan;
    stage.filtered_by = Some(f.small);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::tests::{shown, staged};

    #[tokio::test]
    async fn a_semi_joins_large_scan_keeps_only_rows_with_the_small_sides_keys() {
        // Which rows of mid have a match in big: the join emits mid's rows, so it cannot be
        // a broadcast of mid, but big's scan may drop the rows whose keys mid lacks.
        let mut plan =
            staged("SELECT mid.v FROM mid WHERE EXISTS (SELECT 1 FROM big WHERE big.k = mid.k)")
                .await;
        let text = crate::describe(&plan);
        assert!(text.contains("mode=Partitioned"), "{text}");
        assert!(
            crate::broadcast::broadcastable(&plan.stages, &Default::default()).is_empty(),
            "{text}"
        );
        let found = filterable(&plan.stages);
        assert_eq!(found.len(), 1, "{text}");
        let f = found[0].clone();
        assert_eq!(plan.stages[f.small].scan().unwrap().dataset(), "mid");
        assert_eq!(plan.stages[f.large].scan().unwrap().dataset(), "big");
        let (tasks, buckets) = (plan.stages[f.large].tasks, plan.stages[f.large].buckets());
        // Worth it when mid kept few of its 2 million rows, not when it kept half.
        assert!(selective(&plan.stages, &f, 1_000));
        assert!(!selective(&plan.stages, &f, 1_000_000));

        filter(&mut plan.stages, &f).unwrap();
        let large = &plan.stages[f.large];
        let shown_large = shown(&large.plan);
        assert!(shown_large.contains("join_type=RightSemi"), "{shown_large}");
        assert!(shown_large.contains("mode=CollectLeft"), "{shown_large}");
        assert_eq!((large.tasks, large.buckets()), (tasks, buckets));
        assert_eq!(large.inputs, vec![f.small]);
        assert_eq!(large.filtered_by, Some(f.small));
        assert!(large.what().contains("filtered by the keys of stage"));
        // The consumer is as it was; the large scan is filtered once.
        assert!(crate::describe(&plan).contains("mode=Partitioned"));
        assert!(filterable(&plan.stages).is_empty());
    }

    #[tokio::test]
    async fn a_scan_may_be_filtered_by_keys_a_stage_below_the_small_side() {
        // The small side is a join of mid and other (a stage of its own, on v); its k comes
        // unchanged from mid's scan, so big may be filtered as soon as mid has run.
        let plan = staged(
            "SELECT x.v FROM (SELECT mid.k, mid.v FROM mid JOIN other ON mid.v = other.v) x \
             WHERE EXISTS (SELECT 1 FROM big WHERE big.k = x.k)",
        )
        .await;
        let text = crate::describe(&plan);
        // (The join of mid and other may filter other by mid's keys too.)
        let found: Vec<KeyFilter> = filterable(&plan.stages)
            .into_iter()
            .filter(|f| plan.stages[f.large].scan().unwrap().dataset() == "big")
            .collect();
        let smalls: Vec<Option<&str>> = found
            .iter()
            .map(|f| plan.stages[f.small].scan().map(|s| s.dataset()))
            .collect();
        assert_eq!(smalls, vec![None, Some("mid")], "{text}");
        let mut plan = plan;
        filter(&mut plan.stages, &found[1]).unwrap();
        let large = &plan.stages[found[1].large];
        assert_eq!(large.inputs, vec![found[1].small]);
        assert!(
            filterable(&plan.stages)
                .iter()
                .all(|f| f.large != found[1].large)
        );
    }

    #[tokio::test]
    async fn a_join_keeping_the_large_sides_unmatched_rows_filters_nothing() {
        for sql in [
            "SELECT big.v, mid.v FROM big LEFT JOIN mid ON big.k = mid.k",
            "SELECT big.v FROM big WHERE NOT EXISTS (SELECT 1 FROM mid WHERE mid.k = big.k)",
            "SELECT big.v FROM big WHERE big.k NOT IN (SELECT v FROM mid)",
        ] {
            let plan = staged(sql).await;
            let text = crate::describe(&plan);
            assert!(filterable(&plan.stages).is_empty(), "{sql}\n{text}");
        }
    }

    #[tokio::test]
    async fn keys_are_followed_through_joins_that_pass_one_sides_rows() {
        // Both joins on k, in one stage: big's scan is filtered by mid's keys, though the
        // join it feeds reads mid's rows after a semi join with other.
        let plan = staged(
            "SELECT mid.v FROM mid \
             WHERE EXISTS (SELECT 1 FROM other WHERE other.k = mid.k) \
               AND EXISTS (SELECT 1 FROM big WHERE big.k = mid.k)",
        )
        .await;
        let text = crate::describe(&plan);
        let found = filterable(&plan.stages);
        assert!(
            found
                .iter()
                .any(|f| plan.stages[f.large].scan().unwrap().dataset() == "big"
                    && plan.stages[f.small]
                        .scan()
                        .is_some_and(|s| s.dataset() == "mid")),
            "{found:?}\n{text}"
        );
    }

    #[tokio::test]
    async fn an_aggregate_by_the_join_key_is_filtered_below_its_partial_half() {
        // big's per-key sums, joined with the few keys of mid: big's scan keeps only rows of
        // those keys before its partial aggregate.
        let mut plan = staged(
            "SELECT mid.v, s.total FROM mid JOIN \
             (SELECT k, sum(v) AS total FROM big GROUP BY k) s ON s.k = mid.k",
        )
        .await;
        let text = crate::describe(&plan);
        let found = filterable(&plan.stages);
        let f = found
            .iter()
            .find(|f| plan.stages[f.large].scan().unwrap().dataset() == "big")
            .unwrap_or_else(|| panic!("{found:?}\n{text}"))
            .clone();
        filter(&mut plan.stages, &f).unwrap();
        let shown_large = shown(&plan.stages[f.large].plan);
        let (semi, partial) = (
            shown_large.find("RightSemi").expect(&shown_large),
            shown_large.find("mode=Partial").expect(&shown_large),
        );
        assert!(
            partial < semi,
            "the filter under the partial aggregate: {shown_large}"
        );
    }
}
