//! The processor's two ZeroMQ links: the PULL socket collectors connect to (CURVE server, with
//! its authenticator) and the PUSH socket to the aggregator (CURVE client, with its handshake
//! monitor); and, with `--control`, the aggregator's control channel (a SUB socket, secured as
//! the PUSH socket).

use std::time::Duration;

use tapflow_proto::control::SetHistory;
use tapflow_proto::upstream::AuthCounters;
use tapflow_proto::wire::MAX_MESSAGE_BYTES;
use tapflow_runtime::control::ControlSub;
use tracing::{error, warn};

use super::delivery::{Beat, Delivery};
use crate::config::Config;

/// A socket operation that failed, with the endpoint it was for.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {endpoint}: {source}")]
pub struct LinkError {
    what: &'static str,
    endpoint: String,
    source: zmq::Error,
}

fn sock<'a>(what: &'static str, endpoint: &'a str) -> impl FnOnce(zmq::Error) -> LinkError + 'a {
    move |source| LinkError {
        what,
        endpoint: endpoint.to_owned(),
        source,
    }
}

/// Both sockets. Fields drop in declaration order: the monitor, the sockets and the ZAP
/// handler before the context, so the context can terminate (and linger) at exit.
pub(crate) struct Links {
    handshakes: Option<tapflow_runtime::curve::ClientMonitor>,
    /// The aggregator's control channel (`--control`), if subscribed.
    control: Option<ControlSub>,
    push: Delivery,
    auth: Option<tapflow_runtime::curve::Authenticator>,
    pull: zmq::Socket,
    aggregator: String,
    _ctx: zmq::Context,
}

impl Links {
    /// Binds the PULL socket on `config.listen` and connects the PUSH socket to
    /// `config.aggregator`, each secured as `config.security` says.
    pub(crate) fn open(config: &Config, incarnation: u64) -> Result<Links, LinkError> {
        let ctx = zmq::Context::new();
        let listen = config.listen.as_str();
        let pull = ctx
            .socket(zmq::PULL)
            .map_err(sock("create a socket for", listen))?;
        pull.set_maxmsgsize(2 * MAX_MESSAGE_BYTES as i64)
            .map_err(sock("configure", listen))?;
        pull.set_rcvhwm(256).map_err(sock("configure", listen))?;
        // CURVE: the ZAP handler starts before the bind.
        let auth = tapflow_runtime::curve::secure_server(&ctx, &pull, &config.security, listen)
            .map_err(sock("set up CURVE for", listen))?;
        pull.bind(listen).map_err(sock("bind", listen))?;
        let aggregator = config.aggregator.as_str();
        let push = ctx
            .socket(zmq::PUSH)
            .map_err(sock("create a socket for", aggregator))?;
        push.set_linger(30_000)
            .map_err(sock("configure", aggregator))?;
        // Acknowledged delivery keeps every message itself (memory, then its spool): none is
        // queued inside ZeroMQ for an aggregator that is not connected, where it would take
        // memory past --unacked-max-bytes.
        if config.acks.is_some() {
            push.set_immediate(true)
                .map_err(sock("configure", aggregator))?;
        }
        tapflow_runtime::curve::secure_client(&push, &config.security)
            .map_err(sock("set up CURVE for", aggregator))?;
        // An aggregator that refuses this processor's key is said here too, not only there.
        let handshakes = tapflow_runtime::curve::ClientMonitor::attach(
            &ctx,
            &push,
            &config.security,
            aggregator,
        )
        .map_err(sock("monitor", aggregator))?;
        push.connect(aggregator)
            .map_err(sock("connect to", aggregator))?;
        let push = match &config.acks {
            None => Delivery::plain(push),
            Some(a) => {
                let ep = a.endpoint.as_str();
                let sub = ctx
                    .socket(zmq::SUB)
                    .map_err(sock("create a socket for", ep))?;
                sub.set_subscribe(b"").map_err(sock("configure", ep))?;
                sub.set_linger(0).map_err(sock("configure", ep))?;
                tapflow_runtime::curve::secure_client(&sub, &config.security)
                    .map_err(sock("set up CURVE for", ep))?;
                sub.connect(ep).map_err(sock("connect to", ep))?;
                Delivery::acknowledged(push, sub, &config.name, incarnation, a)
            }
        };
        let control = config.control.as_deref().and_then(|ep| {
            ControlSub::connect(&ctx, ep, &config.security)
                .map_err(|e| error!(endpoint = %ep, error = %e, "cannot subscribe to the aggregator's control channel: processor-set changes it decides will reach this processor only by SIGHUP"))
                .ok()
        });
        Ok(Links {
            handshakes,
            control,
            push,
            auth,
            pull,
            aggregator: aggregator.to_owned(),
            _ctx: ctx,
        })
    }

    /// The newest processor-set history the aggregator announced, if new.
    pub(crate) fn poll_control(&mut self) -> Option<SetHistory> {
        self.control.as_mut().and_then(ControlSub::poll)
    }

    /// Undecodable control messages.
    pub(crate) fn control_malformed(&self) -> u64 {
        self.control.as_ref().map_or(0, |c| c.malformed)
    }

    /// The next collector message, waiting at most `timeout_ms` (`None`: nothing came, or the
    /// wait or the receive failed, which is logged).
    pub(crate) fn receive(&self, timeout_ms: i64) -> Option<zmq::Message> {
        match self.pull.poll(zmq::POLLIN, timeout_ms) {
            Ok(n) if n > 0 => match self.pull.recv_msg(0) {
                Ok(m) => Some(m),
                Err(e) => {
                    warn!(error = %e, "receive failed");
                    None
                }
            },
            Ok(_) | Err(zmq::Error::EINTR) => None,
            Err(e) => {
                warn!(error = %e, "poll failed");
                None
            }
        }
    }

    /// The socket to the aggregator (with acknowledged delivery, when on).
    pub(crate) fn upstream(&mut self) -> &mut Delivery {
        &mut self.push
    }

    /// Sends the end-of-stream message in `buf`, waiting for room; with acknowledged delivery,
    /// then waits for everything to be acknowledged (at most `wait`, with heartbeats `beat`).
    pub(crate) fn send_eos(
        &mut self,
        buf: &[u8],
        wait: Duration,
        beat: Beat,
    ) -> Result<(), LinkError> {
        use crate::engine::Upstream;
        self.push
            .send_data(buf, 0)
            .map_err(sock("send end-of-stream to", &self.aggregator))?;
        self.push.drain(wait, Some(beat));
        Ok(())
    }

    /// Logs what the aggregator's handshakes said since the last call.
    pub(crate) fn poll_handshakes(&mut self) {
        if let Some(m) = self.handshakes.as_mut() {
            m.poll();
        }
    }

    /// The collectors' CURVE handshakes (`None` on a plain link).
    pub(crate) fn auth_counters(&self) -> Option<AuthCounters> {
        self.auth.as_ref().map(|a| {
            let c = a.counts();
            AuthCounters {
                accepted: c.accepted,
                rejected: c.rejected(),
                rejected_handshake: c.rejected_handshake,
            }
        })
    }
}
