//! How a `cube` command finds what it needs to call a server of this machine with no step from
//! the user: each manager (and standalone worker) started by this user leaves an entry, readable
//! by this user only, in the per-user directory: its address, its token, the join token and the
//! CA certificate to verify it with. A command looks the entry up by the address it calls, so a
//! token is only ever sent to the server it belongs to.
//!
//! The directory is `$CUBE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/cube`, else `~/.config/cube`.

use std::path::{Path, PathBuf};

use cube_actors::remote_worker::host_and_port;
use cube_actors::secret::write_private;
use serde::{Deserialize, Serialize};

/// What a command needs to call one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The server's base URL (`http://localhost:5555`, `https://...`).
    #[serde(rename = "Address")]
    pub address: String,
    /// Its admin token (a manager's) or operator token (a worker's).
    #[serde(rename = "Token")]
    pub token: String,
    /// The token workers enroll with (a manager's entry only).
    #[serde(rename = "JoinToken", default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    /// The token that reads only `GET /metrics`, for Prometheus (a manager's entry only).
    #[serde(
        rename = "MetricsToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub metrics_token: Option<String>,
    /// The CA certificate its certificate comes from (with TLS).
    #[serde(rename = "CaCert", default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// The per-user directory, from the environment.
pub fn user_dir() -> Option<PathBuf> {
    user_dir_from(|name| std::env::var_os(name))
}

fn user_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = |name| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("CUBE_CONFIG_DIR")
        .or_else(|| var("XDG_CONFIG_HOME").map(|d| d.join("cube")))
        .or_else(|| var("HOME").map(|h| h.join(".config").join("cube")))
}

/// The name of an address's entry: the host (`local` for this machine's loopback or any
/// address) and the port, so that `localhost:5555`, `127.0.0.1:5555` and a server bound to
/// `0.0.0.0:5555` share one entry, and another machine's address has its own.
pub fn entry_name(address: &str) -> String {
    let scheme = address.split_once("://").map_or("http", |(s, _)| s);
    let (host, port) = host_and_port(address);
    let port = port
        .filter(|p| !p.is_empty())
        .unwrap_or(if scheme == "https" { "443" } else { "80" });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    let host = if local {
        "local".to_string()
    } else {
        host.to_ascii_lowercase()
    };
    let safe: String = format!("{host}-{port}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    safe
}

fn entry_path(dir: &Path, address: &str) -> PathBuf {
    dir.join("servers")
        .join(format!("{}.json", entry_name(address)))
}

/// Writes the entry of the server at `entry.address` (0600).
pub fn save(dir: &Path, entry: &Entry) -> std::io::Result<PathBuf> {
    let path = entry_path(dir, &entry.address);
    let text = serde_json::to_string_pretty(entry).expect("an entry always encodes");
    write_private(&path, &text)?;
    Ok(path)
}

/// The entry of the server at `address`, if this user has one.
pub fn load(dir: &Path, address: &str) -> Option<Entry> {
    let text = std::fs::read_to_string(entry_path(dir, address)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_share_an_entry_and_others_do_not() {
        let local = entry_name("http://localhost:5555");
        assert_eq!(local, "local-5555");
        assert_eq!(entry_name("127.0.0.1:5555"), local);
        assert_eq!(entry_name("https://0.0.0.0:5555/"), local);
        assert_eq!(entry_name("http://[::1]:5555"), local);
        assert_eq!(entry_name("http://10.0.0.7:5555"), "10.0.0.7-5555");
        assert_ne!(entry_name("http://localhost:5556"), local);
        assert_eq!(entry_name("https://Manager.example"), "manager.example-443");
    }

    #[test]
    fn the_directory_comes_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.into())
        };
        assert_eq!(
            user_dir_from(env(&[("HOME", "/home/ada")])),
            Some(PathBuf::from("/home/ada/.config/cube"))
        );
        assert_eq!(
            user_dir_from(env(&[("HOME", "/home/ada"), ("XDG_CONFIG_HOME", "/cfg")])),
            Some(PathBuf::from("/cfg/cube"))
        );
        assert_eq!(
            user_dir_from(env(&[("HOME", "/h"), ("CUBE_CONFIG_DIR", "/t")])),
            Some(PathBuf::from("/t"))
        );
        assert_eq!(user_dir_from(env(&[])), None);
    }

    #[test]
    fn an_entry_is_found_by_any_local_spelling_of_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let entry = Entry {
            address: "http://localhost:5555".into(),
            token: "cube-admin-xyz".into(),
            join_token: Some("cube-join-xyz".into()),
            metrics_token: None,
            ca_cert: None,
        };
        save(dir.path(), &entry).unwrap();
        assert_eq!(load(dir.path(), "127.0.0.1:5555"), Some(entry));
        assert_eq!(load(dir.path(), "http://10.1.1.1:5555"), None);
    }
}
