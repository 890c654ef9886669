//! Which sender names a CURVE client may speak for. A message's sender name (a collector's in
//! its link header, a processor's in what it sends upstream) is whatever the peer writes; the
//! key that sent it is what the handshake proved. The ZAP handler gives each accepted client
//! its key (Z85) as ZeroMQ's user id, which every message it sends then carries
//! (`zmq::Message::gets("User-Id")`); [`NameBindings::allows`] checks the name against the
//! `names` the clients file gives that key. A key listed without `names` may speak for any
//! name (as before names could be given); plain links have no keys and bind nothing.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::LinkSecurity;

/// How a message's sender name relates to the key that sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaker {
    /// The name is one its key is bound to (`names` in `curve_clients`).
    Bound,
    /// Its key may use any name (no `names`), or the link is plain.
    Any,
    /// Its key is bound to other names (or the message carries no known key).
    Refused,
}

/// The names each client key may speak for, by ZAP user id (the key's Z85 text).
#[derive(Clone, Debug, Default)]
pub struct NameBindings {
    /// `None` for plain links: nothing is checked.
    keys: Option<HashMap<String, Option<BTreeSet<String>>>>,
}

impl NameBindings {
    /// The bindings of a server's clients file (none for plain links or a client-only binary).
    pub fn of(security: &LinkSecurity) -> NameBindings {
        let LinkSecurity::Curve(curve) = security else {
            return NameBindings::default();
        };
        if curve.clients_path.is_none() {
            return NameBindings::default();
        }
        let keys = curve
            .clients
            .iter()
            .map(|c| {
                let names = c.names.as_ref().map(|n| n.iter().cloned().collect());
                (c.key.z85(), names)
            })
            .collect();
        NameBindings { keys: Some(keys) }
    }

    /// May a message authenticated as `user_id` (its ZAP user id; `None` on a plain link)
    /// say it comes from `name`? Always on plain links; with CURVE, if its key has no `names`
    /// or `name` is one of them.
    pub fn allows(&self, user_id: Option<&str>, name: &str) -> bool {
        self.speaker(user_id, name) != Speaker::Refused
    }

    /// How a message authenticated as `user_id` speaks for `name`: as one of the names its
    /// key is bound to, under a key (or plain link) that may use any name, or not at all.
    pub fn speaker(&self, user_id: Option<&str>, name: &str) -> Speaker {
        let Some(keys) = &self.keys else {
            return Speaker::Any;
        };
        match user_id.and_then(|u| keys.get(u)) {
            Some(None) => Speaker::Any,
            Some(Some(names)) if names.contains(name) => Speaker::Bound,
            _ => Speaker::Refused,
        }
    }

    /// Client keys listed without `names` (they may speak for any name), and all keys.
    pub fn unbound(&self) -> (usize, usize) {
        self.keys.as_ref().map_or((0, 0), |k| {
            (k.values().filter(|n| n.is_none()).count(), k.len())
        })
    }

    /// Logs, once at start, that some client keys may speak for any sender name.
    pub fn warn_unbound(&self, peers: &str) {
        let (unbound, all) = self.unbound();
        if unbound > 0 {
            tracing::warn!(
                unbound,
                keys = all,
                "curve_clients: {unbound} of {all} {peers} keys have no `names`, so each may send under any {peers} name; bind them (`public = \"...\", names = [\"...\"]`, README: CURVE)"
            );
        }
    }
}

/// How often a refused peer is logged at most.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// Peers remembered for rate-limited logging; refusals past it share one entry.
const PEERS_CAP: usize = 1024;

/// Rate-limited logging of refused messages: the first refusal of each peer (a key, or any
/// fixed label) is logged, then at most one per [`REFUSAL_LOG_EVERY`], with how many were
/// refused since the last one logged.
#[derive(Debug, Default)]
pub struct RefusalLog {
    peers: HashMap<String, (Instant, u64)>,
}

impl RefusalLog {
    /// Counts a refusal of `peer` at `now`: `Some(n)` when it is to be logged now, `n` being
    /// the refusals of that peer since the last one logged (this one included).
    pub fn note(&mut self, peer: &str, now: Instant) -> Option<u64> {
        let peer = if self.peers.len() >= PEERS_CAP && !self.peers.contains_key(peer) {
            "(other peers)"
        } else {
            peer
        };
        match self.peers.get_mut(peer) {
            None => {
                self.peers.insert(peer.to_owned(), (now, 0));
                Some(1)
            }
            Some((last, since)) => {
                *since += 1;
                if now.saturating_duration_since(*last) >= REFUSAL_LOG_EVERY {
                    let n = *since;
                    *last = now;
                    *since = 0;
                    Some(n)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_first_then_once_a_minute() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.note("k", t0), Some(1));
        assert_eq!(log.note("k", t0 + Duration::from_secs(1)), None);
        assert_eq!(log.note("other", t0 + Duration::from_secs(1)), Some(1));
        assert_eq!(log.note("k", t0 + Duration::from_secs(59)), None);
        assert_eq!(log.note("k", t0 + REFUSAL_LOG_EVERY), Some(3));
        assert_eq!(log.note("k", t0 + REFUSAL_LOG_EVERY), None);
    }
}
