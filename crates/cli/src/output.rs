//! Human-readable output.

use std::fmt::Write;

use tern_proto::ClusterStatus;

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
        "leader: {leader}   term: {}   applied index: {applied}",
        status.term
    );
    let _ = writeln!(
        out,
        "{:<4} {:<22} {:<8} {:<12} {:<9} {:<6} {:>10} {:>6} {:>8}",
        "ID", "ADDRESS", "ZONE", "ROLE", "STATE", "VOTER", "HEARTBEAT", "TERM", "APPLIED"
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
            "{:<4} {:<22} {:<8} {:<12} {:<9} {:<6} {:>10} {:>6} {:>8}",
            n.id,
            n.address,
            zone,
            n.role.to_string(),
            n.state.to_string(),
            if n.voter { "yes" } else { "no" },
            age,
            term,
            applied
        );
    }
    out
}
