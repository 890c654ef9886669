//! Both ends of a CURVE link. The server's [`Authenticator`] is a thread with a ZAP handler
//! (RFC 27: a REP socket on `inproc://zeromq.zap.01` in the server socket's context, bound before
//! the server binds) that accepts only the listed client keys, and a monitor of the server
//! socket that sees the handshakes libzmq fails before asking ZAP (a peer without CURVE, or one
//! that does not have this server's public key). Every rejection is counted; the first of each
//! peer and then every [`LOG_EVERY`]th is logged at WARN (a rejected peer retries forever).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::{debug, warn};

use super::{LinkSecurity, PublicKey};

/// A rejected peer is logged at its first rejection and then every this many.
pub const LOG_EVERY: u64 = 100;
/// Peers remembered for rate-limited logging; past it, only every `LOG_EVERY`th rejection of
/// any new peer is logged.
const PEERS_CAP: usize = 1024;
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";
const ZAP_DOMAIN: &str = "tapflow";

/// What a server's authenticator has counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuthCounts {
    /// Handshakes of listed clients.
    pub accepted: u64,
    /// Handshakes of clients whose key is not listed (refused by the ZAP handler).
    pub rejected_unknown_key: u64,
    /// Handshakes libzmq failed before any key check: a peer without CURVE, or without this
    /// server's public key, or one that hung up half-way.
    pub rejected_handshake: u64,
}

impl AuthCounts {
    pub fn rejected(&self) -> u64 {
        self.rejected_unknown_key + self.rejected_handshake
    }

    /// As counters: `auth_accepted`, `auth_rejected` (every rejection) and
    /// `auth_rejected_handshake` (those of them that failed before the key check).
    pub fn counters(&self) -> [(&'static str, u64); 3] {
        [
            ("auth_accepted", self.accepted),
            ("auth_rejected", self.rejected()),
            ("auth_rejected_handshake", self.rejected_handshake),
        ]
    }
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    unknown_key: AtomicU64,
    handshake: AtomicU64,
}

/// The server's ZAP handler and handshake monitor, on their own thread until dropped.
pub struct Authenticator {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Authenticator {
    pub fn counts(&self) -> AuthCounts {
        AuthCounts {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            rejected_unknown_key: self.counters.unknown_key.load(Ordering::Relaxed),
            rejected_handshake: self.counters.handshake.load(Ordering::Relaxed),
        }
    }
}

/// Adds the counts of `auth` (a server with CURVE) to `counters`; nothing with plain links.
pub fn add_counters(
    auth: Option<&Authenticator>,
    counters: &mut std::collections::BTreeMap<String, u64>,
) {
    if let Some(a) = auth {
        counters.extend(a.counts().counters().map(|(k, v)| (k.to_owned(), v)));
    }
}

impl Drop for Authenticator {
    /// Stops the thread and closes its sockets, so the context can terminate (and linger).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Makes `socket` (created in `ctx`, not yet bound) the server end of a link: with CURVE, its
/// secret key, and an [`Authenticator`] started before it binds; with plain links, nothing.
/// Keep the authenticator as long as the socket, and drop it before the context (declare it
/// after the context): its thread holds sockets of that context.
pub fn secure_server(
    ctx: &zmq::Context,
    socket: &zmq::Socket,
    security: &LinkSecurity,
    endpoint: &str,
) -> Result<Option<Authenticator>, zmq::Error> {
    let LinkSecurity::Curve(curve) = security else {
        return Ok(None);
    };
    static MONITORS: AtomicU64 = AtomicU64::new(0);
    let zap = ctx.socket(zmq::REP)?;
    zap.set_linger(0)?;
    zap.bind(ZAP_ENDPOINT)?;
    let monitor_endpoint = format!(
        "inproc://tapflow-auth-monitor-{}",
        MONITORS.fetch_add(1, Ordering::Relaxed)
    );
    socket.monitor(
        &monitor_endpoint,
        zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32,
    )?;
    let monitor = ctx.socket(zmq::PAIR)?;
    monitor.set_linger(0)?;
    monitor.connect(&monitor_endpoint)?;
    socket.set_curve_server(true)?;
    socket.set_curve_secretkey(curve.key.secret.bytes())?;
    socket.set_zap_domain(ZAP_DOMAIN)?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handler = Handler {
        zap,
        monitor,
        allowed: curve.clients.iter().map(|c| c.key).collect(),
        counters: counters.clone(),
        stop: stop.clone(),
        endpoint: endpoint.to_owned(),
        peers: HashMap::new(),
    };
    let thread = std::thread::Builder::new()
        .name("zap".into())
        .spawn(move || handler.run())
        .map_err(|_| zmq::Error::EMFILE)?;
    Ok(Some(Authenticator {
        counters,
        stop,
        thread: Some(thread),
    }))
}

/// Makes `socket` (not yet bound) one more server end on a context where [`secure_server`]
/// already started the authenticator: the same secret key, checked by the same handler against
/// the same client keys. With plain links, nothing.
pub fn secure_another_server(
    socket: &zmq::Socket,
    security: &LinkSecurity,
) -> Result<(), zmq::Error> {
    let LinkSecurity::Curve(curve) = security else {
        return Ok(());
    };
    socket.set_curve_server(true)?;
    socket.set_curve_secretkey(curve.key.secret.bytes())?;
    socket.set_zap_domain(ZAP_DOMAIN)
}

/// Makes `socket` (not yet connected) the client end of a link: with CURVE, its key pair and
/// the server's public key (the handshake fails unless the server holds that key's secret).
pub fn secure_client(socket: &zmq::Socket, security: &LinkSecurity) -> Result<(), zmq::Error> {
    let LinkSecurity::Curve(curve) = security else {
        return Ok(());
    };
    let Some(server) = &curve.server_key else {
        return Err(zmq::Error::EINVAL);
    };
    socket.set_curve_serverkey(&server.0)?;
    socket.set_curve_publickey(&curve.key.public.0)?;
    socket.set_curve_secretkey(curve.key.secret.bytes())?;
    Ok(())
}

struct Handler {
    zap: zmq::Socket,
    monitor: zmq::Socket,
    allowed: Vec<PublicKey>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    endpoint: String,
    /// (address, key) -> rejections, for rate-limited logging.
    peers: HashMap<(String, PublicKey), u64>,
}

impl Handler {
    fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let mut items = [
                self.zap.as_poll_item(zmq::POLLIN),
                self.monitor.as_poll_item(zmq::POLLIN),
            ];
            if zmq::poll(&mut items, 200).is_err() {
                continue;
            }
            let (zap_ready, monitor_ready) = (items[0].is_readable(), items[1].is_readable());
            if zap_ready {
                if let Ok(frames) = self.zap.recv_multipart(0) {
                    let reply = self.decide(&frames);
                    if let Err(e) = self.zap.send_multipart(reply, 0) {
                        warn!(error = %e, "ZAP reply not sent");
                    }
                }
            }
            if monitor_ready {
                if let Ok(frames) = self.monitor.recv_multipart(0) {
                    self.on_event(&frames);
                }
            }
        }
    }

    /// A ZAP request (version, request id, domain, address, routing id, mechanism,
    /// credentials...) -> the reply (version, request id, status, text, user id, metadata).
    fn decide(&mut self, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let request_id = frames.get(1).cloned().unwrap_or_default();
        let reply = |status: &str, text: &str, user: String| {
            vec![
                b"1.0".to_vec(),
                request_id.clone(),
                status.as_bytes().to_vec(),
                text.as_bytes().to_vec(),
                user.into_bytes(),
                Vec::new(),
            ]
        };
        if frames.len() < 6 || frames[0] != b"1.0" {
            return reply("500", "malformed ZAP request", String::new());
        }
        let address = String::from_utf8_lossy(&frames[3]).into_owned();
        let key = match (frames[5].as_slice(), frames.get(6)) {
            (b"CURVE", Some(k)) => <[u8; 32]>::try_from(k.as_slice()).ok().map(PublicKey),
            _ => None,
        };
        match key {
            Some(k) if self.allowed.contains(&k) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                debug!(peer = %address, key = %k.z85(), "CURVE client accepted");
                // The user id every message of this peer carries ("User-Id"): its key, which
                // `NameBindings` checks the names it sends under against.
                reply("200", "OK", k.z85())
            }
            _ => {
                let n = self.counters.unknown_key.fetch_add(1, Ordering::Relaxed) + 1;
                let key = key.unwrap_or(PublicKey([0; 32]));
                let count = if self.peers.len() < PEERS_CAP
                    || self.peers.contains_key(&(address.clone(), key))
                {
                    let c = self.peers.entry((address.clone(), key)).or_default();
                    *c += 1;
                    *c
                } else {
                    n
                };
                if count == 1 || count.is_multiple_of(LOG_EVERY) {
                    warn!(peer = %address, key = %key.z85(), listen = %self.endpoint, rejections = count,
                        "CURVE client rejected: its public key is not in curve_clients (logged at its first rejection and every {LOG_EVERY}th)");
                }
                reply("400", "client key not authorized", String::new())
            }
        }
    }

    /// A monitor event (6 bytes: event u16, value u32; then the endpoint).
    fn on_event(&mut self, frames: &[Vec<u8>]) {
        let Some(head) = frames.first().filter(|f| f.len() >= 6) else {
            return;
        };
        let event = u16::from_ne_bytes([head[0], head[1]]);
        let value = u32::from_ne_bytes([head[2], head[3], head[4], head[5]]);
        let failed = zmq::SocketEvent::from_raw(event);
        if !matches!(
            failed,
            zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL
                | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL
        ) {
            return;
        }
        let n = self.counters.handshake.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n.is_multiple_of(LOG_EVERY) {
            warn!(listen = %self.endpoint, event = ?failed, error = format!("{value:#x}"), rejections = n,
                "peer failed the CURVE handshake (no CURVE, or not this server's public key): rejected (logged at the first and every {LOG_EVERY}th)");
        }
    }
}
