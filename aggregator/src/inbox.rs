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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use tapflow_proto::upstream::UpMessage;
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
    Message(UpMessage),
    /// Not a message this aggregator can read: counted by `reason`, never fatal.
    Malformed {
        reason: &'static str,
        error: String,
        bytes: usize,
    },
}

pub struct Inbox {
    rx: Option<Receiver<Inbound>>,
    /// This end of the stop socket pair: a message on it ends the thread.
    stop: zmq::Socket,
    handle: Option<JoinHandle<()>>,
}

impl Inbox {
    /// Takes over `pull` (bound and configured, from `ctx`) until the inbox is dropped.
    pub fn start(ctx: &zmq::Context, pull: zmq::Socket) -> Result<Inbox, InboxError> {
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
            .spawn(move || receive(&pull, &stopped, &tx))
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
        if let Err(e) = self.stop.send("", 0) {
            // Not joined then (it would never end): it ends when the context terminates.
            warn!(error = %e, "could not signal the inbox thread to stop");
            return;
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn receive(pull: &zmq::Socket, stopped: &zmq::Socket, tx: &SyncSender<Inbound>) {
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
        let msg = match pull.recv_msg(0) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "receive failed");
                continue;
            }
        };
        let inbound = match UpMessage::decode(&msg) {
            Ok(m) => Inbound::Message(m),
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
