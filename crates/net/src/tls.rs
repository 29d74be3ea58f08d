//! rustls configurations for both ends of a mutually authenticated QUIC connection, with the
//! cluster's revocation list checked at every handshake.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tern_proto::Caller;

use crate::certs::{TlsFiles, check_private, identity_of, read, serial_of};
use crate::{ALPN, NetError};

/// Serial numbers (hex) of revoked certificates, shared by a node's endpoint and kept current
/// from the catalog by the node: a handshake presenting one fails.
#[derive(Clone, Default)]
pub struct Revocations(Arc<RwLock<BTreeSet<String>>>);

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Revocations({})", self.len())
    }
}

impl Revocations {
    /// Replace the list.
    pub fn set(&self, serials: BTreeSet<String>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = serials;
    }

    pub fn is_revoked(&self, serial: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(serial)
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let serial = serial_of(cert).map_err(rustls::Error::General)?;
        if self.is_revoked(&serial) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(())
    }
}

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
        check_private(&files.key)?;
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

    /// Who our own certificate says we are.
    pub fn identity(&self) -> Result<Caller, String> {
        identity_of(&self.chain[0])
    }

    /// Accept only clients whose certificate chains to our CA and is not revoked.
    pub(crate) fn server_config(
        &self,
        revoked: &Revocations,
    ) -> Result<quinn::ServerConfig, NetError> {
        let inner = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(tls_err)?;
        let verifier = Arc::new(UnrevokedClients {
            inner,
            revoked: revoked.clone(),
        });
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

    /// Present our certificate and accept only servers whose certificate chains to our CA
    /// and is not revoked.
    pub(crate) fn client_config(
        &self,
        revoked: &Revocations,
    ) -> Result<quinn::ClientConfig, NetError> {
        let inner = WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(tls_err)?;
        let verifier = Arc::new(UnrevokedServers {
            inner,
            revoked: revoked.clone(),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls_err)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config).map_err(tls_err)?;
        Ok(quinn::ClientConfig::new(Arc::new(crypto)))
    }
}

/// WebPKI's client verification (chain to the CA, validity dates, key usage) plus the
/// revocation list.
#[derive(Debug)]
struct UnrevokedClients {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Revocations,
}

impl ClientCertVerifier for UnrevokedClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.revoked.check(end_entity)?;
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The same for the servers a node or client dials.
#[derive(Debug)]
struct UnrevokedServers {
    inner: Arc<WebPkiServerVerifier>,
    revoked: Revocations,
}

impl ServerCertVerifier for UnrevokedServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.revoked.check(end_entity)?;
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
