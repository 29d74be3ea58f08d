//! Blocks: written along a chain of three holders, verified, and read back after two holders die.

use tern_e2e::{LocalCluster, payload};

use crate::setup;
use tern_proto::BlockHash;

#[test]
fn a_block_written_along_the_chain_survives_the_loss_of_two_holders() {
    setup();
    let cluster = LocalCluster::up(3);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    let chain: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();

    // 40 MiB: larger than a frame, so it crosses every hop as a stream of chunks.
    let data = payload(40 << 20, 7);
    let (hash, holders) = rt
        .block_on(client.put_block(&data, &chain, None))
        .expect("put block");
    assert_eq!(hash, BlockHash::of(&data));
    assert_eq!(
        holders,
        vec![1, 2, 3],
        "acknowledged by every holder, in chain order"
    );

    // Bytes that do not match the name are refused at the first holder and go no further.
    let wrong = rt.block_on(async {
        let forged = tern_proto::Request::PutBlock {
            hash,
            size: 4,
            chain: chain[1..].to_vec(),
            put: None,
        };
        let (mut w, mut r) = client
            .transport()
            .open_bulk(&chain[0], &forged)
            .await
            .unwrap();
        w.write_chunk(b"evil").await.unwrap();
        w.finish().await.unwrap();
        r.response().await.unwrap()
    });
    match wrong {
        tern_proto::Response::Error(e) => assert!(e.message.contains("corrupt"), "{e}"),
        other => panic!("a forged block was answered with {other:?}"),
    }

    // Kill two of the three holders: the block still reads back identical from the third.
    cluster.kill(1);
    cluster.kill(2);
    let back = rt
        .block_on(client.get_block(&hash, &chain))
        .expect("read from the surviving holder");
    assert!(back == data, "the block read back differs");

    // With all three gone, the error names the block and every holder tried.
    cluster.kill(3);
    let err = rt
        .block_on(client.get_block(&hash, &chain))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&hash.to_string()) && chain.iter().all(|a| err.contains(a.as_str())),
        "{err}"
    );
}

#[test]
fn concurrent_reads_of_one_block_are_spread_over_its_three_holders() {
    setup();
    let cluster = LocalCluster::up(3);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = std::sync::Arc::new(cluster.client());
    let chain: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let data = payload(256 << 10, 11);
    let (hash, _) = rt
        .block_on(client.put_block(&data, &chain, None))
        .expect("put block");

    // 200 reads at once of the same hot block.
    rt.block_on(async {
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let (client, chain) = (client.clone(), chain.clone());
            reads.spawn(async move { client.get_block(&hash, &chain).await.map(|b| b.len()) });
        }
        while let Some(read) = reads.join_next().await {
            assert_eq!(read.unwrap().expect("read"), data.len());
        }
    });
    let served: Vec<u64> = chain
        .iter()
        .map(|addr| {
            rt.block_on(tern_e2e::local_metrics(&client, addr))
                .expect("metrics")
                .blocks_served
        })
        .collect();
    assert_eq!(served.iter().sum::<u64>(), 200, "{served:?}");
    assert!(
        served.iter().all(|n| *n >= 40),
        "every holder serves at least 20%: {served:?}"
    );
}

/// Flip one byte of `needle` wherever it occurs in the files under `dir` (the block may sit
/// in RocksDB's log, a table file or a blob file, depending on flushes).
fn flip_on_disk(dir: &std::path::Path, needle: &[u8]) -> usize {
    let mut flipped = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let Ok(mut bytes) = std::fs::read(&path) else {
            continue;
        };
        let mut changed = false;
        let mut at = 0;
        while let Some(pos) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
            bytes[at + pos + needle.len() / 2] ^= 0x55;
            eprintln!("flipped a byte in {}", path.display());
            at += pos + needle.len();
            changed = true;
            flipped += 1;
        }
        if changed {
            std::fs::write(&path, &bytes).unwrap();
        }
    }
    flipped
}

#[test]
fn a_corrupted_copy_is_never_served_and_scrub_restores_it() {
    setup();
    // No background scrub during the test: the explicit pass must find the damage.
    let cluster = LocalCluster::up_args(3, &["--scrub-interval-ms", "3600000"]);
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    let data = payload(256 << 10, 23);
    let record = rt
        .block_on(client.put_dataset("fragile", "bytes", "", &[(data.clone(), 1)], false))
        .unwrap();
    let hash = record.partitions[0].block;

    // Stop node 2, flip a byte of the block in its files, start it again.
    let out = cluster.tern(&["node", "stop", "2"]);
    assert!(out.status.success());
    let flipped = flip_on_disk(
        &cluster.path().join("data/node-2/blocks"),
        &data[4096..4160],
    );
    assert!(
        flipped > 0,
        "the block's bytes were not found on node 2's disk"
    );
    cluster.start(2);
    let healthy = cluster.tern(&["wait", "healthy"]);
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );

    // Node 2 never serves the damaged copy; a read still gets the right bytes elsewhere.
    let addr2 = cluster.addr(2);
    let served = rt.block_on(client.get_block(&hash, &[addr2.clone()]));
    let why = served
        .as_ref()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        why.contains("corrupt") || why.contains("Corruption"),
        "node 2 must refuse its damaged copy: {why}\n{}",
        cluster.logs()
    );
    let all: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    assert!(rt.block_on(client.get_block(&hash, &all)).unwrap() == data);

    // Scrub finds it and restores it from a healthy holder.
    let out = cluster.tern(&["scrub", "--now"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // RocksDB's own blob checksum may catch the flipped byte before tern's hash does (the
    // block then reads as missing) or not (corrupt): either way it is found and replaced.
    let node2 = report
        .lines()
        .find(|l| l.starts_with("node 2:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        node2.contains("1 repaired")
            && (node2.contains("1 corrupt") || node2.contains("1 missing")),
        "{report}\n{}",
        cluster.logs()
    );
    assert!(
        rt.block_on(client.get_block(&hash, &[addr2])).unwrap() == data,
        "node 2 serves the restored copy"
    );
}
