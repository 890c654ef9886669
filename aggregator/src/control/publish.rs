//! The control channel's edge (`--control-listen`): a PUB socket every collector subscribes to
//! (`--control`), carrying the processor-set history the aggregator decided. PUB/SUB drops
//! what a subscriber not yet connected misses, so each history is sent again every
//! [`REPEAT`]; collectors apply only a history that differs from the last one they applied.

use std::time::{Duration, Instant};

use tapflow_proto::control::SetHistory;
use tapflow_runtime::curve::LinkSecurity;

/// How often the current history is sent again.
pub const REPEAT: Duration = Duration::from_secs(1);

pub struct Publisher {
    socket: zmq::Socket,
    /// The history last sent, and when.
    last: Option<(SetHistory, Instant)>,
    /// Messages sent (repeats included).
    pub sent: u64,
}

impl Publisher {
    /// Binds `endpoint` on `ctx`. With CURVE, the context's authenticator (started for the
    /// processors' socket) checks subscribers against the same client keys.
    pub fn bind(
        ctx: &zmq::Context,
        endpoint: &str,
        security: &LinkSecurity,
    ) -> Result<Publisher, zmq::Error> {
        let socket = ctx.socket(zmq::PUB)?;
        socket.set_linger(0)?;
        socket.set_sndhwm(64)?;
        tapflow_runtime::curve::secure_another_server(&socket, security)?;
        socket.bind(endpoint)?;
        Ok(Publisher {
            socket,
            last: None,
            sent: 0,
        })
    }

    /// Sends `history` if it is new, or if [`REPEAT`] has passed since it was last sent. A send
    /// never blocks (PUB drops for a subscriber whose queue is full; the repeat covers it).
    pub fn offer(&mut self, history: &SetHistory, now: Instant) {
        let due = match &self.last {
            Some((h, at)) => h != history || now.saturating_duration_since(*at) >= REPEAT,
            None => true,
        };
        if due && self.socket.send(history.encode(), zmq::DONTWAIT).is_ok() {
            self.sent += 1;
            self.last = Some((history.clone(), now));
        }
    }
}
