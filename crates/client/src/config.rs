//! Where the cluster is: `client.toml` in the cluster directory, found by `--cluster DIR`,
//! `$TERN_CLUSTER` or `./.tern`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ClientError;

/// The environment variable naming the cluster directory when `--cluster` is not given.
pub const CLUSTER_ENV: &str = "TERN_CLUSTER";
/// The cluster directory when neither `--cluster` nor `$TERN_CLUSTER` is set.
pub const DEFAULT_CLUSTER_DIR: &str = ".tern";

/// `client.toml`: where the nodes are and which certificate to present. Relative paths are
/// relative to the directory holding the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub nodes: Vec<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientConfig {
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("client.toml")
    }

    pub fn load(dir: &Path) -> Result<Self, ClientError> {
        let path = Self::path_in(dir);
        let text = std::fs::read_to_string(&path).map_err(|_| ClientError::NoCluster {
            dir: dir.display().to_string(),
            path: path.display().to_string(),
        })?;
        let mut config: ClientConfig = toml::from_str(&text).map_err(|e| ClientError::Config {
            path: path.display().to_string(),
            reason: e.message().to_string(),
        })?;
        if config.nodes.is_empty() {
            return Err(ClientError::Config {
                path: path.display().to_string(),
                reason: "lists no nodes".into(),
            });
        }
        for p in [&mut config.ca, &mut config.cert, &mut config.key] {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("client config serializes")
    }
}

/// `--cluster DIR`, else `$TERN_CLUSTER`, else `./.tern`.
pub fn cluster_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    match std::env::var_os(CLUSTER_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_CLUSTER_DIR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_dir_prefers_the_flag_then_the_environment() {
        // One test touches the environment, so there is no race with another test.
        let flag = PathBuf::from("/x");
        assert_eq!(cluster_dir(Some(&flag)), flag);
        unsafe { std::env::set_var(CLUSTER_ENV, "/from-env") };
        assert_eq!(cluster_dir(None), PathBuf::from("/from-env"));
        unsafe { std::env::remove_var(CLUSTER_ENV) };
        assert_eq!(cluster_dir(None), PathBuf::from(DEFAULT_CLUSTER_DIR));
    }

    #[test]
    fn missing_client_config_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let err = ClientConfig::load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("client.toml") && err.contains("tern up"),
            "{err}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_cluster_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let config = ClientConfig {
            nodes: vec!["127.0.0.1:7401".into()],
            ca: "ca.pem".into(),
            cert: "client.pem".into(),
            key: "client.key".into(),
        };
        std::fs::write(ClientConfig::path_in(&dir), config.to_toml()).unwrap();
        let loaded = ClientConfig::load(&dir).unwrap();
        assert_eq!(loaded.ca, dir.join("ca.pem"));
    }
}
