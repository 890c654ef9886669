//! Whether a link's end-of-stream reached its processor, as far as libzmq can tell.
//!
//! PUSH has no return path, so a link learns it from its socket's monitor: after the
//! end-of-stream is handed to the socket, the link closes the socket with a linger a margin
//! longer than `--linger-ms` and waits, at most `--linger-ms`, for libzmq to destroy it.
//! libzmq destroys a closed socket that still holds messages once its queue has been written
//! to connections whose handshake completed, or when its linger expires, or at once when a
//! handshake fails (dropping the queue); a connection lost meanwhile is made again and the
//! queue goes on. So a socket gone within `--linger-ms` (before its own linger could expire)
//! whose last handshake was accepted had its queue, end-of-stream last, written to a
//! processor's connection. That is libzmq's guarantee, and the link's: the bytes were handed
//! to the kernel on a connection to a processor that completed the handshake, not read by it
//! (a processor that dies after that, or a connection lost while bytes were in flight, loses
//! them, and the processor's accounting says so: sequence gaps, or no end-of-stream).

use std::fmt;

use tapflow_runtime::curve::Handshakes;

/// A link's verdict at the end of its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The socket's queue, end-of-stream last, drained to a processor within the linger.
    Delivered,
    Undelivered(Undelivered),
}

/// Why a link's end-of-stream is not known to have been delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undelivered {
    /// The end-of-stream never reached the socket (the processor took nothing until shutdown).
    NotHanded,
    /// Handshakes failed: on CURVE, the processor refused our key (or we lack its public key);
    /// on a plain link, the peer expects another security mechanism or speaks no ZMTP.
    Refused { curve: bool },
    /// No connection completed a handshake (nothing listening, or nothing answering).
    NoHandshake,
    /// A processor completed a handshake but its queue did not drain within the linger (it
    /// disconnected, or read too slowly).
    NotDrained,
}

impl Delivery {
    /// The verdict on a link whose end-of-stream was `handed` to the socket (or not), whose
    /// socket then ended within the linger (`stopped`) or not, its monitor having seen `seen`.
    pub fn judge(handed: bool, stopped: bool, seen: &Handshakes, curve: bool) -> Delivery {
        let why = if !handed {
            Undelivered::NotHanded
        } else if stopped && seen.accepted_last {
            return Delivery::Delivered;
        } else if seen.failed > 0 {
            Undelivered::Refused { curve }
        } else if seen.succeeded == 0 {
            Undelivered::NoHandshake
        } else {
            Undelivered::NotDrained
        };
        Delivery::Undelivered(why)
    }
}

impl fmt::Display for Undelivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Undelivered::NotHanded => {
                "it was never handed to ZeroMQ (the processor took nothing before shutdown)"
            }
            Undelivered::Refused { curve: true } => {
                "the processor refused our CURVE key (this key is not in its curve_clients, or --curve-server-key is not its public key)"
            }
            Undelivered::Refused { curve: false } => {
                "the handshake with the processor failed (it expects CURVE, or does not speak ZMTP)"
            }
            Undelivered::NoHandshake => {
                "no processor completed a handshake (nothing listening, or nothing answering) before the linger expired"
            }
            Undelivered::NotDrained => {
                "the processor did not take everything before the linger expired (it disconnected, or reads too slowly)"
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a monitor saw: handshakes succeeded and failed, disconnections, and whether the
    /// last handshake was accepted.
    fn seen(succeeded: u64, failed: u64, disconnected: u64, accepted_last: bool) -> Handshakes {
        Handshakes {
            succeeded,
            failed,
            disconnected,
            accepted_last,
            stopped: false,
        }
    }

    fn check(handed: bool, stopped: bool, seen: Handshakes, curve: bool, expected: Delivery) {
        assert_eq!(
            Delivery::judge(handed, stopped, &seen, curve),
            expected,
            "handed {handed}, stopped {stopped}, {seen:?}, curve {curve}"
        );
    }

    #[test]
    fn a_queue_drained_to_a_connection_is_delivered_whatever_came_before() {
        check(true, true, seen(1, 0, 0, true), false, Delivery::Delivered);
        check(true, true, seen(2, 3, 1, true), true, Delivery::Delivered);
        // The processor hung up once it had everything (it exits on end-of-stream).
        check(true, true, seen(1, 0, 1, true), false, Delivery::Delivered);
    }

    #[test]
    fn an_undrained_queue_says_why() {
        use Undelivered::*;
        let no = Delivery::Undelivered;
        check(false, false, seen(1, 0, 0, true), false, no(NotHanded));
        check(false, true, seen(1, 0, 0, true), false, no(NotHanded));
        check(true, false, seen(0, 0, 0, false), false, no(NoHandshake));
        let refused = |curve| no(Refused { curve });
        check(true, false, seen(0, 5, 5, false), true, refused(true));
        check(true, false, seen(0, 1, 1, false), false, refused(false));
        check(true, false, seen(1, 0, 1, true), false, no(NotDrained));
        check(true, false, seen(1, 0, 0, true), true, no(NotDrained));
    }

    #[test]
    fn a_socket_that_ended_after_a_refusal_dropped_its_queue() {
        use Undelivered::*;
        let no = Delivery::Undelivered;
        // A refused handshake ends a closing socket at once, its queue dropped.
        check(
            true,
            true,
            seen(0, 1, 1, false),
            true,
            no(Refused { curve: true }),
        );
        // Accepted once, refused after the processor's restart.
        let restarted = seen(1, 1, 2, false);
        check(true, true, restarted, false, no(Refused { curve: false }));
    }

    #[test]
    fn the_reasons_name_the_cause() {
        let curve = Undelivered::Refused { curve: true }.to_string();
        assert!(curve.contains("refused our CURVE key"), "{curve}");
        let nobody = Undelivered::NoHandshake.to_string();
        assert!(
            nobody.starts_with("no processor completed a handshake"),
            "{nobody}"
        );
    }
}
