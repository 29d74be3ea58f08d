//! rustls configurations for both ends of a mutually authenticated QUIC connection.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::certs::{TlsFiles, read};
use crate::{ALPN, NetError};

/// A loaded identity: our certificate chain and key, and the CA we trust for peers.
#[derive(Debug)]
pub struct TlsIdentity {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> NetError {
    NetError::Tls(e.to_string())
}

impl TlsIdentity {
    pub fn load(files: &TlsFiles) -> Result<Self, NetError> {
        let bad = |path: &std::path::Path, reason: String| NetError::BadPem {
            path: path.display().to_string(),
            reason,
        };
        let certs_of = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, NetError> {
            let pem = read(path)?;
            let certs = rustls_pemfile::certs(&mut pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(path, e.to_string()))?;
            if certs.is_empty() {
                return Err(bad(path, "no certificate in file".into()));
            }
            Ok(certs)
        };
        let mut roots = RootCertStore::empty();
        for ca in certs_of(&files.ca)? {
            roots.add(ca).map_err(|e| bad(&files.ca, e.to_string()))?;
        }
        let chain = certs_of(&files.cert)?;
        let key_pem = read(&files.key)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| bad(&files.key, e.to_string()))?
            .ok_or_else(|| bad(&files.key, "no private key in file".into()))?;
        Ok(Self {
            roots: Arc::new(roots),
            chain,
            key,
        })
    }

    /// Accept only clients whose certificate chains to our CA.
    pub(crate) fn server_config(&self) -> Result<quinn::ServerConfig, NetError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(tls_err)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls_err)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(config).map_err(tls_err)?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
    }

    /// Present our certificate and accept only servers whose certificate chains to our CA.
    pub(crate) fn client_config(&self) -> Result<quinn::ClientConfig, NetError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls_err)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config).map_err(tls_err)?;
        Ok(quinn::ClientConfig::new(Arc::new(crypto)))
    }
}
