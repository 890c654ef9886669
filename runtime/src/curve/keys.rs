//! CURVE key files: reading a key pair, a public key or a clients file, and `keygen` writing a
//! new pair. Every failure is a [`KeyError`] naming the file (and the setting it came from).

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{KeyPair, PublicKey, SecretKey};

/// One allowed client of a server: its public key and, when given, the only sender names its
/// messages may carry (`None`: any name, as before names could be given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub key: PublicKey,
    pub names: Option<Vec<String>>,
}

/// A key file that cannot be used, or a key pair that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `setting` is the option that named the file (`curve_key`, `curve_clients`, ...).
    #[error("{setting} {}: {source}", path.display())]
    Read {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("curve_key {} is not a keypair file (public = \"Z85\" and secret = \"Z85\", from `keygen`)", path.display())]
    NotKeyPair { path: PathBuf },
    #[error("curve_key {} is accessible by group or others (mode {mode:04o}): it holds a secret key; chmod 600 it", path.display())]
    Exposed { path: PathBuf, mode: u32 },
    /// `part` is `public ` or `secret ` in a key pair, empty in a public-key file.
    #[error("{setting} {}: {part}{reason}", path.display())]
    BadKey {
        setting: &'static str,
        path: PathBuf,
        part: &'static str,
        reason: BadKey,
    },
    #[error("curve_server_key {} is not a public-key file (public = \"Z85\", the .pub from `keygen`)", path.display())]
    NotPublicKey { path: PathBuf },
    #[error("curve_clients {} line {line}: {reason}", path.display())]
    BadClientLine {
        path: PathBuf,
        line: usize,
        reason: BadKey,
    },
    #[error("curve_clients {} lists no key: no client could connect", path.display())]
    NoClients { path: PathBuf },
    #[error("cannot generate a CURVE key pair: {0}")]
    Generate(zmq::Error),
    #[error("{0}")]
    Encode(zmq::EncodeError),
    #[error("{} exists: not overwritten", .0.display())]
    Exists(PathBuf),
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why a key's text is not a key.
#[derive(Debug, thiserror::Error)]
pub enum BadKey {
    #[error("is not a key: 40 characters of Z85 expected")]
    Length,
    #[error("is not Z85: {0}")]
    Z85(zmq::DecodeError),
    #[error("is not a 32-byte key")]
    Size,
    #[error("not a line `public = \"Z85\"` (a client's .pub), optionally followed by `, names = [\"NAME\", ...]`")]
    NotPublicLine,
    #[error("`names` is empty: list the sender names this key may speak for, or leave `names` out to allow any")]
    NoNames,
    #[error("`names` holds an empty name")]
    EmptyName,
    #[error("this key is also on line {0}, once with `names` and once without: give its names on every line, or on none")]
    Rebound(usize),
}

impl KeyPair {
    /// A new key pair from libzmq (libsodium's randomness).
    pub fn generate() -> Result<KeyPair, KeyError> {
        let pair = zmq::CurveKeyPair::new().map_err(KeyError::Generate)?;
        Ok(KeyPair {
            public: PublicKey(pair.public_key),
            secret: SecretKey(pair.secret_key),
        })
    }
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

fn read(setting: &'static str, path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        setting,
        path: path.to_owned(),
        source,
    })
}

/// Reads a keypair file, refusing one that group or others may read.
pub fn load_keypair(path: &Path) -> Result<KeyPair, KeyError> {
    let text = read("curve_key", path)?;
    let file: KeyPairFile = toml::from_str(&text).map_err(|_| KeyError::NotKeyPair {
        path: path.to_owned(),
    })?;
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        setting: "curve_key",
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let decode = |text: &str, part| {
        decode_key(text).map_err(|reason| KeyError::BadKey {
            setting: "curve_key",
            path: path.to_owned(),
            part,
            reason,
        })
    };
    Ok(KeyPair {
        public: PublicKey(decode(&file.public, "public ")?),
        secret: SecretKey(decode(&file.secret, "secret ")?),
    })
}

/// Reads a public-key file (`PREFIX.pub`).
pub fn load_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let text = read("curve_server_key", path)?;
    let file: PublicFile = toml::from_str(&text).map_err(|_| KeyError::NotPublicKey {
        path: path.to_owned(),
    })?;
    decode_key(&file.public)
        .map(PublicKey)
        .map_err(|reason| KeyError::BadKey {
            setting: "curve_server_key",
            path: path.to_owned(),
            part: "",
            reason,
        })
}

/// Reads a clients file: one client per line, `public = "Z85"` (a client's `.pub`, so
/// concatenated `.pub` files are a clients file), optionally `, names = ["tap-a", "tap-b"]`:
/// the sender names that key may speak for. Blank lines and `#` comments are skipped. A key
/// listed twice is one client (the union of its names; with names on every line or on none).
pub fn load_clients(path: &Path) -> Result<Vec<Client>, KeyError> {
    let text = read("curve_clients", path)?;
    let mut clients: Vec<(usize, Client)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = strip_comment(line).trim();
        if trimmed.is_empty() {
            continue;
        }
        let bad = |reason| KeyError::BadClientLine {
            path: path.to_owned(),
            line: i + 1,
            reason,
        };
        let client = parse_client(trimmed).map_err(bad)?;
        match clients.iter_mut().find(|(_, c)| c.key == client.key) {
            None => clients.push((i + 1, client)),
            Some((first, known)) => match (&mut known.names, client.names) {
                (None, None) => {}
                (Some(names), Some(more)) => {
                    names.extend(more);
                    names.sort();
                    names.dedup();
                }
                _ => return Err(bad(BadKey::Rebound(*first))),
            },
        }
    }
    if clients.is_empty() {
        return Err(KeyError::NoClients {
            path: path.to_owned(),
        });
    }
    Ok(clients.into_iter().map(|(_, c)| c).collect())
}

/// One line of a clients file (comment stripped, not empty): the inside of a TOML inline
/// table with `public` and, optionally, `names`.
fn parse_client(line: &str) -> Result<Client, BadKey> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        public: String,
        names: Option<Vec<String>>,
    }
    #[derive(Deserialize)]
    struct Wrapped {
        client: Line,
    }
    let wrapped: Wrapped =
        toml::from_str(&format!("client = {{ {line} }}")).map_err(|_| BadKey::NotPublicLine)?;
    let Line { public, names } = wrapped.client;
    let key = PublicKey(decode_key(&public)?);
    let names = match names {
        Some(n) if n.is_empty() => return Err(BadKey::NoNames),
        Some(n) if n.iter().any(|s| s.trim().is_empty()) => return Err(BadKey::EmptyName),
        Some(mut n) => {
            n.sort();
            n.dedup();
            Some(n)
        }
        None => None,
    };
    Ok(Client { key, names })
}

/// `line` without its `#` comment: a `#` outside a quoted string (Z85 keys and names may hold
/// `#` themselves).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\u{27}' => quote = Some(c),
            None if c == '#' => return &line[..i],
            None => {}
        }
    }
    line
}

const Z85_ALPHABET: &[u8] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// 40 characters of Z85 to 32 bytes.
fn decode_key(text: &str) -> Result<[u8; 32], BadKey> {
    if text.len() != 40 || !text.bytes().all(|b| Z85_ALPHABET.contains(&b)) {
        return Err(BadKey::Length);
    }
    let bytes = zmq::z85_decode(text).map_err(BadKey::Z85)?;
    bytes.try_into().map_err(|_| BadKey::Size)
}

/// Writes `PREFIX.key` (mode 0600) and `PREFIX.pub` for a new key pair; neither may exist.
pub fn keygen(binary: &str, prefix: &Path) -> Result<(PathBuf, PathBuf, KeyPair), KeyError> {
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (key_path, pub_path) = (with(".key"), with(".pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(KeyError::Exists(p.clone()));
        }
    }
    let pair = KeyPair::generate()?;
    let public = pair.public.z85();
    let secret = zmq::z85_encode(pair.secret.bytes()).map_err(KeyError::Encode)?;
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
fn write_new(path: &Path, mode: u32, text: &str) -> Result<(), KeyError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| KeyError::Create {
            path: path.to_owned(),
            source,
        })?;
    // The umask may have taken bits away, never added them; set exactly `mode`.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(text.as_bytes()))
        .and_then(|()| f.sync_all())
        .map_err(|source| KeyError::Write {
            path: path.to_owned(),
            source,
        })
}
