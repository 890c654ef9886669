//! Collector configuration. Every option is declared once, in [`Options`]: its flag, its
//! `TAPFLOW_*` environment variable (where it has one) and its TOML key (the field's name) come
//! from that one field, and its default from a `DEFAULT_*` constant below, shown in `--help`.
//! The command line is laid over the `--config` file ([`tapflow_runtime::config`]) and the
//! result resolved into [`Config`], every problem reported at once.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;
use tapflow_runtime::config::{layer_over_file, with_default, Layer};

use crate::decode::DecodeConfig;
use crate::evidence::EvidenceConfig;
use tapflow_proto::procset::ProcessorSet;
use tapflow_proto::summary::MAX_PAYLOAD;

pub use tapflow_runtime::ConfigError;

mod resolved;

pub const DEFAULT_EPOCH: u32 = 1;
pub const DEFAULT_BATCH_SIZE: usize = 1024;
pub const DEFAULT_BATCH_BYTES: usize = 256 << 10;
pub const DEFAULT_BATCH_AGE_MS: u64 = 100;
pub const DEFAULT_QUEUE_BATCHES: usize = 64;
pub const DEFAULT_HEARTBEAT_MS: u64 = 1000;
pub const DEFAULT_LINGER_MS: u64 = 30_000;
pub const DEFAULT_SNAPLEN: i32 = 65535;
pub const DEFAULT_BUFFER_MB: i32 = 64;
pub const DEFAULT_FRAG_MAX_DATAGRAMS: usize = 4096;
pub const DEFAULT_FRAG_TIMEOUT_S: u64 = 30;

/// What to do when a processor's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowPolicy {
    /// Wait for the processor (nothing lost; the default for capture files).
    Block,
    /// Drop the batch and count it as `queue_full` (the default for live capture, where waiting
    /// would only move the loss into the kernel).
    Drop,
}

const EXAMPLES: &str = "Examples:
  # one capture file to two processors on loopback
  tapflow-collector --pcap trace.pcap \\
      --processor tcp://127.0.0.1:5601 --processor tcp://127.0.0.1:5602

  # live capture on a tap interface, TCP only, settings from a file
  tapflow-collector --interface eth1 --filter 'tcp' --config /etc/tapflow/collector.toml \\
      --processor tcp://10.0.0.5:5601

Exit codes: 0 done (end of file or SIGINT/SIGTERM, everything flushed), 1 runtime failure,
2 usage or configuration error, 3 capture could not be opened, 4 capture file damaged (every
packet before the damage was passed on), 5 the end-of-stream did not reach some processor.";

/// Captures packets with libpcap, summarises them and shards them over processors.
#[derive(Debug, Parser)]
#[command(
    name = "tapflow-collector",
    version,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<tapflow_runtime::curve::Command>,
    #[command(flatten)]
    pub options: Options,
}

tapflow_runtime::layered! {
    /// Every option: a flag (`--batch-size`) and a config-file key (`batch_size`) each.
    #[derive(Debug, Default, clap::Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Options {
        /// Read packets from a pcap or pcapng file.
        #[arg(long, env = "TAPFLOW_PCAP", conflicts_with = "interface")]
        pub pcap: Option<PathBuf>,
        /// Capture live on this interface (`any` gives Linux cooked frames).
        #[arg(long, env = "TAPFLOW_INTERFACE")]
        pub interface: Option<String>,
        /// A processor's ZeroMQ endpoint; repeat in shard order (the position is the shard index).
        #[arg(long = "processor", env = "TAPFLOW_PROCESSORS", value_delimiter = ',')]
        pub processors: Vec<String>,
        /// A processor-set file instead of --processor: processors by id with their endpoints and
        /// the history of adds and removes, each switching at an announced packet time
        /// (docs/scaling.md). Re-read on SIGHUP; a reload may only append changes.
        #[arg(long, env = "TAPFLOW_PROCESSOR_SET", conflicts_with = "processors")]
        pub processor_set: Option<PathBuf>,
        /// The aggregator's control endpoint (its --control-listen), with --processor-set: the
        /// aggregator announces the processor-set changes it decides (a dead processor removed,
        /// one back added again) and this collector applies each exactly as a SIGHUP reload
        /// [default: none, the set changes only by SIGHUP].
        #[arg(long, env = "TAPFLOW_CONTROL")]
        pub control: Option<String>,
        /// With CURVE: the aggregator's public key (its PREFIX.pub), for --control.
        #[arg(long, env = "TAPFLOW_CONTROL_SERVER_KEY")]
        pub control_server_key: Option<PathBuf>,
        /// BPF filter applied by libpcap (live and files).
        #[arg(long, env = "TAPFLOW_FILTER")]
        pub filter: Option<String>,
        /// Do not verify IP/TCP/UDP/ICMP checksums (what Zeek's `-C` does).
        #[arg(long)]
        pub ignore_checksums: bool,
        /// TOML file with any of these settings; flags given on the command line win.
        #[arg(long, env = "TAPFLOW_CONFIG")]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// This collector's name in batches and logs [default: host:source:pid].
        #[arg(long, env = "TAPFLOW_NAME")]
        pub name: Option<String>,
        /// Make VLAN ids part of the flow key (Zeek's default: not).
        #[arg(long)]
        pub vlan_in_key: bool,
        /// Do not decode tunnels (VXLAN, Geneve, GTP-U, GRE, IP-in-IP).
        #[arg(long)]
        pub no_tunnels: bool,
        #[arg(long, help = with_default("Processor set version carried in every batch", DEFAULT_EPOCH))]
        pub epoch: Option<u32>,
        #[arg(long, help = with_default("Summaries per batch", DEFAULT_BATCH_SIZE))]
        pub batch_size: Option<usize>,
        #[arg(long, help = with_default("Largest batch message in bytes; a bigger batch is split", DEFAULT_BATCH_BYTES))]
        pub batch_bytes: Option<usize>,
        #[arg(long, help = with_default("A partial batch is sent when it is this old, in milliseconds", DEFAULT_BATCH_AGE_MS))]
        pub batch_age_ms: Option<u64>,
        #[arg(long, help = with_default("Batches queued per processor before the slow policy applies", DEFAULT_QUEUE_BATCHES))]
        pub queue_batches: Option<usize>,
        /// When a processor's queue is full [default: block for files, drop for live].
        #[arg(long, value_enum)]
        pub slow_policy: Option<SlowPolicy>,
        #[arg(long, help = with_default("Heartbeat period in milliseconds", DEFAULT_HEARTBEAT_MS))]
        pub heartbeat_ms: Option<u64>,
        #[arg(long, help = with_default("How long to wait at exit for queued messages to reach processors, ms", DEFAULT_LINGER_MS))]
        pub linger_ms: Option<u64>,
        #[arg(long, help = with_default("Live capture snapshot length in bytes", DEFAULT_SNAPLEN))]
        pub snaplen: Option<i32>,
        #[arg(long, help = with_default("Live capture kernel buffer size in MiB", DEFAULT_BUFFER_MB))]
        pub buffer_mb: Option<i32>,
        /// Do not put the interface in promiscuous mode (in the file: `promisc = false`).
        #[arg(long = "no-promisc", num_args = 0, default_missing_value = "false", help = "Do not put the interface in promiscuous mode")]
        pub promisc: Option<bool>,
        /// Deliver packets as they arrive instead of in kernel-buffered blocks.
        #[arg(long)]
        pub immediate: bool,
        /// Live capture: keep reopening an interface that went down or disappeared for this many
        /// seconds (backoff 1 s to 30 s, heartbeats go on), then exit 1; 0 exits at once
        /// [default: keep trying until stopped].
        #[arg(long, env = "TAPFLOW_INTERFACE_RETRY_S")]
        pub interface_retry_s: Option<u64>,
        /// Live capture: this many capture threads, each on its own handle of one kernel
        /// PACKET_FANOUT group (flow hash), each a sender of its own named NAME/K [default: 1].
        #[arg(long)]
        pub capture_threads: Option<u16>,
        #[arg(long, help = with_default("Fragment reassembly: datagrams held at most", DEFAULT_FRAG_MAX_DATAGRAMS))]
        pub frag_max_datagrams: Option<usize>,
        #[arg(long, help = with_default("Fragment reassembly: timeout in packet-time seconds", DEFAULT_FRAG_TIMEOUT_S))]
        pub frag_timeout_s: Option<u64>,
        #[arg(long, help = with_default("Payload evidence: first bytes shipped per flow direction for the processor's service detection, 0 turns it off (at most 65535)", EvidenceConfig::DEFAULT_BYTES))]
        pub payload_bytes: Option<u32>,
        #[arg(long, help = with_default("Payload evidence: flows collecting at once, and as many more waiting in a compact set (a handshake, or evidence complete)", EvidenceConfig::DEFAULT_FLOWS))]
        pub payload_flows: Option<usize>,
        /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9601 [default: off].
        #[arg(long, env = "TAPFLOW_METRICS_LISTEN")]
        pub metrics_listen: Option<String>,
        /// Allow --metrics-listen on an address other than loopback (the counters are then
        /// served to the network, unauthenticated) [default: loopback only].
        #[arg(long, env = "TAPFLOW_METRICS_PUBLIC", value_parser = clap::builder::BoolishValueParser::new())]
        pub metrics_public: bool,
        /// This collector's CURVE key pair (`tapflow-collector keygen --out PREFIX` writes
        /// PREFIX.key, mode 0600); links to processors are encrypted and authenticated.
        #[arg(long, env = "TAPFLOW_CURVE_KEY")]
        pub curve_key: Option<PathBuf>,
        /// The processors' CURVE public key (their PREFIX.pub; processors may share one key pair).
        #[arg(long, env = "TAPFLOW_CURVE_SERVER_KEY")]
        pub curve_server_key: Option<PathBuf>,
        /// No encryption nor authentication: allowed only when every processor endpoint is
        /// loopback (127.0.0.0/8, ::1, localhost) or ipc://.
        #[arg(long, env = "TAPFLOW_PLAIN", value_parser = clap::builder::BoolishValueParser::new())]
        pub plain: bool,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        #[serde(skip)]
        pub log_json: bool,
        /// Load and validate the configuration as a start would (flags, `--config` file,
        /// environment), print it resolved as TOML and exit: 0 if valid, 2 if not. Opens no capture
        /// and no socket (like `nginx -t`).
        #[arg(long)]
        #[serde(skip)]
        pub check_config: bool,
    }
}

/// Where packets come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    File(PathBuf),
    Live(LiveSpec),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSpec {
    pub interface: String,
    pub snaplen: i32,
    pub buffer_bytes: i32,
    pub promisc: bool,
    pub immediate: bool,
    /// Capture threads (handles in one fanout group); 1: one handle, no fanout.
    pub threads: u16,
    /// How long to keep reopening the interface after a failure; `None`: until stopped.
    pub retry_for: Option<Duration>,
}

/// The validated configuration `run` works from.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: SourceSpec,
    /// The endpoints links go to: `--processor` in shard order, or every member of the
    /// processor set in id order.
    pub processors: Vec<String>,
    /// The processor-set file and what it held when read (`None`: fixed `--processor` shards).
    pub processor_set: Option<(PathBuf, ProcessorSet)>,
    pub filter: Option<String>,
    pub name: String,
    pub epoch: u32,
    pub decode: DecodeConfig,
    pub batch_size: usize,
    pub batch_bytes: usize,
    pub batch_age: Duration,
    pub queue_batches: usize,
    pub slow_policy: SlowPolicy,
    pub heartbeat: Duration,
    pub linger: Duration,
    pub metrics_listen: Option<String>,
    /// CURVE (or plain, on loopback) on every link to a processor.
    pub security: tapflow_runtime::curve::LinkSecurity,
    /// The aggregator's control channel (`--control`), if subscribed.
    pub control: Option<ControlSpec>,
}

/// Where the aggregator announces processor-set changes, and how that link is secured.
#[derive(Clone, Debug)]
pub struct ControlSpec {
    pub endpoint: String,
    pub security: tapflow_runtime::curve::LinkSecurity,
}

impl Config {
    /// The flags over the file named by `--config` (if any), validated.
    pub fn load(args: Args) -> Result<Config, ConfigError> {
        let config = args.options.config.clone();
        Config::from_options(layer_over_file(args.options, config.as_deref())?)
    }

    /// `--check-config`: [`Config::load`], then [`Config::resolved`].
    pub fn check(args: Args) -> Result<String, ConfigError> {
        Config::load(args).map(|c| c.resolved())
    }

    /// `args` over `file`, validated.
    pub fn merge(args: Args, file: Options) -> Result<Config, ConfigError> {
        Config::from_options(args.options.over(file))
    }

    /// The options resolved: defaults filled in, every problem found reported together.
    pub fn from_options(o: Options) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let source = source(&o, &mut errors);
        let (processors, processor_set) = processors(&o, &mut errors);
        let sizes = Sizes::check(&o, &mut errors);
        let decode = decode_config(&o, &sizes);
        let endpoints: Vec<&str> = (processors.iter().map(String::as_str))
            .chain(o.control.as_deref())
            .collect();
        tapflow_runtime::config::check_metrics_listen(
            o.metrics_listen.as_deref(),
            o.metrics_public,
            &mut errors,
        );
        let security = tapflow_runtime::curve::resolve(
            tapflow_runtime::curve::Role {
                server: false,
                client: true,
            },
            &tapflow_runtime::curve::SecuritySettings {
                plain: o.plain,
                key: o.curve_key,
                clients: None,
                server_key: o.curve_server_key,
            },
            &endpoints,
            &mut errors,
        );
        let control = control_spec(
            o.control.clone(),
            processor_set.is_some(),
            o.control_server_key.as_deref(),
            &security,
            &mut errors,
        );
        let slow_policy = o.slow_policy.unwrap_or(match source {
            Some(SourceSpec::Live(_)) => SlowPolicy::Drop,
            _ => SlowPolicy::Block,
        });
        let name = o.name.unwrap_or_else(|| default_name(source.as_ref()));
        // Capture threads send as NAME/K.
        let suffix = match &source {
            Some(SourceSpec::Live(l)) if l.threads > 1 => 1 + (l.threads - 1).to_string().len(),
            _ => 0,
        };
        if name.is_empty() || name.len() + suffix > 255 {
            errors.push("name must be 1 to 255 bytes (with capture threads' /K)".to_owned());
        }
        match source {
            Some(source) if errors.is_empty() => Ok(Config {
                source,
                processors,
                processor_set,
                filter: o.filter,
                name,
                epoch: o.epoch.unwrap_or(DEFAULT_EPOCH),
                decode,
                batch_size: sizes.batch_size,
                batch_bytes: sizes.batch_bytes,
                batch_age: Duration::from_millis(o.batch_age_ms.unwrap_or(DEFAULT_BATCH_AGE_MS)),
                queue_batches: sizes.queue_batches,
                slow_policy,
                heartbeat: Duration::from_millis(sizes.heartbeat_ms),
                metrics_listen: o.metrics_listen,
                linger: Duration::from_millis(o.linger_ms.unwrap_or(DEFAULT_LINGER_MS)),
                security,
                control,
            }),
            _ => Err(ConfigError(errors)),
        }
    }
}

/// How packets are decoded: checksums, VLANs in the key, tunnels, fragments, evidence.
fn decode_config(o: &Options, sizes: &Sizes) -> DecodeConfig {
    DecodeConfig {
        verify_checksums: !o.ignore_checksums,
        vlan_in_key: o.vlan_in_key,
        decode_tunnels: !o.no_tunnels,
        frag_max_datagrams: sizes.frag_max_datagrams,
        frag_timeout_ns: o
            .frag_timeout_s
            .unwrap_or(DEFAULT_FRAG_TIMEOUT_S)
            .saturating_mul(1_000_000_000),
        evidence: EvidenceConfig {
            bytes: sizes.payload_bytes,
            flows: sizes.payload_flows,
        },
        ..DecodeConfig::default()
    }
}

/// `--control`: the endpoint checked, and the link's security.
fn control_spec(
    control: Option<String>,
    with_set: bool,
    server_key: Option<&std::path::Path>,
    links: &tapflow_runtime::curve::LinkSecurity,
    errors: &mut Vec<String>,
) -> Option<ControlSpec> {
    let endpoint = control?;
    tapflow_runtime::config::check_required_endpoint("control", &endpoint, errors);
    if !with_set {
        errors.push(
            "--control needs --processor-set (the history it announces extends it)".to_owned(),
        );
    }
    Some(ControlSpec {
        security: control_security(links, server_key, errors),
        endpoint,
    })
}

/// The control link's security: plain with plain links; with CURVE this collector's key pair
/// and the aggregator's public key (`control_server_key`).
fn control_security(
    links: &tapflow_runtime::curve::LinkSecurity,
    server_key: Option<&std::path::Path>,
    errors: &mut Vec<String>,
) -> tapflow_runtime::curve::LinkSecurity {
    use tapflow_runtime::curve::LinkSecurity;
    let LinkSecurity::Curve(curve) = links else {
        return LinkSecurity::Plain;
    };
    let Some(path) = server_key else {
        errors.push(
            "--control with CURVE needs --control-server-key FILE (the aggregator's PREFIX.pub)"
                .to_owned(),
        );
        return LinkSecurity::Plain;
    };
    match tapflow_runtime::curve::load_public_key(path) {
        Ok(key) => LinkSecurity::Curve(std::sync::Arc::new(tapflow_runtime::curve::CurveConfig {
            key_path: curve.key_path.clone(),
            key: curve.key.clone(),
            clients_path: None,
            clients: Vec::new(),
            server_key_path: Some(path.to_path_buf()),
            server_key: Some(key),
        })),
        Err(e) => {
            errors.push(e.to_string());
            LinkSecurity::Plain
        }
    }
}

/// Capture threads at most (`capture_threads`).
const MAX_CAPTURE_THREADS: u16 = 64;

/// The packet source: a file or an interface, exactly one.
fn source(o: &Options, errors: &mut Vec<String>) -> Option<SourceSpec> {
    let threads = o.capture_threads.unwrap_or(1);
    if threads == 0 || threads > MAX_CAPTURE_THREADS {
        errors.push(format!(
            "capture_threads must be 1 to {MAX_CAPTURE_THREADS}, not {threads}"
        ));
    }
    if threads > 1 && o.pcap.is_some() {
        errors.push(
            "capture_threads > 1 needs a live interface (--interface): a capture file is read by one thread"
                .to_owned(),
        );
    }
    if threads > 1 && o.metrics_listen.is_some() {
        errors.push(
            "capture_threads > 1 does not serve metrics yet: leave out metrics_listen".to_owned(),
        );
    }
    match (&o.pcap, &o.interface) {
        (Some(p), None) => Some(SourceSpec::File(p.clone())),
        (None, Some(i)) => Some(SourceSpec::Live(LiveSpec {
            interface: i.clone(),
            snaplen: o.snaplen.unwrap_or(DEFAULT_SNAPLEN),
            buffer_bytes: o
                .buffer_mb
                .unwrap_or(DEFAULT_BUFFER_MB)
                .saturating_mul(1 << 20),
            promisc: o.promisc.unwrap_or(true),
            immediate: o.immediate,
            threads,
            retry_for: o.interface_retry_s.map(Duration::from_secs),
        })),
        (Some(_), Some(_)) => {
            errors.push("give either a capture file (pcap) or an interface, not both".to_owned());
            None
        }
        (None, None) => {
            errors.push("no packet source: give --pcap FILE or --interface IFACE".to_owned());
            None
        }
    }
}

/// The processors' endpoints, from `processors` or a processor-set file (exactly one).
fn processors(
    o: &Options,
    errors: &mut Vec<String>,
) -> (Vec<String>, Option<(PathBuf, ProcessorSet)>) {
    let mut processors = o.processors.clone();
    let mut processor_set = None;
    match (&o.processor_set, processors.is_empty()) {
        (Some(_), false) => errors.push(
            "give either processors (--processor) or a processor set (--processor-set), not both"
                .to_owned(),
        ),
        (Some(path), true) => match tapflow_runtime::read_processor_set(path, true) {
            Ok(set) => {
                processors = set
                    .all_members()
                    .iter()
                    .filter_map(|id| set.endpoint(*id).map(str::to_owned))
                    .collect();
                processor_set = Some((path.clone(), set));
            }
            Err(e) => errors.push(e.to_string()),
        },
        (None, true) => errors.push(
            "no processor: give --processor ENDPOINT at least once, or --processor-set FILE"
                .to_owned(),
        ),
        (None, false) => {}
    }
    if processors.len() > usize::from(u16::MAX) {
        errors.push(format!(
            "{} processors is more than the {} a shard index holds",
            processors.len(),
            u16::MAX
        ));
    }
    errors.extend(
        processors
            .iter()
            .filter_map(|p| tapflow_runtime::config::endpoint_problem("processor", p)),
    );
    (processors, processor_set)
}

/// The sizes and periods that have bounds, checked.
struct Sizes {
    batch_size: usize,
    batch_bytes: usize,
    queue_batches: usize,
    heartbeat_ms: u64,
    frag_max_datagrams: usize,
    payload_bytes: u32,
    payload_flows: usize,
}

impl Sizes {
    fn check(o: &Options, errors: &mut Vec<String>) -> Sizes {
        let snaplen = o.snaplen.unwrap_or(DEFAULT_SNAPLEN);
        if !(64..=262_144).contains(&snaplen) {
            errors.push(format!("snaplen {snaplen} is outside 64..=262144"));
        }
        let buffer_mb = o.buffer_mb.unwrap_or(DEFAULT_BUFFER_MB);
        if !(1..=2047).contains(&buffer_mb) {
            errors.push(format!("buffer_mb {buffer_mb} is outside 1..=2047"));
        }
        let s = Sizes {
            batch_size: o.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
            batch_bytes: o.batch_bytes.unwrap_or(DEFAULT_BATCH_BYTES),
            queue_batches: o.queue_batches.unwrap_or(DEFAULT_QUEUE_BATCHES),
            heartbeat_ms: o.heartbeat_ms.unwrap_or(DEFAULT_HEARTBEAT_MS),
            frag_max_datagrams: o.frag_max_datagrams.unwrap_or(DEFAULT_FRAG_MAX_DATAGRAMS),
            payload_bytes: o.payload_bytes.unwrap_or(EvidenceConfig::DEFAULT_BYTES),
            payload_flows: o.payload_flows.unwrap_or(EvidenceConfig::DEFAULT_FLOWS),
        };
        if s.payload_bytes > MAX_PAYLOAD as u32 {
            errors.push(format!(
                "payload_bytes {} is above {MAX_PAYLOAD}",
                s.payload_bytes
            ));
        }
        if !(1..=65_536).contains(&s.batch_size) {
            errors.push(format!("batch_size {} is outside 1..=65536", s.batch_size));
        }
        let max_bytes = tapflow_proto::wire::MAX_MESSAGE_BYTES / 2;
        if !(256..=max_bytes).contains(&s.batch_bytes) {
            errors.push(format!(
                "batch_bytes {} is outside 256..={max_bytes}",
                s.batch_bytes
            ));
        }
        for (value, what) in [
            (s.queue_batches as u64, "queue_batches"),
            (s.heartbeat_ms, "heartbeat_ms"),
            (s.frag_max_datagrams as u64, "frag_max_datagrams"),
        ] {
            if value == 0 {
                errors.push(format!("{what} must be at least 1"));
            }
        }
        s
    }
}

/// `host:source:pid`, the name when none is given.
fn default_name(source: Option<&SourceSpec>) -> String {
    let what = match source {
        Some(SourceSpec::File(p)) => p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        Some(SourceSpec::Live(l)) => l.interface.clone(),
        None => String::new(),
    };
    format!(
        "{}:{what}:{}",
        tapflow_runtime::config::host_name(),
        std::process::id()
    )
}

#[cfg(test)]
mod tests;
