//! Who may send what: every request names the access it needs ([`Request::access`]), and
//! every caller proves what it has with its certificate ([`Caller`]). Nodes may send anything;
//! clients carry a role, each role allowing what the roles below it allow:
//!
//! | role | may |
//! |---|---|
//! | `read` | status, catalog reads, reading blocks, SQL queries |
//! | `write` | the above, storing blocks, putting, replacing and removing datasets |
//! | `admin` | the above, drain, scrub, raw writes to operator tables, revoking certificates, quotas |
//!
//! Requests only nodes send (Raft, joins, heartbeats, tasks, shuffles, forwarding, repair
//! copies) need [`Access::Node`]. The mapping lives here, beside the requests, so adding a
//! request means saying who may send it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::message::{NodeId, Request};

/// A client certificate's role. Ordered: a higher role allows everything a lower one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientRole {
    Read,
    Write,
    Admin,
}

impl fmt::Display for ClientRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientRole::Read => "read",
            ClientRole::Write => "write",
            ClientRole::Admin => "admin",
        })
    }
}

impl FromStr for ClientRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(ClientRole::Read),
            "write" => Ok(ClientRole::Write),
            "admin" => Ok(ClientRole::Admin),
            other => Err(format!(
                "unknown role {other:?}: the roles are read, write and admin"
            )),
        }
    }
}

/// What a request needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A client with at least this role, or a node.
    Client(ClientRole),
    /// Cluster nodes only.
    Node,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Client(role) => write!(f, "the {role} role"),
            Access::Node => f.write_str("a node certificate"),
        }
    }
}

/// Who sent a request, as its certificate proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    /// A node certificate bound to this node id.
    Node(NodeId),
    /// A client certificate: its name, and its role (`None`: a certificate without one, as
    /// issued before roles existed, which may do nothing until it is reissued).
    Client {
        name: String,
        role: Option<ClientRole>,
    },
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Node(id) => write!(f, "node {id}"),
            Caller::Client {
                name,
                role: Some(role),
            } => write!(f, "client {name:?} ({role})"),
            Caller::Client { name, role: None } => write!(f, "client {name:?} (no role)"),
        }
    }
}

impl Caller {
    /// Whether this caller may send a request needing `access`; the error names what is
    /// missing, in one line.
    pub fn may(&self, access: Access, request: &str) -> Result<(), String> {
        match (self, access) {
            (Caller::Node(_), _) => Ok(()),
            (
                Caller::Client {
                    role: Some(have), ..
                },
                Access::Client(need),
            ) if *have >= need => Ok(()),
            (Caller::Client { role: None, .. }, _) => Err(format!(
                "{request} needs {access}, and this {self} certificate carries no role; issue one with `tern cert issue --role ROLE --name NAME`"
            )),
            (Caller::Client { .. }, Access::Node) => Err(format!(
                "{request} requests are for cluster nodes; this {self} certificate is a client's"
            )),
            (Caller::Client { .. }, Access::Client(_)) => {
                Err(format!("{request} needs {access}; this is {self}"))
            }
        }
    }

    pub fn node_id(&self) -> Option<NodeId> {
        match self {
            Caller::Node(id) => Some(*id),
            Caller::Client { .. } => None,
        }
    }
}

impl Request {
    /// The access this request needs.
    pub fn access(&self) -> Access {
        use ClientRole::*;
        match self {
            Request::Ping
            | Request::Status
            | Request::LocalMetrics
            | Request::CatalogGet { .. }
            | Request::CatalogList { .. }
            | Request::ListDatasets { .. }
            | Request::GetBlock { .. }
            | Request::Query { .. }
            | Request::SubmitGraph { .. }
            | Request::Jobs
            // Only the job's own client or an admin: the coordinator checks which.
            | Request::CancelJob { .. } => Access::Client(Read),
            Request::PutBlock { .. }
            | Request::Place { .. }
            | Request::BeginPut { .. }
            | Request::RenewPut { .. }
            | Request::EndPut { .. }
            | Request::CommitDataset { .. }
            | Request::RemoveDataset { .. } => Access::Client(Write),
            // Raw writes: only to operator tables (the node checks which), never the ones the
            // typed requests above keep consistent.
            Request::CatalogWrite(_)
            | Request::ScrubNow
            | Request::Drain { .. }
            | Request::Revoke { .. }
            | Request::SetQuota { .. } => Access::Client(Admin),
            Request::Raft { .. }
            | Request::Join(_)
            | Request::Heartbeat { .. }
            | Request::Forwarded { .. }
            | Request::CopyBlock { .. }
            | Request::RunTask { .. }
            | Request::RunGraphTasks { .. }
            | Request::FetchShuffle { .. }
            | Request::ReleaseJob { .. }
            | Request::BlockSizes { .. } => Access::Node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(role: Option<ClientRole>) -> Caller {
        Caller::Client {
            name: "alice".into(),
            role,
        }
    }

    #[test]
    fn roles_allow_what_the_roles_below_them_allow() {
        let query = Request::Query {
            sql: "SELECT 1".into(),
            explain: false,
        };
        let drain = Request::Drain { node: 2 };
        let heartbeat = Request::Heartbeat { id: 2 };
        for role in [ClientRole::Read, ClientRole::Write, ClientRole::Admin] {
            assert!(client(Some(role)).may(query.access(), "query").is_ok());
        }
        let refused = client(Some(ClientRole::Write))
            .may(drain.access(), "drain")
            .unwrap_err();
        assert!(refused.contains("admin role"), "{refused}");
        assert!(
            client(Some(ClientRole::Admin))
                .may(drain.access(), "drain")
                .is_ok()
        );
        assert!(
            client(Some(ClientRole::Admin))
                .may(heartbeat.access(), "heartbeat")
                .unwrap_err()
                .contains("for cluster nodes")
        );
        assert!(
            client(None)
                .may(query.access(), "query")
                .unwrap_err()
                .contains("carries no role")
        );
        assert!(Caller::Node(3).may(heartbeat.access(), "heartbeat").is_ok());
        assert_eq!("write".parse::<ClientRole>(), Ok(ClientRole::Write));
        assert!("root".parse::<ClientRole>().is_err());
    }
}
