//! Blocks: written along a chain of three holders, verified, and read back after two holders die.

use tern_e2e::LocalCluster;
use tern_proto::BlockHash;

fn setup() {
    tern_e2e::use_tern_binary(env!("CARGO_BIN_EXE_tern"));
}

/// Bytes that do not compress or repeat, so a misplaced chunk changes the hash.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
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
fn a_block_written_along_the_chain_survives_the_loss_of_two_holders() {
    setup();
    let cluster = LocalCluster::up(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = rt.enter();
    let client = cluster.client();
    let chain: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();

    // 40 MiB: larger than a frame, so it crosses every hop as a stream of chunks.
    let data = payload(40 << 20, 7);
    let (hash, holders) = rt
        .block_on(client.put_block(&data, &chain))
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = rt.enter();
    let client = std::sync::Arc::new(cluster.client());
    let chain: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let data = payload(256 << 10, 11);
    let (hash, _) = rt
        .block_on(client.put_block(&data, &chain))
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
