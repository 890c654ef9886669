//! What the three tapflow binaries set up the same way at start: logging, SIGINT/SIGTERM, and
//! reading their TOML config file. No packet, session or wire logic lives here.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::de::DeserializeOwned;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text (coloured on a terminal)
/// or as JSON lines.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A flag the first SIGINT or SIGTERM sets (a graceful stop: flush, end-of-stream); a second
/// signal, while that is still waiting on an unreachable peer, exits at once with 130.
pub fn shutdown_flag() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
}

/// A flag SIGHUP sets: reopen log files (after logrotate moved them away).
pub fn reopen_flag() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, flag.clone())?;
    Ok(flag)
}

/// The settings of a TOML config file, or the defaults without one; a clear one-line error
/// naming the file otherwise.
pub fn read_config<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, String> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        size: Option<u32>,
    }

    #[test]
    fn config_files_read_or_fail_clearly() {
        assert_eq!(read_config::<Settings>(None), Ok(Settings::default()));
        let dir = std::env::temp_dir().join(format!("tapflow-runtime-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let good = dir.join("good.toml");
        std::fs::write(&good, "size = 3").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_config::<Settings>(Some(&good)),
            Ok(Settings { size: Some(3) })
        );
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "sise = 3").unwrap_or_else(|e| panic!("{e}"));
        let err = read_config::<Settings>(Some(&bad))
            .err()
            .unwrap_or_default();
        assert!(err.contains("bad.toml") && err.contains("sise"), "{err}");
        let missing = read_config::<Settings>(Some(&dir.join("missing.toml")))
            .err()
            .unwrap_or_default();
        assert!(missing.starts_with("cannot read config file"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
