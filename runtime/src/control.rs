//! The aggregator's control channel as a collector or a processor hears it (`--control`, issue
//! 18): a SUB socket polled between packets or messages, never blocking. Each message is the
//! whole processor-set history the aggregator decided (`tapflow_proto::control`); only the
//! newest waiting matters. Undecodable ones are counted and logged (at powers of two).

use tapflow_proto::control::{SetHistory, MAX_CONTROL_BYTES};
use tracing::warn;

use crate::curve::LinkSecurity;

pub struct ControlSub {
    socket: zmq::Socket,
    endpoint: String,
    /// The last history handed out (the aggregator repeats each one; a restarted one starts
    /// its sequence again, so the history itself is compared).
    last: Option<SetHistory>,
    /// Messages that were not a control message.
    pub malformed: u64,
}

impl ControlSub {
    /// Subscribes to the aggregator's control endpoint (CURVE unless plain, as every link).
    pub fn connect(
        ctx: &zmq::Context,
        endpoint: &str,
        security: &LinkSecurity,
    ) -> Result<ControlSub, zmq::Error> {
        let socket = ctx.socket(zmq::SUB)?;
        socket.set_maxmsgsize(MAX_CONTROL_BYTES as i64)?;
        socket.set_rcvhwm(16)?;
        socket.set_linger(0)?;
        crate::curve::secure_client(&socket, security)?;
        socket.set_subscribe(b"")?;
        socket.connect(endpoint)?;
        Ok(ControlSub {
            socket,
            endpoint: endpoint.to_owned(),
            last: None,
            malformed: 0,
        })
    }

    /// The newest history waiting, if it differs from the last one handed out.
    pub fn poll(&mut self) -> Option<SetHistory> {
        let mut newest: Option<SetHistory> = None;
        while let Ok(bytes) = self.socket.recv_bytes(zmq::DONTWAIT) {
            match SetHistory::decode(&bytes) {
                Ok(h) => newest = Some(h),
                Err(e) => {
                    self.malformed += 1;
                    if self.malformed.is_power_of_two() {
                        warn!(endpoint = %self.endpoint, error = %e, malformed = self.malformed, "dropped an undecodable control message");
                    }
                }
            }
        }
        let h = newest?;
        let same = |l: &SetHistory| l.initial == h.initial && l.changes == h.changes;
        if self.last.as_ref().is_some_and(same) {
            return None;
        }
        self.last = Some(h.clone());
        Some(h)
    }
}
