//! The cluster's certificates: one CA per cluster, a certificate per node and one for clients,
//! all written as PEM files in the cluster directory.
//!
//! ```text
//! DIR/ca.pem  DIR/ca.key          the cluster CA (keep ca.key private: it admits nodes)
//! DIR/node-N.pem  DIR/node-N.key  node N's identity
//! DIR/client.pem  DIR/client.key  what `tern` commands present
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::{NODE_SERVER_NAME, NetError};

/// The three files that make up one TLS identity, plus the CA it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Names of the files in a cluster directory.
#[derive(Debug, Clone)]
pub struct ClusterFiles {
    pub dir: PathBuf,
}

impl ClusterFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn node(&self, id: u64) -> TlsFiles {
        TlsFiles {
            ca: self.ca_cert(),
            cert: self.dir.join(format!("node-{id}.pem")),
            key: self.dir.join(format!("node-{id}.key")),
        }
    }
    pub fn client(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca_cert(),
            cert: self.dir.join("client.pem"),
            key: self.dir.join("client.key"),
        }
    }
    pub fn has_ca(&self) -> bool {
        self.ca_cert().exists() && self.ca_key().exists()
    }

    /// Create the CA (unless present), certificates for nodes `1..=nodes` and the client
    /// (each unless present). Returns the node ids whose certificates now exist.
    pub fn init(&self, nodes: u64) -> Result<Vec<u64>, NetError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| NetError::WriteFile {
            path: self.dir.display().to_string(),
            source,
        })?;
        if !self.has_ca() {
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            write_private(&self.ca_key(), &key.serialize_pem())?;
            write(&self.ca_cert(), &cert.pem())?;
        }
        for id in 1..=nodes {
            if !self.node(id).cert.exists() {
                self.issue_node(id)?;
            }
        }
        if !self.client().cert.exists() {
            self.issue(&self.client(), "tern-client", vec!["tern-client".into()])?;
        }
        Ok((1..=nodes).collect())
    }

    /// Issue (or re-issue) node `id`'s certificate, signed by this directory's CA.
    pub fn issue_node(&self, id: u64) -> Result<TlsFiles, NetError> {
        let files = self.node(id);
        self.issue(
            &files,
            &format!("node-{id}"),
            vec![NODE_SERVER_NAME.into(), "localhost".into()],
        )?;
        Ok(files)
    }

    /// The highest node id that has a certificate here.
    pub fn highest_node_id(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("node-")?
                    .strip_suffix(".pem")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
    }

    fn issue(
        &self,
        files: &TlsFiles,
        common_name: &str,
        sans: Vec<String>,
    ) -> Result<(), NetError> {
        let (ca_cert, ca_key) = self.load_ca()?;
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
        write_private(&files.key, &key.serialize_pem())?;
        write(&files.cert, &cert.pem())?;
        Ok(())
    }

    /// The CA as a signer. rcgen cannot parse a certificate back without extra features, so the
    /// issuer is rebuilt from the same parameters and key: same subject, same key, so every
    /// certificate it signs verifies against `ca.pem`.
    fn load_ca(&self) -> Result<(Certificate, KeyPair), NetError> {
        let path = self.ca_key();
        let pem = read(&path)?;
        let key = KeyPair::from_pem(&pem).map_err(|e| NetError::BadPem {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let cert = ca_params().self_signed(&key)?;
        Ok((cert, key))
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "tern cluster CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "tern");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

pub(crate) fn read(path: &Path) -> Result<String, NetError> {
    std::fs::read_to_string(path).map_err(|source| NetError::ReadFile {
        path: path.display().to_string(),
        source,
    })
}

fn write(path: &Path, contents: &str) -> Result<(), NetError> {
    std::fs::write(path, contents).map_err(|source| NetError::WriteFile {
        path: path.display().to_string(),
        source,
    })
}

fn write_private(path: &Path, contents: &str) -> Result<(), NetError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| NetError::WriteFile {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)
}
