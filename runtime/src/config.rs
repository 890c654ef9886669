//! The configuration layer every binary shares: one options struct per binary is both its clap
//! flags (with `TAPFLOW_*` environment fallbacks) and its TOML file, declared with [`layered!`](crate::layered);
//! the command line (and environment) is laid over the file by [`Layer::over`], field by field,
//! and the binary resolves the result into the config its run reads, every problem collected
//! in one [`ConfigError`].
//!
//! Precedence, for every option: command line, then its environment variable (clap reads it),
//! then the `--config` file, then the default (a named constant of the binary, shown in
//! `--help` with [`with_default`]). A switch (`bool`) is on when any layer turns it on.
//!
//! To add an option to a binary: one field in its `Options` (in `<crate>/src/config.rs`), typed
//! `Option<T>` (or `Vec<T>` for a list, `bool` for a switch), with `#[arg(long)]` (plus
//! `env = "TAPFLOW_..."` if it has a variable) and a doc comment or
//! `help = with_default(TEXT, DEFAULT_X)`; then read it where `Config::from_options` resolves
//! the options (`o.x.unwrap_or(DEFAULT_X)`), and print it in `Config::resolved` so
//! `--check-config` shows it. The flag (`--x-y`), the TOML key (`x_y`) and the layering come
//! from the field. Fields for the command line only carry `#[serde(skip)]`, fields for the file
//! only `#[arg(skip)]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::de::DeserializeOwned;

/// Every problem found in a configuration, one line each.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

/// A config file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ReadConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Only the position and the parser's message: never the offending line, which could be a
    /// secret (a password file given as `--config` by mistake).
    #[error("config file {}: line {line}, column {column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// A processor-set file that cannot be read or replayed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorSetFileError {
    #[error("cannot read processor set {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("processor set {}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        source: tapflow_proto::procset::SetError,
    },
}

/// Callers that keep errors as text (`?` into a `String` error) still compile.
/// One layer of options laid over a lower one: a value given here wins, a value left unset
/// (`None`, an empty list) falls through, a switch is on if either layer sets it.
pub trait Layer {
    fn over(self, lower: Self) -> Self;
}

impl<T> Layer for Option<T> {
    fn over(self, lower: Self) -> Self {
        self.or(lower)
    }
}

impl<T> Layer for Vec<T> {
    fn over(self, lower: Self) -> Self {
        if self.is_empty() {
            lower
        } else {
            self
        }
    }
}

impl Layer for bool {
    fn over(self, lower: Self) -> Self {
        self || lower
    }
}

/// Declares a binary's options struct once and derives [`Layer`] for it, field by field. The
/// struct carries its own clap and serde attributes (`#[derive(clap::Args, Deserialize)]`,
/// `#[serde(default, deny_unknown_fields)]`, `#[arg(long, env = ...)]`), so each option's
/// flag, environment variable and TOML key come from its one field.
#[macro_export]
macro_rules! layered {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field : $ty ),*
        }

        impl $crate::config::Layer for $name {
            fn over(self, lower: Self) -> Self {
                Self {
                    $( $field: $crate::config::Layer::over(self.$field, lower.$field) ),*
                }
            }
        }
    };
}

/// `cli` (command line and environment) over the TOML file at `file`, if any.
pub fn layer_over_file<T>(cli: T, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Layer + DeserializeOwned + Default,
{
    let file: T = read_config(file).map_err(|e| ConfigError(vec![e.to_string()]))?;
    Ok(cli.over(file))
}

/// An option's help text with its default: `TEXT [default: VALUE]` (as clap shows a doc comment:
/// no final period).
pub fn with_default(text: &str, default: impl std::fmt::Display) -> String {
    format!("{text} [default: {default}]")
}

/// The settings of a TOML config file, or the defaults without one; a clear one-line error
/// naming the file otherwise.
pub fn read_config<T: DeserializeOwned + Default>(
    path: Option<&Path>,
) -> Result<T, ReadConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ReadConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| {
        let (line, column) = line_column(&text, e.span().map_or(0, |s| s.start));
        ReadConfigError::Parse {
            path: path.to_owned(),
            line,
            column,
            message: e.message().split_whitespace().collect::<Vec<_>>().join(" "),
        }
    })
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// Reads and replays a processor-set file; the error names the file.
pub fn read_processor_set(
    path: &Path,
    need_endpoints: bool,
) -> Result<tapflow_proto::procset::ProcessorSet, ProcessorSetFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProcessorSetFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    tapflow_proto::procset::ProcessorSet::parse(&text, need_endpoints).map_err(|source| {
        ProcessorSetFileError::Invalid {
            path: path.to_owned(),
            source,
        }
    })
}

/// `tcp://`, `ipc://` or `inproc://`.
pub fn is_zmq_endpoint(ep: &str) -> bool {
    ep.starts_with("tcp://") || ep.starts_with("ipc://") || ep.starts_with("inproc://")
}

/// The problem with `ep`, an endpoint the binary names `what`, if it is not a ZeroMQ one.
pub fn endpoint_problem(what: &str, ep: &str) -> Option<String> {
    (!is_zmq_endpoint(ep)).then(|| {
        format!("{what} endpoint {ep:?} is not a ZeroMQ endpoint (tcp://HOST:PORT or ipc://PATH)")
    })
}

/// A required endpoint (`--what ENDPOINT`): pushes to `errors` if it is missing (empty) or not
/// a ZeroMQ endpoint.
pub fn check_required_endpoint(what: &str, ep: &str, errors: &mut Vec<String>) {
    if ep.is_empty() {
        errors.push(format!("--{what} ENDPOINT is required"));
    } else if let Some(e) = endpoint_problem(what, ep) {
        errors.push(e);
    }
}

/// `--metrics-listen`: a bare port (served on 127.0.0.1) or `HOST:PORT` on loopback
/// (127.0.0.0/8, `[::1]`, `localhost`); any other address serves the counters to the network,
/// so it is refused (pushed to `errors`) unless `public` (`--metrics-public`) says so.
pub fn check_metrics_listen(addr: Option<&str>, public: bool, errors: &mut Vec<String>) {
    let Some(addr) = addr else {
        return;
    };
    if public || addr.parse::<u16>().is_ok() || is_loopback_address(addr) {
        return;
    }
    errors.push(format!(
        "metrics_listen {addr:?} is not a loopback address (127.0.0.0/8, [::1], localhost, or a \
         bare port): the metrics would be served to the network; give --metrics-public \
         (metrics_public = true) to allow it"
    ));
}

/// The `metrics_listen` lines of a resolved configuration: the address (or `# metrics_listen:
/// off`), and `metrics_public = true` when it is off loopback (valid only with it).
pub fn toml_metrics_listen(out: &mut String, addr: Option<&str>) {
    match addr {
        Some(a) => {
            toml_kv(out, "metrics_listen", toml_string(a));
            let mut errors = Vec::new();
            check_metrics_listen(Some(a), false, &mut errors);
            if !errors.is_empty() {
                toml_kv(out, "metrics_public", true);
            }
        }
        None => out.push_str("# metrics_listen: off\n"),
    }
}

/// `HOST:PORT` whose host is a loopback address or `localhost`.
fn is_loopback_address(addr: &str) -> bool {
    if let Ok(a) = addr.parse::<std::net::SocketAddr>() {
        return a.ip().is_loopback();
    }
    addr.rsplit_once(':').is_some_and(|(host, port)| {
        host.eq_ignore_ascii_case("localhost") && port.parse::<u16>().is_ok()
    })
}

/// Parses each network (`ADDRESS/PREFIX`), pushing a problem per bad one to `errors`.
pub fn parse_nets(nets: &[String], errors: &mut Vec<String>) -> Vec<(tapflow_proto::Addr, u8)> {
    nets.iter()
        .filter_map(|n| {
            tapflow_proto::key::parse_net(n)
                .map_err(|e| errors.push(e.to_string()))
                .ok()
        })
        .collect()
}

/// `Err(errors)` unless `errors` is empty, else `value`.
pub fn finish<T>(errors: Vec<String>, value: impl FnOnce() -> T) -> Result<T, ConfigError> {
    if errors.is_empty() {
        Ok(value())
    } else {
        Err(ConfigError(errors))
    }
}

/// A configuration that failed to load: the problems on stderr, exit code 2.
pub fn config_failed(binary: &str, e: &ConfigError) -> ExitCode {
    eprintln!("{binary}: {e}");
    ExitCode::from(2)
}

/// `--check-config`: the resolved configuration on stdout and 0, or the problems and 2.
pub fn check_config(binary: &str, resolved: Result<String, ConfigError>) -> ExitCode {
    match resolved {
        Ok(text) => {
            print!("{text}");
            eprintln!("{binary}: configuration is valid");
            ExitCode::SUCCESS
        }
        Err(e) => config_failed(binary, &e),
    }
}

/// This host's name (`localhost` if it cannot be read), for the default names of the binaries.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Appends `key = value` and a newline: a line of a resolved configuration (`--check-config`).
pub fn toml_kv(out: &mut String, key: &str, value: impl std::fmt::Display) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "{key} = {value}");
}

/// Appends `key = "VALUE"` when set, else the comment line `# key: UNSET`.
pub fn toml_opt_str(out: &mut String, key: &str, value: Option<&str>, unset: &str) {
    match value {
        Some(v) => toml_kv(out, key, toml_string(v)),
        None => out.push_str(&format!("# {key}: {unset}\n")),
    }
}

/// `[ "A", "B" ]` of networks, as TOML.
pub fn toml_nets(nets: &[(tapflow_proto::Addr, u8)]) -> String {
    let nets: Vec<String> = nets
        .iter()
        .map(|(addr, len)| toml_string(&format!("{addr}/{len}")))
        .collect();
    format!("[{}]", nets.join(", "))
}

/// Appends `processor_set = "PATH"` and a comment line per epoch (when it starts, its members):
/// the processor set in a resolved configuration.
pub fn toml_processor_set(
    out: &mut String,
    path: &Path,
    set: &tapflow_proto::procset::ProcessorSet,
) {
    use std::fmt::Write as _;
    toml_kv(
        out,
        "processor_set",
        toml_string(&path.display().to_string()),
    );
    for e in set.epochs() {
        let _ = writeln!(
            out,
            "#   epoch {} from {:.3} s: members {:?}",
            e.table.epoch(),
            e.starts_ns as f64 / 1e9,
            e.table.members()
        );
    }
}

/// `s` as a TOML basic string (quoted, escaped).
pub fn toml_string(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
