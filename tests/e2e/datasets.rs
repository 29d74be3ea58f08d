//! Datasets: partitions placed on three distinct nodes each, committed in one catalog entry,
//! listed and described, read back after two holders die, replaced and removed.

use std::collections::{BTreeSet, HashMap};

use tern_e2e::LocalCluster;

fn setup() {
    tern_e2e::use_tern_binary(env!("CARGO_BIN_EXE_tern"));
}

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_dataset_spreads_over_five_nodes_and_reads_back_after_two_holders_die() {
    setup();
    let cluster = LocalCluster::up(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
