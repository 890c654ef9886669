//! Processor configuration. Every option is declared once, in [`Options`]: its flag, its
//! `TAPFLOW_*` environment variable (where it has one) and its TOML key (the field's name) come
//! from that one field, and its default from a `DEFAULT_*` constant below, shown in `--help`.
//! The command line is laid over the `--config` file ([`tapflow_runtime::config`]) and the
//! result resolved into [`Config`], every problem reported at once.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use tapflow_proto::procset::ProcessorSet;
use tapflow_proto::upstream::ShardClaim;
use tapflow_proto::Addr;
use tapflow_runtime::config::{layer_over_file, with_default, Layer};
use tapflow_runtime::{toml_kv as kv, toml_string as toml_str};

pub use tapflow_runtime::ConfigError;

pub const DEFAULT_COLLECTORS: usize = 1;
pub const DEFAULT_HEARTBEAT_MS: u64 = 1000;
pub const DEFAULT_DEAD_AFTER_MS: u64 = 10_000;
pub const DEFAULT_UNACKED_MAX_BYTES: usize = 512 << 20;
pub const DEFAULT_RESEND_AFTER_MS: u64 = 3000;
pub const DEFAULT_ACK_WAIT_S: u64 = 300;
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
pub const DEFAULT_MAX_FLOWS: usize = 1_000_000;
pub const DEFAULT_MERGE_CAP: usize = 1_000_000;
pub const DEFAULT_MAX_SENDERS: usize = 1024;
/// Payload evidence kept per connection direction (bytes): room for the collectors' default
/// budget (1024) and the larger ones measured (4096).
pub const DEFAULT_PAYLOAD_BYTES: u32 = 4096;
/// Zeek's `dns_session_timeout` (10 s).
pub const DEFAULT_DNS_SESSION_TIMEOUT_MS: u64 = 10_000;

const EXAMPLES: &str = "Examples:
  # shard 0 of 2, fed by one collector, exiting once it has sent end-of-stream
  tapflow-processor --listen tcp://127.0.0.1:5601 --aggregator tcp://127.0.0.1:5700 \\
      --collectors 1 --exit-on-eos

Exit codes: 0 done, 1 runtime failure (socket), 2 usage or configuration error.";

/// Receives packet summaries from collectors, reassembles sessions and sends results to the
/// aggregator.
#[derive(Debug, Parser)]
#[command(
    name = "tapflow-processor",
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
    /// Every option: a flag (`--max-flows`) and a config-file key (`max_flows`) each.
    #[derive(Debug, Default, clap::Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Options {
        /// ZeroMQ endpoint to bind for collectors.
        #[arg(long, env = "TAPFLOW_LISTEN")]
        pub listen: Option<String>,
        /// The aggregator's ZeroMQ endpoint.
        #[arg(long, env = "TAPFLOW_AGGREGATOR")]
        pub aggregator: Option<String>,
        #[arg(long, env = "TAPFLOW_COLLECTORS", help = with_default("Collectors feeding this processor; with --exit-on-eos, exit once this many have ended", DEFAULT_COLLECTORS))]
        pub collectors: Option<usize>,
        /// Exit 0 once every collector has sent end-of-stream and everything is flushed.
        #[arg(long)]
        pub exit_on_eos: bool,
        /// TOML file with any of these settings; flags given on the command line win.
        #[arg(long, env = "TAPFLOW_CONFIG")]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// This processor's name in reports [default: host:listen:pid].
        #[arg(long, env = "TAPFLOW_NAME")]
        pub name: Option<String>,
        /// The shard this processor serves, as EPOCH/N/INDEX; by default the first claim received.
        #[arg(long, value_parser = check_claim)]
        pub shard: Option<String>,
        /// The processor-set file the collectors route by (docs/scaling.md), instead of --shard;
        /// with --id. Re-read on SIGHUP.
        #[arg(
            long,
            env = "TAPFLOW_PROCESSOR_SET",
            conflicts_with = "shard",
            requires = "id"
        )]
        pub processor_set: Option<PathBuf>,
        /// This processor's id in the processor set.
        #[arg(long, env = "TAPFLOW_ID")]
        pub id: Option<u16>,
        /// The aggregator's control endpoint (its --control-listen), with --processor-set: the
        /// processor-set changes the aggregator decides (a dead processor removed, one back
        /// added again) reach this processor as a SIGHUP reload does, so it checks routing in
        /// the new epoch and closes the flows that move at the switch [default: none, the set
        /// changes only by SIGHUP]. Secured as the link to the aggregator.
        #[arg(long, env = "TAPFLOW_CONTROL", requires = "processor_set")]
        pub control: Option<String>,
        /// The aggregator's acknowledgement endpoint (its --ack-listen): turns on acknowledged
        /// delivery. Every message of records is kept until the aggregator says it is durable,
        /// and sent again to a restarted aggregator; at exit the processor waits for the last
        /// acknowledgement (at most --ack-wait-s).
        #[arg(long, env = "TAPFLOW_AGGREGATOR_ACKS")]
        pub aggregator_acks: Option<String>,
        #[arg(long, help = with_default("With --aggregator-acks: unacknowledged messages kept in memory at most, bytes; past it the oldest go to --spool-dir or, without one, are given up, logged as an ERROR and counted", DEFAULT_UNACKED_MAX_BYTES))]
        pub unacked_max_bytes: Option<usize>,
        #[arg(long, help = with_default("With --aggregator-acks: send again what is not acknowledged after this long without an acknowledgement, ms", DEFAULT_RESEND_AFTER_MS))]
        pub resend_after_ms: Option<u64>,
        /// With --aggregator-acks: a directory of this processor's own (not shared) where the
        /// unacknowledged messages past --unacked-max-bytes go, oldest first, and are read back
        /// from to be sent again; what an earlier incarnation left there is deleted at start
        /// [default: none, past --unacked-max-bytes the oldest is given up].
        #[arg(long, env = "TAPFLOW_SPOOL_DIR")]
        pub spool_dir: Option<PathBuf>,
        #[arg(long, help = with_default("With --spool-dir: bytes on disk at most; past it the oldest spooled messages are given up, logged as an ERROR and counted", DEFAULT_SPOOL_MAX_BYTES))]
        pub spool_max_bytes: Option<u64>,
        #[arg(long, help = with_default("With --aggregator-acks: at exit, how long to wait for the last acknowledgement, seconds", DEFAULT_ACK_WAIT_S))]
        pub ack_wait_s: Option<u64>,
        #[arg(long, help = with_default("Heartbeat period towards the aggregator in milliseconds", DEFAULT_HEARTBEAT_MS))]
        pub heartbeat_ms: Option<u64>,
        #[arg(long, help = with_default("A collector silent this long (ms) is declared dead and leaves the watermark; collectors that never appear are waited for this long", DEFAULT_DEAD_AFTER_MS))]
        pub dead_after_ms: Option<u64>,
        #[arg(long, help = with_default("Connections tracked at most; past it the one closest to its timeout is evicted and counted", DEFAULT_MAX_FLOWS))]
        pub max_flows: Option<usize>,
        #[arg(long, help = with_default("Payload evidence kept per connection direction at most, bytes (whatever the collectors' --payload-bytes ship; at most 65535)", DEFAULT_PAYLOAD_BYTES))]
        pub payload_bytes: Option<u32>,
        #[arg(long, help = with_default("Summaries buffered at most while merging collectors in time order", DEFAULT_MERGE_CAP))]
        pub merge_cap: Option<usize>,
        #[arg(long, help = with_default("Collector links (a name and an incarnation: each restart of a collector adds one) tracked at most, under names bound to their CURVE key and under other names each; messages that would open another are refused and counted (senders_refused)", DEFAULT_MAX_SENDERS))]
        pub max_senders: Option<usize>,
        #[arg(long, env = "TAPFLOW_DNS_SESSION_TIMEOUT_MS", help = with_default("A UDP DNS connection (responder port 53, 137, 5353 or 5355) idle this long less a second, checked every this long from its first packet, ends, as Zeek's dns_session_timeout ends it; milliseconds, 0 = off (UDP's 60 s inactivity timeout only)", DEFAULT_DNS_SESSION_TIMEOUT_MS))]
        pub dns_session_timeout_ms: Option<u64>,
        /// Services never labelled, comma-separated Zeek names (e.g. http,redis), as Zeek's
        /// `Analyzer::disable_analyzer` or Suricata's `app-layer.protocols.X.enabled: no`: a
        /// disabled service is neither listed in `service` nor takes a place in it. A tunnel
        /// name (vxlan, geneve, gtpv1, teredo, ayiya) removes the label only: the collector
        /// still decapsulates. An unknown name is refused with the list of valid ones
        /// [default: none, every service on].
        #[arg(long, value_delimiter = ',')]
        pub disable_services: Vec<String>,
        #[arg(long, help = with_default("A DNS message with more questions is not DNS (an analyzer violation, Zeek's dns_max_queries); 0 = no limit", tapflow_classify::DEFAULT_DNS_MAX_QUERIES))]
        pub dns_max_queries: Option<u16>,
        /// Local networks for `local_orig`/`local_resp`, e.g. 10.0.0.0/8,2001:db8::/32 [default:
        /// none, and the two fields are left out].
        #[arg(long, value_delimiter = ',')]
        pub local_nets: Vec<String>,
        /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9602 [default: off].
        #[arg(long, env = "TAPFLOW_METRICS_LISTEN")]
        pub metrics_listen: Option<String>,
        /// Allow --metrics-listen on an address other than loopback (the counters are then
        /// served to the network, unauthenticated) [default: loopback only].
        #[arg(long, env = "TAPFLOW_METRICS_PUBLIC", value_parser = clap::builder::BoolishValueParser::new())]
        pub metrics_public: bool,
        /// This processor's CURVE key pair (`tapflow-processor keygen --out PREFIX` writes
        /// PREFIX.key, mode 0600), for both links: towards collectors and to the aggregator.
        /// Processors may share one key pair.
        #[arg(long, env = "TAPFLOW_CURVE_KEY")]
        pub curve_key: Option<PathBuf>,
        /// The collectors allowed to connect: their public keys, one `public = "..."` line each
        /// (concatenated PREFIX.pub files); any other peer is rejected and counted.
        #[arg(long, env = "TAPFLOW_CURVE_CLIENTS")]
        pub curve_clients: Option<PathBuf>,
        /// The aggregator's CURVE public key (its PREFIX.pub).
        #[arg(long, env = "TAPFLOW_CURVE_SERVER_KEY")]
        pub curve_server_key: Option<PathBuf>,
        /// No encryption nor authentication: allowed only when --listen and --aggregator are
        /// loopback (127.0.0.0/8, ::1, localhost) or ipc://.
        #[arg(long, env = "TAPFLOW_PLAIN", value_parser = clap::builder::BoolishValueParser::new())]
        pub plain: bool,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        #[serde(skip)]
        pub log_json: bool,
        /// Load and validate the configuration as a start would (flags, `--config` file,
        /// environment), print it resolved as TOML and exit: 0 if valid, 2 if not. Binds no socket
        /// (like `nginx -t`).
        #[arg(long)]
        #[serde(skip)]
        pub check_config: bool,
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: String,
    pub aggregator: String,
    pub collectors: usize,
    pub exit_on_eos: bool,
    pub name: String,
    pub shard: Option<ShardClaim>,
    /// The processor-set file, what it held when read, and this processor's id in it.
    pub processor_set: Option<(PathBuf, ProcessorSet, u16)>,
    /// The aggregator's control endpoint (`--control`), if subscribed.
    pub control: Option<String>,
    pub heartbeat: Duration,
    pub dead_after: Duration,
    pub max_flows: usize,
    /// Payload evidence kept per connection direction at most (bytes).
    pub payload_bytes: u32,
    pub merge_cap: usize,
    pub max_senders: usize,
    /// Zeek's `dns_session_timeout` for UDP DNS connections; zero = off.
    pub dns_session_timeout: Duration,
    /// The classifier's settings: services disabled, Zeek's `dns_max_queries`.
    pub classify: tapflow_classify::Settings,
    pub local_nets: Vec<(Addr, u8)>,
    pub metrics_listen: Option<String>,
    /// Acknowledged delivery to the aggregator (`--aggregator-acks`).
    pub acks: Option<AckConfig>,
    /// CURVE (or plain, on loopback) on both links.
    pub security: tapflow_runtime::curve::LinkSecurity,
}

/// Acknowledged delivery: where acknowledgements come from, and its bounds.
#[derive(Clone, Debug)]
pub struct AckConfig {
    pub endpoint: String,
    pub max_bytes: usize,
    pub resend_after: Duration,
    pub wait: Duration,
    /// The disk spool past `max_bytes` (`--spool-dir`).
    pub spool: Option<SpoolConfig>,
}

/// The disk spool: where, and how much at most.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl AckConfig {
    /// `--aggregator-acks` and its bounds (`None`: acknowledged delivery off).
    /// The list of errors starts here.
    fn of(o: &Options) -> (Option<AckConfig>, Vec<String>) {
        let mut errors = Vec::new();
        let Some(endpoint) = o.aggregator_acks.clone() else {
            if o.spool_dir.is_some() || o.spool_max_bytes.is_some() {
                errors.push("spool_dir and spool_max_bytes need aggregator_acks (the spool holds what the aggregator has not acknowledged)".to_owned());
                SpoolConfig::of(o, &mut errors);
            }
            return (None, errors);
        };
        tapflow_runtime::config::check_required_endpoint("aggregator_acks", &endpoint, &mut errors);
        let acks = AckConfig {
            endpoint,
            max_bytes: o
                .unacked_max_bytes
                .unwrap_or(DEFAULT_UNACKED_MAX_BYTES)
                .max(1),
            resend_after: Duration::from_millis(
                o.resend_after_ms.unwrap_or(DEFAULT_RESEND_AFTER_MS).max(1),
            ),
            wait: Duration::from_secs(o.ack_wait_s.unwrap_or(DEFAULT_ACK_WAIT_S)),
            spool: SpoolConfig::of(o, &mut errors),
        };
        (Some(acks), errors)
    }
}

impl SpoolConfig {
    fn of(o: &Options, errors: &mut Vec<String>) -> Option<SpoolConfig> {
        let max_bytes = o.spool_max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES);
        let Some(dir) = o.spool_dir.clone() else {
            if o.spool_max_bytes.is_some() {
                errors.push("spool_max_bytes needs spool_dir".to_owned());
            }
            return None;
        };
        if dir.as_os_str().is_empty() {
            errors.push("spool_dir must not be empty".to_owned());
        }
        if dir.is_file() {
            errors.push(format!("spool_dir {} is a file", dir.display()));
        }
        if max_bytes == 0 {
            errors.push("spool_max_bytes must be at least 1".to_owned());
        }
        Some(SpoolConfig { dir, max_bytes })
    }
}

/// A `--shard` that is not `EPOCH/N/INDEX` with `INDEX < N`.
#[derive(Debug, thiserror::Error)]
#[error("shard {0:?} is not EPOCH/N/INDEX with INDEX < N (e.g. 1/3/0)")]
pub struct ClaimError(String);

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
        let (acks, mut errors) = AckConfig::of(&o);
        let listen = o.listen.unwrap_or_default();
        let aggregator = o.aggregator.unwrap_or_default();
        for (what, ep) in [("listen", &listen), ("aggregator", &aggregator)] {
            tapflow_runtime::config::check_required_endpoint(what, ep, &mut errors);
        }
        let collectors = o.collectors.unwrap_or(DEFAULT_COLLECTORS);
        if collectors == 0 {
            errors.push("collectors must be at least 1".to_owned());
        }
        let shard = o
            .shard
            .as_deref()
            .and_then(|s| parse_claim(s).map_err(|e| errors.push(e.to_string())).ok());
        let processor_set = processor_set(o.processor_set, o.id, shard.is_some(), &mut errors);
        check_control(o.control.as_deref(), processor_set.is_some(), &mut errors);
        let heartbeat_ms = o.heartbeat_ms.unwrap_or(DEFAULT_HEARTBEAT_MS);
        if heartbeat_ms == 0 {
            errors.push("heartbeat_ms must be at least 1".to_owned());
        }
        let max_flows = o.max_flows.unwrap_or(DEFAULT_MAX_FLOWS);
        let merge_cap = o.merge_cap.unwrap_or(DEFAULT_MERGE_CAP);
        if max_flows == 0 || merge_cap == 0 {
            errors.push("max_flows and merge_cap must be at least 1".to_owned());
        }
        let max_senders = o.max_senders.unwrap_or(DEFAULT_MAX_SENDERS.max(collectors));
        if max_senders < collectors {
            errors.push(format!(
                "max_senders ({max_senders}) must be at least collectors ({collectors})"
            ));
        }
        let local_nets = tapflow_runtime::config::parse_nets(&o.local_nets, &mut errors);
        let classify = classify_settings(&o.disable_services, o.dns_max_queries, &mut errors);
        tapflow_runtime::config::check_metrics_listen(
            o.metrics_listen.as_deref(),
            o.metrics_public,
            &mut errors,
        );
        let settings = tapflow_runtime::curve::SecuritySettings {
            plain: o.plain,
            key: o.curve_key,
            clients: o.curve_clients,
            server_key: o.curve_server_key,
        };
        let endpoints = [Some(&listen), Some(&aggregator), o.control.as_ref()];
        let security = link_security(&settings, &endpoints, &mut errors);
        let name = o.name;
        let dead_after_ms = o.dead_after_ms.unwrap_or(DEFAULT_DEAD_AFTER_MS).max(1);
        tapflow_runtime::config::finish(errors, || Config {
            name: name.unwrap_or_else(|| default_name(&listen)),
            metrics_listen: o.metrics_listen,
            acks,
            listen,
            aggregator,
            collectors,
            exit_on_eos: o.exit_on_eos,
            shard,
            processor_set,
            control: o.control,
            heartbeat: Duration::from_millis(heartbeat_ms),
            dead_after: Duration::from_millis(dead_after_ms),
            max_flows,
            payload_bytes: o
                .payload_bytes
                .unwrap_or(DEFAULT_PAYLOAD_BYTES)
                .min(tapflow_proto::summary::MAX_PAYLOAD as u32),
            merge_cap,
            max_senders,
            dns_session_timeout: Duration::from_millis(
                o.dns_session_timeout_ms
                    .unwrap_or(DEFAULT_DNS_SESSION_TIMEOUT_MS),
            ),
            local_nets,
            classify,
            security,
        })
    }
}

/// `--disable-services` (every name known) and `--dns-max-queries`.
fn classify_settings(
    disable: &[String],
    dns_max_queries: Option<u16>,
    errors: &mut Vec<String>,
) -> tapflow_classify::Settings {
    let disabled = tapflow_classify::parse_services(&disable.join(","))
        .map_err(|e| errors.push(format!("disable_services: {e}")))
        .unwrap_or_default();
    tapflow_classify::Settings {
        disabled,
        dns_max_queries: dns_max_queries.unwrap_or(tapflow_classify::DEFAULT_DNS_MAX_QUERIES),
    }
}

/// CURVE (or plain, loopback only) on every link: a server to collectors, a client of the
/// aggregator (data, acknowledgements and control).
fn link_security(
    settings: &tapflow_runtime::curve::SecuritySettings,
    endpoints: &[Option<&String>],
    errors: &mut Vec<String>,
) -> tapflow_runtime::curve::LinkSecurity {
    let role = tapflow_runtime::curve::Role {
        server: true,
        client: true,
    };
    let endpoints: Vec<&str> = endpoints.iter().flatten().map(|e| e.as_str()).collect();
    tapflow_runtime::curve::resolve(role, settings, &endpoints, errors)
}

/// `--control`: an endpoint, and only with a processor set (whose history it extends).
fn check_control(control: Option<&str>, with_set: bool, errors: &mut Vec<String>) {
    let Some(c) = control else {
        return;
    };
    tapflow_runtime::config::check_required_endpoint("control", c, errors);
    if !with_set {
        errors.push("control needs processor_set (the history it announces extends it)".to_owned());
    }
}

/// The processor set and this processor's id in it: both or neither, and not with a shard.
fn processor_set(
    path: Option<PathBuf>,
    id: Option<u16>,
    shard: bool,
    errors: &mut Vec<String>,
) -> Option<(PathBuf, ProcessorSet, u16)> {
    let problem = match (path, id) {
        (Some(_), _) if shard => "give either shard or processor_set, not both".to_owned(),
        (Some(path), Some(id)) => match tapflow_runtime::read_processor_set(&path, false) {
            Ok(set) if set.all_members().contains(&id) => return Some((path, set, id)),
            Ok(_) => format!(
                "id {id} is not a member of any epoch of processor set {}",
                path.display()
            ),
            Err(e) => e.to_string(),
        },
        (Some(_), None) => "processor_set needs this processor's id (--id N)".to_owned(),
        (None, Some(_)) => "id is only meaningful with processor_set".to_owned(),
        (None, None) => return None,
    };
    errors.push(problem);
    None
}

impl Config {
    /// The settings `run` works from, defaults included, as a TOML config file with the file's
    /// key names (one `key = value` per line; unset options as comments). Read back with
    /// `--config`, it gives the same configuration.
    pub fn resolved(&self) -> String {
        let mut out = String::new();
        kv(&mut out, "listen", toml_str(&self.listen));
        kv(&mut out, "aggregator", toml_str(&self.aggregator));
        kv(&mut out, "collectors", self.collectors);
        kv(&mut out, "exit_on_eos", self.exit_on_eos);
        if self.name == default_name(&self.listen) {
            let _ = writeln!(
                out,
                "# name: {} by default (host:listen:pid, a new pid at every start)",
                toml_str(&self.name)
            );
        } else {
            kv(&mut out, "name", toml_str(&self.name));
        }
        match &self.shard {
            Some(c) => kv(
                &mut out,
                "shard",
                toml_str(&format!("{}/{}/{}", c.epoch, c.shard_count, c.shard)),
            ),
            None if self.processor_set.is_some() => {}
            None => out.push_str("# shard: the first claim received\n"),
        }
        if let Some((path, set, id)) = &self.processor_set {
            tapflow_runtime::toml_processor_set(&mut out, path, set);
            kv(&mut out, "id", id);
        }
        match &self.control {
            Some(c) => kv(&mut out, "control", toml_str(c)),
            None => out.push_str("# control: none (the processor set changes only by SIGHUP)\n"),
        }
        if let Some(a) = &self.acks {
            kv(&mut out, "aggregator_acks", toml_str(&a.endpoint));
            kv(&mut out, "unacked_max_bytes", a.max_bytes);
            kv(&mut out, "resend_after_ms", a.resend_after.as_millis());
            kv(&mut out, "ack_wait_s", a.wait.as_secs());
            match &a.spool {
                Some(s) => {
                    kv(
                        &mut out,
                        "spool_dir",
                        toml_str(&s.dir.display().to_string()),
                    );
                    kv(&mut out, "spool_max_bytes", s.max_bytes);
                }
                None => out
                    .push_str("# spool_dir: none, past unacked_max_bytes the oldest is given up\n"),
            }
        } else {
            out.push_str("# aggregator_acks: off, nothing kept for a restarted aggregator\n");
        }
        kv(&mut out, "heartbeat_ms", self.heartbeat.as_millis());
        kv(&mut out, "dead_after_ms", self.dead_after.as_millis());
        kv(&mut out, "max_flows", self.max_flows);
        kv(&mut out, "payload_bytes", self.payload_bytes);
        kv(&mut out, "merge_cap", self.merge_cap);
        kv(&mut out, "max_senders", self.max_senders);
        kv(
            &mut out,
            "dns_session_timeout_ms",
            self.dns_session_timeout.as_millis(),
        );
        let off: Vec<String> = self.classify.disabled.iter().map(|s| toml_str(s)).collect();
        kv(
            &mut out,
            "disable_services",
            format!("[{}]", off.join(", ")),
        );
        kv(&mut out, "dns_max_queries", self.classify.dns_max_queries);
        let nets: Vec<String> = self
            .local_nets
            .iter()
            .map(|(addr, len)| toml_str(&format!("{addr}/{len}")))
            .collect();
        kv(&mut out, "local_nets", format!("[{}]", nets.join(", ")));
        tapflow_runtime::config::toml_metrics_listen(&mut out, self.metrics_listen.as_deref());
        out.push_str(&self.security.resolved());
        out
    }
}

/// `host:listen:pid`, the name when none is given.
fn default_name(listen: &str) -> String {
    format!(
        "{}:{listen}:{}",
        tapflow_runtime::config::host_name(),
        std::process::id()
    )
}

/// `--shard` checked as clap parses it (the text is kept: the file gives it as text too).
fn check_claim(s: &str) -> Result<String, ClaimError> {
    parse_claim(s).map(|_| s.to_owned())
}

/// `EPOCH/N/INDEX` with `INDEX < N`.
fn parse_claim(s: &str) -> Result<ShardClaim, ClaimError> {
    let parts: Vec<&str> = s.split('/').collect();
    let bad = || ClaimError(s.to_owned());
    let [e, n, i] = parts.as_slice() else {
        return Err(bad());
    };
    let claim = ShardClaim {
        epoch: e.parse().map_err(|_| bad())?,
        shard_count: n.parse().map_err(|_| bad())?,
        shard: i.parse().map_err(|_| bad())?,
    };
    if claim.shard >= claim.shard_count {
        return Err(bad());
    }
    Ok(claim)
}

#[cfg(test)]
mod tests;
