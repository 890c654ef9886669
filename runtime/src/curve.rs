//! ZeroMQ CURVE on every link: key files, the `keygen` subcommand, the link security a binary
//! resolves from its settings, and the socket setup of both ends (`curve/zap.rs`: the server's
//! ZAP handler, which accepts only listed client keys and counts every rejection).
//!
//! Key files are TOML with Z85 text (ZeroMQ's own key encoding, 40 characters for 32 bytes):
//!
//! - a keypair file (`PREFIX.key`, mode 0600) holds `public = "..."` and `secret = "..."`;
//! - a public-key file (`PREFIX.pub`) holds `public = "..."`;
//! - a clients file is public-key lines, one per allowed peer (`cat a.pub b.pub > clients`),
//!   blank lines and `#` comments allowed; a line may bind its key to the sender names it may
//!   speak for: `public = "...", names = ["tap-a", "tap-b"]` (`curve/names.rs`; a key without
//!   `names` may speak for any name).
//!
//! A secret-key file readable by group or others is refused, as ssh refuses such a private key.
//! Secrets are never logged nor printed: `Debug` of a key pair shows only its public half.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::is_zmq_endpoint;

mod client;
mod keys;
mod names;
mod zap;

pub use client::{ClientMonitor, Handshakes};
pub use keys::{keygen, load_clients, load_keypair, load_public_key, BadKey, Client, KeyError};
pub use names::{NameBindings, RefusalLog, Speaker, REFUSAL_LOG_EVERY};

pub use zap::{
    add_counters, secure_another_server, secure_client, secure_server, AuthCounts, Authenticator,
};

/// A CURVE public key (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// A CURVE secret key; its `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

#[derive(Clone, Debug)]
pub struct KeyPair {
    pub public: PublicKey,
    pub secret: SecretKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.z85())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<never shown>)")
    }
}

impl PublicKey {
    /// The key as Z85 text (40 characters).
    pub fn z85(&self) -> String {
        zmq::z85_encode(&self.0).unwrap_or_default()
    }
}

impl SecretKey {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The security of every ZeroMQ link of one binary, as its settings resolved it.
#[derive(Clone, Debug)]
pub enum LinkSecurity {
    /// No encryption nor authentication: only with `--plain`, only on loopback.
    Plain,
    Curve(Arc<CurveConfig>),
}

/// CURVE settings with their keys loaded.
#[derive(Debug)]
pub struct CurveConfig {
    /// This binary's own key pair (`curve_key`).
    pub key_path: PathBuf,
    pub key: KeyPair,
    /// Servers: the client keys allowed to connect (`curve_clients`), with their names.
    pub clients_path: Option<PathBuf>,
    pub clients: Vec<Client>,
    /// Clients: the server's public key (`curve_server_key`).
    pub server_key_path: Option<PathBuf>,
    pub server_key: Option<PublicKey>,
}

/// Which ends of links a binary holds: servers bind and check clients, clients connect and
/// check the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    pub server: bool,
    pub client: bool,
}

/// The security settings as given (flags over the config file).
#[derive(Clone, Debug, Default)]
pub struct SecuritySettings {
    pub plain: bool,
    pub key: Option<PathBuf>,
    pub clients: Option<PathBuf>,
    pub server_key: Option<PathBuf>,
}

/// Resolves and checks the link security of a binary with `role` whose links are `endpoints`
/// (every endpoint it binds or connects to): keys are loaded (a problem with a file is an
/// error naming it), `plain` is refused unless every endpoint is loopback. Problems are pushed
/// to `errors`, one line each.
pub fn resolve(
    role: Role,
    s: &SecuritySettings,
    endpoints: &[&str],
    errors: &mut Vec<String>,
) -> LinkSecurity {
    let given = s.given();
    if s.plain {
        check_plain(&given, endpoints, errors);
        return LinkSecurity::Plain;
    }
    if let Some(missing) = missing_keys(role, s, &given) {
        errors.push(missing);
        return LinkSecurity::Plain;
    }
    if zmq::has("curve") != Some(true) {
        errors.push("this libzmq has no CURVE (built without libsodium)".to_owned());
    }
    load_keys(role, s, errors)
}

impl SecuritySettings {
    /// The CURVE flags given, by name.
    fn given(&self) -> Vec<&'static str> {
        [
            (self.key.is_some(), "--curve-key"),
            (self.clients.is_some(), "--curve-clients"),
            (self.server_key.is_some(), "--curve-server-key"),
        ]
        .into_iter()
        .filter_map(|(set, flag)| set.then_some(flag))
        .collect()
    }
}

/// `--plain`: no CURVE flag beside it, and only loopback endpoints.
fn check_plain(given: &[&str], endpoints: &[&str], errors: &mut Vec<String>) {
    if !given.is_empty() {
        errors.push(format!(
            "--plain and {} both given: choose plain (loopback only) or CURVE",
            given.join(", ")
        ));
    }
    let remote: Vec<&str> = endpoints
        .iter()
        .copied()
        .filter(|e| is_zmq_endpoint(e) && !is_loopback_endpoint(e))
        .collect();
    if !remote.is_empty() {
        errors.push(format!(
            "--plain is for loopback only, and {} is not (127.0.0.0/8, ::1, localhost, ipc://, inproc://): give CURVE keys for it",
            remote.join(", ")
        ));
    }
}

/// The problem when a key file `role` needs is not given.
fn missing_keys(role: Role, s: &SecuritySettings, given: &[&str]) -> Option<String> {
    let mut needed = vec!["--curve-key FILE"];
    if role.server {
        needed.push("--curve-clients FILE");
    }
    if role.client {
        needed.push("--curve-server-key FILE");
    }
    let missing = s.key.is_none()
        || (role.server && s.clients.is_none())
        || (role.client && s.server_key.is_none());
    if !missing {
        return None;
    }
    Some(if given.is_empty() {
        format!(
            "links are encrypted: give {} (keys from the `keygen` subcommand), or --plain on loopback",
            needed.join(" and ")
        )
    } else {
        format!(
            "CURVE needs {} (given: {})",
            needed.join(" and "),
            given.join(", ")
        )
    })
}

/// Loads the key files `role` uses: CURVE when all load, else their problems in `errors`.
fn load_keys(role: Role, s: &SecuritySettings, errors: &mut Vec<String>) -> LinkSecurity {
    fn check<T>(r: Result<T, KeyError>, errors: &mut Vec<String>) -> Option<T> {
        r.map_err(|e| errors.push(e.to_string())).ok()
    }
    let before = errors.len();
    let key_path = s.key.clone().unwrap_or_default();
    let key = check(load_keypair(&key_path), errors);
    let clients = match (role.server, &s.clients) {
        (true, Some(p)) => check(load_clients(p), errors).unwrap_or_default(),
        _ => Vec::new(),
    };
    let server_key = match (role.client, &s.server_key) {
        (true, Some(p)) => check(load_public_key(p), errors),
        _ => None,
    };
    let ok = errors.len() == before;
    match key {
        Some(key) if ok => LinkSecurity::Curve(Arc::new(CurveConfig {
            key_path,
            key,
            clients_path: s.clients.clone().filter(|_| role.server),
            clients,
            server_key_path: s.server_key.clone().filter(|_| role.client),
            server_key,
        })),
        _ => LinkSecurity::Plain,
    }
}

impl LinkSecurity {
    /// The settings as TOML lines for `--check-config`: the paths, never a key.
    pub fn resolved(&self) -> String {
        let q = |p: &Path| crate::config::toml_string(&p.to_string_lossy());
        match self {
            LinkSecurity::Plain => {
                "plain = true\n# curve_key: none (plain links, loopback only)\n".to_owned()
            }
            LinkSecurity::Curve(c) => {
                let mut out = format!("plain = false\ncurve_key = {}\n", q(&c.key_path));
                if let Some(p) = &c.clients_path {
                    let bound = c.clients.iter().filter(|c| c.names.is_some()).count();
                    let bound = match bound {
                        0 => String::new(),
                        n => format!(", {n} bound to names"),
                    };
                    out.push_str(&format!(
                        "curve_clients = {}\n# curve_clients: {} client keys{bound}\n",
                        q(p),
                        c.clients.len()
                    ));
                }
                if let Some(p) = &c.server_key_path {
                    out.push_str(&format!("curve_server_key = {}\n", q(p)));
                }
                out
            }
        }
    }

    pub fn is_plain(&self) -> bool {
        matches!(self, LinkSecurity::Plain)
    }
}

/// True for endpoints that never leave the host: `ipc://`, `inproc://`, and `tcp://` to
/// 127.0.0.0/8, `::1` or `localhost` (both ends, for `tcp://SOURCE;DESTINATION`).
pub fn is_loopback_endpoint(ep: &str) -> bool {
    if ep.starts_with("ipc://") || ep.starts_with("inproc://") {
        return true;
    }
    let Some(rest) = ep.strip_prefix("tcp://") else {
        return false;
    };
    rest.split(';').all(|host_port| {
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
        };
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
    })
}

/// The subcommands every tapflow binary has beside its flags.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Generate a CURVE key pair: PREFIX.key (public and secret, mode 0600) and PREFIX.pub
    /// (public only, to hand to the peers); refuses to overwrite; prints the public key.
    Keygen {
        /// Path prefix of the two files, e.g. /etc/tapflow/keys/collector.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs a subcommand for `binary`: 0 done, 1 failed (a message on stderr).
pub fn run_command(binary: &str, command: &Command) -> ExitCode {
    match command {
        Command::Keygen { out } => match keygen(binary, out) {
            Ok((key, public, pair)) => {
                println!("{}", pair.public.z85());
                eprintln!(
                    "{binary}: wrote {} (mode 0600, keep it secret) and {} (give it to the peers)",
                    key.display(),
                    public.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{binary}: {e}");
                ExitCode::from(1)
            }
        },
    }
}

#[cfg(test)]
mod tests;
