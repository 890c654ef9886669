//! What the three tapflow binaries set up the same way at start: logging, SIGINT/SIGTERM,
//! their configuration (`config`: options declared once as flags and TOML keys, the error
//! list, `--check-config`), and the security of their ZeroMQ links (`curve`: key files,
//! `keygen`, CURVE on both ends with a ZAP handler), the aggregator's control channel as its
//! subscribers hear it (`control`), and rate-limited logging of what peers can
//! repeat per message (`ratelimit`). No packet, session or wire logic lives here.

#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod curve;
pub mod ratelimit;

pub use config::{
    read_config, read_processor_set, toml_kv, toml_processor_set, toml_string, ConfigError,
};

use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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

/// The text a processor or aggregator serves on `/metrics`, replaced whole from its own loop.
pub type MetricsText = Arc<std::sync::Mutex<String>>;

/// [`serve_metrics`] of a [`MetricsText`] its owner replaces, when `addr` is given (else the
/// text is only kept). Empty until first set.
pub fn serve_metrics_text(addr: Option<&str>) -> std::io::Result<MetricsText> {
    let text = MetricsText::default();
    if let Some(addr) = addr {
        let served = text.clone();
        serve_metrics(
            addr,
            Arc::new(move || served.lock().map(|g| g.clone()).unwrap_or_default()),
        )?;
    }
    Ok(text)
}

/// Serves `GET /metrics` (Prometheus text format) on `addr` (a bare port: on 127.0.0.1) from its
/// own thread (the binaries refuse a non-loopback `addr` without `--metrics-public` at config
/// time, [`config::check_metrics_listen`]), with whatever `render` returns at each scrape, and logs where. Returns the
/// address bound (`addr` may use port 0).
pub fn serve_metrics(
    addr: &str,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<std::net::SocketAddr> {
    use std::io::{BufRead, BufReader, Write};
    // A bare port is a port on localhost.
    let addr = match addr.parse::<u16>() {
        Ok(port) => format!("127.0.0.1:{port}"),
        Err(_) => addr.to_owned(),
    };
    let listener = std::net::TcpListener::bind(&addr)?;
    let bound = listener.local_addr()?;
    if bound.ip().is_loopback() {
        tracing::info!(%bound, "metrics at /metrics");
    } else {
        // Allowed by --metrics-public only (config::check_metrics_listen).
        tracing::warn!(%bound, "metrics at /metrics, served beyond loopback (--metrics-public)");
    }
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Drain the headers.
            let mut header = String::new();
            while reader.read_line(&mut header).map(|n| n > 2).unwrap_or(false) {
                header.clear();
            }
            let (status, body) = if line.starts_with("GET /metrics") { ("200 OK", render()) } else { ("404 Not Found", "see /metrics\n".to_owned()) };
            let mut out = &stream;
            let _ = write!(out, "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    })?;
    Ok(bound)
}

/// Counters in Prometheus text format: `tapflow_<component>_<name>_total`, each with its
/// `# TYPE` line; names with a `{label="..."}` suffix keep it.
pub fn prometheus_counters<'a>(
    component: &str,
    counters: impl IntoIterator<Item = (&'a str, u64)>,
    out: &mut String,
) {
    use std::fmt::Write as _;
    let mut typed = std::collections::BTreeSet::new();
    for (name, value) in counters {
        let (base, labels) = name
            .split_once('{')
            .map_or((name, String::new()), |(b, l)| (b, format!("{{{l}")));
        let metric = format!("tapflow_{component}_{base}_total");
        if typed.insert(metric.clone()) {
            let _ = writeln!(out, "# TYPE {metric} counter");
        }
        let _ = writeln!(out, "{metric}{labels} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_served_in_prometheus_format() {
        use std::io::{Read, Write};
        let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(|| {
            let mut s = String::new();
            prometheus_counters(
                "collector",
                [
                    ("packets_read", 5),
                    ("drops{reason=\"non_ip\"}", 2),
                    ("drops{reason=\"truncated\"}", 1),
                ],
                &mut s,
            );
            s
        });
        let addr = serve_metrics("127.0.0.1:0", render).expect("serve the metrics");
        let mut c = std::net::TcpStream::connect(addr).expect("connect to the metrics server");
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send the request");
        let mut reply = String::new();
        let _ = c.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(
            reply.contains("tapflow_collector_packets_read_total 5"),
            "{reply}"
        );
        assert!(
            reply.contains("tapflow_collector_drops_total{reason=\"non_ip\"} 2"),
            "{reply}"
        );
        assert_eq!(
            reply
                .matches("# TYPE tapflow_collector_drops_total counter")
                .count(),
            1,
            "{reply}"
        );
    }
}
