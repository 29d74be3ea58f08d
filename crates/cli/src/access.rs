//! Who may do what, and how much: `tern cert` issues client certificates with a role, rotates
//! every certificate of a cluster directory and revokes one cluster-wide; `tern quota` limits
//! the bytes a client's datasets may take.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use tern_client::Client;
use tern_net::{ClusterFiles, DEFAULT_CERT_DAYS};
use tern_proto::{Caller, ClientRole, OWNERS_TABLE, QUOTAS_TABLE, Request, human_bytes};

#[derive(Subcommand)]
pub enum CertCommand {
    /// Issue a client certificate NAME.pem / NAME.key with a role (read, write or admin),
    /// signed by the cluster's CA; point a client.toml's `cert` and `key` at them.
    Issue {
        #[arg(long)]
        role: ClientRole,
        #[arg(long)]
        name: String,
        /// Where to write the files (default: beside the cluster's CA).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Days it is valid.
        #[arg(long, default_value_t = DEFAULT_CERT_DAYS)]
        days: u32,
    },
    /// Issue every node and client certificate in the cluster directory again (same ids,
    /// names and roles; new keys, valid DAYS from now). Running nodes pick theirs up within
    /// seconds, without a restart.
    Rotate {
        #[arg(long, default_value_t = DEFAULT_CERT_DAYS)]
        days: u32,
    },
    /// Refuse a certificate on every node from now on (needs the admin role).
    Revoke {
        /// The certificate's PEM file (or give --serial).
        file: Option<PathBuf>,
        /// Its serial number in hex, as `tern cert show` prints it.
        #[arg(long)]
        serial: Option<String>,
        #[arg(long, default_value = "revoked by an operator")]
        reason: String,
    },
    /// Who a certificate names, and its serial number.
    Show { file: PathBuf },
}

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Limit the bytes of the datasets client NAME writes (SIZE like 10GiB, or `none`).
    Set { name: String, size: String },
    /// Every client's quota and what its datasets take.
    Ls,
}

fn parse_quota(text: &str) -> Result<Option<u64>, String> {
    match text {
        "none" => Ok(None),
        size => crate::data::parse_size(size)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

pub async fn quota(dir: &Path, command: QuotaCommand) -> Result<()> {
    let client = Client::open(dir)?;
    match command {
        QuotaCommand::Set { name, size } => {
            let size = parse_quota(&size).map_err(anyhow::Error::msg)?;
            client
                .call(Request::SetQuota {
                    client: name.clone(),
                    bytes: size,
                })
                .await?;
            match size {
                Some(bytes) => println!("client {name} may own {}", human_bytes(bytes)),
                None => println!("client {name} has no quota"),
            }
        }
        QuotaCommand::Ls => {
            let owners: std::collections::HashMap<String, Vec<u8>> = client
                .catalog_list(OWNERS_TABLE, "", u32::MAX)
                .await?
                .into_iter()
                .collect();
            let mut used: std::collections::BTreeMap<String, u64> = Default::default();
            for dataset in client.dataset_summaries().await? {
                if let Some(owner) = owners.get(&dataset.name) {
                    *used
                        .entry(String::from_utf8_lossy(owner).into_owned())
                        .or_default() += dataset.bytes;
                }
            }
            println!("{:<24} {:>12} {:>12}", "CLIENT", "QUOTA", "OWNS");
            let quotas = client.catalog_list(QUOTAS_TABLE, "", u32::MAX).await?;
            let mut names: std::collections::BTreeSet<String> = used.keys().cloned().collect();
            names.extend(quotas.iter().map(|(name, _)| name.clone()));
            for name in names {
                let quota = quotas
                    .iter()
                    .find(|(n, _)| *n == name)
                    .and_then(|(_, v)| <[u8; 8]>::try_from(v.as_slice()).ok())
                    .map_or("-".to_string(), |b| human_bytes(u64::from_le_bytes(b)));
                let owns = human_bytes(used.get(&name).copied().unwrap_or(0));
                println!("{name:<24} {quota:>12} {owns:>12}");
            }
        }
    }
    Ok(())
}

fn cluster_files(dir: &Path) -> Result<ClusterFiles> {
    let files = ClusterFiles::new(dir);
    if !files.has_ca() {
        bail!(
            "no cluster CA in {} (ca.pem and ca.key; run `tern cluster init` or `tern up` first)",
            dir.display()
        );
    }
    Ok(files)
}

pub async fn run(dir: &Path, command: CertCommand) -> Result<()> {
    match command {
        CertCommand::Issue {
            role,
            name,
            out,
            days,
        } => {
            let files = cluster_files(dir)?;
            let out = out.unwrap_or_else(|| dir.to_path_buf());
            let issued = files.issue_client(&name, role, &out, days)?;
            println!(
                "client {name} ({role}), valid {days} days: {} {}",
                issued.cert.display(),
                issued.key.display()
            );
        }
        CertCommand::Rotate { days } => {
            let files = cluster_files(dir)?;
            let done = files.rotate(days)?;
            for line in &done {
                println!("reissued {line}");
            }
            println!(
                "{} certificates reissued, valid {days} days; running nodes present theirs within seconds",
                done.len()
            );
        }
        CertCommand::Revoke {
            file,
            serial,
            reason,
        } => {
            let (serial, who) = match (file, serial) {
                (Some(file), None) => {
                    let cert = tern_net::read_cert(&file)?;
                    let who = match tern_net::identity_of(&cert) {
                        Ok(caller) => caller.to_string(),
                        Err(_) => file.display().to_string(),
                    };
                    (tern_net::serial_of(&cert).map_err(anyhow::Error::msg)?, who)
                }
                (None, Some(serial)) => (serial.to_ascii_lowercase(), "it".to_string()),
                _ => bail!("name the certificate: a PEM file, or --serial HEX"),
            };
            let client = Client::open(dir)?;
            client
                .call(Request::Revoke {
                    serial: serial.clone(),
                    reason,
                })
                .await
                .context("revoking")?;
            println!("revoked {who} (serial {serial}): every node refuses it within seconds");
        }
        CertCommand::Show { file } => {
            let cert = tern_net::read_cert(&file)?;
            let serial = tern_net::serial_of(&cert).map_err(anyhow::Error::msg)?;
            match tern_net::identity_of(&cert) {
                Ok(Caller::Node(id)) => println!("node {id}, serial {serial}"),
                Ok(Caller::Client { name, role }) => println!(
                    "client {name}, role {}, serial {serial}",
                    role.map_or("none (issue a new one)".to_string(), |r| r.to_string())
                ),
                Err(reason) => println!("{reason}; serial {serial}"),
            }
        }
    }
    Ok(())
}
