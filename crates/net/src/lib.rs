//! The network layer: QUIC (quinn) with mutual TLS (rustls), the cluster's certificates
//! (rcgen), and request/response calls over length-prefixed frames.
//!
//! It owns sockets, TLS and framing: [`QuicTransport`] implements the `tern_proto::Transport`
//! seam for outgoing calls, [`serve`] feeds incoming requests to a [`Handler`]. It knows nothing
//! of what requests mean: the node decides that. Every peer must present a certificate signed by
//! the cluster CA, within its validity dates and not revoked; anything else is refused at the
//! handshake. Who the peer is (a node and its id, or a client's name and role) is read from
//! its certificate ([`Peer`]); what it may do is the node's business.

mod bulk;
pub mod certs;
mod endpoint;
mod server;
mod tls;

pub use bulk::{BodyReader, BodyWriter, pipe};
pub use certs::{
    CA_DAYS, ClusterFiles, DEFAULT_CERT_DAYS, STANDARD_CLIENTS, TlsFiles, identity_of, read_cert,
    read_identity, serial_of, validate_client_name,
};
pub use endpoint::{QuicTransport, TransportOptions};
pub use server::{Handler, Peer, serve};
pub use tls::{Revocations, TlsIdentity};

/// Errors setting up the network layer (calls report `tern_proto::TransportError`).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadPem { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("certificate generation: {0}")]
    CertGen(#[from] rcgen::Error),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// The name every node certificate carries and every caller verifies: being signed by the
/// cluster CA is what makes a peer trusted, not its address.
pub const NODE_SERVER_NAME: &str = "tern-node";
/// ALPN protocol id; a peer speaking anything else is refused.
pub const ALPN: &[u8] = b"tern/1";
