//! The cluster foundation: election, failover, restart, joins, mutual TLS, bad frames.

use std::time::{Duration, Instant};

use crate::setup;
use tern_e2e::{Client, LocalCluster, agreed_leader, local_metrics, runtime, tern, wait_for};
use tern_proto::frame::frame;
use tern_proto::{ErrorKind, MAX_FRAME_BYTES, RaftKind, Request, Response, Role, encode_request};

fn nodes_of(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["nodes"].as_array().cloned().unwrap_or_default()
}

#[test]
fn three_nodes_elect_one_leader_survive_its_loss_and_restart_intact() {
    setup();
    let cluster = LocalCluster::up_args(3, &["--zones", "a,b,c"]);
    let rt = runtime();
    let _in_runtime = rt.enter();
    let client = cluster.client();

    // One leader, two followers, all voters and up.
    let status = wait_for("3 nodes in status", Duration::from_secs(20), || {
        cluster.status_json().filter(|s| {
            nodes_of(s).len() == 3 && nodes_of(s).iter().all(|n| n["role"] != "unreachable")
        })
    });
    let roles: Vec<String> = nodes_of(&status)
        .iter()
        .map(|n| n["role"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| *r == "leader").count(),
        1,
        "{status}"
    );
    assert_eq!(
        roles.iter().filter(|r| *r == "follower").count(),
        2,
        "{status}"
    );
    let nodes = nodes_of(&status);
    let zones: Vec<&str> = nodes
        .iter()
        .map(|n| n["zone"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(zones, ["a", "b", "c"], "--zones spreads nodes round robin");
    for n in nodes_of(&status) {
        assert_eq!(n["state"], "up");
        assert_eq!(n["voter"], true);
        assert!(n["address"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(n.get("zone").is_some());
    }

    // Catalog entries, committed through Raft.
    rt.block_on(async {
        for i in 0..20 {
            client
                .catalog_put("demo", &format!("ds-{i:02}"), format!("v{i}").into_bytes())
                .await
                .unwrap();
        }
    });

    // SIGKILL the leader: a new one within 5 s, the catalog intact.
    let old = status["leader"].as_u64().unwrap();
    let survivors: Vec<String> = (1..=3)
        .filter(|id| *id != old)
        .map(|id| cluster.addr(id))
        .collect();
    cluster.kill(old);
    let killed_at = Instant::now();
    let (new, _term) = rt.block_on(async {
        let deadline = killed_at + Duration::from_secs(10);
        loop {
            if let Some((id, term)) = agreed_leader(&client, &survivors).await {
                if id != old {
                    return (id, term);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no new leader 10 s after the old one died\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let failover = killed_at.elapsed();
    assert!(
        failover < Duration::from_secs(5),
        "new leader {new} took {failover:?}"
    );
    // As a user sees it: a new CLI process, which knows no leader and may try the dead node
    // first, reads; `tern status` shows the dead node as unreachable.
    let read = cluster.tern(&["catalog", "get", "demo", "ds-03"]);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "v3");
    let status = cluster.status_json().expect("status with a node down");
    let dead = nodes_of(&status)
        .into_iter()
        .find(|n| n["id"] == old)
        .expect("the dead node is listed");
    assert_eq!(dead["role"], "unreachable", "{status}");
    rt.block_on(async {
        for i in 0..20 {
            let value = client
                .catalog_get("demo", &format!("ds-{i:02}"))
                .await
                .unwrap();
            assert_eq!(
                value,
                Some(format!("v{i}").into_bytes()),
                "key ds-{i:02} after failover"
            );
        }
        // Writes keep working with two of three voters.
        client
            .catalog_put("demo", "after-failover", b"yes".to_vec())
            .await
            .unwrap();
    });

    // The killed node restarts from its data dir and catches up.
    cluster.start(old);
    let caught_up = cluster.tern(&[
        "wait",
        "caught-up",
        &old.to_string(),
        "--timeout-secs",
        "60",
    ]);
    assert!(
        caught_up.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&caught_up.stderr),
        cluster.logs()
    );
    // It rejoined the group: all three agree on one leader (the restart may have moved
    // leadership, which is allowed), and it follows it.
    let all: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let leader = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some((id, _)) = agreed_leader(&client, &all).await {
                return id;
            }
            assert!(
                Instant::now() < deadline,
                "the three nodes do not agree on a leader\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let m = rt
        .block_on(local_metrics(&client, &cluster.addr(old)))
        .expect("restarted node answers");
    assert_eq!(m.leader, Some(leader));
    assert!(matches!(m.role, Role::Follower | Role::Leader), "{m:?}");

    // A clean stop (SIGTERM) of everything and a restart keep identities and metadata.
    let down = cluster.tern(&["down"]);
    assert!(down.status.success());
    let stopped = cluster.tern(&["status"]);
    assert!(
        !stopped.status.success(),
        "status must fail with no node running"
    );
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one-line error, got: {err}");
    assert!(err.starts_with("error: no node of the cluster"), "{err}");

    cluster.up_with(3, &[]);
    rt.block_on(async {
        let client = cluster.client();
        assert_eq!(
            client.catalog_get("demo", "ds-07").await.unwrap(),
            Some(b"v7".to_vec())
        );
        assert_eq!(
            client.catalog_get("demo", "after-failover").await.unwrap(),
            Some(b"yes".to_vec())
        );
        let status = client.status().await.unwrap();
        let ids: Vec<u64> = status.nodes.iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    });
}

#[test]
fn a_fourth_node_joins_as_learner_and_strangers_and_bad_frames_are_refused() {
    setup();
    let cluster = LocalCluster::up(3);
    let rt = runtime();
    let _in_runtime = rt.enter();

    // `tern up --nodes 4` on a running 3-node cluster starts node 4, which joins as a learner
    // (and logs JSON when asked to).
    cluster.up_with(4, &["--log-format", "json"]);
    let status = wait_for("node 4 as learner", Duration::from_secs(30), || {
        cluster.status_json().filter(|s| {
            nodes_of(s)
                .iter()
                .any(|n| n["id"] == 4 && n["role"] == "learner")
        })
    });
    let four = nodes_of(&status)
        .into_iter()
        .find(|n| n["id"] == 4)
        .unwrap();
    assert_eq!(four["voter"], false);
    assert_eq!(four["state"], "up");
    assert_eq!(
        nodes_of(&status)
            .iter()
            .filter(|n| n["voter"] == true)
            .count(),
        3
    );

    // A client whose certificate comes from another cluster's CA is refused at the handshake.
    let stranger_dir = tempfile::tempdir().unwrap();
    let init = tern(&[
        "cluster",
        "init",
        "--dir",
        stranger_dir.path().to_str().unwrap(),
        "--nodes",
        "1",
    ]);
    assert!(init.status.success());
    let stranger = Client::with_identity(
        stranger_dir.path(),
        vec![cluster.addr(1)],
        &tern_net_files(stranger_dir.path()),
    )
    .unwrap();
    rt.block_on(async {
        let refused = stranger.call_node(&cluster.addr(1), Request::Ping).await;
        assert!(
            refused.is_err(),
            "a foreign certificate must be refused, got {refused:?}"
        );
    });

    // Malformed and oversized frames get an error answer; the node keeps serving.
    let client = cluster.client();
    rt.block_on(async {
        let addr = cluster.addr(2);
        let garbage = frame(&[0xde, 0xad, 0xbe, 0xef, 0x01]);
        match client.transport().call_raw(&addr, &garbage).await.unwrap() {
            Response::Error(e) => assert_eq!(e.kind, ErrorKind::BadFrame, "{e}"),
            other => panic!("malformed frame answered with {other:?}"),
        }

        let mut truncated = frame(&encode_request(&Request::Ping));
        truncated.truncate(truncated.len() - 1);
        truncated[3] += 5; // the header now promises more than is sent
        match client
            .transport()
            .call_raw(&addr, &truncated)
            .await
            .unwrap()
        {
            Response::Error(e) => assert_eq!(e.kind, ErrorKind::BadFrame, "{e}"),
            other => panic!("truncated frame answered with {other:?}"),
        }

        let mut oversized = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
        oversized.extend(std::iter::repeat_n(0u8, MAX_FRAME_BYTES + 1));
        match client
            .transport()
            .call_raw(&addr, &oversized)
            .await
            .unwrap()
        {
            Response::Error(e) => {
                assert_eq!(e.kind, ErrorKind::TooLarge, "{e}");
                assert!(e.message.contains("exceeds"), "{e}");
            }
            other => panic!("oversized frame answered with {other:?}"),
        }

        // A client certificate may not speak Raft or join nodes, though the same CA signed it.
        let forged = Request::Raft {
            kind: RaftKind::Vote,
            payload: vec![0; 16],
        };
        match client.call_node(&addr, forged).await.unwrap() {
            Response::Error(e) => assert_eq!(e.kind, ErrorKind::Forbidden, "{e}"),
            other => panic!("raft from a client answered with {other:?}"),
        }

        assert_eq!(
            client.call_node(&addr, Request::Ping).await.unwrap(),
            Response::Pong { id: 2 }
        );
        client
            .catalog_put("t", "still", b"serving".to_vec())
            .await
            .unwrap();
    });
    let log = std::fs::read_to_string(cluster.path().join("logs/node-2.log")).unwrap();
    assert!(
        log.contains("bad request frame") && log.contains("refused request frame"),
        "bad frames are logged"
    );
    let log1 = std::fs::read_to_string(cluster.path().join("logs/node-1.log")).unwrap();
    assert!(
        log1.contains("refused connection"),
        "the stranger's handshake is logged"
    );
}

fn tern_net_files(dir: &std::path::Path) -> tern_client::TlsFiles {
    tern_client::TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("admin.pem"),
        key: dir.join("admin.key"),
    }
}

#[test]
fn status_without_a_cluster_is_a_one_line_error() {
    setup();
    let empty = tempfile::tempdir().unwrap();
    let out = tern(&["status", "--cluster", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("client.toml") && err.contains("tern up"),
        "{err}"
    );
}
