//! Live capture on an interface through libpcap (non-blocking, nanosecond timestamps). A
//! failure while capturing (the interface went away) is recovered by reopening it with
//! backoff for `--interface-retry-s`; libpcap's counters add up over every handle.

use std::time::{Duration, Instant};

use pcap::{Active, Capture, Precision};
use tapflow_proto::CaptureStats;
use tracing::{error, info, warn};

use super::{filter_error, link_type, record, Next, PacketSource, Pause, Recovery, SourceError};
use crate::config::LiveSpec;
use crate::decode::LinkType;
use crate::RUN_TARGET;

pub struct LiveSource {
    spec: LiveSpec,
    filter: Option<String>,
    capture: Capture<Active>,
    link: LinkType,
    /// The `PACKET_FANOUT` group this handle is one of (`--capture-threads` > 1); a reopened
    /// handle joins it again.
    fanout: Option<u16>,
    /// libpcap's counters of the handles closed before the current one (after a reopen).
    base: CaptureStats,
    /// The last counters known (base plus the current handle's).
    last: CaptureStats,
}

/// Whether a live capture by `spec` may be reopened after a failure.
pub(super) fn may_reopen(spec: &LiveSpec) -> bool {
    spec.retry_for != Some(Duration::ZERO)
}

impl LiveSource {
    /// Opens the interface `spec` names, with the BPF `filter` if any; in fanout group
    /// `fanout` if given.
    pub fn open(
        spec: &LiveSpec,
        filter: Option<&str>,
        fanout: Option<u16>,
    ) -> Result<LiveSource, SourceError> {
        let (capture, link) = open_handle(spec, filter, fanout)?;
        Ok(LiveSource {
            spec: spec.clone(),
            filter: filter.map(str::to_owned),
            capture,
            link,
            fanout,
            base: CaptureStats::default(),
            last: CaptureStats::default(),
        })
    }

    /// Opens the interface again with backoff (1 s doubling to 30 s) until it opens, `pause`
    /// says stop, or `retry_for` has passed.
    fn reopen(&mut self, retry_for: Option<Duration>, pause: &mut dyn Pause) -> Recovery {
        let started = Instant::now();
        let mut wait = Duration::from_secs(1);
        let mut attempts = 0u32;
        loop {
            let next = Instant::now() + wait;
            while Instant::now() < next {
                if !pause.tick() {
                    return Recovery::Stopped;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            attempts += 1;
            crate::privileges::raise_for_open();
            let opened = open_handle(&self.spec, self.filter.as_deref(), self.fanout);
            crate::privileges::lower();
            match opened {
                Ok((capture, link)) => {
                    (self.capture, self.link) = (capture, link);
                    info!(target: RUN_TARGET,
                        source = self.spec.interface.as_str(),
                        attempts,
                        after_s = started.elapsed().as_secs(),
                        "capture reopened"
                    );
                    return Recovery::Resumed;
                }
                Err(e) if retry_for.is_some_and(|d| started.elapsed() >= d) => {
                    return Recovery::Failed(SourceError::Live {
                        what: self.spec.interface.clone(),
                        msg: format!(
                            "gave up reopening after {} s and {attempts} attempts: {e}",
                            started.elapsed().as_secs()
                        ),
                    });
                }
                Err(e) => {
                    wait = (wait * 2).min(Duration::from_secs(30));
                    warn!(target: RUN_TARGET, attempts, error = %e, retry_in_s = wait.as_secs(), "capture still cannot be opened");
                }
            }
        }
    }
}

impl PacketSource for LiveSource {
    fn link(&self) -> LinkType {
        self.link
    }

    fn describe(&self) -> &str {
        &self.spec.interface
    }

    fn next_record(&mut self) -> Result<Next<'_>, SourceError> {
        match self.capture.next_packet() {
            Ok(p) => Ok(Next::Packet(record(p, self.link))),
            Err(pcap::Error::NoMorePackets) => Ok(Next::End),
            Err(pcap::Error::TimeoutExpired) => {
                // Non-blocking live capture with nothing buffered: wait a little rather than spin.
                // (A blocking read can sleep forever in immediate mode and miss SIGTERM.)
                std::thread::sleep(Duration::from_millis(2));
                Ok(Next::Idle)
            }
            Err(e) => Err(SourceError::Live {
                what: self.spec.interface.clone(),
                msg: e.to_string(),
            }),
        }
    }

    fn is_live(&self) -> bool {
        true
    }

    /// The closed handles' counters plus the current one's (when libpcap can still tell; an
    /// interface that disappeared keeps its last known values).
    fn stats(&mut self) -> Option<CaptureStats> {
        if let Ok(s) = self.capture.stats() {
            let b = self.base;
            self.last = CaptureStats {
                received: b.received + u64::from(s.received),
                kernel_dropped: b.kernel_dropped + u64::from(s.dropped),
                if_dropped: b.if_dropped + u64::from(s.if_dropped),
            };
        }
        Some(self.last)
    }

    /// Reopens the interface, unless `--interface-retry-s 0`. What is pending is passed on
    /// first; heartbeats go on meanwhile (link threads; the watermark follows the clock), so
    /// processors do not declare this collector dead while it waits.
    fn recover(&mut self, error: SourceError, pause: &mut dyn Pause) -> Recovery {
        let retry_for = self.spec.retry_for;
        if retry_for == Some(Duration::ZERO) {
            return Recovery::Failed(error);
        }
        error!(target: RUN_TARGET,
            "{error}; reopening it {}",
            retry_for.map_or("until stopped".to_owned(), |d| format!(
                "for up to {} s (--interface-retry-s)",
                d.as_secs()
            ))
        );
        pause.begin();
        self.stats();
        self.base = self.last;
        self.reopen(retry_for, pause)
    }
}

/// Opens the interface: a non-blocking handle with a 100 ms read timeout, and its link type;
/// joined to fanout group `fanout` if given.
fn open_handle(
    live: &LiveSpec,
    filter: Option<&str>,
    fanout: Option<u16>,
) -> Result<(Capture<Active>, LinkType), SourceError> {
    let err = |e: pcap::Error| {
        let mut msg = e.to_string();
        if msg.contains("Operation not permitted") || msg.contains("permission") {
            msg.push_str(
                " (live capture needs CAP_NET_RAW, and CAP_NET_ADMIN for promiscuous mode: run \
                 under deploy/systemd/tapflow-collector@.service, or `setcap \
                 cap_net_raw,cap_net_admin=ep` on the binary, or as root)",
            );
        }
        SourceError::Open {
            what: live.interface.clone(),
            msg,
        }
    };
    let mut capture = Capture::from_device(live.interface.as_str())
        .map_err(err)?
        .promisc(live.promisc)
        .snaplen(live.snaplen)
        .buffer_size(live.buffer_bytes)
        .immediate_mode(live.immediate)
        .precision(Precision::Nano)
        .timeout(100)
        .open()
        .and_then(Capture::setnonblock)
        .map_err(err)?;
    let link = link_type(&live.interface, capture.get_datalink().0)?;
    if let Some(group) = fanout {
        join_fanout(&mut capture, group, live)?;
    }
    if let Some(f) = filter.or(fanout.map(|_| "")) {
        capture.filter(f, true).map_err(|e| filter_error(f, e))?;
    }
    Ok((capture, link))
}

/// Joins `capture` to the fanout group. Until it has joined, the handle sees every packet of
/// the interface, which another handle of the group also gets: it takes none (a filter that
/// matches nothing; libpcap applies a new filter to what its ring holds already too) until the caller
/// sets the real one after the join, so no packet is read twice.
fn join_fanout(
    capture: &mut Capture<Active>,
    group: u16,
    live: &LiveSpec,
) -> Result<(), SourceError> {
    const NOTHING: &str = "less 0";
    capture
        .filter(NOTHING, true)
        .map_err(|e| filter_error(NOTHING, e))?;
    super::fanout::join(capture, group).map_err(|e| SourceError::Open {
        what: live.interface.clone(),
        msg: format!(
            "cannot join PACKET_FANOUT group {group} (hash, defrag) for --capture-threads: {e}"
        ),
    })
}
