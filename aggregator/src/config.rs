//! Aggregator configuration: flags (with `TAPFLOW_*` environment fallbacks) over an optional
//! TOML file.

use std::fmt::Write as _;
use std::path::PathBuf;
use tapflow_runtime::{toml_kv as kv, toml_string as toml_str};

use clap::Parser;
use serde::Deserialize;

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
    /// Exit 0 once every processor has sent end-of-stream and everything is written.
    #[arg(long)]
    pub exit_on_eos: bool,
    /// JSON-lines file for pipeline health: the accounting report at end of stream.
    #[arg(long, env = "TAPFLOW_HEALTH_LOG")]
    pub health_log: Option<PathBuf>,
    /// JSON-lines conn log: one final record per session, Zeek's conn.log fields.
    #[arg(long, env = "TAPFLOW_CONN_LOG")]
    pub conn_log: Option<PathBuf>,
    /// JSON-lines log of interim updates of long sessions (same fields).
    #[arg(long)]
    pub conn_interim_log: Option<PathBuf>,
    /// Session records held at most while waiting to write them in order [default: 1000000].
    #[arg(long)]
    pub conn_cap: Option<usize>,
    /// JSON-lines alerts log: one object per alert event (start, update, end of an episode).
    #[arg(long, env = "TAPFLOW_ALERTS_LOG")]
    pub alerts_log: Option<PathBuf>,
    /// Detection window for scans, SYN floods and reflection, seconds [default: 60].
    #[arg(long)]
    pub detect_window_s: Option<u64>,
    /// Unanswered SYNs per minute to one victim that make a SYN flood [default: 256].
    #[arg(long)]
    pub syn_flood_per_min: Option<u64>,
    /// Distinct failed ports from one source to one host that make a port scan [default: 15].
    #[arg(long)]
    pub port_scan_ports: Option<usize>,
    /// Distinct hosts failing on one port from one source that make an address scan [default: 25].
    #[arg(long)]
    pub address_scan_hosts: Option<usize>,
    /// Packets per second to one victim (averaged over 5 s) that make a volumetric flood [default: 20000].
    #[arg(long)]
    pub flood_pps: Option<u64>,
    /// Keys (sources, victims, ...) tracked per detection window and kind; past it new keys are
    /// counted as cap_hits. About 100 bytes each: the aggregator's detection memory bound
    /// [default: 1000000].
    #[arg(long)]
    pub detect_keys_cap: Option<usize>,
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
    /// Where points wait while InfluxDB is unreachable [default: $TMPDIR/tapflow-influx-spool].
    #[arg(long)]
    pub influx_spool_dir: Option<PathBuf>,
    /// Lines per write request [default: 5000].
    #[arg(long)]
    pub influx_batch_lines: Option<usize>,
    /// At exit, how long to keep trying to write what is spooled, seconds [default: 30].
    #[arg(long)]
    pub influx_finish_s: Option<u64>,
    /// TOML file with any of these settings; flags given on the command line win.
    #[arg(long, env = "TAPFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9603 [default: off].
    #[arg(long, env = "TAPFLOW_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
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
    pub log_json: bool,
    /// Load and validate the configuration as a start would (flags, `--config` file,
    /// environment), print it resolved as TOML and exit: 0 if valid, 2 if not. Opens no socket,
    /// no log and no connection to InfluxDB; credentials are shown only by where they come from
    /// (like `nginx -t`).
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub processors: Option<usize>,
    pub processor_set: Option<PathBuf>,
    pub exit_on_eos: Option<bool>,
    pub health_log: Option<PathBuf>,
    pub conn_log: Option<PathBuf>,
    pub conn_interim_log: Option<PathBuf>,
    pub conn_cap: Option<usize>,
    pub alerts_log: Option<PathBuf>,
    pub detect_window_s: Option<u64>,
    pub syn_flood_per_min: Option<u64>,
    pub port_scan_ports: Option<usize>,
    pub address_scan_hosts: Option<usize>,
    pub flood_pps: Option<u64>,
    pub detect_keys_cap: Option<usize>,
    pub allow: Option<Vec<String>>,
    pub influx_url: Option<String>,
    pub influx_ca_file: Option<PathBuf>,
    pub influx_db: Option<String>,
    pub influx_rp: Option<String>,
    pub influx_user: Option<String>,
    pub influx_password_file: Option<PathBuf>,
    pub influx_org: Option<String>,
    pub influx_bucket: Option<String>,
    pub influx_token_file: Option<PathBuf>,
    pub influx_spool_dir: Option<PathBuf>,
    pub influx_batch_lines: Option<usize>,
    pub influx_finish_s: Option<u64>,
    /// `[[subnet]]` tables: per-network thresholds (see `detect::SubnetThresholds`).
    pub subnet: Option<Vec<crate::detect::SubnetThresholds>>,
    pub metrics_listen: Option<String>,
    pub curve_key: Option<PathBuf>,
    pub curve_clients: Option<PathBuf>,
    pub plain: Option<bool>,
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
    pub alerts_log: Option<PathBuf>,
    pub detect: crate::detect::DetectConfig,
    pub influx: Option<crate::influx::InfluxConfig>,
    pub influx_finish: std::time::Duration,
    pub metrics_listen: Option<String>,
    /// CURVE (or plain, on loopback) on the processors' links.
    pub security: tapflow_runtime::curve::LinkSecurity,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    pub fn load(args: Args) -> Result<Config, ConfigError> {
        let file = tapflow_runtime::read_config(args.config.as_deref())
            .map_err(|e| ConfigError(vec![e]))?;
        Config::merge(args, file)
    }

    /// `--check-config`: [`Config::load`], then [`Config::resolved`] with the credentials named
    /// by where they come from (a file's path or an environment variable), never shown.
    pub fn check(args: Args) -> Result<String, ConfigError> {
        let file: FileConfig = tapflow_runtime::read_config(args.config.as_deref())
            .map_err(|e| ConfigError(vec![e]))?;
        let password = secret_source(
            args.influx_password_file
                .clone()
                .or(file.influx_password_file.clone()),
            "influx_password_file",
            "TAPFLOW_INFLUX_PASSWORD",
        );
        let token = secret_source(
            args.influx_token_file
                .clone()
                .or(file.influx_token_file.clone()),
            "influx_token_file",
            "TAPFLOW_INFLUX_TOKEN",
        );
        let config = Config::merge(args, file)?;
        Ok(config.resolved(&password, &token))
    }

    pub fn merge(args: Args, file: FileConfig) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let influx = influx_config(&args, &file, &mut errors);
        let listen = args.listen.or(file.listen).unwrap_or_default();
        if listen.is_empty() {
            errors.push("--listen ENDPOINT is required".to_owned());
        } else if !(listen.starts_with("tcp://")
            || listen.starts_with("ipc://")
            || listen.starts_with("inproc://"))
        {
            errors.push(format!("listen endpoint {listen:?} is not a ZeroMQ endpoint (tcp://HOST:PORT or ipc://PATH)"));
        }
        let mut processors = args.processors.or(file.processors).unwrap_or(0);
        let mut processor_set = None;
        match args.processor_set.or(file.processor_set) {
            Some(_) if processors > 0 => {
                errors.push("give either processors or processor_set, not both".to_owned())
            }
            Some(path) => match tapflow_runtime::read_processor_set(&path, false) {
                Ok(set) => {
                    processors = set.all_members().len();
                    processor_set = Some((path, set));
                }
                Err(e) => errors.push(e),
            },
            None if processors == 0 => errors
                .push("--processors N (at least 1) or --processor-set FILE is required".to_owned()),
            None => {}
        }
        let d = crate::detect::DetectConfig::default();
        let allow_nets = if args.allow.is_empty() {
            file.allow.unwrap_or_default()
        } else {
            args.allow
        };
        let mut allow = Vec::new();
        for n in &allow_nets {
            match tapflow_proto::key::parse_net(n) {
                Ok(net) => allow.push(net),
                Err(e) => errors.push(e),
            }
        }
        let mut subnets = file.subnet.unwrap_or_default();
        for t in &mut subnets {
            match tapflow_proto::key::parse_net(&t.net) {
                Ok(net) => t.parsed = Some(net),
                Err(e) => errors.push(format!("[[subnet]]: {e}")),
            }
        }
        let detect = crate::detect::DetectConfig {
            subnets,
            window_s: args
                .detect_window_s
                .or(file.detect_window_s)
                .unwrap_or(d.window_s),
            syn_flood_per_min: args
                .syn_flood_per_min
                .or(file.syn_flood_per_min)
                .unwrap_or(d.syn_flood_per_min),
            port_scan_ports: args
                .port_scan_ports
                .or(file.port_scan_ports)
                .unwrap_or(d.port_scan_ports),
            address_scan_hosts: args
                .address_scan_hosts
                .or(file.address_scan_hosts)
                .unwrap_or(d.address_scan_hosts),
            flood_pps: args.flood_pps.or(file.flood_pps).unwrap_or(d.flood_pps),
            keys_cap: args
                .detect_keys_cap
                .or(file.detect_keys_cap)
                .unwrap_or(d.keys_cap),
            allow,
            ..d
        };
        let influx_finish = std::time::Duration::from_secs(
            args.influx_finish_s.or(file.influx_finish_s).unwrap_or(30),
        );
        if detect.window_s == 0 {
            errors.push("detect_window_s must be at least 1".to_owned());
        }
        if detect.keys_cap == 0 {
            errors.push("detect_keys_cap must be at least 1".to_owned());
        }
        let security = tapflow_runtime::curve::resolve(
            tapflow_runtime::curve::Role {
                server: true,
                client: false,
            },
            &tapflow_runtime::curve::SecuritySettings {
                plain: args.plain || file.plain.unwrap_or(false),
                key: args.curve_key.or(file.curve_key),
                clients: args.curve_clients.or(file.curve_clients),
                server_key: None,
            },
            &[&listen],
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        let metrics_listen = args.metrics_listen.clone().or(file.metrics_listen.clone());
        Ok(Config {
            metrics_listen,
            listen,
            processors,
            processor_set,
            exit_on_eos: args.exit_on_eos || file.exit_on_eos.unwrap_or(false),
            health_log: args.health_log.or(file.health_log),
            conn_log: args.conn_log.or(file.conn_log),
            conn_interim_log: args.conn_interim_log.or(file.conn_interim_log),
            conn_cap: args.conn_cap.or(file.conn_cap).unwrap_or(1_000_000).max(1),
            alerts_log: args.alerts_log.or(file.alerts_log),
            detect,
            influx,
            influx_finish,
            security,
        })
    }
}

impl Config {
    /// The settings `run` works from, defaults included, as a TOML config file with the file's
    /// key names (one `key = value` per line; unset options as comments). `password` and
    /// `token` are the lines that say where the credentials come from (see [`Config::check`]);
    /// the credentials themselves are never part of it.
    pub fn resolved(&self, password: &str, token: &str) -> String {
        let mut out = String::new();
        kv(&mut out, "listen", toml_str(&self.listen));
        match &self.processor_set {
            Some((path, set)) => tapflow_runtime::toml_processor_set(&mut out, path, set),
            None => kv(&mut out, "processors", self.processors),
        }
        kv(&mut out, "exit_on_eos", self.exit_on_eos);
        for (key, path) in [
            ("health_log", &self.health_log),
            ("conn_log", &self.conn_log),
            ("conn_interim_log", &self.conn_interim_log),
            ("alerts_log", &self.alerts_log),
        ] {
            match path {
                Some(p) => kv(&mut out, key, toml_str(&p.to_string_lossy())),
                None => {
                    let _ = writeln!(out, "# {key}: not written");
                }
            }
        }
        kv(&mut out, "conn_cap", self.conn_cap);
        let d = &self.detect;
        kv(&mut out, "detect_window_s", d.window_s);
        kv(&mut out, "syn_flood_per_min", d.syn_flood_per_min);
        kv(&mut out, "port_scan_ports", d.port_scan_ports);
        kv(&mut out, "address_scan_hosts", d.address_scan_hosts);
        kv(&mut out, "flood_pps", d.flood_pps);
        kv(&mut out, "detect_keys_cap", d.keys_cap);
        kv(&mut out, "allow", nets(&d.allow));
        match &self.influx {
            Some(i) => {
                use crate::influx::InfluxApi;
                kv(&mut out, "influx_url", toml_str(&i.url));
                match &i.ca_file {
                    Some(p) => kv(&mut out, "influx_ca_file", toml_str(&p.to_string_lossy())),
                    None if i.url.starts_with("https://") => {
                        out.push_str("# influx_ca_file: the system's CA roots\n");
                    }
                    None => {}
                }
                match &i.api {
                    InfluxApi::V1 { db, rp, user, .. } => {
                        kv(&mut out, "influx_db", toml_str(db));
                        match rp {
                            Some(rp) => kv(&mut out, "influx_rp", toml_str(rp)),
                            None => out.push_str("# influx_rp: the database's default\n"),
                        }
                        if let Some(user) = user {
                            kv(&mut out, "influx_user", toml_str(user));
                        }
                        out.push_str(password);
                    }
                    InfluxApi::V2 { org, bucket, .. } => {
                        kv(&mut out, "influx_org", toml_str(org));
                        kv(&mut out, "influx_bucket", toml_str(bucket));
                        out.push_str(token);
                    }
                }
                kv(
                    &mut out,
                    "influx_spool_dir",
                    toml_str(&i.spool_dir.to_string_lossy()),
                );
                kv(&mut out, "influx_batch_lines", i.batch_lines);
                kv(&mut out, "influx_finish_s", self.influx_finish.as_secs());
            }
            None => out.push_str("# influx_url: InfluxDB not written\n"),
        }
        match &self.metrics_listen {
            Some(m) => kv(&mut out, "metrics_listen", toml_str(m)),
            None => out.push_str("# metrics_listen: off\n"),
        }
        out.push_str(&self.security.resolved());
        for t in &d.subnets {
            out.push_str("\n[[subnet]]\n");
            kv(&mut out, "net", toml_str(&t.net));
            let thresholds = [
                ("port_scan_ports", t.port_scan_ports.map(|v| v as u64)),
                ("address_scan_hosts", t.address_scan_hosts.map(|v| v as u64)),
                ("stealth_scan_ports", t.stealth_scan_ports.map(|v| v as u64)),
                ("syn_flood_per_min", t.syn_flood_per_min),
                ("reflection_sources", t.reflection_sources.map(|v| v as u64)),
                ("flood_pps", t.flood_pps),
            ];
            for (key, v) in thresholds {
                if let Some(v) = v {
                    kv(&mut out, key, v);
                }
            }
        }
        out
    }
}

/// The line of [`Config::resolved`] that says where a credential comes from: `key = "PATH"`
/// for a file, a comment naming `env` when it is set there, nothing otherwise.
fn secret_source(path: Option<PathBuf>, key: &str, env: &str) -> String {
    match path {
        Some(p) => format!("{key} = {}\n", toml_str(&p.to_string_lossy())),
        None if std::env::var_os(env).is_some_and(|v| !v.is_empty()) => {
            format!("# {key}: not set; the credential comes from {env}\n")
        }
        None => String::new(),
    }
}

fn nets(nets: &[(tapflow_proto::Addr, u8)]) -> String {
    let nets: Vec<String> = nets
        .iter()
        .map(|(addr, len)| toml_str(&format!("{addr}/{len}")))
        .collect();
    format!("[{}]", nets.join(", "))
}

/// The InfluxDB sink's settings, if a URL is given; problems go to `errors`.
fn influx_config(
    args: &Args,
    file: &FileConfig,
    errors: &mut Vec<String>,
) -> Option<crate::influx::InfluxConfig> {
    use crate::influx::{InfluxApi, InfluxConfig};
    let url = args.influx_url.clone().or(file.influx_url.clone())?;
    if let Err(e) = crate::influx::check_url(&url) {
        errors.push(e.to_string());
    }
    let ca_file = args.influx_ca_file.clone().or(file.influx_ca_file.clone());
    if let Some(p) = &ca_file {
        if !url.starts_with("https://") {
            errors.push("influx_ca_file is for an https:// influx_url".to_owned());
        } else if let Err(e) = crate::influx::load_ca_file(p) {
            errors.push(e.to_string());
        }
    }
    let secret = |path: Option<PathBuf>,
                  env: &str,
                  what: &str,
                  errors: &mut Vec<String>|
     -> Option<String> {
        match path {
            Some(p) => match std::fs::read_to_string(&p) {
                Ok(s) => Some(s.trim().to_owned()),
                Err(e) => {
                    errors.push(format!(
                        "cannot read the InfluxDB {what} file {}: {e}",
                        p.display()
                    ));
                    None
                }
            },
            None => std::env::var(env).ok().filter(|s| !s.is_empty()),
        }
    };
    let db = args.influx_db.clone().or(file.influx_db.clone());
    let (org, bucket) = (
        args.influx_org.clone().or(file.influx_org.clone()),
        args.influx_bucket.clone().or(file.influx_bucket.clone()),
    );
    let api = match (db, org, bucket) {
        (Some(db), None, None) => InfluxApi::V1 {
            db,
            rp: args.influx_rp.clone().or(file.influx_rp.clone()),
            user: args.influx_user.clone().or(file.influx_user.clone()),
            password: secret(
                args.influx_password_file
                    .clone()
                    .or(file.influx_password_file.clone()),
                "TAPFLOW_INFLUX_PASSWORD",
                "password",
                errors,
            ),
        },
        (None, Some(org), Some(bucket)) => {
            let token = secret(
                args.influx_token_file
                    .clone()
                    .or(file.influx_token_file.clone()),
                "TAPFLOW_INFLUX_TOKEN",
                "token",
                errors,
            );
            if token.is_none() {
                errors.push("the InfluxDB v2 API needs a token: --influx-token-file or TAPFLOW_INFLUX_TOKEN".to_owned());
            }
            InfluxApi::V2 {
                org,
                bucket,
                token: token.unwrap_or_default(),
            }
        }
        _ => {
            errors.push("with --influx-url give either --influx-db (v1) or --influx-org and --influx-bucket (v2)".to_owned());
            return None;
        }
    };
    let spool = args
        .influx_spool_dir
        .clone()
        .or(file.influx_spool_dir.clone())
        .unwrap_or_else(|| std::env::temp_dir().join("tapflow-influx-spool"));
    let mut cfg = InfluxConfig::new(url, api, spool);
    cfg.ca_file = ca_file;
    if let Some(n) = args.influx_batch_lines.or(file.influx_batch_lines) {
        if n == 0 {
            errors.push("influx_batch_lines must be at least 1".to_owned());
        }
        cfg.batch_lines = n.max(1);
    }
    Some(cfg)
}

#[cfg(test)]
mod tests;
