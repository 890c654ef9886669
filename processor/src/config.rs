//! Processor configuration: flags (with `TAPFLOW_*` environment fallbacks) over an optional TOML
//! file.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;
use tapflow_runtime::{toml_kv as kv, toml_string as toml_str};

use clap::Parser;
use serde::Deserialize;
use tapflow_proto::procset::ProcessorSet;
use tapflow_proto::upstream::ShardClaim;
use tapflow_proto::Addr;

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
    /// ZeroMQ endpoint to bind for collectors.
    #[arg(long, env = "TAPFLOW_LISTEN")]
    pub listen: Option<String>,
    /// The aggregator's ZeroMQ endpoint.
    #[arg(long, env = "TAPFLOW_AGGREGATOR")]
    pub aggregator: Option<String>,
    /// Collectors feeding this processor; with --exit-on-eos, exit once this many have ended [default: 1].
    #[arg(long, env = "TAPFLOW_COLLECTORS")]
    pub collectors: Option<usize>,
    /// Exit 0 once every collector has sent end-of-stream and everything is flushed.
    #[arg(long)]
    pub exit_on_eos: bool,
    /// TOML file with any of these settings; flags given on the command line win.
    #[arg(long, env = "TAPFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// This processor's name in reports [default: host:listen:pid].
    #[arg(long, env = "TAPFLOW_NAME")]
    pub name: Option<String>,
    /// The shard this processor serves, as EPOCH/N/INDEX; by default the first claim received.
    #[arg(long, value_parser = parse_claim)]
    pub shard: Option<ShardClaim>,
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
    /// Heartbeat period towards the aggregator in milliseconds [default: 1000].
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// A collector silent this long (ms) is declared dead and leaves the watermark; collectors
    /// that never appear are waited for this long [default: 10000].
    #[arg(long)]
    pub dead_after_ms: Option<u64>,
    /// Connections tracked at most; past it the one closest to its timeout is evicted and
    /// counted [default: 1000000].
    #[arg(long)]
    pub max_flows: Option<usize>,
    /// Summaries buffered at most while merging collectors in time order [default: 1000000].
    #[arg(long)]
    pub merge_cap: Option<usize>,
    /// Local networks for `local_orig`/`local_resp`, e.g. 10.0.0.0/8,2001:db8::/32 [default:
    /// none, and the two fields are left out].
    #[arg(long, value_delimiter = ',')]
    pub local_nets: Vec<String>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9602 [default: off].
    #[arg(long, env = "TAPFLOW_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
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
    pub log_json: bool,
    /// Load and validate the configuration as a start would (flags, `--config` file,
    /// environment), print it resolved as TOML and exit: 0 if valid, 2 if not. Binds no socket
    /// (like `nginx -t`).
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub aggregator: Option<String>,
    pub collectors: Option<usize>,
    pub exit_on_eos: Option<bool>,
    pub name: Option<String>,
    pub shard: Option<String>,
    pub processor_set: Option<PathBuf>,
    pub id: Option<u16>,
    pub heartbeat_ms: Option<u64>,
    pub dead_after_ms: Option<u64>,
    pub max_flows: Option<usize>,
    pub merge_cap: Option<usize>,
    pub local_nets: Option<Vec<String>>,
    pub metrics_listen: Option<String>,
    pub curve_key: Option<PathBuf>,
    pub curve_clients: Option<PathBuf>,
    pub curve_server_key: Option<PathBuf>,
    pub plain: Option<bool>,
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
    pub heartbeat: Duration,
    pub dead_after: Duration,
    pub max_flows: usize,
    pub merge_cap: usize,
    pub local_nets: Vec<(Addr, u8)>,
    pub metrics_listen: Option<String>,
    /// CURVE (or plain, on loopback) on both links.
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

    /// `--check-config`: [`Config::load`], then [`Config::resolved`].
    pub fn check(args: Args) -> Result<String, ConfigError> {
        Config::load(args).map(|c| c.resolved())
    }

    pub fn merge(args: Args, file: FileConfig) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let listen = args.listen.or(file.listen).unwrap_or_default();
        let aggregator = args.aggregator.or(file.aggregator).unwrap_or_default();
        for (what, ep) in [("listen", &listen), ("aggregator", &aggregator)] {
            if ep.is_empty() {
                errors.push(format!("--{what} ENDPOINT is required"));
            } else if !is_endpoint(ep) {
                errors.push(format!("{what} endpoint {ep:?} is not a ZeroMQ endpoint (tcp://HOST:PORT or ipc://PATH)"));
            }
        }
        let collectors = args.collectors.or(file.collectors).unwrap_or(1);
        if collectors == 0 {
            errors.push("collectors must be at least 1".to_owned());
        }
        let shard = match (args.shard, file.shard) {
            (Some(c), _) => Some(c),
            (None, Some(s)) => match parse_claim(&s) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            (None, None) => None,
        };
        let processor_set = match (
            args.processor_set.or(file.processor_set),
            args.id.or(file.id),
        ) {
            (Some(_), _) if shard.is_some() => {
                errors.push("give either shard or processor_set, not both".to_owned());
                None
            }
            (Some(path), Some(id)) => match tapflow_runtime::read_processor_set(&path, false) {
                Ok(set) if set.all_members().contains(&id) => Some((path, set, id)),
                Ok(_) => {
                    errors.push(format!(
                        "id {id} is not a member of any epoch of processor set {}",
                        path.display()
                    ));
                    None
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            (Some(_), None) => {
                errors.push("processor_set needs this processor's id (--id N)".to_owned());
                None
            }
            (None, Some(_)) => {
                errors.push("id is only meaningful with processor_set".to_owned());
                None
            }
            (None, None) => None,
        };
        let heartbeat_ms = args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(1000);
        if heartbeat_ms == 0 {
            errors.push("heartbeat_ms must be at least 1".to_owned());
        }
        let max_flows = args.max_flows.or(file.max_flows).unwrap_or(1_000_000);
        let merge_cap = args.merge_cap.or(file.merge_cap).unwrap_or(1_000_000);
        if max_flows == 0 || merge_cap == 0 {
            errors.push("max_flows and merge_cap must be at least 1".to_owned());
        }
        let nets = if args.local_nets.is_empty() {
            file.local_nets.unwrap_or_default()
        } else {
            args.local_nets
        };
        let mut local_nets = Vec::new();
        for n in &nets {
            match tapflow_proto::key::parse_net(n) {
                Ok(net) => local_nets.push(net),
                Err(e) => errors.push(e),
            }
        }
        let security = tapflow_runtime::curve::resolve(
            tapflow_runtime::curve::Role {
                server: true,
                client: true,
            },
            &tapflow_runtime::curve::SecuritySettings {
                plain: args.plain || file.plain.unwrap_or(false),
                key: args.curve_key.or(file.curve_key),
                clients: args.curve_clients.or(file.curve_clients),
                server_key: args.curve_server_key.or(file.curve_server_key),
            },
            &[&listen, &aggregator],
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        let name = args
            .name
            .or(file.name)
            .unwrap_or_else(|| default_name(&listen));
        let metrics_listen = args.metrics_listen.clone().or(file.metrics_listen.clone());
        Ok(Config {
            metrics_listen,
            listen,
            aggregator,
            collectors,
            exit_on_eos: args.exit_on_eos || file.exit_on_eos.unwrap_or(false),
            name,
            shard,
            processor_set,
            heartbeat: Duration::from_millis(heartbeat_ms),
            dead_after: Duration::from_millis(
                args.dead_after_ms
                    .or(file.dead_after_ms)
                    .unwrap_or(10_000)
                    .max(1),
            ),
            max_flows,
            merge_cap,
            local_nets,
            security,
        })
    }
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
        kv(&mut out, "heartbeat_ms", self.heartbeat.as_millis());
        kv(&mut out, "dead_after_ms", self.dead_after.as_millis());
        kv(&mut out, "max_flows", self.max_flows);
        kv(&mut out, "merge_cap", self.merge_cap);
        let nets: Vec<String> = self
            .local_nets
            .iter()
            .map(|(addr, len)| toml_str(&format!("{addr}/{len}")))
            .collect();
        kv(&mut out, "local_nets", format!("[{}]", nets.join(", ")));
        match &self.metrics_listen {
            Some(m) => kv(&mut out, "metrics_listen", toml_str(m)),
            None => out.push_str("# metrics_listen: off\n"),
        }
        out.push_str(&self.security.resolved());
        out
    }
}

fn default_name(listen: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{listen}:{}", std::process::id())
}

fn is_endpoint(ep: &str) -> bool {
    ep.starts_with("tcp://") || ep.starts_with("ipc://") || ep.starts_with("inproc://")
}

fn parse_claim(s: &str) -> Result<ShardClaim, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let bad = || format!("shard {s:?} is not EPOCH/N/INDEX with INDEX < N (e.g. 1/3/0)");
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
mod tests {
    use super::*;

    fn check(argv: &[&str], want_errors: &[&str]) {
        let args = Args::try_parse_from(std::iter::once("p").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
        match Config::merge(args, FileConfig::default()) {
            Ok(_) => assert!(want_errors.is_empty(), "expected errors {want_errors:?}"),
            Err(ConfigError(got)) => {
                assert_eq!(got.len(), want_errors.len(), "{got:?}");
                for w in want_errors {
                    assert!(
                        got.iter().any(|g| g.contains(w)),
                        "missing {w:?} in {got:?}"
                    );
                }
            }
        }
    }

    /// [`Config::load`] with `argv` and a config file holding `toml`.
    fn load(argv: &[&str], toml: &str) -> Config {
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "tapflow-processor-config-{}-{n}.toml",
            std::process::id()
        ));
        std::fs::write(&path, toml).unwrap_or_else(|e| panic!("{e}"));
        let name = path.display().to_string();
        let args = ["p", "--config", &name]
            .into_iter()
            .chain(argv.iter().copied());
        let args = Args::try_parse_from(args).unwrap_or_else(|e| panic!("{e}"));
        let config = Config::load(args);
        let _ = std::fs::remove_file(&path);
        config.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn resolved_config_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (key, public, _) = tapflow_runtime::curve::keygen("test", &dir.path().join("k"))
            .unwrap_or_else(|e| panic!("{e}"));
        let (key, public) = (key.display().to_string(), public.display().to_string());
        let file = format!(
            "listen = 'tcp://0.0.0.0:5601'\naggregator = 'tcp://127.0.0.1:5700'\n\
             shard = '1/2/1'\nlocal_nets = ['10.0.0.0/8', 'fc00::/7']\n\
             curve_key = '{key}'\ncurve_clients = '{public}'\ncurve_server_key = '{public}'"
        );
        let file = file.as_str();
        let text = load(
            &[
                "--listen",
                "tcp://0.0.0.0:5602",
                "--name",
                "sensor:processor2",
            ],
            file,
        )
        .resolved();
        for want in [
            "listen = \"tcp://0.0.0.0:5602\"",
            "aggregator = \"tcp://127.0.0.1:5700\"",
            "name = \"sensor:processor2\"",
            "shard = \"1/2/1\"",
            "local_nets = [\"10.0.0.0/8\", \"fc00::/7\"]",
            "max_flows = 1000000",
            "# metrics_listen: off",
            "plain = false",
            &format!("curve_key = \"{key}\""),
            &format!("curve_clients = \"{public}\""),
            &format!("curve_server_key = \"{public}\""),
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing {want:?} in\n{text}"
            );
        }
        assert_eq!(load(&[], &text).resolved(), text);
    }

    #[test]
    fn validates_all_fields_together() {
        check(
            &[
                "--listen",
                "tcp://127.0.0.1:1",
                "--aggregator",
                "tcp://127.0.0.1:2",
                "--plain",
            ],
            &[],
        );
        check(
            &[
                "--listen",
                "tcp://0.0.0.0:1",
                "--aggregator",
                "tcp://127.0.0.1:2",
                "--plain",
            ],
            &["--plain is for loopback only, and tcp://0.0.0.0:1 is not"],
        );
        check(
            &["--collectors", "0"],
            &[
                "--listen",
                "--aggregator",
                "collectors must",
                "links are encrypted: give --curve-key FILE and --curve-clients FILE and --curve-server-key FILE",
            ],
        );
        check(
            &[
                "--listen",
                "http://x",
                "--aggregator",
                "tcp://a:1",
                "--shard",
                "1/2/0",
            ],
            &["not a ZeroMQ endpoint", "links are encrypted"],
        );
        assert!(Args::try_parse_from(["p", "--shard", "1/2/2"]).is_err());
    }

    #[test]
    fn a_processor_set_needs_a_member_id() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let set = dir.path().join("set.toml");
        std::fs::write(
            &set,
            "initial = [0, 1]\n[[change]]\nadd = 2\nswitch_at = 1700000000\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let path = set.display().to_string();
        let base = [
            "p",
            "--listen",
            "tcp://127.0.0.1:1",
            "--aggregator",
            "tcp://127.0.0.1:2",
            "--plain",
        ];
        let load = |extra: &[&str]| {
            let args = Args::try_parse_from(base.iter().chain(extra).copied())
                .unwrap_or_else(|e| panic!("{e}"));
            Config::merge(args, FileConfig::default())
        };
        // id 2 joins at the change: a member of some epoch, so it may start before its switch.
        let config =
            load(&["--processor-set", &path, "--id", "2"]).unwrap_or_else(|e| panic!("{e:?}"));
        let (_, loaded, id) = config
            .processor_set
            .as_ref()
            .unwrap_or_else(|| panic!("no set"));
        assert_eq!((loaded.epochs().len(), *id), (2, 2));
        assert!(config.resolved().contains("id = 2"));
        let err = load(&["--processor-set", &path, "--id", "3"]).expect_err("not a member");
        assert!(
            err.0.iter().any(|e| e.contains("id 3 is not a member")),
            "{err:?}"
        );
        // --id is required with a set, and a set excludes --shard.
        assert!(Args::try_parse_from(
            base.iter()
                .chain(&["--processor-set", path.as_str()])
                .copied()
        )
        .is_err());
        assert!(Args::try_parse_from(
            base.iter()
                .chain(&[
                    "--processor-set",
                    path.as_str(),
                    "--id",
                    "0",
                    "--shard",
                    "1/2/0"
                ])
                .copied()
        )
        .is_err());
    }
}
