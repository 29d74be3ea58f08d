//! Human-readable output.

use std::fmt::Write;

use serde_json::{Value, json};
use tern_proto::{ClusterStatus, DatasetRecord, DatasetSummary, human_bytes};

pub fn status_table(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let leader = status
        .leader
        .map(|l| format!("node {l}"))
        .unwrap_or_else(|| "none".into());
    let applied = status
        .applied_index
        .map(|i| i.to_string())
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "leader: {leader}   term: {}   applied index: {applied}   under-replicated: {}   missing: {}",
        status.term, status.under_replicated, status.missing
    );
    let _ = writeln!(
        out,
        "{:<4} {:<22} {:<8} {:<12} {:<9} {:<6} {:>10} {:>6} {:>8} {:>8} {:>10} {:>10} {:>7}",
        "ID",
        "ADDRESS",
        "ZONE",
        "ROLE",
        "STATE",
        "VOTER",
        "HEARTBEAT",
        "TERM",
        "APPLIED",
        "REPLICAS",
        "STORED",
        "CACHED",
        "TASKS"
    );
    for n in &status.nodes {
        let zone = if n.zone.is_empty() { "-" } else { &n.zone };
        let age = n
            .heartbeat_age_ms
            .map(|ms| format!("{:.1}s ago", ms as f64 / 1000.0))
            .unwrap_or_else(|| "never".into());
        let term = n.term.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
        let applied = n
            .applied_index
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<4} {:<22} {:<8} {:<12} {:<9} {:<6} {:>10} {:>6} {:>8} {:>8} {:>10} {:>10} {:>7}",
            n.id,
            n.address,
            zone,
            n.role.to_string(),
            n.state.to_string(),
            if n.voter { "yes" } else { "no" },
            age,
            term,
            applied,
            n.stored_partitions,
            human_bytes(n.stored_bytes),
            n.cached_bytes.map_or_else(|| "-".into(), human_bytes),
            // Running of its slots.
            match (n.tasks_running, n.task_slots) {
                (Some(running), Some(slots)) => format!("{running}/{slots}"),
                _ => "-".into(),
            }
        );
    }
    for n in &status.nodes {
        for problem in n.health.iter().flat_map(|h| h.problems()) {
            let _ = writeln!(out, "node {}: {problem}", n.id);
        }
    }
    out
}

/// `tern ls` rows for one page of summaries, under the header when `header`.
pub fn datasets_rows(datasets: &[DatasetSummary], header: bool) -> String {
    let mut out = String::new();
    if header && !datasets.is_empty() {
        let _ = writeln!(
            out,
            "{:<32} {:>7} {:>11} {:>12} {:>12}  FORMAT",
            "NAME", "VERSION", "PARTITIONS", "ROWS", "BYTES"
        );
    }
    for d in datasets {
        let _ = writeln!(
            out,
            "{:<32} {:>7} {:>11} {:>12} {:>12}  {}",
            d.name,
            d.version,
            d.partitions,
            d.rows,
            human_bytes(d.bytes),
            d.format
                .as_deref()
                .unwrap_or("(a record this version of tern cannot read)")
        );
    }
    out
}

pub fn dataset_json(d: &DatasetRecord) -> Value {
    json!({
        "name": d.name,
        "version": d.version,
        "format": d.format,
        "schema": d.schema,
        "npartitions": d.partitions.len(),
        "rows": d.rows(),
        "bytes": d.bytes(),
        "created_ms": d.created_ms,
        "partitions": d.partitions.iter().enumerate().map(|(i, p)| json!({
            "index": i,
            "rows": p.rows,
            "bytes": p.bytes,
            "block": p.block.to_string(),
            "holders": p.holders,
        })).collect::<Vec<_>>(),
    })
}

pub fn datasets_json(datasets: &[DatasetSummary]) -> Value {
    json!({ "datasets": datasets })
}

pub fn describe(d: &DatasetRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Dataset {} (version {}, {})",
        d.name, d.version, d.format
    );
    let _ = writeln!(
        out,
        "npartitions={}  rows={}  bytes={}",
        d.partitions.len(),
        d.rows(),
        human_bytes(d.bytes())
    );
    if d.format == tern_array::FORMAT {
        match tern_array::ArrayMeta::from_json(&d.schema) {
            Ok(meta) => {
                let _ = writeln!(out, "array: {}\n", meta.describe());
            }
            Err(e) => {
                let _ = writeln!(out, "array: {e}\n");
            }
        }
    } else if let Ok(Value::Array(columns)) = serde_json::from_str::<Value>(&d.schema) {
        // Like Dask's DataFrame structure: one line per column with its dtype.
        let _ = writeln!(out, "{:<24} DTYPE", "COLUMN");
        for c in &columns {
            let name = c["name"].as_str().unwrap_or("?");
            let ty = c["type"].as_str().unwrap_or("?");
            let _ = writeln!(out, "{name:<24} {ty}");
        }
        out.push('\n');
    } else if !d.schema.is_empty() {
        let _ = writeln!(out, "schema: {}", d.schema);
    }
    let _ = writeln!(
        out,
        "{:>5} {:>12} {:>12}  {:<14} HOLDERS",
        "PART", "ROWS", "BYTES", "BLOCK"
    );
    for (i, p) in d.partitions.iter().enumerate() {
        let holders: Vec<String> = p.holders.iter().map(|h| h.to_string()).collect();
        let _ = writeln!(
            out,
            "{:>5} {:>12} {:>12}  {:<14} {}",
            i,
            p.rows,
            human_bytes(p.bytes),
            p.block.prefix(12),
            holders.join(",")
        );
    }
    out
}

/// `tern sql --analyze`: per stage its tasks, rows and time, and per node how many tasks
/// read their partition locally or fetched it.
pub fn stages_table(stages: &[tern_proto::StageReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<44} {:>6} {:>10} {:>9} {:>8} {:>6} {:>9}  TASKS PER NODE (local/fetched)",
        "STAGE", "WHAT", "TASKS", "ROWS", "TIME", "RETRIES", "REDONE", "SPILLED"
    );
    for s in stages {
        let mut nodes: Vec<u64> = s.local.keys().chain(s.remote.keys()).copied().collect();
        nodes.sort();
        nodes.dedup();
        let per_node = nodes
            .iter()
            .map(|n| {
                format!(
                    "node {n}: {}/{}",
                    s.local.get(n).copied().unwrap_or(0),
                    s.remote.get(n).copied().unwrap_or(0)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "{:<6} {:<44} {:>6} {:>10} {:>7} ms {:>8} {:>6} {:>9}  {}",
            s.stage,
            s.what,
            s.tasks,
            s.rows,
            s.millis,
            s.retries,
            s.recomputed,
            human_bytes(s.spilled),
            if per_node.is_empty() {
                "-".into()
            } else {
                per_node
            }
        );
    }
    out
}

/// `tern jobs`: one line per job.
pub fn jobs_table(jobs: &[tern_proto::JobInfo]) -> String {
    let mut out = format!(
        "{:<16} {:<5} {:<10} {:>5} {:<9} {:>13} {:>9}  {:<16} WHAT\n",
        "JOB", "KIND", "CLIENT", "COORD", "STATE", "TASKS", "SECONDS", "RUNNING ON"
    );
    for j in jobs {
        let running: Vec<String> = j
            .running_on
            .iter()
            .map(|(node, n)| format!("{node}:{n}"))
            .collect();
        let what: String = j.what.chars().take(60).collect();
        out.push_str(&format!(
            "{:<16x} {:<5} {:<10} {:>5} {:<9} {:>13} {:>9.1}  {:<16} {}\n",
            j.job,
            j.kind,
            j.client,
            j.coordinator,
            j.state.to_string(),
            format!("{}/{}", j.done, j.total),
            j.millis as f64 / 1000.0,
            if running.is_empty() {
                "-".into()
            } else {
                running.join(",")
            },
            what.replace('\n', " ")
        ));
    }
    if jobs.is_empty() {
        out.push_str("(no jobs)\n");
    }
    out
}

pub fn jobs_json(jobs: &[tern_proto::JobInfo]) -> serde_json::Value {
    serde_json::Value::Array(
        jobs.iter()
            .map(|j| {
                serde_json::json!({
                    "job": format!("{:x}", j.job),
                    "kind": j.kind,
                    "what": j.what,
                    "client": j.client,
                    "coordinator": j.coordinator,
                    "started_ms": j.started_ms,
                    "millis": j.millis,
                    "done": j.done,
                    "total": j.total,
                    "running_on": j.running_on,
                    "state": j.state.to_string(),
                    "error": match &j.state {
                        tern_proto::JobState::Failed(e) => Some(e.clone()),
                        _ => None,
                    },
                })
            })
            .collect(),
    )
}
