//! Cutting a physical plan into stages.
//!
//! A *fragment* is a maximal subtree that reads one stored dataset through a
//! [`PartitionScanExec`] and contains no exchange (repartition, coalesce, merge) and no other
//! leaf: its output partition `i` depends only on stored partition `i`, so it runs as one task
//! per stored partition, each on a node that holds the block. The coordinator runs what is
//! left, with each fragment replaced by a [`StageInputExec`] that yields the tasks' outputs.

use std::fmt;
use std::sync::{Arc, Mutex};

use tern_exec::PartitionScanExec;
use tern_exec::arrow::record_batch::RecordBatch;
use tern_exec::datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use tern_exec::datafusion::error::{DataFusionError, Result};
use tern_exec::datafusion::execution::TaskContext;
use tern_exec::datafusion::physical_expr::PhysicalExpr;
use tern_exec::datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use tern_exec::datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use tern_exec::datafusion::physical_plan::memory::MemoryStream;
use tern_exec::datafusion::physical_plan::repartition::RepartitionExec;
use tern_exec::datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use tern_exec::datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream, displayable, replace_children_if_necessary,
};

/// One fragment: run as a task per partition of its scan.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub id: usize,
    pub plan: Arc<dyn ExecutionPlan>,
    pub input: Arc<StageInputExec>,
}

impl Fragment {
    pub fn scan(&self) -> &PartitionScanExec {
        find_scan(&self.plan).expect("a fragment has a scan")
    }

    /// The fragment for stored partition `i` alone (its scan narrowed to that block).
    pub fn task_plan(&self, i: usize) -> Result<Arc<dyn ExecutionPlan>> {
        narrow(self.plan.clone(), i)
    }
}

fn is_exchange(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan.downcast_ref::<SortPreservingMergeExec>().is_some()
}

fn find_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&PartitionScanExec> {
    if let Some(scan) = plan.downcast_ref::<PartitionScanExec>() {
        return Some(scan);
    }
    plan.children().into_iter().find_map(find_scan)
}

/// Whether an operator's expressions read a scalar subquery's value, which lives in a
/// surrounding operator on the coordinator and cannot travel with the fragment.
fn uses_scalar_subquery(plan: &Arc<dyn ExecutionPlan>) -> bool {
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

/// A chain of single-child, partition-local operators ending in a stored scan.
fn is_fragment(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if plan.downcast_ref::<PartitionScanExec>().is_some() {
        return true;
    }
    let children = plan.children();
    children.len() == 1
        && !is_exchange(plan)
        && !uses_scalar_subquery(plan)
        && plan.output_partitioning().partition_count()
            == children[0].output_partitioning().partition_count()
        && is_fragment(children[0])
}

fn narrow(plan: Arc<dyn ExecutionPlan>, i: usize) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(scan) = plan.downcast_ref::<PartitionScanExec>() {
        return Ok(Arc::new(scan.only(i)?));
    }
    let children = plan
        .children()
        .into_iter()
        .map(|c| narrow(c.clone(), i))
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(plan, children)
}

/// Cut `plan`: returns what the coordinator runs and the fragments that run as tasks.
pub fn cut(plan: Arc<dyn ExecutionPlan>) -> Result<(Arc<dyn ExecutionPlan>, Vec<Fragment>)> {
    let mut fragments = Vec::new();
    let root = cut_into(plan, &mut fragments)?;
    Ok((root, fragments))
}

fn cut_into(
    plan: Arc<dyn ExecutionPlan>,
    fragments: &mut Vec<Fragment>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if is_fragment(&plan) {
        let input = Arc::new(StageInputExec::new(fragments.len(), &plan));
        fragments.push(Fragment {
            id: fragments.len(),
            plan,
            input: input.clone(),
        });
        return Ok(input);
    }
    let children = plan
        .children()
        .into_iter()
        .map(|c| cut_into(c.clone(), fragments))
        .collect::<Result<Vec<_>>>()?;
    replace_children_if_necessary(plan, children)
}

/// Human-readable stages: each fragment, then what the coordinator runs.
pub fn describe(root: &Arc<dyn ExecutionPlan>, fragments: &[Fragment]) -> String {
    let mut out = String::new();
    for f in fragments {
        let scan = f.scan();
        out.push_str(&format!(
            "stage {}: {} tasks, one per partition of {}, each on a holder of its block\n{}\n",
            f.id + 1,
            scan.partitions().len(),
            scan.dataset(),
            indent(&displayable(f.plan.as_ref()).indent(true).to_string())
        ));
    }
    out.push_str(&format!(
        "final stage: on the coordinator\n{}",
        indent(&displayable(root.as_ref()).indent(true).to_string())
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
