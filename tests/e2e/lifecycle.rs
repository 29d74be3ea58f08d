//! What happens to blocks after they are written: a put killed half way leaves nothing visible
//! and its blocks are collected; removed datasets' blocks are collected after the grace period;
//! a drained node hands every replica over without a block ever dropping below three live
//! replicas; a full cluster refuses a put with one clear line and keeps serving.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tern_client::Client;
use tern_e2e::{LocalCluster, local_metrics, payload, wait_for, write_sales_csv};

use crate::setup;

/// Blocks stored on each node, as each node reports it.
pub(crate) fn blocks_stored(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    cluster: &LocalCluster,
    ids: &[u64],
) -> Option<HashMap<u64, u64>> {
    ids.iter()
        .map(|id| {
            let m = rt.block_on(local_metrics(client, &cluster.addr(*id)))?;
            Some((*id, m.blocks_stored))
        })
        .collect()
}

/// How many partitions of every dataset list each node as a holder.
pub(crate) fn listed(rt: &tokio::runtime::Runtime, client: &Client) -> HashMap<u64, u64> {
    let mut count = HashMap::new();
    for d in rt.block_on(client.datasets()).expect("datasets") {
        for p in &d.partitions {
            for h in &p.holders {
                *count.entry(*h).or_default() += 1;
            }
        }
    }
    count
}

#[test]
fn a_put_killed_half_way_leaves_nothing_visible_and_its_blocks_are_collected() {
    setup();
    let cluster = LocalCluster::up_args(
        3,
        &["--gc-grace-ms", "1500", "--put-lease-expiry-ms", "5000"],
    );
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    let ids = [1, 2, 3];

    // A dataset that must survive every collection below.
    let kept: Vec<(Vec<u8>, u64)> = (0..2).map(|i| (payload(64 << 10, i), 1)).collect();
    rt.block_on(client.put_dataset("kept", "bytes", "", &kept, false))
        .expect("put kept");

    let csv = cluster.path().join("big.csv");
    write_sales_csv(&csv, 600_000);
    let mut put = std::process::Command::new(tern_e2e::tern_bin())
        .args(["--cluster", cluster.path_str(), "put"])
        .arg(&csv)
        .args(["--name", "half", "--partition-size", "256KiB", "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start tern put");
    // Kill it once some of its blocks are stored (beyond the 2 x 3 replicas of "kept").
    wait_for("the put to store blocks", Duration::from_secs(60), || {
        let stored = blocks_stored(&rt, &client, &cluster, &ids)?;
        (stored.values().sum::<u64>() > 6 + 9).then_some(())
    });
    put.kill().expect("SIGKILL tern put");
    let _ = put.wait();
    assert!(
        rt.block_on(client.dataset("half")).unwrap().is_none(),
        "a killed put became visible (make big.csv larger if the put finished first)"
    );
    let ls = String::from_utf8_lossy(&cluster.tern(&["ls"]).stdout).to_string();
    assert!(!ls.contains("half"), "{ls}");

    // Its lease expires, and every node collects the orphan blocks: only "kept" remains.
    wait_for(
        "orphan blocks to be collected",
        Duration::from_secs(90),
        || {
            let stored = blocks_stored(&rt, &client, &cluster, &ids)?;
            (stored.values().all(|n| *n == 2)).then_some(())
        },
    );
    let leases = rt
        .block_on(client.catalog_list(tern_proto::PUTS_TABLE, "", 100))
        .unwrap();
    assert!(
        leases.is_empty(),
        "the dead put's lease is gone: {leases:?}"
    );
    let collected: u64 = ids
        .iter()
        .map(|id| {
            rt.block_on(local_metrics(&client, &cluster.addr(*id)))
                .unwrap()
                .blocks_collected
        })
        .sum();
    assert!(collected >= 9, "collected {collected} blocks");

    // The referenced blocks outlived several grace periods and still read back.
    let record = rt.block_on(client.dataset("kept")).unwrap().unwrap();
    let addresses = rt.block_on(client.node_addresses()).unwrap();
    for (i, (bytes, _)) in kept.iter().enumerate() {
        let back = rt.block_on(client.read_partition(&record, i, &addresses));
        assert!(&back.expect("kept reads back") == bytes);
    }

    // A removed dataset's blocks go too, after the grace period.
    let out = cluster.tern(&["rm", "kept"]);
    assert!(out.status.success());
    wait_for(
        "removed blocks to be collected",
        Duration::from_secs(60),
        || {
            let stored = blocks_stored(&rt, &client, &cluster, &ids)?;
            stored.values().all(|n| *n == 0).then_some(())
        },
    );
}

#[test]
fn draining_a_node_never_leaves_a_block_with_fewer_than_three_live_replicas() {
    setup();
    let cluster = LocalCluster::up_args(4, &["--gc-grace-ms", "1500"]);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    let partitions: Vec<(Vec<u8>, u64)> =
        (0..12).map(|i| (payload(96 << 10, 500 + i), 7)).collect();
    let record = rt
        .block_on(client.put_dataset("moving", "bytes", "", &partitions, false))
        .expect("put");
    let drained = record.partitions[0].holders[0];
    let on_drained = record
        .partitions
        .iter()
        .filter(|p| p.holders.contains(&drained))
        .count();
    assert!(on_drained >= 6, "12 x 3 replicas over 4 nodes: 9 each");

    let mut drain = std::process::Command::new(tern_e2e::tern_bin())
        .args(["--cluster", cluster.path_str(), "node", "drain"])
        .arg(drained.to_string())
        .args(["--quiet", "--timeout-secs", "120"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tern node drain");

    // Watch the catalog throughout: every partition always has three distinct holders, all up.
    let mut observations = 0;
    let mut saw_partial = false;
    let finished = loop {
        if let Some(status) = drain.try_wait().expect("drain status") {
            break status;
        }
        if let Ok(Some(d)) = rt.block_on(client.dataset("moving")) {
            observations += 1;
            let still = d
                .partitions
                .iter()
                .filter(|p| p.holders.contains(&drained))
                .count();
            saw_partial |= still > 0 && still < on_drained;
            for (i, p) in d.partitions.iter().enumerate() {
                let distinct: BTreeSet<_> = p.holders.iter().collect();
                assert!(
                    distinct.len() >= 3,
                    "partition {i} has holders {:?} during the drain",
                    p.holders
                );
            }
        }
        std::thread::yield_now();
    };
    let output = drain.wait_with_output().expect("drain output");
    assert!(
        finished.success(),
        "tern node drain failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains(&format!("node {drained} drained")), "{said}");
    assert!(observations > 0);
    assert!(
        saw_partial,
        "the drain moved replicas over several catalog entries ({observations} looks)"
    );

    let status = cluster.status_json().unwrap();
    let node = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == drained)
        .unwrap()
        .clone();
    assert_eq!(node["state"], "drained", "{node}");
    assert_eq!(node["stored_partitions"], 0, "{node}");
    let d = rt.block_on(client.dataset("moving")).unwrap().unwrap();
    assert!(
        d.partitions
            .iter()
            .all(|p| p.holders.len() == 3 && !p.holders.contains(&drained)),
        "{:?}",
        d.partitions
    );
    // The drained node's copies are collected; then it can go, and every partition still
    // reads back from the others.
    wait_for(
        "the drained node's copies to be collected",
        Duration::from_secs(60),
        || {
            let stored = blocks_stored(&rt, &client, &cluster, &[drained])?;
            (stored[&drained] == 0).then_some(())
        },
    );
    cluster.kill(drained);
    let addresses = rt.block_on(client.node_addresses()).unwrap();
    for (i, (bytes, _)) in partitions.iter().enumerate() {
        let back = rt.block_on(client.read_partition(&d, i, &addresses));
        assert!(
            &back.expect("partition reads back") == bytes,
            "partition {i}"
        );
    }
    // Placement never picks a drained node.
    let more: Vec<(Vec<u8>, u64)> = (0..3).map(|i| (payload(1000, 900 + i), 1)).collect();
    let later = rt
        .block_on(client.put_dataset("later", "bytes", "", &more, false))
        .expect("put after drain");
    assert!(
        later
            .partitions
            .iter()
            .all(|p| !p.holders.contains(&drained))
    );
    // Every other node still holds exactly what the catalog lists for it.
    let others: Vec<u64> = (1..=4).filter(|id| *id != drained).collect();
    wait_for(
        "stores to match the catalog",
        Duration::from_secs(30),
        || {
            let stored = blocks_stored(&rt, &client, &cluster, &others)?;
            let listed = listed(&rt, &client);
            others
                .iter()
                .all(|id| stored[id] == listed.get(id).copied().unwrap_or(0))
                .then_some(())
        },
    );
}

#[test]
fn a_full_cluster_refuses_a_put_with_one_line_and_keeps_serving() {
    setup();
    let cluster = LocalCluster::up_args(3, &["--capacity", "512KiB"]);
    let csv = cluster.path().join("sales.csv");
    write_sales_csv(&csv, 200_000);
    let out = cluster.tern(&[
        "put",
        csv.to_str().unwrap(),
        "--name",
        "toobig",
        "--partition-size",
        "256KiB",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "a put larger than the cluster fits");
    assert!(err.contains("not enough free space"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let ls = String::from_utf8_lossy(&cluster.tern(&["ls"]).stdout).to_string();
    assert!(!ls.contains("toobig"), "nothing partial is visible: {ls}");

    // Still serving: a small put fits and reads back.
    let small = cluster.path().join("small.csv");
    write_sales_csv(&small, 100);
    let out = cluster.tern(&["put", small.to_str().unwrap(), "--name", "small", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = cluster.path().join("back.csv");
    let out = cluster.tern(&["get", "small", "--out", back.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&back).unwrap().lines().count(), 101);
}
