//! Aggregator configuration. Every option is declared once, in [`Options`]: its flag, its
//! `TAPFLOW_*` environment variable (where it has one) and its TOML key (the field's name) come
//! from that one field, and its default from a `DEFAULT_*` constant below (the detection
//! thresholds: [`DetectConfig::default`]), shown in `--help`. The command line is laid over the
//! `--config` file ([`tapflow_runtime::config`]) and the result resolved into [`Config`], every
//! problem reported at once. `[[subnet]]` tables (file only) hold per-network thresholds; each
//! of their thresholds is also a global option of the same name.

use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;
use tapflow_runtime::config::{layer_over_file, with_default, Layer};

use crate::detect::{DetectConfig, SubnetThresholds};

pub use tapflow_runtime::ConfigError;

mod http;
mod influx;
mod resolved;

pub use http::HttpConfig;

pub const DEFAULT_CONN_CAP: usize = 1_000_000;
pub const DEFAULT_MAX_SENDERS: usize = 1024;
pub const DEFAULT_INFLUX_BATCH_LINES: usize = 5000;
pub const DEFAULT_INFLUX_FINISH_S: u64 = 30;
pub const DEFAULT_WAL_MAX_BYTES: u64 = 4 << 30;
pub const DEFAULT_WAL_COMMIT_MESSAGES: usize = 64;
pub const DEFAULT_WAL_COMMIT_MS: u64 = 20;
pub const DEFAULT_WAL_CHECKPOINT_BYTES: u64 = 256 << 20;
pub const DEFAULT_WAL_CHECKPOINT_S: u64 = 60;

const EXAMPLES: &str = "Examples:
  # two processors, exit when both have ended, accounting to a JSON-lines file
  tapflow-aggregator --listen tcp://127.0.0.1:5700 --processors 2 --exit-on-eos \\
      --conn-log conn.jsonl --health-log health.jsonl

Exit codes: 0 done, 1 runtime failure (socket, log file), 2 usage or configuration error.";

/// Merges the processors' results, decides anomalies and writes logs.
#[derive(Debug, Parser)]
#[command(
    name = "tapflow-aggregator",
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
    /// Every option: a flag (`--conn-cap`) and a config-file key (`conn_cap`) each.
    #[derive(Debug, Default, clap::Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Options {
        /// ZeroMQ endpoint to bind for processors.
        #[arg(long, env = "TAPFLOW_LISTEN")]
        pub listen: Option<String>,
        /// Processors feeding this aggregator; with --exit-on-eos, exit once this many have ended.
        #[arg(long, env = "TAPFLOW_PROCESSORS")]
        pub processors: Option<usize>,
        /// The processor-set file the collectors route by (docs/scaling.md), instead of
        /// --processors: every member of any epoch is expected. Re-read on SIGHUP.
        #[arg(long, env = "TAPFLOW_PROCESSOR_SET", conflicts_with = "processors")]
        pub processor_set: Option<PathBuf>,
        /// Bind a PUB socket here for collectors (their --control): the processor-set changes
        /// this aggregator decides (a dead processor removed, one back added again) are announced
        /// on it. CURVE as on --listen: collectors' keys go in --curve-clients [default: none].
        #[arg(long, env = "TAPFLOW_CONTROL_LISTEN")]
        pub control_listen: Option<String>,
        /// With --processor-set: a member silent this long (e.g. 10s, 2s, 500ms) is declared
        /// dead and removed from the set [default: 10s].
        #[arg(long)]
        pub processor_dead_after: Option<String>,
        /// A processor removed as dead that is heard again without a gap this long is added
        /// back (no flapping) [default: 30s].
        #[arg(long)]
        pub processor_hold_down: Option<String>,
        #[arg(long, help = with_default("Packet time between the newest watermark heard and an announced switch, ms: more than the collectors run ahead of the processors", crate::control::DEFAULT_SWITCH_MARGIN_MS))]
        pub processor_switch_margin_ms: Option<u64>,
        /// The set changes only by its file (an operator): no processor is removed or added
        /// automatically; what would have been is logged and counted.
        #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
        pub processor_set_pinned: bool,
        /// Exit 0 once every processor has sent end-of-stream and everything is written.
        #[arg(long)]
        pub exit_on_eos: bool,
        /// Where the aggregator keeps its state (the systemd unit: /var/lib/tapflow): a
        /// write-ahead log of what processors sent, so a restarted aggregator (a crash,
        /// SIGTERM, a reboot) rebuilds what it held and goes on writing the same logs, no record
        /// written twice. Without it, a restart loses what was held. See also --ack-listen.
        #[arg(long, env = "TAPFLOW_STATE_DIR")]
        pub state_dir: Option<PathBuf>,
        /// With --state-dir: ZeroMQ endpoint to bind for acknowledgements (processors'
        /// --aggregator-acks): what is durable in the write-ahead log, so processors keep and
        /// send again what is not.
        #[arg(long, env = "TAPFLOW_ACK_LISTEN", requires = "state_dir")]
        pub ack_listen: Option<String>,
        #[arg(long, help = with_default("With --state-dir: the write-ahead log's bound, bytes; past it messages are refused (not acknowledged: processors keep them) and an ERROR logged", DEFAULT_WAL_MAX_BYTES))]
        pub wal_max_bytes: Option<u64>,
        #[arg(long, help = with_default("With --state-dir: group commit, one sync per this many messages at most", DEFAULT_WAL_COMMIT_MESSAGES))]
        pub wal_commit_messages: Option<usize>,
        #[arg(long, help = with_default("With --state-dir: group commit, a message waits at most this long for its sync, ms", DEFAULT_WAL_COMMIT_MS))]
        pub wal_commit_ms: Option<u64>,
        #[arg(long, help = with_default("With --state-dir: a checkpoint replaces the write-ahead log once this many bytes were logged since the last one", DEFAULT_WAL_CHECKPOINT_BYTES))]
        pub wal_checkpoint_bytes: Option<u64>,
        #[arg(long, help = with_default("With --state-dir: a checkpoint replaces the write-ahead log at least this often while messages come, seconds (no logged message is older than this plus one checkpoint's time)", DEFAULT_WAL_CHECKPOINT_S))]
        pub wal_checkpoint_s: Option<u64>,
        /// JSON-lines file for pipeline health: the accounting report at end of stream.
        #[arg(long, env = "TAPFLOW_HEALTH_LOG")]
        pub health_log: Option<PathBuf>,
        /// JSON-lines conn log: one final record per session, Zeek's conn.log fields.
        #[arg(long, env = "TAPFLOW_CONN_LOG")]
        pub conn_log: Option<PathBuf>,
        /// JSON-lines log of interim updates of long sessions (same fields).
        #[arg(long)]
        pub conn_interim_log: Option<PathBuf>,
        #[arg(long, help = with_default("Session records held at most while waiting to write them in order", DEFAULT_CONN_CAP))]
        pub conn_cap: Option<usize>,
        #[arg(long, help = with_default("Processor incarnations (a name and a start: each restart of a processor adds one) heard at most, under names bound to their CURVE key and under other names each; messages from another are refused and counted (senders_refused)", DEFAULT_MAX_SENDERS))]
        pub max_senders: Option<usize>,
        /// JSON-lines alerts log: one object per alert event (start, update, end of an episode).
        #[arg(long, env = "TAPFLOW_ALERTS_LOG")]
        pub alerts_log: Option<PathBuf>,
        #[arg(long, help = with_default("Detection window for scans, SYN floods and reflection, seconds", DetectConfig::default().window_s))]
        pub detect_window_s: Option<u64>,
        #[arg(long, help = with_default("Unanswered SYNs per minute to one victim that make a SYN flood", DetectConfig::default().syn_flood_per_min))]
        pub syn_flood_per_min: Option<u64>,
        #[arg(long, help = with_default("Distinct failed ports from one source to one host that make a port scan", DetectConfig::default().port_scan_ports))]
        pub port_scan_ports: Option<usize>,
        #[arg(long, help = with_default("Distinct hosts failing on one port from one source that make an address scan", DetectConfig::default().address_scan_hosts))]
        pub address_scan_hosts: Option<usize>,
        #[arg(long, help = with_default("Distinct ports probed with NULL/FIN/XMAS/SYN+FIN that make a stealth scan", DetectConfig::default().stealth_scan_ports))]
        pub stealth_scan_ports: Option<usize>,
        #[arg(long, help = with_default("Packets per second to one victim (averaged over 5 s) that make a volumetric flood", DetectConfig::default().flood_pps))]
        pub flood_pps: Option<u64>,
        #[arg(long, help = with_default("Distinct sources of unsolicited responses to one victim that make a reflection attack", DetectConfig::default().reflection_sources))]
        pub reflection_sources: Option<usize>,
        #[arg(long, help = with_default("Reflection by shape (one-way UDP from any service): the top source ports of a victim's one-way datagrams looked at", DetectConfig::default().reflection_ports))]
        pub reflection_ports: Option<usize>,
        #[arg(long, help = with_default("Reflection by shape: the share of a victim's one-way datagrams (percent) the top source ports must carry", DetectConfig::default().reflection_port_share_pct))]
        pub reflection_port_share_pct: Option<u64>,
        #[arg(long, help = with_default("Reflection by shape: packets per source at most, on average (reflectors each send few)", DetectConfig::default().reflection_max_pkts_per_source))]
        pub reflection_max_pkts_per_source: Option<u64>,
        #[arg(long, help = with_default("Peak rates: the short interval inside the 5 s flood window, milliseconds", DetectConfig::default().peak_interval_ms))]
        pub peak_interval_ms: Option<u64>,
        #[arg(long, help = with_default("Packets per second to one victim over one short interval (--peak-interval-ms) that make a flood", DetectConfig::default().peak_pps))]
        pub peak_pps: Option<u64>,
        #[arg(long, help = with_default("Bits per second to one victim over one short interval that make a flood", DetectConfig::default().peak_bps))]
        pub peak_bps: Option<u64>,
        #[arg(long, help = with_default("New flows per second to one victim (averaged over 5 s) that make a flow_flood", DetectConfig::default().new_flows_per_s))]
        pub new_flows_per_s: Option<u64>,
        #[arg(long, help = with_default("Keys (sources, victims, ...) tracked per detection window and kind; past it new keys are counted as cap_hits. About 100 bytes each: the aggregator's detection memory bound", DetectConfig::default().keys_cap))]
        pub detect_keys_cap: Option<usize>,
        #[arg(long, help = with_default("latency alert: a TCP server's handshake round-trip p95 in a window at least this percent of its baseline (the median of its recent windows' p95s); 400 is 4 times", DetectConfig::default().latency_factor_pct))]
        pub latency_factor_pct: Option<u64>,
        #[arg(long, help = with_default("latency alert: handshakes a server needs in a window for the window to be judged (and to count in its baseline)", DetectConfig::default().latency_min_sessions))]
        pub latency_min_sessions: Option<u64>,
        #[arg(long, help = with_default("latency alert: judged windows whose p95s make a server's baseline (their lower median)", DetectConfig::default().latency_history))]
        pub latency_history: Option<usize>,
        #[arg(long, help = with_default("latency alert: judged windows a server needs before it can raise", DetectConfig::default().latency_warmup))]
        pub latency_warmup: Option<usize>,
        #[arg(long, help = with_default("Latency samples (handshake, data round trip) kept exactly per server and window; past it they are counted (tapflow_latency *_dropped) and the percentiles are those of the kept ones", crate::latency::DEFAULT_SAMPLES))]
        pub latency_samples: Option<usize>,
        #[arg(long, help = with_default("TCP servers whose latency is tracked per window; sessions of further servers are counted as cap_hits", crate::latency::DEFAULT_SERVERS))]
        pub latency_servers: Option<usize>,
        /// Sources never reported as scanners (known scanners, monitoring hosts), e.g. 10.0.0.5/32.
        #[arg(long, value_delimiter = ',')]
        pub allow: Vec<String>,
        /// InfluxDB base URL (http://HOST:PORT or https://HOST:PORT, no credentials in it); with
        /// --influx-db for the v1 API, or --influx-org, --influx-bucket and a token for v2.
        #[arg(long, env = "TAPFLOW_INFLUX_URL")]
        pub influx_url: Option<String>,
        /// https: PEM file of the CA certificate(s) that signed InfluxDB's certificate (a private
        /// CA, or the self-signed certificate itself), trusted instead of the system's roots
        /// [default: the system's roots, /etc/ssl/certs].
        #[arg(long, env = "TAPFLOW_INFLUX_CA_FILE")]
        pub influx_ca_file: Option<PathBuf>,
        /// v1: database (created if missing).
        #[arg(long, env = "TAPFLOW_INFLUX_DB")]
        pub influx_db: Option<String>,
        /// v1: retention policy [default: the database's default].
        #[arg(long)]
        pub influx_rp: Option<String>,
        /// v1: user (basic auth).
        #[arg(long, env = "TAPFLOW_INFLUX_USER")]
        pub influx_user: Option<String>,
        /// v1: file holding the password (or TAPFLOW_INFLUX_PASSWORD); never logged.
        #[arg(long)]
        pub influx_password_file: Option<PathBuf>,
        /// v2: organisation.
        #[arg(long, env = "TAPFLOW_INFLUX_ORG")]
        pub influx_org: Option<String>,
        /// v2: bucket.
        #[arg(long, env = "TAPFLOW_INFLUX_BUCKET")]
        pub influx_bucket: Option<String>,
        /// v2: file holding the token (or TAPFLOW_INFLUX_TOKEN); never logged.
        #[arg(long)]
        pub influx_token_file: Option<PathBuf>,
        /// Where points wait while InfluxDB is unreachable; created mode 0700, and refused if
        /// another user owns it or others may write it [default: influx-spool under
        /// $STATE_DIRECTORY, else /var/lib/tapflow for root, else $XDG_STATE_HOME/tapflow or
        /// ~/.local/state/tapflow].
        #[arg(long)]
        pub influx_spool_dir: Option<PathBuf>,
        #[arg(long, help = with_default("Lines per write request", DEFAULT_INFLUX_BATCH_LINES))]
        pub influx_batch_lines: Option<usize>,
        #[arg(long, help = with_default("At exit, how long to keep trying to write what is spooled, seconds", DEFAULT_INFLUX_FINISH_S))]
        pub influx_finish_s: Option<u64>,
        /// `[[subnet]]` tables (config file only): per-network thresholds, see
        /// [`SubnetThresholds`].
        #[arg(skip)]
        pub subnet: Option<Vec<SubnetThresholds>>,
        /// TOML file with any of these settings; flags given on the command line win.
        #[arg(long, env = "TAPFLOW_CONFIG")]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9603 [default: off].
        #[arg(long, env = "TAPFLOW_METRICS_LISTEN")]
        pub metrics_listen: Option<String>,
        /// Allow --metrics-listen on an address other than loopback (the counters are then
        /// served to the network, unauthenticated) [default: loopback only].
        #[arg(long, env = "TAPFLOW_METRICS_PUBLIC", value_parser = clap::builder::BoolishValueParser::new())]
        pub metrics_public: bool,
        /// Serve the live dashboard (a read-only web page and its JSON API, /api/...) on this
        /// address, e.g. 127.0.0.1:8080 or a bare port (on 127.0.0.1) [default: off].
        #[arg(long, env = "TAPFLOW_HTTP_LISTEN")]
        pub http_listen: Option<String>,
        /// Allow --http-listen on an address other than loopback (the dashboard, plain HTTP
        /// without TLS nor authentication, is then served to the network) [default: loopback only].
        #[arg(long, env = "TAPFLOW_HTTP_PUBLIC", value_parser = clap::builder::BoolishValueParser::new())]
        pub http_public: bool,
        #[arg(long, help = with_default("Dashboard: the most recent sessions held in memory for its session list and search (about 600 bytes each: the dashboard's memory bound)", http::DEFAULT_SESSIONS))]
        pub http_sessions: Option<usize>,
        /// Dashboard: once the run has ended (--exit-on-eos) and everything is written, keep
        /// serving its final state until SIGINT or SIGTERM.
        #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
        pub http_linger: bool,
        /// The aggregator's CURVE key pair (`tapflow-aggregator keygen --out PREFIX` writes
        /// PREFIX.key, mode 0600); processors are authenticated and their links encrypted.
        #[arg(long, env = "TAPFLOW_CURVE_KEY")]
        pub curve_key: Option<PathBuf>,
        /// The processors allowed to connect: their public keys, one `public = "..."` line each
        /// (concatenated PREFIX.pub files); any other peer is rejected and counted.
        #[arg(long, env = "TAPFLOW_CURVE_CLIENTS")]
        pub curve_clients: Option<PathBuf>,
        /// No encryption nor authentication: allowed only when --listen is loopback
        /// (127.0.0.0/8, ::1, localhost) or ipc://.
        #[arg(long, env = "TAPFLOW_PLAIN", value_parser = clap::builder::BoolishValueParser::new())]
        pub plain: bool,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        #[serde(skip)]
        pub log_json: bool,
        /// Load and validate the configuration as a start would (flags, `--config` file,
        /// environment), print it resolved as TOML and exit: 0 if valid, 2 if not. Opens no socket,
        /// no log and no connection to InfluxDB; credentials are shown only by where they come from
        /// (like `nginx -t`).
        #[arg(long)]
        #[serde(skip)]
        pub check_config: bool,
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: String,
    /// Processors expected: `--processors`, or every member of any epoch of the set.
    pub processors: usize,
    /// The processor-set file and what it held when read.
    pub processor_set: Option<(PathBuf, tapflow_proto::procset::ProcessorSet)>,
    pub exit_on_eos: bool,
    pub health_log: Option<PathBuf>,
    pub conn_log: Option<PathBuf>,
    pub conn_interim_log: Option<PathBuf>,
    pub conn_cap: usize,
    pub max_senders: usize,
    pub alerts_log: Option<PathBuf>,
    pub detect: crate::detect::DetectConfig,
    pub influx: Option<crate::influx::InfluxConfig>,
    pub influx_finish: std::time::Duration,
    pub metrics_listen: Option<String>,
    /// The live dashboard (`--http-listen`), when served.
    pub http: Option<HttpConfig>,
    /// CURVE (or plain, on loopback) on the processors' links.
    pub security: tapflow_runtime::curve::LinkSecurity,
    /// Where processor-set changes are announced to collectors (`--control-listen`).
    pub control_listen: Option<String>,
    /// How processors are declared dead and added back.
    pub membership: crate::control::Policy,
    /// `--state-dir` and the write-ahead log's settings.
    pub durable: DurableConfig,
}

/// The state directory and the write-ahead log (`crate::durable`).
#[derive(Clone, Debug)]
pub struct DurableConfig {
    pub state_dir: Option<PathBuf>,
    pub ack_listen: Option<String>,
    pub wal_max_bytes: u64,
    pub commit_messages: usize,
    pub commit_age: std::time::Duration,
    pub checkpoint_bytes: u64,
    pub checkpoint_age: std::time::Duration,
}

impl Config {
    /// The flags over the file named by `--config` (if any), validated.
    pub fn load(args: Args) -> Result<Config, ConfigError> {
        Config::from_options(options(args)?)
    }

    /// `--check-config`: [`Config::load`], then [`Config::resolved`] with the credentials named
    /// by where they come from (a file's path or an environment variable), never shown.
    pub fn check(args: Args) -> Result<String, ConfigError> {
        let o = options(args)?;
        let password = influx::secret_source(
            o.influx_password_file.clone(),
            "influx_password_file",
            influx::PASSWORD_ENV,
        );
        let token = influx::secret_source(
            o.influx_token_file.clone(),
            "influx_token_file",
            influx::TOKEN_ENV,
        );
        let config = Config::from_options(o)?;
        Ok(config.resolved(&password, &token))
    }

    /// `args` over `file`, validated.
    pub fn merge(args: Args, file: Options) -> Result<Config, ConfigError> {
        Config::from_options(args.options.over(file))
    }

    /// The options resolved: defaults filled in, every problem found reported together.
    pub fn from_options(o: Options) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let influx = influx::influx_config(&o, &mut errors);
        let listen = o.listen.clone().unwrap_or_default();
        tapflow_runtime::config::check_required_endpoint("listen", &listen, &mut errors);
        let (processors, processor_set) = processors(&o, &mut errors);
        let detect = detect_config(&o, &mut errors);
        let membership = membership(&o, &mut errors);
        let durable = durable_config(&o);
        if let Some(c) = &o.control_listen {
            tapflow_runtime::config::check_required_endpoint("control-listen", c, &mut errors);
            if processor_set.is_none() {
                errors.push("--control-listen needs --processor-set".to_owned());
            }
        }
        tapflow_runtime::config::check_metrics_listen(
            o.metrics_listen.as_deref(),
            o.metrics_public,
            &mut errors,
        );
        let http = http::http_config(&o, &mut errors);
        let max_senders = o.max_senders.unwrap_or(DEFAULT_MAX_SENDERS.max(processors));
        if max_senders < processors {
            errors.push(format!(
                "max_senders ({max_senders}) must be at least processors ({processors})"
            ));
        }
        let security = tapflow_runtime::curve::resolve(
            tapflow_runtime::curve::Role {
                server: true,
                client: false,
            },
            &tapflow_runtime::curve::SecuritySettings {
                plain: o.plain,
                key: o.curve_key,
                clients: o.curve_clients,
                server_key: None,
            },
            &[&listen, o.control_listen.as_deref().unwrap_or_default()],
            &mut errors,
        );
        if let Some(ep) = &o.ack_listen {
            tapflow_runtime::config::check_required_endpoint("ack_listen", ep, &mut errors);
        }
        tapflow_runtime::config::finish(errors, || Config {
            durable,
            metrics_listen: o.metrics_listen,
            http,
            listen,
            processors,
            processor_set,
            exit_on_eos: o.exit_on_eos,
            health_log: o.health_log,
            conn_log: o.conn_log,
            conn_interim_log: o.conn_interim_log,
            conn_cap: o.conn_cap.unwrap_or(DEFAULT_CONN_CAP).max(1),
            max_senders,
            alerts_log: o.alerts_log,
            detect,
            influx,
            influx_finish: std::time::Duration::from_secs(
                o.influx_finish_s.unwrap_or(DEFAULT_INFLUX_FINISH_S),
            ),
            security,
            control_listen: o.control_listen,
            membership,
        })
    }
}

/// The membership policy: durations like `10s`, `500ms` or bare seconds.
fn membership(o: &Options, errors: &mut Vec<String>) -> crate::control::Policy {
    use crate::control::{Policy, DEFAULT_DEAD_AFTER_MS, DEFAULT_HOLD_DOWN_MS};
    let mut duration = |name: &str, v: Option<&str>, default_ms: u64| {
        let Some(v) = v else {
            return std::time::Duration::from_millis(default_ms);
        };
        match parse_duration(v) {
            Some(d) if !d.is_zero() => d,
            _ => {
                errors.push(format!("{name} {v:?} is not a duration (e.g. 10s, 500ms)"));
                std::time::Duration::from_millis(default_ms)
            }
        }
    };
    let dead_after = duration(
        "processor_dead_after",
        o.processor_dead_after.as_deref(),
        DEFAULT_DEAD_AFTER_MS,
    );
    let hold_down = duration(
        "processor_hold_down",
        o.processor_hold_down.as_deref(),
        DEFAULT_HOLD_DOWN_MS,
    );
    Policy {
        dead_after,
        hold_down,
        margin_ns: o
            .processor_switch_margin_ms
            .unwrap_or(crate::control::DEFAULT_SWITCH_MARGIN_MS)
            .saturating_mul(1_000_000),
        pinned: o.processor_set_pinned,
    }
}

/// `10s`, `500ms`, `2m` or bare seconds.
fn parse_duration(v: &str) -> Option<std::time::Duration> {
    let v = v.trim();
    let (num, unit_ms) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000)
    } else {
        (v, 1000)
    };
    let n: u64 = num.trim().parse().ok()?;
    Some(std::time::Duration::from_millis(n.checked_mul(unit_ms)?))
}

/// The command line over the file named by `--config`, if any.
fn options(args: Args) -> Result<Options, ConfigError> {
    let config = args.options.config.clone();
    layer_over_file(args.options, config.as_deref())
}

/// Processors expected: `processors`, or every member of the processor set (exactly one).
fn processors(
    o: &Options,
    errors: &mut Vec<String>,
) -> (
    usize,
    Option<(PathBuf, tapflow_proto::procset::ProcessorSet)>,
) {
    let processors = o.processors.unwrap_or(0);
    match &o.processor_set {
        Some(_) if processors > 0 => {
            errors.push("give either processors or processor_set, not both".to_owned())
        }
        Some(path) => match tapflow_runtime::read_processor_set(path, false) {
            Ok(set) => return (set.all_members().len(), Some((path.clone(), set))),
            Err(e) => errors.push(e.to_string()),
        },
        None if processors == 0 => errors
            .push("--processors N (at least 1) or --processor-set FILE is required".to_owned()),
        None => {}
    }
    (processors, None)
}

/// The detection settings: global thresholds, allowed sources and `[[subnet]]` tables.
fn detect_config(o: &Options, errors: &mut Vec<String>) -> DetectConfig {
    let d = DetectConfig::default();
    let allow = tapflow_runtime::config::parse_nets(&o.allow, errors);
    let mut subnets = o.subnet.clone().unwrap_or_default();
    for t in &mut subnets {
        match tapflow_proto::key::parse_net(&t.net) {
            Ok(net) => t.parsed = Some(net),
            Err(e) => errors.push(format!("[[subnet]]: {e}")),
        }
    }
    let detect = DetectConfig {
        subnets,
        window_s: o.detect_window_s.unwrap_or(d.window_s),
        syn_flood_per_min: o.syn_flood_per_min.unwrap_or(d.syn_flood_per_min),
        port_scan_ports: o.port_scan_ports.unwrap_or(d.port_scan_ports),
        address_scan_hosts: o.address_scan_hosts.unwrap_or(d.address_scan_hosts),
        stealth_scan_ports: o.stealth_scan_ports.unwrap_or(d.stealth_scan_ports),
        flood_pps: o.flood_pps.unwrap_or(d.flood_pps),
        reflection_sources: o.reflection_sources.unwrap_or(d.reflection_sources),
        reflection_ports: o.reflection_ports.unwrap_or(d.reflection_ports),
        reflection_port_share_pct: o
            .reflection_port_share_pct
            .unwrap_or(d.reflection_port_share_pct),
        reflection_max_pkts_per_source: o
            .reflection_max_pkts_per_source
            .unwrap_or(d.reflection_max_pkts_per_source),
        peak_interval_ms: o.peak_interval_ms.unwrap_or(d.peak_interval_ms),
        peak_pps: o.peak_pps.unwrap_or(d.peak_pps),
        peak_bps: o.peak_bps.unwrap_or(d.peak_bps),
        new_flows_per_s: o.new_flows_per_s.unwrap_or(d.new_flows_per_s),
        keys_cap: o.detect_keys_cap.unwrap_or(d.keys_cap),
        latency_factor_pct: o.latency_factor_pct.unwrap_or(d.latency_factor_pct),
        latency_min_sessions: o.latency_min_sessions.unwrap_or(d.latency_min_sessions),
        latency_history: o.latency_history.unwrap_or(d.latency_history),
        latency_warmup: o.latency_warmup.unwrap_or(d.latency_warmup),
        latency_caps: crate::latency::Caps {
            samples: o.latency_samples.unwrap_or(d.latency_caps.samples),
            servers: o.latency_servers.unwrap_or(d.latency_caps.servers),
        },
        allow,
        ..d
    };
    if detect.window_s == 0 {
        errors.push("detect_window_s must be at least 1".to_owned());
    }
    if detect.keys_cap == 0 {
        errors.push("detect_keys_cap must be at least 1".to_owned());
    }
    if detect.peak_interval_ms == 0 || detect.peak_interval_ms > 1000 * detect.flood_window_s {
        errors.push("peak_interval_ms must be at least 1 and at most the flood window".to_owned());
    }
    if detect.reflection_ports == 0 || detect.reflection_port_share_pct > 100 {
        errors.push(
            "reflection_ports must be at least 1 and reflection_port_share_pct at most 100"
                .to_owned(),
        );
    }
    latency_checks(&detect, errors);
    detect
}

/// The latency settings that make sense: a factor above 100%, a warm-up within the history.
fn latency_checks(d: &DetectConfig, errors: &mut Vec<String>) {
    let factors = d.subnets.iter().filter_map(|t| t.latency_factor_pct);
    if factors.chain([d.latency_factor_pct]).any(|k| k <= 100) {
        errors.push("latency_factor_pct must be above 100 (the baseline itself)".to_owned());
    }
    if d.latency_warmup == 0 || d.latency_warmup > d.latency_history {
        errors.push(format!(
            "latency_warmup ({}) must be at least 1 and at most latency_history ({})",
            d.latency_warmup, d.latency_history
        ));
    }
    if d.latency_caps.samples == 0 || d.latency_caps.servers == 0 {
        errors.push("latency_samples and latency_servers must be at least 1".to_owned());
    }
}

/// The state directory's settings (`--state-dir`, `--wal-*`), defaults filled in.
fn durable_config(o: &Options) -> DurableConfig {
    DurableConfig {
        state_dir: o.state_dir.clone(),
        ack_listen: o.ack_listen.clone(),
        wal_max_bytes: o.wal_max_bytes.unwrap_or(DEFAULT_WAL_MAX_BYTES),
        commit_messages: o
            .wal_commit_messages
            .unwrap_or(DEFAULT_WAL_COMMIT_MESSAGES)
            .max(1),
        commit_age: std::time::Duration::from_millis(
            o.wal_commit_ms.unwrap_or(DEFAULT_WAL_COMMIT_MS),
        ),
        checkpoint_bytes: o
            .wal_checkpoint_bytes
            .unwrap_or(DEFAULT_WAL_CHECKPOINT_BYTES)
            .max(1),
        checkpoint_age: std::time::Duration::from_secs(
            o.wal_checkpoint_s.unwrap_or(DEFAULT_WAL_CHECKPOINT_S),
        ),
    }
}

#[cfg(test)]
mod tests;
