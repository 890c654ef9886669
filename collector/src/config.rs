//! Collector configuration: command-line flags (with `TAPFLOW_*` environment fallbacks) over an
//! optional TOML file, validated as a whole so every mistake is reported at once.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;
use tapflow_runtime::{toml_kv as kv, toml_string as toml_str};

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::decode::DecodeConfig;
use tapflow_proto::procset::ProcessorSet;

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
packet before the damage was passed on).";

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
    /// BPF filter applied by libpcap (live and files).
    #[arg(long, env = "TAPFLOW_FILTER")]
    pub filter: Option<String>,
    /// Do not verify IP/TCP/UDP/ICMP checksums (what Zeek's `-C` does).
    #[arg(long)]
    pub ignore_checksums: bool,
    /// TOML file with any of these settings; flags given on the command line win.
    #[arg(long, env = "TAPFLOW_CONFIG")]
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
    /// Processor set version carried in every batch [default: 1].
    #[arg(long)]
    pub epoch: Option<u32>,
    /// Summaries per batch [default: 1024].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Largest batch message in bytes; a bigger batch is split [default: 262144].
    #[arg(long)]
    pub batch_bytes: Option<usize>,
    /// A partial batch is sent when it is this old, in milliseconds [default: 100].
    #[arg(long)]
    pub batch_age_ms: Option<u64>,
    /// Batches queued per processor before the slow policy applies [default: 64].
    #[arg(long)]
    pub queue_batches: Option<usize>,
    /// When a processor's queue is full [default: block for files, drop for live].
    #[arg(long, value_enum)]
    pub slow_policy: Option<SlowPolicy>,
    /// Heartbeat period in milliseconds [default: 1000].
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// How long to wait at exit for queued messages to reach processors, ms [default: 30000].
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// Live capture snapshot length in bytes [default: 65535].
    #[arg(long)]
    pub snaplen: Option<i32>,
    /// Live capture kernel buffer size in MiB [default: 64].
    #[arg(long)]
    pub buffer_mb: Option<i32>,
    /// Do not put the interface in promiscuous mode.
    #[arg(long)]
    pub no_promisc: bool,
    /// Deliver packets as they arrive instead of in kernel-buffered blocks.
    #[arg(long)]
    pub immediate: bool,
    /// Live capture: keep reopening an interface that went down or disappeared for this many
    /// seconds (backoff 1 s to 30 s, heartbeats go on), then exit 1; 0 exits at once
    /// [default: keep trying until stopped].
    #[arg(long, env = "TAPFLOW_INTERFACE_RETRY_S")]
    pub interface_retry_s: Option<u64>,
    /// Fragment reassembly: datagrams held at most [default: 4096].
    #[arg(long)]
    pub frag_max_datagrams: Option<usize>,
    /// Fragment reassembly: timeout in packet-time seconds [default: 30].
    #[arg(long)]
    pub frag_timeout_s: Option<u64>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9601 [default: off].
    #[arg(long, env = "TAPFLOW_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
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
    pub log_json: bool,
    /// Load and validate the configuration as a start would (flags, `--config` file,
    /// environment), print it resolved as TOML and exit: 0 if valid, 2 if not. Opens no capture
    /// and no socket (like `nginx -t`).
    #[arg(long)]
    pub check_config: bool,
}

/// Settings a TOML file may give (same names as the flags, with underscores).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub pcap: Option<PathBuf>,
    pub interface: Option<String>,
    pub processors: Option<Vec<String>>,
    pub processor_set: Option<PathBuf>,
    pub filter: Option<String>,
    pub ignore_checksums: Option<bool>,
    pub name: Option<String>,
    pub vlan_in_key: Option<bool>,
    pub no_tunnels: Option<bool>,
    pub epoch: Option<u32>,
    pub batch_size: Option<usize>,
    pub batch_bytes: Option<usize>,
    pub batch_age_ms: Option<u64>,
    pub queue_batches: Option<usize>,
    pub slow_policy: Option<SlowPolicy>,
    pub heartbeat_ms: Option<u64>,
    pub linger_ms: Option<u64>,
    pub snaplen: Option<i32>,
    pub buffer_mb: Option<i32>,
    pub promisc: Option<bool>,
    pub immediate: Option<bool>,
    pub interface_retry_s: Option<u64>,
    pub frag_max_datagrams: Option<usize>,
    pub frag_timeout_s: Option<u64>,
    pub metrics_listen: Option<String>,
    pub curve_key: Option<PathBuf>,
    pub curve_server_key: Option<PathBuf>,
    pub plain: Option<bool>,
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
}

/// Every problem found in the configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Merges the flags over the file named by `--config` (if any) and validates the result.
    pub fn load(args: Args) -> Result<Config, ConfigError> {
        let file = tapflow_runtime::read_config(args.config.as_deref())
            .map_err(|e| ConfigError(vec![e]))?;
        Config::merge(args, file)
    }

    /// `--check-config`: [`Config::load`], then [`Config::resolved`].
    pub fn check(args: Args) -> Result<String, ConfigError> {
        Config::load(args).map(|c| c.resolved())
    }

    pub fn merge(args: Args, file: FileConfig) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let pcap = args.pcap.or(file.pcap);
        let interface = args.interface.or(file.interface);
        let snaplen = args.snaplen.or(file.snaplen).unwrap_or(65535);
        let buffer_mb = args.buffer_mb.or(file.buffer_mb).unwrap_or(64);
        let source = match (pcap, interface) {
            (Some(p), None) => Some(SourceSpec::File(p)),
            (None, Some(i)) => Some(SourceSpec::Live(LiveSpec {
                interface: i,
                snaplen,
                buffer_bytes: buffer_mb.saturating_mul(1 << 20),
                promisc: !args.no_promisc && file.promisc.unwrap_or(true),
                immediate: args.immediate || file.immediate.unwrap_or(false),
                retry_for: args
                    .interface_retry_s
                    .or(file.interface_retry_s)
                    .map(Duration::from_secs),
            })),
            (Some(_), Some(_)) => {
                errors
                    .push("give either a capture file (pcap) or an interface, not both".to_owned());
                None
            }
            (None, None) => {
                errors.push("no packet source: give --pcap FILE or --interface IFACE".to_owned());
                None
            }
        };
        let set_path = args.processor_set.or(file.processor_set);
        let mut processors = if args.processors.is_empty() {
            file.processors.unwrap_or_default()
        } else {
            args.processors
        };
        let mut processor_set = None;
        match (&set_path, processors.is_empty()) {
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
                Err(e) => errors.push(e),
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
        for p in &processors {
            if !(p.starts_with("tcp://") || p.starts_with("ipc://") || p.starts_with("inproc://")) {
                errors.push(format!("processor endpoint {p:?} is not a ZeroMQ endpoint (tcp://HOST:PORT or ipc://PATH)"));
            }
        }
        if !(64..=262_144).contains(&snaplen) {
            errors.push(format!("snaplen {snaplen} is outside 64..=262144"));
        }
        if !(1..=2047).contains(&buffer_mb) {
            errors.push(format!("buffer_mb {buffer_mb} is outside 1..=2047"));
        }
        let batch_size = args.batch_size.or(file.batch_size).unwrap_or(1024);
        if !(1..=65_536).contains(&batch_size) {
            errors.push(format!("batch_size {batch_size} is outside 1..=65536"));
        }
        let batch_bytes = args.batch_bytes.or(file.batch_bytes).unwrap_or(256 << 10);
        if !(256..=tapflow_proto::wire::MAX_MESSAGE_BYTES / 2).contains(&batch_bytes) {
            errors.push(format!(
                "batch_bytes {batch_bytes} is outside 256..={}",
                tapflow_proto::wire::MAX_MESSAGE_BYTES / 2
            ));
        }
        let queue_batches = args.queue_batches.or(file.queue_batches).unwrap_or(64);
        if queue_batches == 0 {
            errors.push("queue_batches must be at least 1".to_owned());
        }
        let heartbeat_ms = args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(1000);
        if heartbeat_ms == 0 {
            errors.push("heartbeat_ms must be at least 1".to_owned());
        }
        let frag_max_datagrams = args
            .frag_max_datagrams
            .or(file.frag_max_datagrams)
            .unwrap_or(4096);
        if frag_max_datagrams == 0 {
            errors.push("frag_max_datagrams must be at least 1".to_owned());
        }
        let endpoints: Vec<&str> = processors.iter().map(String::as_str).collect();
        let security = tapflow_runtime::curve::resolve(
            tapflow_runtime::curve::Role {
                server: false,
                client: true,
            },
            &tapflow_runtime::curve::SecuritySettings {
                plain: args.plain || file.plain.unwrap_or(false),
                key: args.curve_key.or(file.curve_key),
                clients: None,
                server_key: args.curve_server_key.or(file.curve_server_key),
            },
            &endpoints,
            &mut errors,
        );
        let is_live = matches!(source, Some(SourceSpec::Live(_)));
        let slow_policy = args.slow_policy.or(file.slow_policy).unwrap_or(if is_live {
            SlowPolicy::Drop
        } else {
            SlowPolicy::Block
        });
        let name = args
            .name
            .or(file.name)
            .unwrap_or_else(|| default_name(source.as_ref()));
        if name.is_empty() || name.len() > 255 {
            errors.push("name must be 1 to 255 bytes".to_owned());
        }
        let decode = DecodeConfig {
            verify_checksums: !(args.ignore_checksums || file.ignore_checksums.unwrap_or(false)),
            vlan_in_key: args.vlan_in_key || file.vlan_in_key.unwrap_or(false),
            decode_tunnels: !(args.no_tunnels || file.no_tunnels.unwrap_or(false)),
            frag_max_datagrams,
            frag_timeout_ns: args
                .frag_timeout_s
                .or(file.frag_timeout_s)
                .unwrap_or(30)
                .saturating_mul(1_000_000_000),
            ..DecodeConfig::default()
        };
        match source {
            Some(source) if errors.is_empty() => Ok(Config {
                source,
                processors,
                processor_set,
                filter: args.filter.or(file.filter),
                name,
                epoch: args.epoch.or(file.epoch).unwrap_or(1),
                decode,
                batch_size,
                batch_bytes,
                batch_age: Duration::from_millis(
                    args.batch_age_ms.or(file.batch_age_ms).unwrap_or(100),
                ),
                queue_batches,
                slow_policy,
                heartbeat: Duration::from_millis(heartbeat_ms),
                metrics_listen: args.metrics_listen.clone().or(file.metrics_listen.clone()),
                linger: Duration::from_millis(args.linger_ms.or(file.linger_ms).unwrap_or(30_000)),
                security,
            }),
            _ => Err(ConfigError(errors)),
        }
    }
}

impl Config {
    /// The settings `run` works from, defaults included, as a TOML config file with the file's
    /// key names (one `key = value` per line; unset options as comments). Read back with
    /// `--config`, it gives the same configuration.
    pub fn resolved(&self) -> String {
        let mut out = String::new();
        match &self.source {
            SourceSpec::File(p) => kv(&mut out, "pcap", toml_str(&p.to_string_lossy())),
            SourceSpec::Live(l) => {
                kv(&mut out, "interface", toml_str(&l.interface));
                kv(&mut out, "snaplen", l.snaplen);
                kv(&mut out, "buffer_mb", l.buffer_bytes >> 20);
                kv(&mut out, "promisc", l.promisc);
                kv(&mut out, "immediate", l.immediate);
                match l.retry_for {
                    Some(d) => kv(&mut out, "interface_retry_s", d.as_secs()),
                    None => out.push_str(
                        "# interface_retry_s: none (reopen a failed interface until stopped)\n",
                    ),
                }
            }
        }
        match &self.processor_set {
            Some((path, set)) => tapflow_runtime::toml_processor_set(&mut out, path, set),
            None => {
                let processors: Vec<String> = self.processors.iter().map(|p| toml_str(p)).collect();
                kv(
                    &mut out,
                    "processors",
                    format!("[{}]", processors.join(", ")),
                );
            }
        }
        match &self.filter {
            Some(f) => kv(&mut out, "filter", toml_str(f)),
            None => out.push_str("# filter: none (every packet)\n"),
        }
        if self.name == default_name(Some(&self.source)) {
            let _ = writeln!(
                out,
                "# name: {} by default (host:source:pid, a new pid at every start)",
                toml_str(&self.name)
            );
        } else {
            kv(&mut out, "name", toml_str(&self.name));
        }
        kv(&mut out, "epoch", self.epoch);
        kv(&mut out, "ignore_checksums", !self.decode.verify_checksums);
        kv(&mut out, "vlan_in_key", self.decode.vlan_in_key);
        kv(&mut out, "no_tunnels", !self.decode.decode_tunnels);
        kv(
            &mut out,
            "frag_max_datagrams",
            self.decode.frag_max_datagrams,
        );
        kv(
            &mut out,
            "frag_timeout_s",
            self.decode.frag_timeout_ns / 1_000_000_000,
        );
        kv(&mut out, "batch_size", self.batch_size);
        kv(&mut out, "batch_bytes", self.batch_bytes);
        kv(&mut out, "batch_age_ms", self.batch_age.as_millis());
        kv(&mut out, "queue_batches", self.queue_batches);
        let policy = match self.slow_policy {
            SlowPolicy::Block => "block",
            SlowPolicy::Drop => "drop",
        };
        kv(&mut out, "slow_policy", toml_str(policy));
        kv(&mut out, "heartbeat_ms", self.heartbeat.as_millis());
        kv(&mut out, "linger_ms", self.linger.as_millis());
        match &self.metrics_listen {
            Some(m) => kv(&mut out, "metrics_listen", toml_str(m)),
            None => out.push_str("# metrics_listen: off\n"),
        }
        out.push_str(&self.security.resolved());
        out
    }
}

fn default_name(source: Option<&SourceSpec>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let what = match source {
        Some(SourceSpec::File(p)) => p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        Some(SourceSpec::Live(l)) => l.interface.clone(),
        None => String::new(),
    };
    format!("{host}:{what}:{}", std::process::id())
}

#[cfg(test)]
mod tests;
