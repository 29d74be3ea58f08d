//! The cluster's certificates: one CA per cluster, a certificate per node bound to its node
//! id, and client certificates each naming a client and its role, all written as PEM files.
//!
//! ```text
//! DIR/ca.pem  DIR/ca.key            the cluster CA (keep ca.key private: it admits nodes)
//! DIR/node-N.pem  DIR/node-N.key    node N (DNS name `tern-node`, URI `tern://node/N`)
//! DIR/admin.pem  DIR/admin.key      a client with the admin role (what client.toml names)
//! DIR/writer.pem, DIR/reader.pem    clients with the write and read roles
//! DIR/NAME.pem  DIR/NAME.key        more clients: `tern cert issue --role R --name NAME`
//! ```
//!
//! A client certificate carries `tern://client/NAME` and `tern://role/ROLE` as URI names. Every
//! certificate is valid for a limited time ([`DEFAULT_CERT_DAYS`], the CA [`CA_DAYS`]) and has
//! a random serial number, by which it can be revoked. Key files are 0600 and the directory
//! 0700, enforced every time they are written.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use tern_proto::{Caller, ClientRole};

use crate::{NODE_SERVER_NAME, NetError};

/// Days a node or client certificate is valid, unless said otherwise.
pub const DEFAULT_CERT_DAYS: u32 = 365;
/// Days the cluster CA is valid.
pub const CA_DAYS: u32 = 3650;
/// The DNS name client certificates carry (nodes verify only the CA signature and the URIs).
pub const CLIENT_NAME: &str = "tern-client";
const NODE_URI: &str = "tern://node/";
const CLIENT_URI: &str = "tern://client/";
const ROLE_URI: &str = "tern://role/";

/// The clients `tern cluster init` and `tern up` make, one per role.
pub const STANDARD_CLIENTS: [(&str, ClientRole); 3] = [
    ("admin", ClientRole::Admin),
    ("writer", ClientRole::Write),
    ("reader", ClientRole::Read),
];

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

/// Why a client name is refused: it becomes a file name and a URI.
pub fn validate_client_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && !name.starts_with("node-")
        && name != "ca"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "client name {name:?} is not allowed: use up to 64 letters, digits, '_', '-' and '.', \
             not starting with '.', '-' or \"node-\", and not \"ca\""
        ))
    }
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
    /// A client's files in this directory.
    pub fn named(&self, name: &str) -> TlsFiles {
        TlsFiles {
            ca: self.ca_cert(),
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }
    /// The admin client, which `client.toml` names.
    pub fn client(&self) -> TlsFiles {
        self.named("admin")
    }
    pub fn has_ca(&self) -> bool {
        self.ca_cert().exists() && self.ca_key().exists()
    }

    /// Create the CA (unless present), certificates for nodes `1..=nodes` and one client of
    /// each role (each unless present and current: a node certificate not bound to its id, as
    /// older versions issued, is issued again). Returns the node ids whose certificates now
    /// exist.
    pub fn init(&self, nodes: u64) -> Result<Vec<u64>, NetError> {
        private_dir(&self.dir)?;
        if !self.has_ca() {
            let key = KeyPair::generate()?;
            let mut params = ca_params();
            valid_for(&mut params, CA_DAYS);
            let cert = params.self_signed(&key)?;
            write_private(&self.ca_key(), &key.serialize_pem())?;
            write(&self.ca_cert(), &cert.pem())?;
        }
        for id in 1..=nodes {
            let current = read_identity(&self.node(id).cert)
                .is_ok_and(|caller| caller == Ok(Caller::Node(id)));
            if !current {
                self.issue_node(id, DEFAULT_CERT_DAYS)?;
            }
        }
        for (name, role) in STANDARD_CLIENTS {
            if !self.named(name).cert.exists() {
                self.issue_client(name, role, &self.dir, DEFAULT_CERT_DAYS)?;
            }
        }
        Ok((1..=nodes).collect())
    }

    /// Issue (or re-issue) node `id`'s certificate, signed by this directory's CA.
    pub fn issue_node(&self, id: u64, days: u32) -> Result<TlsFiles, NetError> {
        let files = self.node(id);
        let sans = vec![
            SanType::DnsName(ia5(NODE_SERVER_NAME)?),
            SanType::DnsName(ia5("localhost")?),
            SanType::URI(ia5(&format!("{NODE_URI}{id}"))?),
        ];
        self.issue(&files, &format!("node-{id}"), sans, days)?;
        Ok(files)
    }

    /// Issue a client certificate for `name` with `role`, as `OUT/NAME.pem` and `OUT/NAME.key`.
    pub fn issue_client(
        &self,
        name: &str,
        role: ClientRole,
        out: &Path,
        days: u32,
    ) -> Result<TlsFiles, NetError> {
        validate_client_name(name).map_err(NetError::Invalid)?;
        // A directory made for the keys is private; one the user named and that exists
        // already (their home, say) is left as it is: the key files themselves are 0600.
        if !out.exists() {
            private_dir(out)?;
        }
        let files = TlsFiles {
            ca: self.ca_cert(),
            cert: out.join(format!("{name}.pem")),
            key: out.join(format!("{name}.key")),
        };
        let sans = vec![
            SanType::DnsName(ia5(CLIENT_NAME)?),
            SanType::URI(ia5(&format!("{CLIENT_URI}{name}"))?),
            SanType::URI(ia5(&format!("{ROLE_URI}{role}"))?),
        ];
        self.issue(&files, name, sans, days)?;
        Ok(files)
    }

    /// Issue every node and client certificate in this directory again (same ids, names and
    /// roles, new keys and serial numbers, valid `days` from now). Nodes pick up their new
    /// files without a restart. Returns what was reissued, one line each.
    pub fn rotate(&self, days: u32) -> Result<Vec<String>, NetError> {
        let mut done = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|source| NetError::ReadFile {
            path: self.dir.display().to_string(),
            source,
        })?;
        let mut pems: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pem") && *p != self.ca_cert())
            .collect();
        pems.sort();
        for pem in pems {
            // A node certificate an older tern issued names no id: its file name does.
            let from_name = pem
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("node-")?.strip_suffix(".pem")?.parse().ok())
                .map(Caller::Node);
            let caller = match read_identity(&pem) {
                Ok(Ok(caller)) => caller,
                Ok(Err(_)) => match from_name {
                    Some(node) => node,
                    None => continue,
                },
                Err(_) => continue,
            };
            match caller {
                Caller::Node(id) => {
                    self.issue_node(id, days)?;
                    done.push(format!("node {id}: {}", pem.display()));
                }
                Caller::Client {
                    name,
                    role: Some(role),
                } => {
                    let out = pem.parent().unwrap_or(&self.dir);
                    self.issue_client(&name, role, out, days)?;
                    done.push(format!("client {name} ({role}): {}", pem.display()));
                }
                Caller::Client { .. } => {}
            }
        }
        Ok(done)
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
        sans: Vec<SanType>,
        days: u32,
    ) -> Result<(), NetError> {
        let (ca_cert, ca_key) = self.load_ca()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
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
        valid_for(&mut params, days);
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

fn ia5(text: &str) -> Result<rcgen::Ia5String, NetError> {
    rcgen::Ia5String::try_from(text).map_err(|e| NetError::Invalid(format!("{text:?}: {e}")))
}

/// Valid from a day ago (clocks differ a little) for `days` from now, with a random serial
/// number (what revocation names).
fn valid_for(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
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
    // What `ca.pem` says of its validity is set when it is made; the issuer rebuilt to sign
    // (see `load_ca`) needs only the same name and key, which is what signatures bind.
    params
}

/// What a certificate (DER) says about its holder: a node bound to its id, or a client with
/// its name and role. `Err` when it claims to be a node but names no id (issued by an older
/// tern) or names contradictory identities.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<Caller, String> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let uris: Vec<&str> = parsed.valid_uri_names().collect();
    let node_ids: Vec<&str> = uris
        .iter()
        .filter_map(|u| u.strip_prefix(NODE_URI))
        .collect();
    let is_node = parsed.valid_dns_names().any(|n| n == NODE_SERVER_NAME);
    if is_node {
        return match node_ids.as_slice() {
            [id] => id
                .parse()
                .map(Caller::Node)
                .map_err(|_| format!("node certificate names node {id:?}, not a number")),
            [] => Err(
                "node certificate not bound to a node id (issued by an older tern): \
                 issue it again with `tern cert rotate`"
                    .into(),
            ),
            _ => Err("node certificate names several node ids".into()),
        };
    }
    if !node_ids.is_empty() {
        return Err("certificate names a node id but is not a node certificate".into());
    }
    let names: Vec<&str> = uris
        .iter()
        .filter_map(|u| u.strip_prefix(CLIENT_URI))
        .collect();
    let roles: Vec<&str> = uris
        .iter()
        .filter_map(|u| u.strip_prefix(ROLE_URI))
        .collect();
    let name = match names.as_slice() {
        [name] => name.to_string(),
        [] => "unnamed".to_string(),
        _ => return Err("client certificate names several clients".into()),
    };
    let role = match roles.as_slice() {
        [role] => Some(role.parse::<ClientRole>()?),
        [] => None,
        _ => return Err("client certificate names several roles".into()),
    };
    Ok(Caller::Client { name, role })
}

/// The serial number of a certificate (DER), as lowercase hex of its bytes: what `tern cert
/// show` prints and `tern cert revoke` and the revocation list use.
pub fn serial_of(cert: &CertificateDer<'_>) -> Result<String, String> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    Ok(parsed.serial().iter().map(|b| format!("{b:02x}")).collect())
}

/// The first certificate of a PEM file.
pub fn read_cert(path: &Path) -> Result<CertificateDer<'static>, NetError> {
    let pem = read(path)?;
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| NetError::BadPem {
            path: path.display().to_string(),
            reason: "no certificate in file".into(),
        })?
        .map_err(|e| NetError::BadPem {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// The identity the certificate in a PEM file carries (see [`identity_of`]).
pub fn read_identity(path: &Path) -> Result<Result<Caller, String>, NetError> {
    Ok(identity_of(&read_cert(path)?))
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

/// Create `dir` if need be and make it 0700, whatever it was.
fn private_dir(dir: &Path) -> Result<(), NetError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| NetError::WriteFile {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Write a private key: 0600 from the first byte, and again after (an existing file keeps its
/// mode on open, so a key file once made readable would otherwise stay so).
fn write_private(path: &Path, contents: &str) -> Result<(), NetError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)
}

/// Refuse a private key that others may read, as ssh does: such a key may be copied.
pub(crate) fn check_private(path: &Path) -> Result<(), NetError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| NetError::ReadFile {
        path: path.display().to_string(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(NetError::BadPem {
            path: path.display().to_string(),
            reason: format!(
                "private key is readable by others (mode {mode:03o}); run `chmod 600 {}`",
                path.display()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_carry_who_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let files = ClusterFiles::new(dir.path());
        files.init(2).unwrap();
        assert_eq!(
            read_identity(&files.node(2).cert).unwrap(),
            Ok(Caller::Node(2))
        );
        assert_eq!(
            read_identity(&files.client().cert).unwrap(),
            Ok(Caller::Client {
                name: "admin".into(),
                role: Some(ClientRole::Admin)
            })
        );
        let out = dir.path().join("issued");
        let bob = files
            .issue_client("bob", ClientRole::Read, &out, 30)
            .unwrap();
        assert_eq!(
            read_identity(&bob.cert).unwrap(),
            Ok(Caller::Client {
                name: "bob".into(),
                role: Some(ClientRole::Read)
            })
        );
        assert!(
            files
                .issue_client("../evil", ClientRole::Admin, &out, 30)
                .is_err()
        );
        // Serial numbers differ; rotation keeps who each certificate names.
        let before = serial_of(&read_cert(&files.node(1).cert).unwrap()).unwrap();
        // A node certificate as an older tern issued it: no id. Refused, and rotation binds it.
        files
            .issue(
                &files.node(3),
                "node-3",
                vec![SanType::DnsName(ia5(NODE_SERVER_NAME).unwrap())],
                30,
            )
            .unwrap();
        assert!(read_identity(&files.node(3).cert).unwrap().is_err());
        let rotated = files.rotate(10).unwrap();
        assert!(rotated.len() >= 6, "{rotated:?}");
        assert_eq!(
            read_identity(&files.node(3).cert).unwrap(),
            Ok(Caller::Node(3))
        );
        let after = serial_of(&read_cert(&files.node(1).cert).unwrap()).unwrap();
        assert_ne!(before, after);
        assert_eq!(
            read_identity(&files.node(1).cert).unwrap(),
            Ok(Caller::Node(1))
        );
    }

    #[test]
    fn keys_and_their_directory_are_private_always() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("c");
        std::fs::create_dir(&cluster).unwrap();
        std::fs::set_permissions(&cluster, std::fs::Permissions::from_mode(0o755)).unwrap();
        let files = ClusterFiles::new(&cluster);
        files.init(1).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cluster), 0o700);
        let key = files.node(1).key;
        assert_eq!(mode(&key), 0o600);
        // A key someone made readable is refused until fixed, and reissuing fixes it.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_private(&key).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        files.issue_node(1, 30).unwrap();
        assert_eq!(mode(&key), 0o600);
        assert!(check_private(&key).is_ok());
    }
}
