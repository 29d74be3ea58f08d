//! Who may send what, checked before a request is answered: the caller's certificate names a
//! node (bound to its id) or a client (with a role), every request names the access it needs
//! (`tern_proto::Request::access`), a node may speak only for itself, and raw catalog writes
//! never touch the tables typed requests keep. This is also where requests enter the node
//! ([`tern_net::Handler`]).

use tern_proto::{
    Caller, CatalogOp, Clock, ErrorKind, Request, Response, SYSTEM_TABLES, Transport,
};
use tracing::warn;

use crate::NodeService;

/// Requests that speak for their sender's own node id, checked against its certificate: they
/// must reach the leader directly, never through another node.
pub(crate) fn bound_to_sender(request: &Request) -> bool {
    matches!(request, Request::Join(_) | Request::Heartbeat { .. })
}

/// The first system table (see [`tern_proto::SYSTEM_TABLES`]) a raw catalog write touches.
pub(crate) fn system_table_written(ops: &[CatalogOp]) -> Option<&str> {
    ops.iter()
        .map(|op| match op {
            CatalogOp::Put { table, .. }
            | CatalogOp::Delete { table, .. }
            | CatalogOp::Expect { table, .. } => table.as_str(),
        })
        .find(|table| SYSTEM_TABLES.contains(table))
}

/// Who may send `request`: the caller its certificate names must have the access the request
/// needs, and a node may speak only for itself. The refusal is one line, naming what is missing.
fn authorize(request: &Request, peer: &tern_net::Peer) -> Result<Caller, String> {
    let caller = peer.identity.clone()?;
    caller.may(request.access(), request.name())?;
    if let Caller::Node(me) = caller {
        let claimed = match request {
            Request::Join(record) => Some(record.id),
            Request::Heartbeat { id } => Some(*id),
            _ => None,
        };
        if let Some(claimed) = claimed.filter(|claimed| *claimed != me) {
            return Err(format!(
                "a {} for node {claimed} from node {me}'s certificate",
                request.name()
            ));
        }
    }
    Ok(caller)
}

impl<T: Transport, C: Clock> NodeService<T, C> {
    /// [`authorize`], logged when refused.
    fn admit_request(&self, request: &Request, peer: &tern_net::Peer) -> Result<Caller, Response> {
        if self.revocations.is_revoked(&peer.serial) {
            return Err(Response::error(
                ErrorKind::Forbidden,
                "this certificate has been revoked",
            ));
        }
        authorize(request, peer).map_err(|reason| {
            warn!(peer = %peer.addr, request = request.name(), %reason, "request refused");
            Response::error(ErrorKind::Forbidden, reason)
        })
    }
}

impl<T: Transport, C: Clock> tern_net::Handler for NodeService<T, C> {
    async fn handle(&self, request: Request, peer: tern_net::Peer) -> Response {
        match self.admit_request(&request, &peer) {
            Ok(caller) => NodeService::handle(self, request, &caller).await,
            Err(refusal) => refusal,
        }
    }

    fn is_bulk(&self, request: &Request) -> bool {
        matches!(
            request,
            Request::PutBlock { .. }
                | Request::GetBlock { .. }
                | Request::RunTask { .. }
                | Request::FetchShuffle { .. }
                | Request::Query { .. }
                | Request::SubmitGraph { .. }
        )
    }

    async fn handle_bulk(
        &self,
        request: Request,
        peer: tern_net::Peer,
        body: tern_net::BodyReader,
        reply: tern_net::BodyWriter,
    ) {
        let caller = match self.admit_request(&request, &peer) {
            Ok(caller) => caller,
            Err(refusal) => {
                let mut reply = reply;
                if reply.respond(&refusal).await.is_ok() {
                    let _ = reply.finish().await;
                }
                return;
            }
        };
        match request {
            Request::RunTask { job, plan, tasks } => self.run_task(job, plan, tasks, reply).await,
            Request::FetchShuffle {
                job,
                stage,
                tasks,
                bucket,
                columns,
            } => {
                let keys = tasks
                    .into_iter()
                    .map(|task| tern_exec::ShuffleKey {
                        job,
                        stage,
                        task,
                        bucket,
                    })
                    .collect();
                let columns = columns.map(|c| c.into_iter().map(|c| c as usize).collect());
                self.serve_shuffle(keys, columns, reply).await
            }
            Request::Query { sql, explain } => self.run_query(sql, explain, &caller, reply).await,
            Request::SubmitGraph { bytes } => self.submit_graph(bytes, body, &caller, reply).await,
            request => self.serve_bulk(request, body, reply).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use tern_proto::{NodeRecord, NodeState};

    use super::*;

    fn peer(identity: Result<Caller, String>) -> tern_net::Peer {
        tern_net::Peer {
            addr: ([127, 0, 0, 1], 9).into(),
            identity,
            serial: "01".into(),
        }
    }

    #[test]
    fn a_node_speaks_only_for_itself_and_clients_only_within_their_role() {
        let node2 = peer(Ok(Caller::Node(2)));
        let record = |id| NodeRecord {
            id,
            addr: "127.0.0.1:7404".into(),
            zone: String::new(),
            capacity_bytes: 1,
            state: NodeState::Up,
        };
        assert!(authorize(&Request::Heartbeat { id: 2 }, &node2).is_ok());
        let forged = authorize(&Request::Heartbeat { id: 3 }, &node2).unwrap_err();
        assert!(forged.contains("node 3 from node 2"), "{forged}");
        assert!(authorize(&Request::Join(record(2)), &node2).is_ok());
        assert!(authorize(&Request::Join(record(1)), &node2).is_err());

        let reader = peer(Ok(Caller::Client {
            name: "r".into(),
            role: Some(tern_proto::ClientRole::Read),
        }));
        assert!(authorize(&Request::Status, &reader).is_ok());
        let refused = authorize(&Request::ScrubNow, &reader).unwrap_err();
        assert!(refused.contains("admin role"), "{refused}");
        assert!(authorize(&Request::Heartbeat { id: 2 }, &reader).is_err());
        let unbound = peer(Err("node certificate not bound to a node id".into()));
        assert!(
            authorize(&Request::Ping, &unbound)
                .unwrap_err()
                .contains("not bound")
        );
        assert_eq!(
            system_table_written(&[CatalogOp::Put {
                table: "datasets".into(),
                key: "x".into(),
                value: vec![]
            }]),
            Some("datasets")
        );
        assert_eq!(
            system_table_written(&[CatalogOp::Delete {
                table: "demo".into(),
                key: "x".into()
            }]),
            None
        );
    }
}
