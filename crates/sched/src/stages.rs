//! Cutting a physical plan into stages.
//!
//! A *stage* is a subtree that runs as independent tasks, one per output partition: its
//! leaves are one stored scan ([`PartitionScanExec`], a task per stored partition, each on a
//! node holding the block) or the outputs of earlier stages ([`ShuffleReaderExec`], tasks on
//! the least busy nodes), and none of its operators mixes partitions. The plan is cut at the
//! exchanges DataFusion planned:
//!
//! - a hash repartition: the stage below splits its output by hash into buckets kept on the
//!   nodes that computed them; task `j` of the stage above reads bucket `j` of every task
//!   (partial aggregates below, final ones above; both sides of a partitioned join);
//! - a gather (coalesce, or a sort-preserving merge): the stage below keeps its output whole;
//!   whoever gathers reads every task's output. A gather that feeds the build side of a join
//!   runs inside the join's stage, so every join task reads the whole small side (a
//!   broadcast).
//!
//! What cannot run as tasks (the final merge, a limit, single-partition work, operators that
//! read a scalar subquery's value) runs on the coordinator, with each stage it reads replaced
//! by a [`StageInputExec`] that yields the stage's task outputs sent back with their answers.

use std::fmt;
use std::sync::{Arc, Mutex};

use tern_exec::arrow::record_batch::RecordBatch;
use tern_exec::datafusion::common::JoinType;
use tern_exec::datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use tern_exec::datafusion::error::{DataFusionError, Result};
use tern_exec::datafusion::execution::TaskContext;
use tern_exec::datafusion::physical_expr::PhysicalExpr;
use tern_exec::datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use tern_exec::datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use tern_exec::datafusion::physical_plan::joins::{
    HashJoinExec, NestedLoopJoinExec, PartitionMode, PiecewiseMergeJoinExec,
};
use tern_exec::datafusion::physical_plan::memory::MemoryStream;
use tern_exec::datafusion::physical_plan::repartition::RepartitionExec;
use tern_exec::datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use tern_exec::datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream, displayable, replace_children_if_necessary,
};
use tern_exec::{
    PartitionScanExec, ReadMode, ShuffleReaderExec, TaskLocation, build_on_smaller_sides,
};

/// Where a stage's task outputs go.
#[derive(Debug, Clone)]
pub enum StageOutput {
    /// Back to the coordinator with each task's answer.
    Coordinator(Arc<StageInputExec>),
    /// Kept on the node that ran the task, for a later stage to fetch.
    Kept,
}

/// One stage: a task per output partition of `plan`.
#[derive(Debug, Clone)]
pub struct Stage {
    pub id: usize,
    /// With a kept output and a hash repartition at its root, the task runs the
    /// repartition's input and splits it into the repartition's buckets.
    pub plan: Arc<dyn ExecutionPlan>,
    pub tasks: usize,
    pub output: StageOutput,
    /// Stages whose outputs this one reads.
    pub inputs: Vec<usize>,
    /// The stage whose whole output a join in this stage builds on, when that join was made
    /// a broadcast while the query ran (see [`crate::broadcast`]).
    pub broadcast: Option<usize>,
    /// The stage by whose join keys this scan's rows are filtered before they are hashed,
    /// when that was chosen while the query ran (see [`crate::keyfilter`]).
    pub filtered_by: Option<usize>,
}

/// A cut plan: the stages, in an order where a stage comes after the stages it reads, and
/// what the coordinator runs over their outputs.
#[derive(Debug)]
pub struct StagePlan {
    pub root: Arc<dyn ExecutionPlan>,
    pub stages: Vec<Stage>,
    /// The plan as DataFusion made it, before the cut (scalar subqueries are answered on it
    /// and it is cut again: see [`crate::subquery`]).
    pub whole: Arc<dyn ExecutionPlan>,
}

impl Stage {
    /// The stored scan the stage reads, if it reads one (its tasks then go to holders).
    pub fn scan(&self) -> Option<&PartitionScanExec> {
        find_scan(&self.plan)
    }

    /// The buckets each task splits its output into (1 unless hashed).
    pub fn buckets(&self) -> usize {
        match hash_exchange(&self.plan) {
            Some(r) if matches!(self.output, StageOutput::Kept) => {
                r.partitioning().partition_count()
            }
            _ => 1,
        }
    }

    /// The plan tasks `tasks` run and the partition of it that is each task: a scan
    /// stage's scan is narrowed to the tasks' blocks (then partitions 0, 1, …), every
    /// shuffle reader is told where the tasks of its stage ran and how many rows they made,
    /// and joins build on their smaller input by those rows.
    pub fn task_plan(
        &self,
        tasks: &[usize],
        locations: &[Vec<TaskLocation>],
    ) -> Result<(Arc<dyn ExecutionPlan>, Vec<usize>)> {
        let located = self
            .plan
            .clone()
            .transform_up(|node| {
                let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() else {
                    return Ok(Transformed::no(node));
                };
                let at = locations
                    .get(reader.stage() as usize)
                    .cloned()
                    .unwrap_or_default();
                Ok(Transformed::yes(
                    Arc::new(reader.located(at)) as Arc<dyn ExecutionPlan>
                ))
            })?
            .data;
        let located = build_on_smaller_sides(located)?;
        if self.scan().is_some() {
            Ok((narrow(located, tasks)?, (0..tasks.len()).collect()))
        } else {
            Ok((located, tasks.to_vec()))
        }
    }

    /// One line for `--analyze`.
    pub fn what(&self) -> String {
        let mut reads = match self.scan() {
            Some(scan) => format!("scan of {}", scan.dataset()),
            None => format!("over stage {}", join_stages(&self.inputs)),
        };
        if let Some(small) = self.broadcast {
            reads.push_str(&format!(" joined with all of stage {}", small + 1));
        }
        if let Some(small) = self.filtered_by {
            reads.push_str(&format!(" filtered by the keys of stage {}", small + 1));
        }
        let to = match (&self.output, self.buckets()) {
            (StageOutput::Coordinator(_), _) => "to coordinator".to_string(),
            (StageOutput::Kept, 1) => "kept".to_string(),
            (StageOutput::Kept, n) => format!("hashed into {n}"),
        };
        format!("{reads}, {to}")
    }
}

fn join_stages(ids: &[usize]) -> String {
    ids.iter()
        .map(|i| (i + 1).to_string())
        .collect::<Vec<_>>()
        .join("+")
}

pub(crate) fn hash_exchange(plan: &Arc<dyn ExecutionPlan>) -> Option<&RepartitionExec> {
    plan.downcast_ref::<RepartitionExec>()
        .filter(|r| matches!(r.partitioning(), Partitioning::Hash(..)) && !r.preserve_order())
}

pub(crate) fn is_gather(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan.downcast_ref::<SortPreservingMergeExec>().is_some()
}

pub(crate) fn find_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&PartitionScanExec> {
    if let Some(scan) = plan.downcast_ref::<PartitionScanExec>() {
        return Some(scan);
    }
    plan.children().into_iter().find_map(find_scan)
}

pub(crate) fn readers_in(plan: &Arc<dyn ExecutionPlan>) -> Vec<usize> {
    let mut ids = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            ids.push(reader.stage() as usize);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ids.sort();
    ids.dedup();
    ids
}

/// Whether an operator's expressions read a scalar subquery's value, which lives in a
/// surrounding operator on the coordinator and cannot travel with the stage.
pub(crate) fn uses_scalar_subquery(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    let _ = plan.apply_expressions(&mut |expr| {
        let _ = expr.apply(|e| {
            found |= e.downcast_ref::<ScalarSubqueryExpr>().is_some();
            Ok(if found {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        });
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Whether a join's output partitions share state: with one build side for every partition
/// (DataFusion's `CollectLeft`, nested-loop and piecewise joins), left, full, semi, anti and
/// mark joins emit the build rows that matched, or did not, once the last partition is done,
/// which a task on its own never knows.
fn shares_build_side(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let emits_build_rows_at_end = |t: &JoinType| {
        matches!(
            t,
            JoinType::Left
                | JoinType::LeftAnti
                | JoinType::LeftSemi
                | JoinType::LeftMark
                | JoinType::Full
        )
    };
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        return *join.partition_mode() == PartitionMode::CollectLeft
            && emits_build_rows_at_end(join.join_type());
    }
    if let Some(join) = plan.downcast_ref::<NestedLoopJoinExec>() {
        return emits_build_rows_at_end(join.join_type());
    }
    plan.downcast_ref::<PiecewiseMergeJoinExec>().is_some()
}

/// Whether `plan` can run as independent tasks, one per output partition, and if so how
/// many stored scans it reads (at most one).
fn runs_as_tasks(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    if plan.downcast_ref::<PartitionScanExec>().is_some() {
        return Some(1);
    }
    if plan.downcast_ref::<ShuffleReaderExec>().is_some() {
        return Some(0);
    }
    let children = plan.children();
    if children.is_empty()
        || plan.downcast_ref::<RepartitionExec>().is_some()
        || uses_scalar_subquery(plan)
        || shares_build_side(plan)
    {
        return None;
    }
    if is_gather(plan) {
        // Gathering the outputs of an earlier stage: one task reads them all.
        return children[0].downcast_ref::<ShuffleReaderExec>().map(|_| 0);
    }
    let partitions = plan.output_partitioning().partition_count();
    let mut scans = 0;
    let mut broadcast_only = true;
    for child in children {
        let child_scans = runs_as_tasks(child)?;
        let child_partitions = child.output_partitioning().partition_count();
        if child_partitions == partitions {
            scans += child_scans;
            broadcast_only &= child_scans > 0 || partitions == 1;
        } else if child_partitions != 1 || child_scans > 0 {
            return None;
        }
    }
    // A scan's task reads one block: besides it, only whole (single-partition) inputs.
    match scans {
        0 => Some(0),
        1 if broadcast_only => Some(1),
        _ => None,
    }
}

/// The same plan with its scan narrowed to stored partitions `these`.
fn narrow(plan: Arc<dyn ExecutionPlan>, these: &[usize]) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(scan) = plan.downcast_ref::<PartitionScanExec>() {
        return Ok(Arc::new(scan.only_these(these)?));
    }
    let children = plan
        .children()
        .into_iter()
        .map(|c| narrow(c.clone(), these))
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(plan, children)
}

/// Cut `plan` into stages for job `job` (shuffle readers name it when they fetch).
pub fn cut(plan: Arc<dyn ExecutionPlan>, job: u64) -> Result<StagePlan> {
    let mut stages = Vec::new();
    let lifted = lift(plan.clone(), job, &mut stages)?;
    let root = settle(lifted, &mut stages)?;
    Ok(StagePlan {
        root,
        stages,
        whole: plan,
    })
}

/// Add a stage running `plan` whose outputs are kept on their nodes, and return the reader
/// that stands for it in the plan above (`mode`, looking like `looks_like`).
fn kept_stage(
    stages: &mut Vec<Stage>,
    job: u64,
    plan: Arc<dyn ExecutionPlan>,
    tasks: usize,
    inputs_of: &Arc<dyn ExecutionPlan>,
    mode: ReadMode,
    looks_like: &Arc<dyn ExecutionPlan>,
) -> Arc<dyn ExecutionPlan> {
    let id = stages.len();
    stages.push(Stage {
        id,
        plan,
        tasks,
        output: StageOutput::Kept,
        inputs: readers_in(inputs_of),
        broadcast: None,
        filtered_by: None,
    });
    Arc::new(ShuffleReaderExec::with_properties(
        job,
        id as u32,
        mode,
        tasks,
        looks_like.properties().clone(),
    ))
}

/// Bottom up: every exchange over something that runs as tasks becomes a stage boundary.
fn lift(
    plan: Arc<dyn ExecutionPlan>,
    job: u64,
    stages: &mut Vec<Stage>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let children = plan
        .children()
        .into_iter()
        .map(|c| lift(c.clone(), job, stages))
        .collect::<Result<Vec<_>>>()?;
    let mut plan = replace_children_if_necessary(plan, children)?;
    // A single-partition input read whole by every partition of a join (a small table's
    // scan as a broadcast build side, with no gather in between): its own stage, so the
    // join's tasks each read its one output. Likewise the scans of a join of small tables
    // (a filtered nation joined with supplier first), so that join runs in the tasks of
    // whatever reads it.
    let partitions = plan.output_partitioning().partition_count();
    let children = plan.children();
    let scanning = children.iter().filter(|c| find_scan(c).is_some()).count();
    if children.len() > 1 && (partitions > 1 || scanning > 1) {
        let mut changed = false;
        let mut inputs = Vec::with_capacity(children.len());
        for child in children {
            let whole = child.output_partitioning().partition_count() == 1
                && find_scan(child).is_some()
                && runs_as_tasks(child).is_some();
            if !whole {
                inputs.push(child.clone());
                continue;
            }
            inputs.push(kept_stage(
                stages,
                job,
                child.clone(),
                1,
                child,
                ReadMode::PerTask,
                child,
            ));
            changed = true;
        }
        if changed {
            plan = replace_children_if_necessary(plan, inputs)?;
        }
    }
    if let Some(exchange) = hash_exchange(&plan) {
        let input = exchange.input();
        if runs_as_tasks(input).is_some() {
            let tasks = input.output_partitioning().partition_count();
            return Ok(kept_stage(
                stages,
                job,
                plan.clone(),
                tasks,
                input,
                ReadMode::Bucket,
                &plan,
            ));
        }
    }
    if is_gather(&plan) {
        let input = plan.children()[0].clone();
        if input.downcast_ref::<ShuffleReaderExec>().is_none() && runs_as_tasks(&input).is_some() {
            let tasks = input.output_partitioning().partition_count();
            let reader = kept_stage(
                stages,
                job,
                input.clone(),
                tasks,
                &input,
                ReadMode::PerTask,
                &input,
            );
            return replace_children_if_necessary(plan, vec![reader]);
        }
    }
    Ok(plan)
}

/// Top down from the root: what the coordinator runs. The largest subtrees that run as tasks
/// become stages sending their outputs here; a shuffle read here becomes the same.
fn settle(plan: Arc<dyn ExecutionPlan>, stages: &mut Vec<Stage>) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        let stage = &mut stages[reader.stage() as usize];
        if reader.mode() == ReadMode::PerTask {
            let input = Arc::new(StageInputExec::new(stage.id, &stage.plan));
            stage.output = StageOutput::Coordinator(input.clone());
            return Ok(input);
        }
        // A hash exchange here: the tasks send their rows, the coordinator repartitions.
        let exchange = stage.plan.clone();
        let below = exchange.children()[0].clone();
        let input = Arc::new(StageInputExec::new(stage.id, &below));
        stage.plan = below;
        stage.output = StageOutput::Coordinator(input.clone());
        return replace_children_if_necessary(exchange, vec![input]);
    }
    let partitions = plan.output_partitioning().partition_count();
    match runs_as_tasks(&plan) {
        // One partition of shuffled rows is the coordinator's to finish.
        Some(0) if partitions == 1 => {}
        Some(_) => {
            let id = stages.len();
            let input = Arc::new(StageInputExec::new(id, &plan));
            stages.push(Stage {
                id,
                plan: plan.clone(),
                tasks: partitions,
                output: StageOutput::Coordinator(input.clone()),
                inputs: readers_in(&plan),
                broadcast: None,
                filtered_by: None,
            });
            return Ok(input);
        }
        None => {}
    }
    let children = plan
        .children()
        .into_iter()
        .map(|c| settle(c.clone(), stages))
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(plan, children)
}

/// Human-readable stages: each stage, then what the coordinator runs.
pub fn describe(staged: &StagePlan) -> String {
    let mut out = String::new();
    for stage in &staged.stages {
        let placed = match stage.scan() {
            Some(scan) => format!(
                "one per partition of {}, each on a holder of its block",
                scan.dataset()
            ),
            None => format!(
                "on the least busy nodes, reading the outputs of stage {}",
                join_stages(&stage.inputs)
            ),
        };
        let output = match (&stage.output, stage.buckets()) {
            (StageOutput::Coordinator(_), _) => "outputs sent to the coordinator".to_string(),
            (StageOutput::Kept, 1) => "outputs kept on their nodes".to_string(),
            (StageOutput::Kept, n) => {
                format!("outputs hashed into {n} buckets kept on their nodes")
            }
        };
        out.push_str(&format!(
            "stage {}: {} tasks, {placed}; {output}\n{}\n",
            stage.id + 1,
            stage.tasks,
            indent(&displayable(stage.plan.as_ref()).indent(true).to_string())
        ));
    }
    out.push_str(&format!(
        "final stage: on the coordinator\n{}",
        indent(&displayable(staged.root.as_ref()).indent(true).to_string())
    ));
    out
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// The outputs of a fragment's tasks, as a leaf of the coordinator's plan.
pub struct StageInputExec {
    stage: usize,
    properties: Arc<PlanProperties>,
    outputs: Mutex<Vec<Option<Vec<RecordBatch>>>>,
}

impl fmt::Debug for StageInputExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageInputExec(stage {})", self.stage + 1)
    }
}

impl StageInputExec {
    fn new(stage: usize, fragment: &Arc<dyn ExecutionPlan>) -> Self {
        let partitions = fragment.output_partitioning().partition_count();
        Self {
            stage,
            properties: fragment.properties().clone(),
            outputs: Mutex::new(vec![None; partitions]),
        }
    }

    /// The stage whose outputs these are.
    pub fn stage(&self) -> usize {
        self.stage
    }

    /// Stages whose outputs the coordinator's `root` reads only through a gather (a merge
    /// or a coalesce), which does not care how the outputs were hashed.
    pub fn gathered(root: &Arc<dyn ExecutionPlan>) -> std::collections::BTreeSet<usize> {
        let mut found = std::collections::BTreeSet::new();
        let mut elsewhere = std::collections::BTreeSet::new();
        let _ = root.apply(|node| {
            for child in node.children() {
                if let Some(input) = child.downcast_ref::<StageInputExec>() {
                    if is_gather(node) {
                        found.insert(input.stage);
                    } else {
                        elsewhere.insert(input.stage);
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        &found - &elsewhere
    }

    /// Hand over task `i`'s output.
    pub fn set_output(&self, i: usize, batches: Vec<RecordBatch>) {
        let mut outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = outputs.get_mut(i) {
            *slot = Some(batches);
        }
    }
}

impl DisplayAs for StageInputExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StageInputExec: outputs of stage {}", self.stage + 1)
    }
}

impl ExecutionPlan for StageInputExec {
    fn name(&self) -> &str {
        "StageInputExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batches = self
            .outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(partition)
            .and_then(Option::take)
            .ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "stage {} has no output for partition {partition}",
                    self.stage + 1
                ))
            })?;
        Ok(Box::pin(MemoryStream::try_new(
            batches,
            self.schema(),
            None,
        )?))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use tern_exec::{
        BlockReader, MemoryLimit, ReadFuture, ShuffleFetcher, ShuffleFuture, ShuffleKey,
        StoredTable,
    };
    use tern_proto::{BlockHash, DatasetRecord, NodeId, PartitionRecord};

    use super::*;

    struct Nowhere;
    impl BlockReader for Nowhere {
        fn read(&self, _block: BlockHash, _holders: Vec<NodeId>) -> ReadFuture {
            Box::pin(async { Err("planning only".to_string()) })
        }
    }
    impl ShuffleFetcher for Nowhere {
        fn fetch(
            &self,
            _keys: Vec<ShuffleKey>,
            _columns: Option<Vec<usize>>,
            _node: NodeId,
            _addr: String,
        ) -> ShuffleFuture {
            Box::pin(async { Err("planning only".to_string()) })
        }
    }

    fn table(name: &str, partitions: u8, rows: u64) -> StoredTable {
        let schema = r#"[{"name":"k","type":"Int64","nullable":false},{"name":"v","type":"Int64","nullable":true}]"#;
        StoredTable::new(&DatasetRecord {
            name: name.into(),
            version: 1,
            format: "arrow-ipc".into(),
            schema: schema.into(),
            partitions: (0..partitions)
                .map(|i| PartitionRecord {
                    block: BlockHash::of(&[i, partitions]),
                    bytes: rows * 16,
                    rows,
                    holders: vec![1, 2, 3],
                })
                .collect(),
            created_ms: 0,
            bounds: Vec::new(),
        })
        .unwrap()
    }

    /// One stage's plan as `--explain` shows it.
    pub(crate) fn shown(plan: &Arc<dyn ExecutionPlan>) -> String {
        displayable(plan.as_ref()).indent(true).to_string()
    }

    pub(crate) async fn staged(sql: &str) -> StagePlan {
        let ctx = tern_exec::session(
            6,
            Arc::new(Nowhere),
            Arc::new(Nowhere),
            &MemoryLimit::default(),
        )
        .unwrap();
        ctx.register_table("big", Arc::new(table("big", 8, 1_000_000)))
            .unwrap();
        ctx.register_table("other", Arc::new(table("other", 8, 1_000_000)))
            .unwrap();
        ctx.register_table("mid", Arc::new(table("mid", 4, 500_000)))
            .unwrap();
        ctx.register_table("dim", Arc::new(table("dim", 1, 100)))
            .unwrap();
        crate::plan_query(&ctx, sql, 7).await.unwrap()
    }

    fn kinds(plan: &StagePlan) -> Vec<(bool, usize, bool)> {
        plan.stages
            .iter()
            .map(|s| {
                (
                    s.scan().is_some(),
                    s.buckets(),
                    matches!(s.output, StageOutput::Kept),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn an_aggregate_is_partial_on_the_holders_and_final_after_a_hash_shuffle() {
        let plan = staged("SELECT k, sum(v) FROM big GROUP BY k").await;
        // Scan + partial aggregate hashed into 6 buckets, then 6 final tasks to the coordinator.
        assert_eq!(
            kinds(&plan),
            vec![(true, 6, true), (false, 1, false)],
            "{}",
            describe(&plan)
        );
        assert_eq!(plan.stages[0].tasks, 8);
        assert_eq!(plan.stages[1].inputs, vec![0]);
    }

    #[tokio::test]
    async fn a_join_of_two_large_tables_shuffles_both_and_a_small_one_is_broadcast() {
        let plan = staged("SELECT count(*) FROM big JOIN other ON big.k = other.k").await;
        let text = describe(&plan);
        assert_eq!(
            plan.stages.iter().filter(|s| s.buckets() == 6).count(),
            2,
            "{text}"
        );
        let plan = staged("SELECT sum(big.v) FROM big JOIN dim ON big.k = dim.k").await;
        let text = describe(&plan);
        // The small side is one stage kept whole; the join runs in the big side's scan tasks.
        assert!(text.contains("CollectLeft"), "{text}");
        let join_stage = plan
            .stages
            .iter()
            .find(|s| {
                displayable(s.plan.as_ref())
                    .indent(true)
                    .to_string()
                    .contains("HashJoinExec")
            })
            .expect("the join runs as tasks");
        assert_eq!(join_stage.tasks, 8, "{text}");
    }

    #[tokio::test]
    async fn a_semi_join_sharing_one_build_side_stays_on_the_coordinator() {
        let plan = staged("SELECT k FROM dim WHERE k IN (SELECT k FROM big)").await;
        let text = describe(&plan);
        for stage in &plan.stages {
            let shown = displayable(stage.plan.as_ref()).indent(true).to_string();
            assert!(
                !(shown.contains("CollectLeft") && shown.contains("LeftSemi")),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn a_filtered_small_table_joins_the_table_its_keys_come_from_first() {
        // Written last, dim joins big (through big.v) right after big's scan, in its tasks:
        // before big meets other, not after.
        let big_scan = |plan: &StagePlan| {
            let scan = plan
                .stages
                .iter()
                .find(|s| s.scan().is_some_and(|scan| scan.dataset() == "big"))
                .expect("a scan of big");
            displayable(scan.plan.as_ref()).indent(true).to_string()
        };
        let plan = staged(
            "SELECT count(*) FROM big, other, dim \
             WHERE big.k = other.k AND big.v = dim.k AND dim.v = 3",
        )
        .await;
        assert!(
            big_scan(&plan).contains("CollectLeft"),
            "{}",
            describe(&plan)
        );
        // Not filtered: as written, after the join of big and other.
        let plan =
            staged("SELECT count(*) FROM big, other, dim WHERE big.k = other.k AND big.v = dim.k")
                .await;
        assert!(
            !big_scan(&plan).contains("CollectLeft"),
            "{}",
            describe(&plan)
        );
    }
}
