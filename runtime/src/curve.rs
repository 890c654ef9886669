//! ZeroMQ CURVE on every link: key files, the `keygen` subcommand, the link security a binary
//! resolves from its settings, and the socket setup of both ends (`curve/zap.rs`: the server's
//! ZAP handler, which accepts only listed client keys and counts every rejection).
//!
//! Key files are TOML with Z85 text (ZeroMQ's own key encoding, 40 characters for 32 bytes):
//!
//! - a keypair file (`PREFIX.key`, mode 0600) holds `public = "..."` and `secret = "..."`;
//! - a public-key file (`PREFIX.pub`) holds `public = "..."`;
//! - a clients file is public-key lines, one per allowed peer (`cat a.pub b.pub > clients`),
//!   blank lines and `#` comments allowed.
//!
//! A secret-key file readable by group or others is refused, as ssh refuses such a private key.
//! Secrets are never logged nor printed: `Debug` of a key pair shows only its public half.

use std::fmt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use serde::Deserialize;

mod client;
mod zap;

pub use client::ClientMonitor;

pub use zap::{add_counters, secure_client, secure_server, AuthCounts, Authenticator};

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

impl KeyPair {
    /// A new key pair from libzmq (libsodium's randomness).
    pub fn generate() -> Result<KeyPair, String> {
        let pair = zmq::CurveKeyPair::new()
            .map_err(|e| format!("cannot generate a CURVE key pair: {e}"))?;
        Ok(KeyPair {
            public: PublicKey(pair.public_key),
            secret: SecretKey(pair.secret_key),
        })
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
    /// Servers: the client keys allowed to connect (`curve_clients`).
    pub clients_path: Option<PathBuf>,
    pub clients: Vec<PublicKey>,
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
    let mut given = Vec::new();
    if s.key.is_some() {
        given.push("--curve-key");
    }
    if s.clients.is_some() {
        given.push("--curve-clients");
    }
    if s.server_key.is_some() {
        given.push("--curve-server-key");
    }
    if s.plain {
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
        return LinkSecurity::Plain;
    }
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
    if missing {
        if given.is_empty() {
            errors.push(format!(
                "links are encrypted: give {} (keys from the `keygen` subcommand), or --plain on loopback",
                needed.join(" and ")
            ));
        } else {
            errors.push(format!(
                "CURVE needs {} (given: {})",
                needed.join(" and "),
                given.join(", ")
            ));
        }
        return LinkSecurity::Plain;
    }
    if zmq::has("curve") != Some(true) {
        errors.push("this libzmq has no CURVE (built without libsodium)".to_owned());
    }
    fn check<T>(r: Result<T, String>, errors: &mut Vec<String>) -> Option<T> {
        r.map_err(|e| errors.push(e)).ok()
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
        let q = |p: &Path| crate::toml_string(&p.to_string_lossy());
        match self {
            LinkSecurity::Plain => {
                "plain = true\n# curve_key: none (plain links, loopback only)\n".to_owned()
            }
            LinkSecurity::Curve(c) => {
                let mut out = format!("plain = false\ncurve_key = {}\n", q(&c.key_path));
                if let Some(p) = &c.clients_path {
                    out.push_str(&format!(
                        "curve_clients = {}\n# curve_clients: {} client keys\n",
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

/// `tcp://`, `ipc://` or `inproc://`.
fn is_zmq_endpoint(ep: &str) -> bool {
    ep.starts_with("tcp://") || ep.starts_with("ipc://") || ep.starts_with("inproc://")
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyPairFile {
    public: String,
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicFile {
    public: String,
}

/// Reads a keypair file, refusing one that group or others may read.
pub fn load_keypair(path: &Path) -> Result<KeyPair, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("curve_key {shown}: {e}"))?;
    let file: KeyPairFile = toml::from_str(&text).map_err(|_| {
        format!("curve_key {shown} is not a keypair file (public = \"Z85\" and secret = \"Z85\", from `keygen`)")
    })?;
    let meta = std::fs::metadata(path).map_err(|e| format!("curve_key {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "curve_key {shown} is accessible by group or others (mode {mode:04o}): it holds a secret key; chmod 600 it"
        ));
    }
    let public = decode_key(&file.public).map_err(|e| format!("curve_key {shown}: public {e}"))?;
    let secret = decode_key(&file.secret).map_err(|e| format!("curve_key {shown}: secret {e}"))?;
    Ok(KeyPair {
        public: PublicKey(public),
        secret: SecretKey(secret),
    })
}

/// Reads a public-key file (`PREFIX.pub`).
pub fn load_public_key(path: &Path) -> Result<PublicKey, String> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("curve_server_key {shown}: {e}"))?;
    let file: PublicFile = toml::from_str(&text).map_err(|_| {
        format!("curve_server_key {shown} is not a public-key file (public = \"Z85\", the .pub from `keygen`)")
    })?;
    decode_key(&file.public)
        .map(PublicKey)
        .map_err(|e| format!("curve_server_key {shown}: {e}"))
}

/// Reads a clients file: `public = "Z85"` lines (concatenated `.pub` files).
pub fn load_clients(path: &Path) -> Result<Vec<PublicKey>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("curve_clients {shown}: {e}"))?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let bad = |what: String| format!("curve_clients {shown} line {}: {what}", i + 1);
        let file: PublicFile = toml::from_str(trimmed)
            .map_err(|_| bad("not a line `public = \"Z85\"` (a client's .pub)".to_owned()))?;
        let key = decode_key(&file.public).map_err(bad)?;
        if !keys.contains(&PublicKey(key)) {
            keys.push(PublicKey(key));
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "curve_clients {shown} lists no key: no client could connect"
        ));
    }
    Ok(keys)
}

const Z85_ALPHABET: &[u8] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// 40 characters of Z85 to 32 bytes.
fn decode_key(text: &str) -> Result<[u8; 32], String> {
    if text.len() != 40 || !text.bytes().all(|b| Z85_ALPHABET.contains(&b)) {
        return Err("is not a key: 40 characters of Z85 expected".to_owned());
    }
    let bytes = zmq::z85_decode(text).map_err(|e| format!("is not Z85: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| "is not a 32-byte key".to_owned())
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

/// Writes `PREFIX.key` (mode 0600) and `PREFIX.pub` for a new key pair; neither may exist.
pub fn keygen(binary: &str, prefix: &Path) -> Result<(PathBuf, PathBuf, KeyPair), String> {
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (key_path, pub_path) = (with(".key"), with(".pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(format!("{} exists: not overwritten", p.display()));
        }
    }
    let pair = KeyPair::generate()?;
    let public = pair.public.z85();
    let secret = zmq::z85_encode(pair.secret.bytes()).map_err(|e| e.to_string())?;
    let name = prefix
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    write_new(
        &key_path,
        0o600,
        &format!("# tapflow CURVE key pair {name} ({binary} keygen): keep secret, mode 0600\npublic = \"{public}\"\nsecret = \"{secret}\"\n"),
    )?;
    if let Err(e) = write_new(
        &pub_path,
        0o644,
        &format!("# tapflow CURVE public key {name} ({binary} keygen)\npublic = \"{public}\"\n"),
    ) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((key_path, pub_path, pair))
}

/// Creates `path` (never an existing file) with `mode` and writes `text`.
fn write_new(path: &Path, mode: u32, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    // The umask may have taken bits away, never added them; set exactly `mode`.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(text.as_bytes()))
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints() {
        for (ep, want) in [
            ("tcp://127.0.0.1:5601", true),
            ("tcp://127.3.2.1:5601", true),
            ("tcp://[::1]:5601", true),
            ("tcp://localhost:5601", true),
            ("ipc:///run/tapflow/p1", true),
            ("inproc://x", true),
            ("tcp://127.0.0.1:0;127.0.0.1:5601", true),
            ("tcp://10.0.0.5:5601", false),
            ("tcp://0.0.0.0:5601", false),
            ("tcp://*:5601", false),
            ("tcp://[::]:5601", false),
            ("tcp://eth0:5601", false),
            ("tcp://127.0.0.1:0;10.0.0.5:5601", false),
            ("tcp://127.0.0.1.example.com:5601", false),
            ("udp://127.0.0.1:5601", false),
        ] {
            assert_eq!(is_loopback_endpoint(ep), want, "{ep}");
        }
    }

    fn errors(role: Role, s: &SecuritySettings, endpoints: &[&str]) -> Vec<String> {
        let mut errors = Vec::new();
        let _ = resolve(role, s, endpoints, &mut errors);
        errors
    }

    #[test]
    fn keys_round_trip_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let prefix = dir.path().join("proc");
        let (key, public, pair) = keygen("t", &prefix).unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&key)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        assert!(keygen("t", &prefix)
            .err()
            .unwrap_or_default()
            .contains("exists: not overwritten"));
        let loaded = load_keypair(&key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.public, pair.public);
        assert_eq!(loaded.secret.bytes(), pair.secret.bytes());
        assert!(!format!("{loaded:?}")
            .contains(&zmq::z85_encode(pair.secret.bytes()).unwrap_or_default()));
        assert_eq!(load_public_key(&public), Ok(pair.public));
        // A clients file is concatenated .pub files.
        let (_, other_pub, other) =
            keygen("t", &dir.path().join("b")).unwrap_or_else(|e| panic!("{e}"));
        let clients = dir.path().join("clients");
        let text = format!(
            "{}\n{}",
            std::fs::read_to_string(&public).unwrap_or_default(),
            std::fs::read_to_string(&other_pub).unwrap_or_default()
        );
        std::fs::write(&clients, text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load_clients(&clients), Ok(vec![pair.public, other.public]));

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = load_keypair(&key).err().unwrap_or_default();
        assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");
        let e = load_keypair(&public).err().unwrap_or_default();
        assert!(e.contains("not a keypair file"), "{e}");
        let e = load_public_key(&dir.path().join("none"))
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("curve_server_key "), "{e}");
        std::fs::write(&clients, "public = \"short\"\n").unwrap_or_else(|e| panic!("{e}"));
        let e = load_clients(&clients).err().unwrap_or_default();
        assert!(e.contains("line 1") && e.contains("40 characters"), "{e}");

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        let both = Role {
            server: true,
            client: true,
        };
        let s = SecuritySettings {
            plain: false,
            key: Some(key.clone()),
            clients: Some(other_pub.clone()),
            server_key: Some(public.clone()),
        };
        let mut errs = Vec::new();
        let sec = resolve(both, &s, &["tcp://10.0.0.5:1"], &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let text = sec.resolved();
        assert!(
            text.contains(&format!("curve_key = \"{}\"", key.display())),
            "{text}"
        );
        assert!(!text.contains(&zmq::z85_encode(pair.secret.bytes()).unwrap_or_default()));
        let s = SecuritySettings { plain: true, ..s };
        let errs = errors(both, &s, &["tcp://127.0.0.1:1"]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("both given"), "{errs:?}");
    }

    #[test]
    fn plain_only_on_loopback_and_keys_required_otherwise() {
        let client = Role {
            server: false,
            client: true,
        };
        let plain = SecuritySettings {
            plain: true,
            ..SecuritySettings::default()
        };
        assert!(errors(client, &plain, &["tcp://127.0.0.1:5601", "ipc:///x"]).is_empty());
        let e = errors(
            client,
            &plain,
            &["tcp://127.0.0.1:5601", "tcp://10.0.0.5:5602"],
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("tcp://10.0.0.5:5602") && !e[0].contains("5601"),
            "{e:?}"
        );
        let e = errors(client, &SecuritySettings::default(), &["tcp://127.0.0.1:1"]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "links are encrypted: give --curve-key FILE and --curve-server-key FILE"
            ),
            "{e:?}"
        );
        let only_key = SecuritySettings {
            key: Some("/nonexistent.key".into()),
            ..SecuritySettings::default()
        };
        let e = errors(client, &only_key, &["tcp://10.0.0.5:1"]);
        assert!(e[0].contains("given: --curve-key"), "{e:?}");
    }
}
