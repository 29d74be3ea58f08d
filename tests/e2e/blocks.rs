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

    // Bytes that do not match the name are refused: the chain passes chunks on as they
    // arrive, and every holder checks the whole block against its name before keeping it.
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

/// Where column `c`'s values lie in each batch of a stored block of Int64 columns without
/// nulls (an Arrow IPC stream: each column is a validity buffer, empty here, then values).
fn int64_column_ranges(block: &[u8], c: usize) -> Vec<std::ops::Range<usize>> {
    let mut at = 0;
    let mut out = Vec::new();
    while at + 8 <= block.len() {
        let meta_len = u32::from_le_bytes(block[at + 4..at + 8].try_into().unwrap()) as usize;
        if meta_len == 0 {
            break;
        }
        let message = arrow::ipc::root_as_message(&block[at + 8..at + 8 + meta_len]).unwrap();
        let body = at + 8 + meta_len;
        if let Some(batch) = message.header_as_record_batch() {
            let values = batch.buffers().unwrap().get(2 * c + 1);
            let start = body + values.offset() as usize;
            out.push(start..start + values.length() as usize);
        }
        at = body + message.bodyLength() as usize;
    }
    out
}

/// The node whose count of block bytes read grew past `before`, and by how much.
fn reader_since(
    rt: &tokio::runtime::Runtime,
    cluster: &LocalCluster,
    client: &tern_client::Client,
    before: &[u64],
) -> Vec<u64> {
    (1..=3)
        .map(|id| {
            let m = rt
                .block_on(tern_e2e::local_metrics(client, &cluster.addr(id)))
                .expect("metrics");
            m.block_bytes_read - before[id as usize - 1]
        })
        .collect()
}

/// Issue 23: a scan reads (and checks against the block's name) only the columns it needs. A
/// damaged byte in a column a query reads makes that copy refused and the query answers from
/// another holder; a damaged byte in a column it does not read goes unnoticed by the query
/// and is found by scrub. Either way scrub restores the copy.
#[test]
fn a_scan_reads_only_its_columns_and_damage_is_found_where_it_is_read() {
    setup();
    let cluster = LocalCluster::up_args(
        3,
        &["--scrub-interval-ms", "3600000", "--cache-memory", "0"],
    );
    let rt = tern_e2e::runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    // Twelve columns of scattered integers (they do not compress away), one partition.
    let (rows, columns) = (100_000u64, 12usize);
    let value = |row: u64, c: usize| (row * 2_654_435_761 + c as u64 * 97_531) % 1_000_000_007;
    let mut csv = (0..columns)
        .map(|c| format!("c{c}"))
        .collect::<Vec<_>>()
        .join(",");
    csv.push('\n');
    for row in 0..rows {
        let line: Vec<String> = (0..columns).map(|c| value(row, c).to_string()).collect();
        csv.push_str(&line.join(","));
        csv.push('\n');
    }
    let file = cluster.path().join("wide.csv");
    std::fs::write(&file, csv).unwrap();
    cluster.put(&file, "wide", &[]);
    let record = rt.block_on(client.dataset("wide")).unwrap().unwrap();
    assert_eq!(record.partitions.len(), 1);
    let part = record.partitions[0].clone();
    let all: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let block = rt.block_on(client.get_block(&part.block, &all)).unwrap();
    let (read_col, unread_col) = (5, 9);
    let read_ranges = int64_column_ranges(&block, read_col);
    let unread_ranges = int64_column_ranges(&block, unread_col);
    let column_bytes: usize = read_ranges.iter().map(|r| r.len()).sum();
    let batches = read_ranges.len() as u64;
    assert!(batches >= 10, "{batches} batches");

    let expected: u64 = (0..rows).map(|row| value(row, read_col)).sum();
    let sum = |rt: &tokio::runtime::Runtime| -> u64 {
        let answer = rt
            .block_on(client.sql("SELECT sum(c5) AS s FROM wide"))
            .expect("query");
        let column = answer.batches[0].column(0);
        column
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("an Int64 sum")
            .value(0) as u64
    };
    let zero = [0u64; 3];
    let before = reader_since(&rt, &cluster, &client, &zero);
    assert_eq!(sum(&rt), expected);
    let read = reader_since(&rt, &cluster, &client, &before);
    let total: u64 = read.iter().sum();
    // Groups of 16 KiB: the column's bytes, rounded out to groups, plus each message's
    // metadata (a group or two a batch), and nothing like the block's other eleven columns.
    let group = tern_proto::GROUP_BYTES;
    assert!(
        total >= column_bytes as u64 && total <= column_bytes as u64 + (3 * batches + 2) * group,
        "read {total} bytes for a column of {column_bytes} in a block of {} ({read:?})",
        block.len()
    );
    assert!(total < block.len() as u64 / 3, "{total} of {}", block.len());
    eprintln!(
        "one column of {column_bytes} bytes in a block of {}: read {total} ({read:?})",
        block.len()
    );

    // Every coordinator sends a block's scans to the same holder while it answers (its
    // columns stay in one node's memory): the one that just read.
    let home = (1..=3u64)
        .find(|&id| read[id as usize - 1] > 0)
        .expect("a node read");
    assert!(part.holders.contains(&home));
    let reads_on = |node: u64, before: &mut Vec<u64>| -> bool {
        assert_eq!(sum(&rt), expected, "{}", cluster.logs());
        let read = reader_since(&rt, &cluster, &client, before);
        for (i, bytes) in read.iter().enumerate() {
            before[i] += bytes;
        }
        read[node as usize - 1] > 0
    };

    // Damage bytes of the block on `node`'s disk, the node stopped while its files change.
    let flip = |node: u64, range: &std::ops::Range<usize>| {
        let out = cluster.tern(&["node", "stop", &node.to_string()]);
        assert!(out.status.success());
        // Within one group: the groups are apart on disk.
        let group = tern_proto::GROUP_BYTES as usize;
        let mut middle = range.start + range.len() / 2;
        if (middle - 32) / group != (middle + 32) / group {
            middle += 64;
        }
        let flipped = flip_on_disk(
            &cluster.path().join(format!("data/node-{node}/blocks")),
            &block[middle - 32..middle + 32],
        );
        assert!(
            flipped > 0,
            "the column's bytes are not on node {node}'s disk"
        );
        cluster.start(node);
        let healthy = cluster.tern(&["wait", "healthy"]);
        assert!(healthy.status.success());
    };

    let scrub_repairs = |node: u64| {
        let out = cluster.tern(&["scrub", "--now"]);
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success());
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("node {node}:")))
            .unwrap_or_default();
        assert!(
            line.contains("1 repaired")
                && (line.contains("1 corrupt") || line.contains("1 missing")),
            "{report}\n{}",
            cluster.logs()
        );
    };

    // A flipped byte in a column the query does not read: the holder still answers it, and
    // scrub, which reads whole blocks, finds and repairs it.
    flip(home, &unread_ranges[batches as usize / 2]);
    let mut before = reader_since(&rt, &cluster, &client, &zero);
    assert!(
        reads_on(home, &mut before),
        "the scan left its holder after damage it never read"
    );
    scrub_repairs(home);

    // A flipped byte in the column it reads: that copy is refused where the scan goes, the
    // query answers from another holder, and scrub repairs it.
    flip(home, &read_ranges[batches as usize / 2]);
    let read_before = before.clone();
    reads_on(home, &mut before);
    let elsewhere: u64 = (1..=3u64)
        .filter(|&id| id != home)
        .map(|id| before[id as usize - 1] - read_before[id as usize - 1])
        .sum();
    assert!(elsewhere > 0, "no other holder answered: {before:?}");
    scrub_repairs(home);
    assert_eq!(sum(&rt), expected);
}
