//! The PULL socket on its own thread: messages are received and decoded there and handed to
//! the main loop, decoded, through a bounded channel.
//!
//! At the end of a capture every processor sends what it still holds at once; decoding those
//! records (MessagePack, a few allocations each) was a third of the main loop's time, on one
//! core while the other idled. Here it overlaps with ordering, the conn log and detection.
//! The channel holds at most [`DEPTH`] messages: when the main loop falls behind, this thread
//! waits, ZeroMQ's queue fills and the processors are held back, as before. Dropping the inbox
//! stops the thread at once: it waits on the PULL socket and on an in-process stop socket
//! together, never on a timeout.
//!
//! The [`Gate`] is checked here too, where the message's CURVE key is known: a message whose
//! key may not speak for the processor name it carries (`curve_clients` `names`), or from a
//! processor incarnation past `max_senders`, is refused, logged (at most once a minute per
//! key) and handed over only as [`Inbound::Refused`], to be counted: it reaches no table.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tapflow_proto::delivery::Delivered;
use tapflow_proto::upstream::UpMessage;
use tapflow_runtime::curve::{NameBindings, RefusalLog, Speaker};
use tracing::warn;

/// The inbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("cannot {what} {endpoint}: {source}")]
    Socket {
        what: &'static str,
        endpoint: String,
        source: zmq::Error,
    },
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// Decoded messages waiting for the main loop.
const DEPTH: usize = 8;

/// What the socket delivered.
pub enum Inbound {
    /// A message, with its bytes as received when the inbox keeps them (a state directory's
    /// write-ahead log; heartbeats never).
    Message(Delivered, Option<zmq::Message>),
    /// Not a message this aggregator can read: counted by `reason`, never fatal.
    Malformed {
        reason: &'static str,
        error: String,
        bytes: usize,
    },
    /// Refused by the [`Gate`]: to be counted, nothing else.
    Refused(Refused),
}

/// Why the gate refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its CURVE key may not speak for its processor name (`names_refused`).
    NameNotBound,
    /// It came from a processor incarnation past `max_senders` (`senders_refused`).
    OverCap,
}

/// Which processor messages get in (sans-IO): the processor names each CURVE key may speak
/// for, and at most `max_senders` processor incarnations of each kind (under a name their key
/// is bound to; under any other name), so that made-up names can neither end the run (an
/// end-of-stream under another processor's name), nor grow the tables kept by processor
/// name, nor crowd out the configured names.
pub struct Gate {
    bindings: NameBindings,
    max_senders: usize,
    known: HashSet<(String, u64)>,
    /// Incarnations admitted under a bound name, and under any other name.
    bound: usize,
    any: usize,
}

impl Gate {
    pub fn new(bindings: NameBindings, max_senders: usize) -> Gate {
        Gate {
            bindings,
            max_senders,
            known: HashSet::new(),
            bound: 0,
            any: 0,
        }
    }

    /// Checks `m`, which came authenticated as `user_id` (its key's ZAP user id; `None` on
    /// a plain link): `Some` when it is refused.
    pub fn check(&mut self, m: &UpMessage, user_id: Option<&str>) -> Option<Refused> {
        let (processor, incarnation) = sender(m);
        let speaker = self.bindings.speaker(user_id, processor);
        let admitted = match speaker {
            Speaker::Refused => return Some(Refused::NameNotBound),
            Speaker::Bound => &mut self.bound,
            Speaker::Any => &mut self.any,
        };
        let key = (processor.to_owned(), incarnation);
        if self.known.contains(&key) {
            return None;
        }
        if *admitted >= self.max_senders {
            return Some(Refused::OverCap);
        }
        *admitted += 1;
        self.known.insert(key);
        None
    }
}

pub struct Inbox {
    rx: Option<Receiver<Inbound>>,
    /// This end of the stop socket pair: a message on it ends the thread.
    stop: zmq::Socket,
    handle: Option<JoinHandle<()>>,
}

impl Inbox {
    /// Takes over `pull` (bound and configured, from `ctx`) until the inbox is dropped; what
    /// it receives passes `gate` first.
    /// `keep`: hand over data messages' bytes too.
    pub fn start(
        ctx: &zmq::Context,
        pull: zmq::Socket,
        gate: Gate,
        keep: bool,
    ) -> Result<Inbox, InboxError> {
        static INBOXES: AtomicU64 = AtomicU64::new(0);
        let endpoint = format!(
            "inproc://tapflow-inbox-stop-{}",
            INBOXES.fetch_add(1, Ordering::Relaxed)
        );
        let socket_err = |source| InboxError::Socket {
            what: "set up",
            endpoint: endpoint.clone(),
            source,
        };
        let stopped = ctx.socket(zmq::PAIR).map_err(socket_err)?;
        stopped.bind(&endpoint).map_err(socket_err)?;
        let stop = ctx.socket(zmq::PAIR).map_err(socket_err)?;
        stop.set_linger(0).map_err(socket_err)?;
        stop.connect(&endpoint).map_err(socket_err)?;
        let (tx, rx) = mpsc::sync_channel(DEPTH);
        let handle = std::thread::Builder::new()
            .name("inbox".into())
            .spawn(move || receive(&pull, &stopped, gate, keep, &tx))
            .map_err(InboxError::Thread)?;
        Ok(Inbox {
            rx: Some(rx),
            stop,
            handle: Some(handle),
        })
    }

    /// The next message, waiting at most `timeout`; `None` when nothing came.
    pub fn recv(&self, timeout: Duration) -> Option<Inbound> {
        match self.rx.as_ref()?.recv_timeout(timeout) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // Only if the thread died; wait as the socket's poll did, not spin.
                std::thread::sleep(timeout);
                None
            }
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // A thread blocked handing over a message fails its send and ends.
        self.rx = None;
        let Some(h) = self.handle.take() else {
            return;
        };
        // Never a blocking send: a thread that has already ended no longer holds the other
        // end of the pair, and the send would wait for it forever (a restarted aggregator
        // was seen to hang so at its exit, its report written).
        if let Err(e) = self.stop.send("", zmq::DONTWAIT) {
            if !h.is_finished() {
                // Not joined then (it would never end): it ends when the context terminates.
                warn!(error = %e, "could not signal the inbox thread to stop");
                return;
            }
        }
        let _ = h.join();
    }
}

fn receive(
    pull: &zmq::Socket,
    stopped: &zmq::Socket,
    mut gate: Gate,
    keep: bool,
    tx: &SyncSender<Inbound>,
) {
    let mut refusals = RefusalLog::default();
    loop {
        let mut items = [
            pull.as_poll_item(zmq::POLLIN),
            stopped.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, -1) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            // The context is being terminated: nothing more will come.
            Err(zmq::Error::ETERM) => return,
            Err(e) => {
                warn!(error = %e, "poll failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        if items[1].is_readable() {
            return;
        }
        if !items[0].is_readable() {
            continue;
        }
        let mut msg = match pull.recv_msg(0) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "receive failed");
                continue;
            }
        };
        let user_id = msg.gets("User-Id").map(str::to_owned);
        let inbound = match Delivered::decode(&msg) {
            Ok(d) => match gate.check(&d.message, user_id.as_deref()) {
                None => {
                    let data = !matches!(d.message, UpMessage::Heartbeat(_));
                    Inbound::Message(d, (keep && data).then_some(msg))
                }
                Some(r) => {
                    log_refused(
                        &mut refusals,
                        &d.message,
                        r,
                        user_id.as_deref(),
                        gate.max_senders,
                    );
                    Inbound::Refused(r)
                }
            },
            Err(e) => Inbound::Malformed {
                reason: e.reason(),
                error: e.to_string(),
                bytes: msg.len(),
            },
        };
        if tx.send(inbound).is_err() {
            return;
        }
    }
}

/// The processor incarnation a message says it comes from.
pub(crate) fn sender(m: &UpMessage) -> (&str, u64) {
    match m {
        UpMessage::Heartbeat(hb) => (&hb.processor, hb.incarnation),
        UpMessage::Conns(batch) => (&batch.processor, batch.incarnation),
        UpMessage::Eos(account) => (&account.processor, account.incarnation),
        UpMessage::Expects(e) => (&e.processor, e.incarnation),
    }
}

/// A refused message, logged at the first refusal of its key (or of the cap) and then at
/// most once a minute.
fn log_refused(
    refusals: &mut RefusalLog,
    m: &UpMessage,
    reason: Refused,
    user_id: Option<&str>,
    max_senders: usize,
) {
    let (processor, incarnation) = sender(m);
    let peer = match reason {
        Refused::NameNotBound => user_id.unwrap_or("(no key)"),
        Refused::OverCap => "(max_senders)",
    };
    let Some(refused) = refusals.note(peer, Instant::now()) else {
        return;
    };
    match reason {
        Refused::NameNotBound => warn!(%processor, key = peer, refused,
            "REFUSED: this processor key may not speak for that processor name (curve_clients `names`); its messages are dropped and counted as names_refused (logged at the first and at most once a minute)"),
        Refused::OverCap => warn!(%processor, incarnation, max_senders, refused,
            "REFUSED: a processor incarnation past max_senders; its messages are dropped and counted as senders_refused (logged at the first and at most once a minute)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapflow_proto::upstream::{ProcessorAccount, ProcessorHeartbeat};

    fn heartbeat(processor: &str, incarnation: u64) -> UpMessage {
        UpMessage::Heartbeat(ProcessorHeartbeat {
            processor: processor.into(),
            incarnation,
            ..Default::default()
        })
    }

    #[test]
    fn the_gate_holds_at_most_max_senders_incarnations() {
        let mut gate = Gate::new(NameBindings::default(), 2);
        assert_eq!(gate.check(&heartbeat("p0", 1), None), None);
        let refused = (0..10_000)
            .filter(|i| {
                gate.check(&heartbeat(&format!("made-up-{i}"), 1), None)
                    .is_some()
            })
            .count();
        assert_eq!(refused, 9_999);
        assert_eq!(gate.known.len(), 2);
        // The incarnations it knows still get in, whatever they send.
        assert_eq!(gate.check(&heartbeat("p0", 1), None), None);
        let eos = UpMessage::Eos(Box::new(ProcessorAccount {
            processor: "p0".into(),
            incarnation: 1,
            ..Default::default()
        }));
        assert_eq!(gate.check(&eos, None), None);
        assert_eq!(
            gate.check(&heartbeat("p0", 2), None),
            Some(Refused::OverCap)
        );
    }
}
