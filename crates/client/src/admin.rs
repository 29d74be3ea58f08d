//! The cluster's state and its catalog: status, each node's own view, the serving leader,
//! drain and scrub, and catalog reads and writes.

use std::time::Duration;

use tern_proto::{CatalogOp, ClusterStatus, ErrorKind, NodeId, Request, Response, Transport};

use crate::{Client, ClientError};

/// Nodes `scrub_now` asks at once.
pub const SCRUBS_AT_ONCE: usize = 32;

impl<T: Transport> Client<T> {
    /// Every configured node's own Raft view, asked concurrently; `None` for nodes that did
    /// not answer within `timeout`.
    pub async fn node_metrics(
        &self,
        timeout: Duration,
    ) -> Vec<(String, Option<tern_proto::LocalMetrics>)> {
        let mut asks = tokio::task::JoinSet::new();
        for (i, addr) in self.nodes.iter().enumerate() {
            let transport = self.transport.clone();
            let addr = addr.clone();
            asks.spawn(async move {
                let answer = transport
                    .call_within(&addr, Request::LocalMetrics, timeout)
                    .await;
                let metrics = match answer {
                    Ok(Response::Metrics(m)) => Some(m),
                    _ => None,
                };
                (i, addr, metrics)
            });
        }
        let mut all = Vec::new();
        while let Some(Ok(row)) = asks.join_next().await {
            all.push(row);
        }
        all.sort_by_key(|(i, _, _)| *i);
        all.into_iter().map(|(_, addr, m)| (addr, m)).collect()
    }

    /// The leader, if one node reports itself leading and answers a linearizable read now.
    pub async fn serving_leader(
        &self,
        timeout: Duration,
    ) -> Option<(tern_proto::NodeId, u64, String)> {
        let views = self.node_metrics(timeout).await;
        let (addr, m) = views
            .into_iter()
            .filter_map(|(addr, m)| Some((addr, m?)))
            .filter(|(_, m)| m.role == tern_proto::Role::Leader)
            .max_by_key(|(_, m)| m.term)?;
        let read = Request::CatalogGet {
            table: "tern".into(),
            key: "probe".into(),
        };
        match self.transport.call_within(&addr, read, timeout).await {
            Ok(Response::CatalogValue(_)) => Some((m.id, m.term, addr)),
            _ => None,
        }
    }

    /// Start draining node `id`: its replicas move to other nodes, then it is marked drained.
    pub async fn drain(&self, id: NodeId) -> Result<(), ClientError> {
        match self.call(Request::Drain { node: id }).await? {
            Response::Ack => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// A full scrub pass on every node that answers (nodes that do not are skipped), up to
    /// [`SCRUBS_AT_ONCE`] nodes at a time: each reads its own disk, so a cluster scrubs in
    /// about the time of its slowest node, not the sum of all. Reports in node order.
    pub async fn scrub_now(&self) -> Result<Vec<tern_proto::ScrubReport>, ClientError> {
        let long = std::time::Duration::from_secs(600);
        let mut nodes = self.status().await?.nodes.into_iter();
        let mut running = tokio::task::JoinSet::new();
        let mut reports = Vec::new();
        loop {
            while running.len() < SCRUBS_AT_ONCE {
                let Some(node) = nodes.next() else { break };
                let transport = self.transport.clone();
                running.spawn(async move {
                    transport
                        .call_within(&node.address, Request::ScrubNow, long)
                        .await
                });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            match done {
                Ok(Ok(Response::Scrubbed(report))) => reports.push(report),
                // Refused (a role the request needs): the same on every node.
                Ok(Ok(Response::Error(e))) if e.kind == ErrorKind::Forbidden => {
                    return Err(ClientError::from_reply(e));
                }
                // A node that does not answer is scrubbed by its own background pass.
                _ => {}
            }
        }
        reports.sort_by_key(|r| r.node);
        Ok(reports)
    }

    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        match self.call(Request::Status).await? {
            Response::Status(status) => Ok(status),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn catalog_write(&self, ops: Vec<CatalogOp>) -> Result<u64, ClientError> {
        match self.call(Request::CatalogWrite(ops)).await? {
            Response::Written { log_index } => Ok(log_index),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn catalog_put(
        &self,
        table: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<u64, ClientError> {
        self.catalog_write(vec![CatalogOp::Put {
            table: table.into(),
            key: key.into(),
            value,
        }])
        .await
    }

    pub async fn catalog_get(
        &self,
        table: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        match self
            .call(Request::CatalogGet {
                table: table.into(),
                key: key.into(),
            })
            .await?
        {
            Response::CatalogValue(value) => Ok(value),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn catalog_list(
        &self,
        table: &str,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<(String, Vec<u8>)>, ClientError> {
        match self
            .call(Request::CatalogList {
                table: table.into(),
                prefix: prefix.into(),
                limit,
            })
            .await?
        {
            Response::CatalogEntries(entries) => Ok(entries),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
