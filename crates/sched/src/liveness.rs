//! Noticing that a node died in the middle of a call.
//!
//! A call on a QUIC connection whose peer has died waits for the connection's idle timeout
//! (seconds) before it fails; a new connection to it waits out the connect timeout. A query
//! that loses a node mid-stage paid both, several times over. [`while_alive`] races a call
//! against pings of the same node on their own short deadline, so a dead peer costs about one
//! probe interval and one ping deadline, while a live one, however slow its answer, is waited
//! for.

use std::future::Future;
use std::time::Duration;

use tern_proto::{Request, Response, Transport};

/// The first ping goes out after this long without an answer, then one per interval.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// A ping not answered in this long means the node is gone (a node answers pings on its
/// main runtime, not behind its query work, so this holds on a busy node too).
pub const PROBE_DEADLINE: Duration = Duration::from_millis(2_000);

/// Why [`while_alive`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the node at {addr} stopped answering ({reason})")]
pub struct NodeGone {
    pub addr: String,
    pub reason: String,
}

/// Run `call` (to the node at `addr`) to its end, unless the node stops answering pings first.
pub async fn while_alive<T, F, R>(transport: &T, addr: &str, call: F) -> Result<R, NodeGone>
where
    T: Transport,
    F: Future<Output = R>,
{
    let probes = async {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            match transport
                .call_within(addr, Request::Ping, PROBE_DEADLINE)
                .await
            {
                Ok(Response::Pong { .. }) | Ok(Response::Error(_)) => {}
                Ok(other) => {
                    return NodeGone {
                        addr: addr.to_string(),
                        reason: format!("unexpected answer to a ping: {other:?}"),
                    };
                }
                Err(e) => {
                    return NodeGone {
                        addr: addr.to_string(),
                        reason: e.to_string(),
                    };
                }
            }
        }
    };
    tokio::select! {
        biased;
        done = call => Ok(done),
        gone = probes => Err(gone),
    }
}
