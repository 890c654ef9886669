//! One link per processor: a bounded queue and a thread that owns the ZeroMQ PUSH socket.
//!
//! The capture thread hands finished batches to the link's queue; the link thread encodes and
//! sends them and, whenever its queue stays quiet for a heartbeat period, sends a heartbeat with
//! the current watermark. Each link has its own thread and queue, so one slow processor never
//! delays heartbeats to the others. Emptied batch vectors go back to the capture thread through
//! a shared pool, so steady state allocates nothing.
//!
//! At the end, after its end-of-stream, a link closes its socket and learns from the socket's
//! monitor whether the queue drained to a processor within the linger (`delivery.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};
use tapflow_proto::wire::{encode_batch, encode_eos, encode_heartbeat};
use tapflow_proto::{CollectorCounters, EosStatus, LinkHeader, PacketSummary};
use tracing::{debug, error, warn};

mod delivery;
mod set;

pub use delivery::{Delivery, Undelivered};
pub use set::LinkSet;

/// How much longer than `--linger-ms` a link's socket lingers after its end-of-stream: the
/// link waits `--linger-ms` for the socket to drain, so libzmq's own linger cannot have expired
/// (dropping the queue) when the link sees the socket gone (see `delivery.rs`).
const CLOSE_MARGIN: Duration = Duration::from_millis(100);
/// How long an abandoned link's socket (linger 0) may take to end.
const ABANDON_WAIT: Duration = Duration::from_secs(1);

/// What the capture thread sends a link.
pub enum LinkCmd {
    Batch {
        summaries: Vec<PacketSummary>,
        watermark_ns: u64,
        /// The processor-set epoch the batch was routed by.
        epoch: u32,
    },
    Eos {
        status: EosStatus,
        counters: Box<CollectorCounters>,
    },
    /// Number summaries from this sequence number on (sent first on a link that continues an
    /// ended one for the same member: one sequence per member, as the accounting reads it).
    ContinueFrom(u64),
    /// Give the link up without end-of-stream, discarding what the socket still holds (see
    /// [`Link::abandon`]).
    Abandon,
}

/// State the capture thread shares with every link thread.
pub struct Shared {
    /// Largest packet time read so far (ns).
    pub watermark_ns: AtomicU64,
    /// The collector's counters as of the last publish, for heartbeats.
    pub counters: Mutex<CollectorCounters>,
    /// Live capture: let the watermark follow the wall clock when no packets arrive.
    pub live: bool,
    /// Set by SIGINT/SIGTERM: stop waiting for a processor that does not take messages.
    pub shutdown: Arc<AtomicBool>,
    /// Messages and bytes handed to ZeroMQ, over every link (what the wire costs per packet).
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
}

/// Identity and settings common to all links of one collector.
#[derive(Clone)]
pub struct LinkSettings {
    pub sender: String,
    pub incarnation: u64,
    pub epoch: u32,
    pub shard_count: u16,
    pub heartbeat: Duration,
    pub linger: Duration,
    /// Largest encoded batch message, in bytes.
    pub batch_bytes: usize,
    /// CURVE (or plain, on loopback) for every link.
    pub security: tapflow_runtime::curve::LinkSecurity,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot set up the ZeroMQ socket for processor {endpoint}: {source}")]
    Socket {
        endpoint: String,
        source: zmq::Error,
    },
    #[error("cannot start a link thread: {0}")]
    Thread(std::io::Error),
}

pub struct Link {
    tx: Option<Sender<LinkCmd>>,
    /// Closed (never written) by the worker once it has handed its last message to ZeroMQ.
    handed: Receiver<()>,
    /// Set when the link is given up (its processor left the set and takes nothing): the
    /// worker then drops what it cannot send instead of waiting for shutdown.
    abandoned: Arc<AtomicBool>,
    thread: Option<JoinHandle<Delivery>>,
    pub endpoint: String,
    shared: Arc<Shared>,
    linger: Duration,
}

/// Once shutdown is requested, a stuck send may wait `linger` more, then gives up.
struct Grace {
    linger: Duration,
    since: Option<std::time::Instant>,
}

impl Grace {
    fn new(linger: Duration) -> Grace {
        Grace {
            linger,
            since: None,
        }
    }

    fn expired(&mut self, shutdown: &AtomicBool) -> bool {
        if !shutdown.load(Ordering::Relaxed) {
            return false;
        }
        self.since
            .get_or_insert_with(std::time::Instant::now)
            .elapsed()
            >= self.linger
    }
}

/// How long one blocking send waits before checking for shutdown, in milliseconds.
const SEND_RETRY_MS: i32 = 200;

impl Link {
    pub fn start(
        ctx: &zmq::Context,
        endpoint: &str,
        shard: u16,
        settings: &LinkSettings,
        queue_batches: usize,
        shared: Arc<Shared>,
        pool: Sender<Vec<PacketSummary>>,
    ) -> Result<Link, LinkError> {
        let socket_err = |source| LinkError::Socket {
            endpoint: endpoint.to_owned(),
            source,
        };
        let socket = ctx.socket(zmq::PUSH).map_err(socket_err)?;
        socket.set_sndhwm(256).map_err(socket_err)?;
        socket.set_sndtimeo(SEND_RETRY_MS).map_err(socket_err)?;
        socket
            .set_linger(i32::try_from(settings.linger.as_millis()).unwrap_or(i32::MAX))
            .map_err(socket_err)?;
        tapflow_runtime::curve::secure_client(&socket, &settings.security).map_err(socket_err)?;
        let monitor = tapflow_runtime::curve::ClientMonitor::watch(
            ctx,
            &socket,
            &settings.security,
            endpoint,
        )
        .map_err(socket_err)?;
        socket.connect(endpoint).map_err(socket_err)?;
        let (tx, rx) = crossbeam_channel::bounded(queue_batches);
        let header = LinkHeader {
            sender: settings.sender.clone(),
            incarnation: settings.incarnation,
            epoch: settings.epoch,
            shard_count: settings.shard_count,
            shard,
            seq: 0,
            watermark_ns: 0,
        };
        let abandoned = Arc::new(AtomicBool::new(false));
        let (handed_tx, handed) = crossbeam_channel::bounded(0);
        let worker = Worker {
            abandoned: abandoned.clone(),
            handed: Some(handed_tx),
            curve: !settings.security.is_plain(),
            socket,
            monitor,
            header,
            shared: shared.clone(),
            pool,
            heartbeat: settings.heartbeat,
            linger: settings.linger,
            batch_bytes: settings.batch_bytes,
            endpoint: endpoint.to_owned(),
            buf: Vec::with_capacity(1 << 16),
        };
        let thread = std::thread::Builder::new()
            .name(format!("link-{shard}"))
            .spawn(move || worker.run(rx))
            .map_err(LinkError::Thread)?;
        Ok(Link {
            abandoned,
            tx: Some(tx),
            handed,
            thread: Some(thread),
            endpoint: endpoint.to_owned(),
            shared,
            linger: settings.linger,
        })
    }

    /// Queues a command, waiting while the queue is full, unless shutdown is requested while
    /// waiting: then the command is given back.
    pub fn send_blocking(&self, mut cmd: LinkCmd) -> Result<(), LinkCmd> {
        let Some(tx) = &self.tx else { return Err(cmd) };
        let mut grace = Grace::new(self.linger);
        loop {
            match tx.send_timeout(cmd, Duration::from_millis(SEND_RETRY_MS as u64)) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(c)) if !grace.expired(&self.shared.shutdown) => {
                    cmd = c
                }
                Err(SendTimeoutError::Timeout(c) | SendTimeoutError::Disconnected(c)) => {
                    return Err(c)
                }
            }
        }
    }

    /// Ends a link whose processor left the set: queues `eos`, waiting at most `wait`. A
    /// processor that takes nothing in that time (it crashed) is given up: what its queue still
    /// holds is dropped, and the link's thread ends. Returns whether `eos` was queued.
    pub fn retire(&self, eos: LinkCmd, wait: Duration) -> bool {
        let queued = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send_timeout(eos, wait).is_ok());
        if !queued {
            self.abandoned.store(true, Ordering::Relaxed);
        }
        queued
    }

    /// Gives the link up at once: its processor was declared dead by the aggregator. Nothing
    /// more is sent, not even end-of-stream, and what the socket still holds is discarded, so
    /// a later incarnation at the same endpoint never receives this link's stale batches or an
    /// end-of-stream that would end it. Returns whether the worker was told within `wait`.
    pub fn abandon(&self, wait: Duration) -> bool {
        self.abandoned.store(true, Ordering::Relaxed);
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send_timeout(LinkCmd::Abandon, wait).is_ok())
    }

    /// Queues a command if there is room; gives it back otherwise.
    pub fn try_send(&self, cmd: LinkCmd) -> Result<(), LinkCmd> {
        let Some(tx) = &self.tx else { return Err(cmd) };
        match tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(c) | TrySendError::Disconnected(c)) => Err(c),
        }
    }

    /// Closes the queue and waits for the worker to hand what it holds to ZeroMQ (bounded by
    /// the socket's linger, or by shutdown for a processor that takes nothing).
    pub fn close(&mut self) {
        drop(self.tx.take());
        // Never written: returns when the worker drops its end.
        let _ = self.handed.recv();
    }

    /// Closes the queue and waits for the worker to end, with its verdict on the end-of-stream:
    /// whether the socket's queue drained to a processor (at most the linger after
    /// [`Link::close`]).
    pub fn join(mut self) -> Delivery {
        self.close();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(delivery)) => delivery,
            Some(Err(_)) => {
                error!(endpoint = %self.endpoint, "link thread panicked");
                Delivery::Undelivered(Undelivered::NotHanded)
            }
            None => Delivery::Undelivered(Undelivered::NotHanded),
        }
    }
}

struct Worker {
    /// See [`Link::abandoned`].
    abandoned: Arc<AtomicBool>,
    /// See [`Link::handed`]: dropped once the last message is handed to ZeroMQ.
    handed: Option<Sender<()>>,
    /// Handshakes and the socket's end, read on this thread; CURVE refusals are logged.
    monitor: tapflow_runtime::curve::ClientMonitor,
    curve: bool,
    socket: zmq::Socket,
    header: LinkHeader,
    shared: Arc<Shared>,
    pool: Sender<Vec<PacketSummary>>,
    heartbeat: Duration,
    linger: Duration,
    batch_bytes: usize,
    endpoint: String,
    buf: Vec<u8>,
}

impl Worker {
    /// Sends what comes until end-of-stream (or the queue closes), then closes the socket and
    /// judges whether the end-of-stream was delivered.
    fn run(mut self, rx: Receiver<LinkCmd>) -> Delivery {
        let handed = self.feed(&rx);
        drop(self.handed.take());
        self.close(handed)
    }

    /// Sends batches and heartbeats until end-of-stream; returns whether the end-of-stream was
    /// handed to ZeroMQ.
    fn feed(&mut self, rx: &Receiver<LinkCmd>) -> bool {
        let mut last_heartbeat = std::time::Instant::now();
        // The monitor's events (handshakes, refusals) are read once per heartbeat period, not
        // per batch: they are rare, and the delivery check at the end reads the rest.
        self.monitor.poll();
        loop {
            match rx.recv_timeout(self.heartbeat) {
                Ok(LinkCmd::Batch {
                    mut summaries,
                    watermark_ns,
                    epoch,
                }) => {
                    self.header.watermark_ns = self.header.watermark_ns.max(watermark_ns);
                    self.header.epoch = epoch;
                    self.send_batch(&summaries);
                    summaries.clear();
                    let _ = self.pool.try_send(summaries);
                    if last_heartbeat.elapsed() >= self.heartbeat {
                        // A busy link still reports its counters once per period, so a
                        // collector that dies leaves recent counters behind. The watermark
                        // stays the one batches already carried.
                        last_heartbeat = std::time::Instant::now();
                        self.monitor.poll();
                        self.send_counters();
                    }
                }
                Ok(LinkCmd::Eos { status, counters }) => {
                    self.header.watermark_ns = self.header.watermark_ns.max(self.watermark());
                    encode_eos(&self.header, &status, &counters, &mut self.buf);
                    let handed = self.send();
                    debug!(endpoint = %self.endpoint, seq = self.header.seq, "end-of-stream sent");
                    return handed;
                }
                Ok(LinkCmd::ContinueFrom(seq)) => self.header.seq = seq,
                Ok(LinkCmd::Abandon) => {
                    // Linger 0: closing discards what the socket still queues for the peer.
                    let _ = self.socket.set_linger(0);
                    return false;
                }
                Err(RecvTimeoutError::Timeout) => {
                    let watermark = self.watermark();
                    if !rx.is_empty() {
                        // Batches queued since the timeout may be older than that watermark:
                        // send them first.
                        continue;
                    }
                    self.header.watermark_ns = self.header.watermark_ns.max(watermark);
                    last_heartbeat = std::time::Instant::now();
                    self.monitor.poll();
                    self.send_counters();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    warn!(endpoint = %self.endpoint, "link closed without end-of-stream (processor unreachable at shutdown)");
                    return false;
                }
            }
        }
    }

    /// Encodes and sends a batch; one whose encoding exceeds `batch_bytes` goes as several
    /// messages of fewer summaries each (sequence numbers still count every summary).
    fn send_batch(&mut self, summaries: &[PacketSummary]) {
        encode_batch(&self.header, summaries, &mut self.buf);
        if self.buf.len() > self.batch_bytes && summaries.len() > 1 {
            let parts = self.buf.len().div_ceil(self.batch_bytes);
            for chunk in summaries.chunks(summaries.len().div_ceil(parts)) {
                encode_batch(&self.header, chunk, &mut self.buf);
                self.send();
                self.header.seq += chunk.len() as u64;
            }
            return;
        }
        self.send();
        self.header.seq += summaries.len() as u64;
    }

    /// A heartbeat with the collector's latest counters and the current header.
    fn send_counters(&mut self) {
        let counters = match self.shared.counters.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        encode_heartbeat(&self.header, &counters, &mut self.buf);
        self.send();
    }

    fn watermark(&self) -> u64 {
        let packet_time = self.shared.watermark_ns.load(Ordering::Acquire);
        if self.shared.live {
            // Live: time moves on even when the tap is quiet (one second of slack for stragglers).
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            packet_time.max(wall.saturating_sub(1_000_000_000))
        } else {
            packet_time
        }
    }

    /// Closes the socket. After an end-of-stream (`handed`), waits at most the linger for the
    /// socket's queue to drain to a processor (a short capture can end before the handshake
    /// does: a refusal is still logged meanwhile), and judges the delivery.
    fn close(self, handed: bool) -> Delivery {
        let Worker {
            socket,
            mut monitor,
            linger,
            curve,
            endpoint,
            abandoned,
            ..
        } = self;
        if handed {
            let lingering = linger.saturating_add(CLOSE_MARGIN).as_millis();
            if let Err(e) = socket.set_linger(i32::try_from(lingering).unwrap_or(i32::MAX)) {
                warn!(%endpoint, error = %e, "cannot lengthen the linger: delivery may be misjudged");
            }
        }
        let closed = Instant::now();
        drop(socket);
        if abandoned.load(Ordering::Relaxed) {
            // Linger 0: destroyed at once. Its monitor reads the end before it goes: libzmq
            // sends that event blocking, on the context's reaper thread, and a monitor gone
            // first would stall the end of every other socket (each link's delivery check).
            monitor.wait_stopped(closed + ABANDON_WAIT);
        }
        let stopped = handed && monitor.wait_stopped(closed + linger);
        let delivery = Delivery::judge(handed, stopped, &monitor.handshakes(), curve);
        debug!(%endpoint, ?delivery, waited_ms = closed.elapsed().as_millis(), handshakes = ?monitor.handshakes(), "link closed");
        delivery
    }

    /// Hands the encoded message to the socket; returns whether it was.
    fn send(&mut self) -> bool {
        // PUSH blocks while the processor's queue (HWM) is full: backpressure reaches the
        // capture thread through this link's bounded queue.
        let mut grace = Grace::new(self.linger);
        loop {
            match self.socket.send(&self.buf[..], 0) {
                Ok(()) => {
                    self.shared.messages_sent.fetch_add(1, Ordering::Relaxed);
                    let n = self.buf.len() as u64;
                    self.shared.bytes_sent.fetch_add(n, Ordering::Relaxed);
                    return true;
                }
                Err(zmq::Error::EAGAIN) if self.abandoned.load(Ordering::Relaxed) => {
                    warn!(endpoint = %self.endpoint, "processor left the set and takes nothing: message dropped");
                    return false;
                }
                Err(zmq::Error::EAGAIN) if !grace.expired(&self.shared.shutdown) => {
                    // A refused handshake is the usual reason a processor takes nothing.
                    self.monitor.poll();
                }
                Err(zmq::Error::EAGAIN) => {
                    error!(endpoint = %self.endpoint, "processor takes nothing and shutdown was requested; message lost (a gap downstream)");
                    return false;
                }
                Err(e) => {
                    error!(endpoint = %self.endpoint, error = %e, "sending to processor failed; message lost (a gap downstream)");
                    return false;
                }
            }
        }
    }
}
