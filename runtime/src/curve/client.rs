//! The client side of a link's handshake, watched: a collector (or processor) whose key the
//! server refuses says so in its own log, instead of waiting in silence; and a collector learns
//! whether its socket's queue drained to a peer before the linger expired ([`Handshakes`]).

use std::time::{Duration, Instant};

use super::LinkSecurity;

/// What a client socket's monitor has seen, counted (sans-IO: fed one event at a time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshakes {
    /// Handshakes completed (CURVE, or ZMTP's NULL mechanism on a plain link).
    pub succeeded: u64,
    /// Handshakes the server refused or that failed (a refused CURVE key, a security mismatch,
    /// a peer that speaks no ZMTP).
    pub failed: u64,
    /// Connections lost after they were made.
    pub disconnected: u64,
    /// The last handshake outcome was a success (a later failure clears it, a later success
    /// sets it again; a connection lost after its handshake leaves it as it is).
    pub accepted_last: bool,
    /// The socket is gone: closed, and its queue drained or its linger expired.
    pub stopped: bool,
}

impl Handshakes {
    /// Counts one monitor event.
    pub fn on_event(&mut self, event: zmq::SocketEvent) {
        use zmq::SocketEvent as E;
        match event {
            E::HANDSHAKE_SUCCEEDED => {
                self.succeeded += 1;
                self.accepted_last = true;
            }
            E::HANDSHAKE_FAILED_AUTH
            | E::HANDSHAKE_FAILED_PROTOCOL
            | E::HANDSHAKE_FAILED_NO_DETAIL => {
                self.failed += 1;
                self.accepted_last = false;
            }
            E::DISCONNECTED => self.disconnected += 1,
            E::MONITOR_STOPPED => self.stopped = true,
            _ => {}
        }
    }
}

/// Watches a client socket's handshakes, so that a client the server refuses says so in its
/// own log (the server counts and logs its side). Poll it from the socket's thread.
pub struct ClientMonitor {
    events: zmq::Socket,
    endpoint: String,
    /// Refusals are logged on CURVE links only.
    curve: bool,
    seen: Handshakes,
}

/// The handshake outcomes [`ClientMonitor::attach`] watches.
const HANDSHAKE_EVENTS: i32 = zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
    | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
    | zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32;

/// What [`ClientMonitor::watch`] watches besides: lost connections, and the socket's end.
const DELIVERY_EVENTS: i32 = HANDSHAKE_EVENTS
    | zmq::SocketEvent::DISCONNECTED as i32
    | zmq::SocketEvent::MONITOR_STOPPED as i32;

impl ClientMonitor {
    /// Monitors `socket`'s CURVE handshakes (before it connects to `endpoint`); `None` for a
    /// plain link.
    pub fn attach(
        ctx: &zmq::Context,
        socket: &zmq::Socket,
        security: &LinkSecurity,
        endpoint: &str,
    ) -> Result<Option<ClientMonitor>, zmq::Error> {
        if security.is_plain() {
            return Ok(None);
        }
        Self::open(ctx, socket, endpoint, true, HANDSHAKE_EVENTS).map(Some)
    }

    /// Monitors `socket` (before it connects to `endpoint`), plain or CURVE, for what
    /// [`Handshakes`] counts, the socket's end included: see [`ClientMonitor::wait_stopped`].
    /// Refusals are logged as by [`ClientMonitor::attach`], on CURVE links only.
    pub fn watch(
        ctx: &zmq::Context,
        socket: &zmq::Socket,
        security: &LinkSecurity,
        endpoint: &str,
    ) -> Result<ClientMonitor, zmq::Error> {
        Self::open(ctx, socket, endpoint, !security.is_plain(), DELIVERY_EVENTS)
    }

    fn open(
        ctx: &zmq::Context,
        socket: &zmq::Socket,
        endpoint: &str,
        curve: bool,
        events: i32,
    ) -> Result<ClientMonitor, zmq::Error> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let inproc = format!(
            "inproc://tapflow-client-monitor-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        socket.monitor(&inproc, events)?;
        let events = ctx.socket(zmq::PAIR)?;
        events.set_linger(0)?;
        events.connect(&inproc)?;
        Ok(ClientMonitor {
            events,
            endpoint: endpoint.to_owned(),
            curve,
            seen: Handshakes::default(),
        })
    }

    /// What the events read so far say.
    pub fn handshakes(&self) -> Handshakes {
        self.seen
    }

    /// Polls until a handshake has been accepted or refused, at most `within`.
    pub fn settle(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.poll();
            if self.seen.succeeded > 0 || self.seen.failed > 0 || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// After the monitored socket is closed (by [`ClientMonitor::watch`]'s caller): waits until
    /// libzmq has destroyed it, at most until `deadline`; returns whether it was. A socket
    /// closed with pending messages and linger L is destroyed once its queue has been written
    /// to connections whose handshake completed, or when L expires, or at once when a
    /// handshake fails (the queue dropped); a connection lost meanwhile is made again and the
    /// queue goes on. So a caller whose deadline comes before L expires, and whose
    /// [`Handshakes::accepted_last`] still holds after the socket's end, learns that the queue
    /// was written to connections that completed their handshakes.
    pub fn wait_stopped(&mut self, deadline: Instant) -> bool {
        loop {
            self.poll();
            if self.seen.stopped {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let ms = i64::try_from(left.as_millis().min(100))
                .unwrap_or(100)
                .max(1);
            let mut items = [self.events.as_poll_item(zmq::POLLIN)];
            if zmq::poll(&mut items, ms).is_err() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Reads the events that arrived (never blocks) and, on CURVE links, logs refusals: the
    /// first, every 100th, and acceptance after a refusal.
    pub fn poll(&mut self) {
        while let Ok(frames) = self.events.recv_multipart(zmq::DONTWAIT) {
            let Some(head) = frames.first().filter(|f| f.len() >= 2) else {
                continue;
            };
            let event = zmq::SocketEvent::from_raw(u16::from_ne_bytes([head[0], head[1]]));
            let before = self.seen;
            self.seen.on_event(event);
            if self.curve {
                self.log(event, before);
            }
        }
    }

    fn log(&self, event: zmq::SocketEvent, before: Handshakes) {
        if self.seen.succeeded > before.succeeded {
            if self.seen.failed > 0 {
                tracing::info!(endpoint = %self.endpoint, refused_before = self.seen.failed, "CURVE handshake accepted");
            }
            return;
        }
        let failures = self.seen.failed;
        if failures > before.failed && (failures == 1 || failures.is_multiple_of(100)) {
            tracing::warn!(endpoint = %self.endpoint, ?event, refusals = failures,
                "the server refused our CURVE handshake: this key is not in its curve_clients, or --curve-server-key is not its public key; nothing is delivered until it accepts (logged at the first and every 100th)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Handshakes;
    use zmq::SocketEvent as E;

    fn check(events: &[E], expected: Handshakes) {
        let mut seen = Handshakes::default();
        for &e in events {
            seen.on_event(e);
        }
        assert_eq!(seen, expected, "{events:?}");
    }

    #[test]
    fn handshakes_count_each_kind_of_event() {
        check(&[], Handshakes::default());
        check(
            &[E::HANDSHAKE_SUCCEEDED],
            Handshakes {
                succeeded: 1,
                accepted_last: true,
                ..Handshakes::default()
            },
        );
        check(
            &[
                E::HANDSHAKE_FAILED_AUTH,
                E::HANDSHAKE_FAILED_PROTOCOL,
                E::HANDSHAKE_FAILED_NO_DETAIL,
            ],
            Handshakes {
                failed: 3,
                ..Handshakes::default()
            },
        );
        // Events the bookkeeping does not use change nothing.
        check(&[E::CONNECT_RETRIED, E::CLOSED], Handshakes::default());
    }

    #[test]
    fn the_last_handshake_outcome_is_kept_across_disconnections() {
        // Drained, then the processor hung up (it exits on end-of-stream), then the socket
        // ended.
        check(
            &[E::HANDSHAKE_SUCCEEDED, E::DISCONNECTED, E::MONITOR_STOPPED],
            Handshakes {
                succeeded: 1,
                disconnected: 1,
                accepted_last: true,
                stopped: true,
                ..Handshakes::default()
            },
        );
        // Refused after a restart of the processor: the last outcome is the refusal.
        check(
            &[
                E::HANDSHAKE_SUCCEEDED,
                E::DISCONNECTED,
                E::HANDSHAKE_FAILED_AUTH,
                E::DISCONNECTED,
                E::MONITOR_STOPPED,
            ],
            Handshakes {
                succeeded: 1,
                failed: 1,
                disconnected: 2,
                accepted_last: false,
                stopped: true,
            },
        );
        // Refused, then accepted (its key was added): the acceptance counts.
        check(
            &[
                E::HANDSHAKE_FAILED_AUTH,
                E::DISCONNECTED,
                E::HANDSHAKE_SUCCEEDED,
            ],
            Handshakes {
                succeeded: 1,
                failed: 1,
                disconnected: 1,
                accepted_last: true,
                stopped: false,
            },
        );
    }
}
