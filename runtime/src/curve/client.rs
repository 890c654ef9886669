//! The client side of CURVE's handshake, watched: a collector (or processor) whose key the
//! server refuses says so in its own log, instead of waiting in silence.

use super::LinkSecurity;

/// Watches a CURVE client socket's handshakes, so that a client the server refuses says so in
/// its own log (the server counts and logs its side). Poll it from the socket's thread.
pub struct ClientMonitor {
    events: zmq::Socket,
    endpoint: String,
    failures: u64,
    accepted: bool,
}

impl ClientMonitor {
    /// Monitors `socket` (before it connects to `endpoint`); `None` for a plain link.
    pub fn attach(
        ctx: &zmq::Context,
        socket: &zmq::Socket,
        security: &LinkSecurity,
        endpoint: &str,
    ) -> Result<Option<ClientMonitor>, zmq::Error> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if security.is_plain() {
            return Ok(None);
        }
        let inproc = format!(
            "inproc://tapflow-client-monitor-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        socket.monitor(
            &inproc,
            zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as i32
                | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
                | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
                | zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32,
        )?;
        let events = ctx.socket(zmq::PAIR)?;
        events.set_linger(0)?;
        events.connect(&inproc)?;
        Ok(Some(ClientMonitor {
            events,
            endpoint: endpoint.to_owned(),
            failures: 0,
            accepted: false,
        }))
    }

    /// Polls until a handshake has been accepted or refused, at most `within`.
    pub fn settle(&mut self, within: std::time::Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            self.poll();
            if self.accepted || self.failures > 0 || std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Reads the events that arrived (never blocks) and logs refusals: the first, every
    /// 100th, and acceptance after a refusal.
    pub fn poll(&mut self) {
        while let Ok(frames) = self.events.recv_multipart(zmq::DONTWAIT) {
            let Some(head) = frames.first().filter(|f| f.len() >= 2) else {
                continue;
            };
            let event = zmq::SocketEvent::from_raw(u16::from_ne_bytes([head[0], head[1]]));
            if event == zmq::SocketEvent::HANDSHAKE_SUCCEEDED {
                self.accepted = true;
                if self.failures > 0 {
                    tracing::info!(endpoint = %self.endpoint, refused_before = self.failures, "CURVE handshake accepted");
                }
                continue;
            }
            self.failures += 1;
            if self.failures == 1 || self.failures.is_multiple_of(100) {
                tracing::warn!(endpoint = %self.endpoint, ?event, refusals = self.failures,
                    "the server refused our CURVE handshake: this key is not in its curve_clients, or --curve-server-key is not its public key; nothing is delivered until it accepts (logged at the first and every 100th)");
            }
        }
    }
}
