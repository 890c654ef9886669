//! The PULL socket on its own thread: messages are received and decoded there and handed to
//! the main loop, decoded, through a bounded channel.
//!
//! At the end of a capture every processor sends what it still holds at once; decoding those
//! records (MessagePack, a few allocations each) was a third of the main loop's time, on one
//! core while the other idled. Here it overlaps with ordering, the conn log and detection.
//! The channel holds at most [`DEPTH`] messages: when the main loop falls behind, this thread
//! waits, ZeroMQ's queue fills and the processors are held back, as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tapflow_proto::upstream::UpMessage;
use tracing::warn;

/// Decoded messages waiting for the main loop.
const DEPTH: usize = 8;
/// How often the thread looks at its stop flag while nothing arrives.
const POLL_MS: i64 = 100;

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
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Inbox {
    /// Takes over `pull` (bound and configured) until the inbox is dropped.
    pub fn start(pull: zmq::Socket) -> std::io::Result<Inbox> {
        let (tx, rx) = mpsc::sync_channel(DEPTH);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("inbox".into())
            .spawn(move || receive(&pull, &tx, &stopped))?;
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
        self.stop.store(true, Ordering::Relaxed);
        // A thread blocked handing over a message fails its send and ends.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn receive(pull: &zmq::Socket, tx: &SyncSender<Inbound>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match pull.poll(zmq::POLLIN, POLL_MS) {
            Ok(n) if n > 0 => {}
            Ok(_) | Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                warn!(error = %e, "poll failed");
                std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                continue;
            }
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
