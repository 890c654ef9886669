//! Aggregator configuration: flags (with `TAPFLOW_*` environment fallbacks) over an optional
//! TOML file.

use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

const EXAMPLES: &str = "Examples:
  # two processors, exit when both have ended, accounting to a JSON-lines file
  tapflow-aggregator --listen tcp://127.0.0.1:5700 --processors 2 --exit-on-eos \\
      --conn-log conn.jsonl --health-log health.jsonl

Exit codes: 0 done, 1 runtime failure (socket, log file), 2 usage or configuration error.";

/// Merges the processors' results, decides anomalies and writes logs.
#[derive(Debug, Parser)]
#[command(name = "tapflow-aggregator", version, after_help = EXAMPLES)]
pub struct Args {
    /// ZeroMQ endpoint to bind for processors.
    #[arg(long, env = "TAPFLOW_LISTEN")]
    pub listen: Option<String>,
    /// Processors feeding this aggregator; with --exit-on-eos, exit once this many have ended.
    #[arg(long, env = "TAPFLOW_PROCESSORS")]
    pub processors: Option<usize>,
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
    /// Sources never reported as scanners (known scanners, monitoring hosts), e.g. 10.0.0.5/32.
    #[arg(long, value_delimiter = ',')]
    pub allow: Vec<String>,
    /// InfluxDB base URL (http://HOST:PORT); with --influx-db for the v1 API, or --influx-org,
    /// --influx-bucket and a token for v2.
    #[arg(long, env = "TAPFLOW_INFLUX_URL")]
    pub influx_url: Option<String>,
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
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub processors: Option<usize>,
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
    pub allow: Option<Vec<String>>,
    pub influx_url: Option<String>,
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
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: String,
    pub processors: usize,
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
        let processors = args.processors.or(file.processors).unwrap_or(0);
        if processors == 0 {
            errors.push("--processors N (at least 1) is required".to_owned());
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
            allow,
            ..d
        };
        let influx_finish = std::time::Duration::from_secs(
            args.influx_finish_s.or(file.influx_finish_s).unwrap_or(30),
        );
        if detect.window_s == 0 {
            errors.push("detect_window_s must be at least 1".to_owned());
        }
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        let metrics_listen = args.metrics_listen.clone().or(file.metrics_listen.clone());
        Ok(Config {
            metrics_listen,
            listen,
            processors,
            exit_on_eos: args.exit_on_eos || file.exit_on_eos.unwrap_or(false),
            health_log: args.health_log.or(file.health_log),
            conn_log: args.conn_log.or(file.conn_log),
            conn_interim_log: args.conn_interim_log.or(file.conn_interim_log),
            conn_cap: args.conn_cap.or(file.conn_cap).unwrap_or(1_000_000).max(1),
            alerts_log: args.alerts_log.or(file.alerts_log),
            detect,
            influx,
            influx_finish,
        })
    }
}

/// The InfluxDB sink's settings, if a URL is given; problems go to `errors`.
fn influx_config(
    args: &Args,
    file: &FileConfig,
    errors: &mut Vec<String>,
) -> Option<crate::influx::InfluxConfig> {
    use crate::influx::{InfluxApi, InfluxConfig};
    let url = args.influx_url.clone().or(file.influx_url.clone())?;
    if !url.starts_with("http://") {
        errors.push(format!("influx_url {url:?} must be http://HOST:PORT (no TLS here: put a local proxy in front of https)"));
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
    if let Some(n) = args.influx_batch_lines.or(file.influx_batch_lines) {
        if n == 0 {
            errors.push("influx_batch_lines must be at least 1".to_owned());
        }
        cfg.batch_lines = n.max(1);
    }
    Some(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_thresholds_come_from_the_file() {
        let args =
            Args::try_parse_from(["a", "--listen", "tcp://127.0.0.1:5700", "--processors", "1"])
                .unwrap_or_else(|e| panic!("{e}"));
        let file: FileConfig = toml::from_str(
            "[[subnet]]\nnet = '10.0.0.0/8'\nsyn_flood_per_min = 1000\n[[subnet]]\nnet = 'bogus'",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let Err(ConfigError(errors)) = Config::merge(args, file) else {
            panic!("accepted a bad network")
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("bogus"));
    }

    #[test]
    fn reports_every_missing_field() {
        let args = Args::try_parse_from(["a"]).unwrap_or_else(|e| panic!("{e}"));
        let Err(ConfigError(errors)) = Config::merge(args, FileConfig::default()) else {
            panic!("accepted an empty config")
        };
        assert_eq!(errors.len(), 2, "{errors:?}");
        let args = Args::try_parse_from(["a", "--listen", "tcp://127.0.0.1:5700"])
            .unwrap_or_else(|e| panic!("{e}"));
        let file: FileConfig = toml::from_str("processors = 3").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Config::merge(args, file).map(|c| c.processors).ok(),
            Some(3)
        );
    }
}
