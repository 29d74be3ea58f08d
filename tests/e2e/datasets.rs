//! Datasets: partitions placed on three distinct nodes each, committed in one catalog entry,
//! listed and described, read back after two holders die, replaced and removed.

use std::collections::{BTreeSet, HashMap};

use tern_e2e::{LocalCluster, payload, wait_for};

use crate::setup;

#[test]
fn a_dataset_spreads_over_five_nodes_and_reads_back_after_two_holders_die() {
    setup();
    let cluster = LocalCluster::up(5);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();

    let partitions: Vec<(Vec<u8>, u64)> =
        (0..10).map(|i| (payload(256 << 10, i), 1000 + i)).collect();
    let record = rt
        .block_on(client.put_dataset("trips", "bytes", "", &partitions, false))
        .expect("put dataset");
    assert_eq!(record.version, 1);
    assert_eq!(record.partitions.len(), 10);
    let mut replicas: HashMap<u64, usize> = HashMap::new();
    for p in &record.partitions {
        let distinct: BTreeSet<u64> = p.holders.iter().copied().collect();
        assert_eq!(distinct.len(), 3, "three distinct holders: {:?}", p.holders);
        for h in &p.holders {
            *replicas.entry(*h).or_default() += 1;
        }
    }
    // 30 replicas over 5 equal nodes: 6 each.
    assert!(
        (1..=5).all(|id| replicas.get(&id) == Some(&6)),
        "uneven placement: {replicas:?}"
    );

    // The command line sees it.
    let ls = cluster.tern(&["ls"]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("trips"));
    let described: serde_json::Value =
        serde_json::from_slice(&cluster.tern(&["describe", "trips", "--json"]).stdout)
            .expect("describe --json");
    assert_eq!(described["npartitions"], 10);
    assert_eq!(described["rows"], (1000..1010).sum::<u64>());
    assert_eq!(
        described["partitions"][3]["holders"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // The same name again is refused; with replace it becomes version 2, atomically.
    let again = rt.block_on(client.put_dataset("trips", "bytes", "", &partitions[..2], false));
    assert!(again.unwrap_err().to_string().contains("already exists"));
    let bad_name = rt.block_on(client.put_dataset("../etc", "bytes", "", &partitions[..1], false));
    assert!(bad_name.unwrap_err().to_string().contains("\"../etc\""));
    let partitions = &partitions[..4];
    let record = rt
        .block_on(client.put_dataset("trips", "bytes", "", partitions, true))
        .expect("replace");
    assert_eq!((record.version, record.partitions.len()), (2, 4));

    // Remove: gone from the catalog; removing again names the problem.
    rt.block_on(client.put_dataset("scratch", "bytes", "", &partitions[..1], false))
        .expect("put scratch");
    rt.block_on(client.remove_dataset("scratch"))
        .expect("remove");
    assert!(rt.block_on(client.dataset("scratch")).unwrap().is_none());
    let err = rt
        .block_on(client.remove_dataset("scratch"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no dataset named"), "{err}");
    let listed: Vec<String> = rt
        .block_on(client.datasets())
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(listed, vec!["trips".to_string()]);

    // Kill two holders of partition 0: every partition still reads back identical.
    let addresses = rt.block_on(client.node_addresses()).unwrap();
    for id in &record.partitions[0].holders[..2] {
        cluster.kill(*id);
    }
    for (i, (bytes, _)) in partitions.iter().enumerate() {
        let back = rt
            .block_on(client.read_partition(&record, i, &addresses))
            .expect("partition reads back");
        assert!(&back == bytes, "partition {i} differs");
    }
}

#[test]
fn repair_restores_three_live_replicas_after_two_holders_die() {
    setup();
    // Five voters, so the metadata keeps a quorum with two nodes dead; down after 3 s of
    // silence, out (repaired) after 12 s.
    let cluster = LocalCluster::up_args(
        5,
        &[
            "--max-voters",
            "5",
            "--down-after",
            "3",
            "--out-after",
            "12",
            "--gc-grace-ms",
            "1500",
        ],
    );
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    let partitions: Vec<(Vec<u8>, u64)> =
        (0..6).map(|i| (payload(128 << 10, 100 + i), 10)).collect();
    let record = rt
        .block_on(client.put_dataset("kept", "bytes", "", &partitions, false))
        .expect("put");
    let addresses = rt.block_on(client.node_addresses()).unwrap();
    // A table too, through the command line: what `tern get` returns must not change.
    let csv = cluster.path().join("sales.csv");
    tern_e2e::write_sales_csv(&csv, 80_000);
    let csv = csv.to_str().unwrap();
    let put = cluster.tern(&["put", csv, "--name", "sales", "--partition-size", "256KiB"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let before = cluster.path().join("before.csv");
    let get = cluster.tern(&["get", "sales", "--out", before.to_str().unwrap(), "--quiet"]);
    assert!(get.status.success());
    let sales = rt.block_on(client.dataset("sales")).unwrap().unwrap();
    assert!(
        sales.partitions.len() > 3,
        "{} partitions",
        sales.partitions.len()
    );

    // SIGKILL two holders of some blocks.
    let dead: Vec<u64> = sales.partitions[0].holders[..2].to_vec();
    for id in &dead {
        cluster.kill(*id);
    }
    let after = cluster.path().join("after.csv");
    let get = cluster.tern(&["get", "sales", "--out", after.to_str().unwrap(), "--quiet"]);
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(
        std::fs::read(&before).unwrap() == std::fs::read(&after).unwrap(),
        "tern get returns byte-identical data with two holders dead"
    );

    // Down is not out: while the dead nodes are marked down, their replicas are waited for,
    // not copied. (The catalog is read first: if the status read after it still says down,
    // no copy could have been recorded before.)
    let dead_state = |status: &serde_json::Value, id: u64| {
        status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"] == id))
            .map(|n| n["state"].as_str().unwrap_or_default().to_string())
    };
    let (waiting, status) = wait_for(
        "the dead nodes to be marked down",
        std::time::Duration::from_secs(30),
        || {
            let waiting = rt.block_on(client.dataset("sales")).ok()??;
            let status = cluster.status_json()?;
            dead.iter()
                .all(|id| dead_state(&status, *id).as_deref() == Some("down"))
                .then_some((waiting, status))
        },
    );
    assert_eq!(
        waiting.partitions, sales.partitions,
        "nothing is copied while the holders are only down"
    );
    assert!(
        status["under_replicated"].as_u64().unwrap() + status["missing"].as_u64().unwrap() > 0,
        "{status}"
    );

    // Within a deadline: every partition has three holders, none of them dead, and the
    // status counts nothing under-replicated or missing.
    let repaired = wait_for(
        "repair to three live replicas",
        std::time::Duration::from_secs(60),
        || {
            let status = cluster.status_json()?;
            let d = rt.block_on(client.dataset("kept")).ok()??;
            let sales = rt.block_on(client.dataset("sales")).ok()??;
            let healthy = d.partitions.iter().chain(&sales.partitions).all(|p| {
                p.holders.len() == 3
                    && p.holders.iter().collect::<BTreeSet<_>>().len() == 3
                    && p.holders.iter().all(|h| !dead.contains(h))
            });
            (healthy && status["under_replicated"] == 0 && status["missing"] == 0).then_some(d)
        },
    );
    // Read each repaired partition from its new holders only: the copies are real and intact.
    let mut copies = 0;
    for (i, (bytes, _)) in partitions.iter().enumerate() {
        let before = &record.partitions[i].holders;
        let fresh: Vec<String> = repaired.partitions[i]
            .holders
            .iter()
            .filter(|h| !before.contains(h))
            .map(|h| addresses[h].clone())
            .collect();
        for addr in &fresh {
            let back =
                rt.block_on(client.get_block(&repaired.partitions[i].block, &[addr.clone()]));
            assert!(
                &back.expect("read the new copy") == bytes,
                "partition {i} differs at {addr}"
            );
            copies += 1;
        }
    }
    assert!(
        copies >= 2,
        "two of five nodes held at least 6 of the 18 replicas, so copies were made"
    );
    let status = cluster.status_json().unwrap();
    for id in &dead {
        let node = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == *id)
            .unwrap()
            .clone();
        assert_eq!(node["state"], "out", "{node}");
    }

    // The dead nodes come back with replicas nobody lists any more: they are trimmed, so
    // every node ends up holding exactly what the catalog lists for it.
    for id in &dead {
        cluster.start(*id);
    }
    let all: Vec<u64> = (1..=5).collect();
    wait_for(
        "extra replicas to be trimmed",
        std::time::Duration::from_secs(60),
        || {
            let stored = crate::lifecycle::blocks_stored(&rt, &client, &cluster, &all)?;
            let listed = crate::lifecycle::listed(&rt, &client);
            let exact = all
                .iter()
                .all(|id| stored[id] == listed.get(id).copied().unwrap_or(0));
            exact.then_some(())
        },
    );
}

#[test]
fn ls_pages_through_ten_thousand_datasets_and_a_query_resolves_only_the_tables_it_names() {
    setup();
    let cluster = LocalCluster::up(3);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = std::sync::Arc::new(cluster.client());
    // 10,000 datasets (empty ones: the catalog is what is tested), 64 commits in flight.
    const DATASETS: usize = 10_000;
    rt.block_on(async {
        let mut commits = tokio::task::JoinSet::new();
        for i in 0..DATASETS {
            if commits.len() >= 64 {
                commits.join_next().await.unwrap().unwrap();
            }
            let client = client.clone();
            commits.spawn(async move {
                client
                    .put_dataset(&format!("ds-{i:05}"), "bytes", "", &[], false)
                    .await
                    .expect("commit");
            });
        }
        while let Some(done) = commits.join_next().await {
            done.unwrap();
        }
    });
    let csv = cluster.path().join("sales.csv");
    tern_e2e::write_sales_csv(&csv, 2_000);
    let put = cluster.tern(&["put", csv.to_str().unwrap(), "--name", "sales"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );

    // One page is at most MAX_LIST_PAGE summaries, and they follow in name order.
    let (first, more) = rt
        .block_on(client.list_datasets(None, u32::MAX))
        .expect("a page");
    assert_eq!(first.len(), tern_proto::MAX_LIST_PAGE as usize);
    assert!(more);
    assert_eq!(first[0].name, "ds-00000");
    let (next, _) = rt
        .block_on(client.list_datasets(Some(&first.last().unwrap().name), 3))
        .expect("the next page");
    let names: Vec<&str> = next.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["ds-01000", "ds-01001", "ds-01002"]);

    // `tern ls` pages through all of them.
    let ls = cluster.tern(&["ls"]);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let text = String::from_utf8_lossy(&ls.stdout);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        rows.len(),
        DATASETS + 1,
        "a header, then every dataset once"
    );
    assert!(rows[DATASETS - 1].starts_with("ds-09999 "));
    assert!(rows[DATASETS].starts_with("sales "), "{}", rows[DATASETS]);
    let json: serde_json::Value =
        serde_json::from_slice(&cluster.tern(&["ls", "--json"]).stdout).expect("ls --json");
    let listed = json["datasets"].as_array().unwrap();
    assert_eq!(listed.len(), DATASETS + 1);
    assert_eq!(listed[DATASETS]["rows"], 2_000);
    assert_eq!(listed[DATASETS]["format"], "arrow-ipc");

    // A query resolves the tables it names among the 10,001, CTEs included.
    let answer = cluster.path().join("n.csv");
    let out = cluster.tern(&[
        "sql",
        "WITH every AS (SELECT * FROM sales) SELECT count(*) AS n FROM every",
        "--out",
        answer.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(&answer).unwrap();
    assert_eq!(csv.lines().nth(1), Some("2000"), "{csv}");
    let missing = cluster.tern(&["sql", "SELECT * FROM nowhere"]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && err.contains("nowhere"),
        "{err}"
    );
}
