//! Raft RPCs over the `Transport` seam: each RPC is postcard-encoded into a
//! `Request::Raft` payload, and the answer (`Result<reply, RaftError>`) comes back the same way.

use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tern_proto::{RaftKind, Request, Response, Transport, TransportError};

use crate::{MetaError, Raft, TypeConfig};

/// Creates one [`MetaPeer`] per Raft target.
pub struct MetaNetwork<T: Transport> {
    transport: Arc<T>,
}

impl<T: Transport> MetaNetwork<T> {
    pub fn new(transport: Arc<T>) -> Self {
        Self { transport }
    }
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for MetaNetwork<T> {
    type Network = MetaPeer<T>;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        MetaPeer {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

pub struct MetaPeer<T: Transport> {
    transport: Arc<T>,
    target: u64,
    addr: String,
}

/// openraft's batch limit for AppendEntries: with commands of at most `MAX_COMMAND_BYTES`
/// a batch of this many fits a frame; larger ones are split (see `append_entries`).
pub(crate) const MAX_ENTRIES_PER_APPEND: u64 = 64;

type RpcResult<R, E> = Result<R, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl<T: Transport> MetaPeer<T> {
    async fn send<Req, Resp, E>(
        &self,
        kind: RaftKind,
        rpc: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = postcard::to_allocvec(rpc).map_err(|e| network_error(e.to_string()))?;
        self.send_encoded(kind, payload, option).await
    }

    async fn send_encoded<Resp, E>(
        &self,
        kind: RaftKind,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let network = network_error;
        let answer = self
            .transport
            .call_within(
                &self.addr,
                Request::Raft { kind, payload },
                option.hard_ttl(),
            )
            .await;
        match answer {
            Ok(Response::Raft(bytes)) => {
                let reply: Result<Resp, RaftError<u64, E>> = postcard::from_bytes(&bytes)
                    .map_err(|e| network(format!("decode raft reply: {e}")))?;
                reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(Response::Error(e)) => Err(network(e.message)),
            Ok(other) => Err(network(format!(
                "unexpected answer to a raft rpc: {other:?}"
            ))),
            Err(e @ (TransportError::Unreachable { .. } | TransportError::Timeout { .. })) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

fn network_error<E: std::error::Error>(
    reason: String,
) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    RPCError::Network(NetworkError::new(&AnyError::error(reason)))
}

impl<T: Transport> RaftNetwork<TypeConfig> for MetaPeer<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        let payload = postcard::to_allocvec(&rpc).map_err(|e| network_error(e.to_string()))?;
        // Leave room for the envelope. openraft resends fewer entries when told the batch is
        // too large, instead of retrying a frame the transport will always refuse.
        if payload.len() > tern_proto::MAX_FRAME_BYTES - (64 << 10) {
            let hint = (rpc.entries.len() as u64 / 2).max(1);
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        self.send_encoded(RaftKind::AppendEntries, payload, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.send(RaftKind::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, openraft::error::Infallible> {
        self.send(RaftKind::Vote, &rpc, &option).await
    }
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, MetaError> {
    postcard::from_bytes(payload).map_err(|e| MetaError::Codec {
        what: "raft rpc",
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, MetaError> {
    postcard::to_allocvec(value).map_err(|e| MetaError::Codec {
        what: "raft reply",
        reason: e.to_string(),
    })
}

/// The receiving side: hand a Raft RPC to the local Raft and encode its answer. `sender` is
/// the node the caller's certificate names: every Raft message speaks for a candidate or a
/// leader, and one that speaks for another node than its sender is refused
/// ([`MetaError::Impostor`]) before Raft sees it.
pub async fn answer_raft_rpc(
    raft: &Raft,
    kind: RaftKind,
    payload: &[u8],
    sender: Option<u64>,
) -> Result<Vec<u8>, MetaError> {
    match kind {
        RaftKind::AppendEntries => {
            let rpc = decode_from(payload, sender, |r: &AppendEntriesRequest<TypeConfig>| {
                r.vote.leader_id().voted_for()
            })?;
            encode(&raft.append_entries(rpc).await)
        }
        RaftKind::Vote => {
            let rpc = decode_from(payload, sender, |r: &VoteRequest<u64>| {
                r.vote.leader_id().voted_for()
            })?;
            encode(&raft.vote(rpc).await)
        }
        RaftKind::InstallSnapshot => {
            let rpc = decode_from(payload, sender, |r: &InstallSnapshotRequest<TypeConfig>| {
                r.vote.leader_id().voted_for()
            })?;
            encode(&raft.install_snapshot(rpc).await)
        }
    }
}

/// Decode a Raft RPC and check the node it speaks for (`claimed`) is its `sender`.
fn decode_from<T: DeserializeOwned>(
    payload: &[u8],
    sender: Option<u64>,
    claimed: impl Fn(&T) -> Option<u64>,
) -> Result<T, MetaError> {
    let rpc: T = decode(payload)?;
    match (sender, claimed(&rpc)) {
        (Some(sender), Some(claimed)) if sender == claimed => Ok(rpc),
        (sender, claimed) => Err(MetaError::Impostor { claimed, sender }),
    }
}

#[cfg(test)]
mod tests {
    use openraft::Vote;

    use super::*;

    /// A vote request speaks for its candidate; a node certificate may ask only for itself.
    #[test]
    fn a_raft_message_for_another_node_is_refused() {
        let request = VoteRequest::<u64> {
            vote: Vote::new(4, 3),
            last_log_id: None,
        };
        let bytes = encode(&request).unwrap();
        let claim = |r: &VoteRequest<u64>| r.vote.leader_id().voted_for();
        assert!(decode_from::<VoteRequest<u64>>(&bytes, Some(3), claim).is_ok());
        let err = decode_from::<VoteRequest<u64>>(&bytes, Some(2), claim).unwrap_err();
        assert!(
            matches!(
                err,
                MetaError::Impostor {
                    claimed: Some(3),
                    sender: Some(2)
                }
            ),
            "{err}"
        );
        assert!(decode_from::<VoteRequest<u64>>(&bytes, None, claim).is_err());
    }
}
