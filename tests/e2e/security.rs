//! Hostile clients on a real cluster: each attempt a client with the wrong role or a crafted
//! request can make gets a one-line error, every node keeps serving, and no stored data is
//! lost or changed.

use std::time::Duration;

use tern_e2e::{LocalCluster, wait_for};
use tern_proto::{
    CatalogOp, ErrorKind, NodeRecord, NodeState, PartitionRecord, PutId, Request, Response,
};

use crate::setup;

/// Every node process is still alive and the cluster answers a query.
fn all_serving(cluster: &LocalCluster, context: &str) {
    for id in 1..=cluster.nodes {
        let alive = unsafe { libc::kill(cluster.pid(id), 0) } == 0;
        assert!(alive, "node {id} died after {context}\n{}", cluster.logs());
    }
    let out = cluster.tern(&["sql", "SELECT count(*) AS n FROM t"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("| 4 "),
        "after {context}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
}

/// The error `tern` printed, checked to be one line containing `expect`.
fn one_line_error(out: &std::process::Output, expect: &str, context: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "{context} succeeded");
    assert_eq!(err.lines().count(), 1, "{context}: not one line:\n{err}");
    assert!(err.contains(expect), "{context}: {err}");
    err
}

fn refused(answer: Result<Response, impl std::fmt::Debug>, kind: ErrorKind, context: &str) {
    match answer {
        Ok(Response::Error(e)) => assert_eq!(e.kind, kind, "{context}: {}", e.message),
        other => panic!("{context}: answered {other:?}"),
    }
}

fn csv_of_t(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("t.csv");
    std::fs::write(&path, "s,n\nab,3\nxyz,1000000000000\nq,-5\n,7\n").unwrap();
    path
}

/// Queries that ask DataFusion to allocate without bound, on constants and on a table's
/// columns: each fails with a clear line, and every node stays up for the next query. (The
/// first one, run as a new user would, used to kill the coordinating node, and the CLI's
/// retry killed a second: the whole cluster went down.)
#[test]
fn allocation_bombs_fail_their_query_and_no_node_goes_down() {
    setup();
    let cluster = LocalCluster::up_args(3, &["--query-timeout-secs", "3"]);
    cluster.put(&csv_of_t(cluster.path()), "t", &[]);
    all_serving(&cluster, "the put");
    let bombs = [
        "SELECT repeat(arrow_cast('x','LargeUtf8'), 10000000000000) AS s",
        "SELECT repeat(s, n) FROM t",
        "SELECT lpad(s, 2000000000) FROM t",
        "SELECT rpad(s, n, 'ab') FROM t",
        "SELECT replace(repeat(s, 100000), 'a', repeat('b', 100000)) FROM t",
        "SELECT regexp_replace(repeat(s, 1000000), '', repeat('b', 1000), 'g') FROM t",
        "SELECT array_repeat(s, n) FROM t",
        "SELECT array_resize([s], n) FROM t",
        "SELECT range(0, n) FROM t",
        "SELECT arrow_cast(NULL, 'FixedSizeBinary(2147483647)') FROM t",
        "SELECT concat(s, repeat('x', 1000000)) FROM t",
        "SELECT repeat('a', 40000) AS c1, repeat('b', 40000) AS c2 FROM t",
    ];
    for sql in bombs {
        let out = cluster.tern(&["sql", sql]);
        one_line_error(&out, "more than", sql);
        all_serving(&cluster, sql);
    }

    // What is only slow runs until its deadline, then stops, and its coordinator's CPU with it.
    let endless = "SELECT count(*) FROM generate_series(1, 100000000000)";
    let out = cluster.tern(&["sql", endless]);
    one_line_error(&out, "deadline", endless);
    let busy: Vec<u64> = (1..=3).map(|id| cpu_ticks(cluster.pid(id))).collect();
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        all_serving(&cluster, "the query past its deadline");
    }
    for (i, before) in busy.iter().enumerate() {
        let spent = cpu_ticks(cluster.pid(i as u64 + 1)) - before;
        // Serving the checks above takes a little; a query still running would take all of
        // a core (about 200 ticks in 2 s).
        assert!(spent < 120, "node {} still spent {spent} ticks", i + 1);
    }
}

/// CPU time a process has used, in clock ticks (user + system, from /proc).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are the 12th and 13th after the name.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Crafted Arrow bytes (a compressed buffer declaring 2^40 bytes, what made every holder
/// abort) stored as a dataset: the query fails with one line, once (not retried on the other
/// holders: every copy is the same), and no node dies.
#[test]
fn a_hostile_block_fails_its_query_once_and_no_node_goes_down() {
    setup();
    let cluster = LocalCluster::up(3);
    cluster.put(&csv_of_t(cluster.path()), "t", &[]);
    let rt = tern_e2e::runtime();
    let _in = rt.enter();
    let writer = cluster.client_as("writer");
    let (bytes, schema) = hostile_block();
    rt.block_on(async {
        let mut put = writer.dataset_writer("evil", false).await.unwrap();
        put.add_partition(&bytes, 10_000).await.unwrap();
        put.commit("arrow-ipc", &tern_client::ingest::schema_json(&schema))
            .await
            .unwrap();
    });
    let out = cluster.tern(&["sql", "SELECT sum(x) FROM evil"]);
    one_line_error(&out, "not a valid partition", "the hostile block's query");
    all_serving(&cluster, "the hostile block's query");
    // One attempt on one holder, not three.
    let logs: usize = (1..=3)
        .map(|id| {
            let log = cluster.path().join("logs").join(format!("node-{id}.log"));
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches("not its dataset's data")
                .count()
        })
        .sum();
    assert_eq!(logs, 1, "the bad block was tried {logs} times");
}

/// A zstd Arrow IPC stream of one Int64 column `x`, whose first compressed buffer declares
/// 2^40 bytes uncompressed.
fn hostile_block() -> (Vec<u8>, arrow::datatypes::Schema) {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
    let schema = Schema::new(vec![Field::new("x", DataType::Int64, false)]);
    let batch = arrow::record_batch::RecordBatch::try_new(
        std::sync::Arc::new(schema.clone()),
        vec![std::sync::Arc::new(Int64Array::from_iter_values(0..10_000))],
    )
    .unwrap();
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(arrow::ipc::CompressionType::ZSTD))
        .unwrap();
    let mut w = StreamWriter::try_new_with_options(Vec::new(), &schema, options).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let mut bytes = w.into_inner().unwrap();
    // Skip the schema message, find the batch's body and its data buffer.
    let mut at = 0;
    let mut found = None;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let meta = at + 8;
        let message = arrow::ipc::root_as_message(&bytes[meta..meta + len]).unwrap();
        let body = meta + len;
        if let Some(batch) = message.header_as_record_batch() {
            let buffer = batch
                .buffers()
                .unwrap()
                .iter()
                .find(|b| b.length() >= 8)
                .unwrap();
            found = Some(body + buffer.offset() as usize);
        }
        at = body + message.bodyLength() as usize;
    }
    let at = found.expect("a compressed buffer");
    bytes[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    (bytes, schema)
}

/// Roles, replica chains, node identities, typed catalog writes and revocation, each tried
/// the wrong way on one cluster.
#[test]
fn requests_are_checked_against_who_sent_them() {
    setup();
    let cluster = LocalCluster::up(3);
    cluster.put(&csv_of_t(cluster.path()), "t", &[]);
    let rt = tern_e2e::runtime();
    let _in = rt.enter();

    // Roles: a reader queries but does not write; a writer does not scrub or drain.
    let out = cluster.tern_as("reader", &["sql", "SELECT count(*) FROM t"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.tern_as(
        "reader",
        &[
            "put",
            csv_of_t(cluster.path()).to_str().unwrap(),
            "--name",
            "u",
        ],
    );
    one_line_error(&out, "needs the write role", "a reader's put");
    let out = cluster.tern_as("writer", &["scrub", "--now"]);
    one_line_error(&out, "needs the admin role", "a writer's scrub");
    let out = cluster.tern_as("writer", &["node", "drain", "2", "--no-wait"]);
    one_line_error(&out, "needs the admin role", "a writer's drain");
    let out = cluster.tern_as("reader", &["rm", "t"]);
    one_line_error(&out, "needs the write role", "a reader's rm");

    // Quotas: the writer may own 100 bytes; its put of more is refused, nothing committed.
    let out = cluster.tern(&["quota", "set", "writer", "100B"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.tern_as(
        "writer",
        &[
            "put",
            csv_of_t(cluster.path()).to_str().unwrap(),
            "--name",
            "w",
        ],
    );
    one_line_error(&out, "quota", "a put past its quota");
    let out = cluster.tern_as("writer", &["quota", "set", "writer", "none"]);
    one_line_error(
        &out,
        "needs the admin role",
        "a writer lifting its own quota",
    );
    let out = cluster.tern(&["quota", "set", "writer", "none"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.tern_as(
        "writer",
        &[
            "put",
            csv_of_t(cluster.path()).to_str().unwrap(),
            "--name",
            "w",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.tern(&["quota", "ls"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("writer") && listed.contains("admin"),
        "{listed}"
    );
    // (Its blocks are t's, by content: gone, so that t's removal below frees them.)
    let out = cluster.tern_as("writer", &["rm", "w"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Raw catalog writes: not for writers, and never to the tables typed requests keep.
    let out = cluster.tern_as("writer", &["catalog", "put", "demo", "k", "v"]);
    one_line_error(&out, "needs the admin role", "a writer's raw write");
    let out = cluster.tern(&["catalog", "put", "datasets", "t", "garbage"]);
    one_line_error(&out, "written only through", "a raw write to datasets");
    let out = cluster.tern(&["catalog", "put", "demo", "k", "v"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let admin = cluster.client();
    let writer = cluster.client_as("writer");
    let t = rt.block_on(admin.dataset("t")).unwrap().unwrap();

    // A block with a chain naming node 1 again and again: refused, not stored 200 times.
    let data = tern_e2e::payload(1 << 20, 3);
    let chain: Vec<String> = std::iter::repeat_n(cluster.addr(1), 200).collect();
    let err = rt
        .block_on(writer.put_block(&data, &chain, None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("replica chain"), "{err}");
    let twice = vec![cluster.addr(1), cluster.addr(2), cluster.addr(2)];
    let err = rt
        .block_on(writer.put_block(&data, &twice, None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("appears twice"), "{err}");
    let stranger = vec![cluster.addr(1), "127.0.0.1:9".to_string()];
    let err = rt
        .block_on(writer.put_block(&data, &stranger, None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a node of this cluster"), "{err}");

    // A dataset record whose holders are one node three times does not count as three
    // replicas: the leader refuses it.
    let put = PutId([7; 16]);
    rt.block_on(writer.call(Request::BeginPut {
        put,
        dataset: "fake".into(),
    }))
    .unwrap();
    let mut record = t.clone();
    record.name = "fake".into();
    record.version = 1;
    record.partitions = vec![PartitionRecord {
        holders: vec![1, 1, 1],
        ..t.partitions[0].clone()
    }];
    let commit = Request::CommitDataset {
        record: record.clone(),
        replaces: None,
        put,
        renewals: 0,
        write: PutId([8; 16]),
    };
    let err = rt.block_on(writer.call(commit)).unwrap_err().to_string();
    assert!(err.contains("distinct holders"), "{err}");
    record.partitions[0].holders = vec![1, 2, 99];
    let commit = Request::CommitDataset {
        record,
        replaces: None,
        put,
        renewals: 0,
        write: PutId([9; 16]),
    };
    let err = rt.block_on(writer.call(commit)).unwrap_err().to_string();
    assert!(err.contains("not in the cluster"), "{err}");

    // Bounds that are not the table's (they would skip partitions a filter matches): refused.
    assert!(!t.bounds.is_empty(), "a table put records its bounds");
    for (n, bounds) in [
        b"not arrow at all".to_vec(),
        t.bounds[..t.bounds.len() / 2].to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut record = t.clone();
        record.name = "fake".into();
        record.version = 1;
        record.bounds = bounds;
        let commit = Request::CommitDataset {
            record,
            replaces: None,
            put,
            renewals: 0,
            write: PutId([30 + n as u8; 16]),
        };
        let err = rt.block_on(writer.call(commit)).unwrap_err().to_string();
        assert!(err.contains("bounds") && !err.contains('\n'), "{err}");
    }

    // Array records that do not hold together are refused by the leader, each saying why:
    // an object dtype, fewer partitions than chunks, a partition claiming another element
    // count than its chunk has.
    for (n, (schema, rows, says)) in [
        (
            r#"{"dtype":"|O","shape":[4],"chunks":[4]}"#,
            4,
            "object arrays",
        ),
        (r#"{"dtype":"<f8","shape":[8],"chunks":[2]}"#, 2, "4 chunks"),
        (
            r#"{"dtype":"<f8","shape":[4],"chunks":[4]}"#,
            9,
            "claims 9 elements",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut array = t.clone();
        array.name = "fake".into();
        array.version = 1;
        array.format = "ndarray".into();
        array.schema = schema.into();
        array.bounds = Vec::new();
        array.partitions = vec![PartitionRecord {
            rows,
            ..t.partitions[0].clone()
        }];
        let commit = Request::CommitDataset {
            record: array,
            replaces: None,
            put,
            renewals: 0,
            write: PutId([20 + n as u8; 16]),
        };
        let err = rt.block_on(writer.call(commit)).unwrap_err().to_string();
        assert!(err.contains(says) && !err.contains('\n'), "{err}");
    }

    // A node certificate speaks only for its own node.
    let node2 = cluster.client_as("node-2");
    let leader = rt
        .block_on(tern_e2e::agreed_leader(
            &admin,
            &(1..=3).map(|id| cluster.addr(id)).collect::<Vec<_>>(),
        ))
        .expect("a leader")
        .0;
    let leader_addr = cluster.addr(leader);
    refused(
        rt.block_on(node2.call_node(&leader_addr, Request::Heartbeat { id: 3 })),
        ErrorKind::Forbidden,
        "node 2's certificate heartbeating for node 3",
    );
    let forged = NodeRecord {
        id: 3,
        addr: "127.0.0.1:9".into(),
        zone: String::new(),
        capacity_bytes: 1 << 40,
        state: NodeState::Up,
    };
    refused(
        rt.block_on(node2.call_node(&leader_addr, Request::Join(forged))),
        ErrorKind::Forbidden,
        "node 2's certificate joining as node 3",
    );
    // A client's certificate cannot send what only nodes send.
    refused(
        rt.block_on(admin.call_node(&leader_addr, Request::Heartbeat { id: 1 })),
        ErrorKind::Forbidden,
        "a client heartbeating",
    );

    // A revoked certificate is refused on every node within seconds.
    let out = cluster.tern(&["cert", "issue", "--role", "read", "--name", "mallory"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.tern_as("mallory", &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mallory = cluster.path().join("mallory.pem");
    let out = cluster.tern(&["cert", "revoke", mallory.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "mallory refused everywhere",
        Duration::from_secs(15),
        || {
            (1..=3)
                .all(|id| {
                    let client = cluster.client_as("mallory");
                    rt.block_on(client.call_node(&cluster.addr(id), Request::Ping))
                        .is_err()
                })
                .then_some(())
        },
    );
    all_serving(&cluster, "revoking mallory");

    // Rotation: new certificates for everyone, picked up by the running nodes without a
    // restart; the old ones then revoked, and the cluster goes on (its connections made again
    // with the new certificates).
    let old: Vec<String> = (1..=3).map(|id| serial_of(&cluster, id)).collect();
    let out = cluster.tern(&["cert", "rotate", "--days", "30"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "every node presents its new certificate",
        Duration::from_secs(30),
        || {
            (1..=3)
                .all(|id| {
                    let log = cluster.path().join("logs").join(format!("node-{id}.log"));
                    std::fs::read_to_string(log)
                        .unwrap_or_default()
                        .contains("presenting the rotated certificate")
                })
                .then_some(())
        },
    );
    for (id, serial) in old.iter().enumerate() {
        assert_ne!(
            serial,
            &serial_of(&cluster, id as u64 + 1),
            "node {} rotated",
            id + 1
        );
        let out = cluster.tern(&["cert", "revoke", "--serial", serial]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for(
        "the cluster healthy on new certificates",
        Duration::from_secs(60),
        || {
            let out = cluster.tern(&["sql", "SELECT count(*) AS n FROM t"]);
            (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("| 4 "))
                .then_some(())
        },
    );
    all_serving(&cluster, "rotating every certificate");

    // Not even a node's certificate writes a system table raw (what nodes write there goes
    // straight to Raft): a record listing one node three times cannot be slipped in.
    let node2 = cluster.client_as("node-2");
    let forged = CatalogOp::Put {
        table: "datasets".into(),
        key: "forged".into(),
        value: vec![0xff; 40],
    };
    refused(
        rt.block_on(node2.call_node(&leader_addr, Request::CatalogWrite(vec![forged]))),
        ErrorKind::Forbidden,
        "a node's raw write to the datasets table",
    );
}

/// The serial number `tern cert show` prints for node `id`'s certificate.
fn serial_of(cluster: &LocalCluster, id: u64) -> String {
    let cert = cluster.path().join(format!("node-{id}.pem"));
    let out = tern_e2e::tern(&["cert", "show", cert.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.rsplit("serial ").next().unwrap().trim().to_string()
}
