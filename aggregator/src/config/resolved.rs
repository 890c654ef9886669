//! `--check-config`: the resolved configuration as a TOML file with the file's keys.

use std::fmt::Write as _;

use tapflow_runtime::config::toml_nets;
use tapflow_runtime::{toml_kv as kv, toml_string as toml_str};

use super::{Config, DurableConfig};
use crate::detect::{DetectConfig, SubnetThresholds};
use crate::influx::{InfluxApi, InfluxConfig};

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
        membership(&mut out, self);
        durable(&mut out, &self.durable);
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
        kv(&mut out, "max_senders", self.max_senders);
        detection(&mut out, &self.detect);
        match &self.influx {
            Some(i) => {
                influx(&mut out, i, password, token);
                kv(&mut out, "influx_finish_s", self.influx_finish.as_secs());
            }
            None => out.push_str("# influx_url: InfluxDB not written\n"),
        }
        tapflow_runtime::config::toml_metrics_listen(&mut out, self.metrics_listen.as_deref());
        super::http::toml_http(&mut out, self.http.as_ref());
        out.push_str(&self.security.resolved());
        for t in &self.detect.subnets {
            subnet(&mut out, t);
        }
        out
    }
}

/// How processors are declared dead and added back, and where the changes are announced.
fn membership(out: &mut String, c: &Config) {
    match &c.control_listen {
        Some(ep) => kv(out, "control_listen", toml_str(ep)),
        None => out.push_str("# control_listen: processor-set changes not announced\n"),
    }
    let m = &c.membership;
    kv(
        out,
        "processor_dead_after",
        toml_str(&duration(m.dead_after)),
    );
    kv(out, "processor_hold_down", toml_str(&duration(m.hold_down)));
    kv(out, "processor_switch_margin_ms", m.margin_ns / 1_000_000);
    kv(out, "processor_set_pinned", m.pinned);
}

/// The state directory and its write-ahead log.
fn durable(out: &mut String, d: &DurableConfig) {
    match &d.state_dir {
        Some(dir) => kv(out, "state_dir", toml_str(&dir.to_string_lossy())),
        None => out.push_str("# state_dir: none, a restart loses what was held\n"),
    }
    match &d.ack_listen {
        Some(ep) => kv(out, "ack_listen", toml_str(ep)),
        None => out.push_str("# ack_listen: nothing acknowledged\n"),
    }
    kv(out, "wal_max_bytes", d.wal_max_bytes);
    kv(out, "wal_commit_messages", d.commit_messages);
    kv(out, "wal_commit_ms", d.commit_age.as_millis());
    kv(out, "wal_checkpoint_bytes", d.checkpoint_bytes);
    kv(out, "wal_checkpoint_s", d.checkpoint_age.as_secs());
}

/// A duration as the options take it: `10s`, or `1500ms` when not whole seconds.
fn duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The global detection settings.
fn detection(out: &mut String, d: &DetectConfig) {
    kv(out, "detect_window_s", d.window_s);
    kv(out, "syn_flood_per_min", d.syn_flood_per_min);
    kv(out, "port_scan_ports", d.port_scan_ports);
    kv(out, "address_scan_hosts", d.address_scan_hosts);
    kv(out, "stealth_scan_ports", d.stealth_scan_ports);
    kv(out, "flood_pps", d.flood_pps);
    kv(out, "reflection_sources", d.reflection_sources);
    kv(out, "reflection_ports", d.reflection_ports);
    kv(
        out,
        "reflection_port_share_pct",
        d.reflection_port_share_pct,
    );
    kv(
        out,
        "reflection_max_pkts_per_source",
        d.reflection_max_pkts_per_source,
    );
    kv(out, "peak_interval_ms", d.peak_interval_ms);
    kv(out, "peak_pps", d.peak_pps);
    kv(out, "peak_bps", d.peak_bps);
    kv(out, "new_flows_per_s", d.new_flows_per_s);
    kv(out, "detect_keys_cap", d.keys_cap);
    kv(out, "latency_factor_pct", d.latency_factor_pct);
    kv(out, "latency_min_sessions", d.latency_min_sessions);
    kv(out, "latency_history", d.latency_history);
    kv(out, "latency_warmup", d.latency_warmup);
    kv(out, "latency_samples", d.latency_caps.samples);
    kv(out, "latency_servers", d.latency_caps.servers);
    kv(out, "allow", toml_nets(&d.allow));
}

/// The InfluxDB settings but `influx_finish_s`, with the credential lines given.
fn influx(out: &mut String, i: &InfluxConfig, password: &str, token: &str) {
    kv(out, "influx_url", toml_str(&i.url));
    match &i.ca_file {
        Some(p) => kv(out, "influx_ca_file", toml_str(&p.to_string_lossy())),
        None if i.url.starts_with("https://") => {
            out.push_str("# influx_ca_file: the system's CA roots\n");
        }
        None => {}
    }
    match &i.api {
        InfluxApi::V1 { db, rp, user, .. } => {
            kv(out, "influx_db", toml_str(db));
            match rp {
                Some(rp) => kv(out, "influx_rp", toml_str(rp)),
                None => out.push_str("# influx_rp: the database's default\n"),
            }
            if let Some(user) = user {
                kv(out, "influx_user", toml_str(user));
            }
            out.push_str(password);
        }
        InfluxApi::V2 { org, bucket, .. } => {
            kv(out, "influx_org", toml_str(org));
            kv(out, "influx_bucket", toml_str(bucket));
            out.push_str(token);
        }
    }
    kv(
        out,
        "influx_spool_dir",
        toml_str(&i.spool_dir.to_string_lossy()),
    );
    kv(out, "influx_batch_lines", i.batch_lines);
}

/// A `[[subnet]]` table: its network and the thresholds it sets.
fn subnet(out: &mut String, t: &SubnetThresholds) {
    out.push_str("\n[[subnet]]\n");
    kv(out, "net", toml_str(&t.net));
    let thresholds = [
        ("port_scan_ports", t.port_scan_ports.map(|v| v as u64)),
        ("address_scan_hosts", t.address_scan_hosts.map(|v| v as u64)),
        ("stealth_scan_ports", t.stealth_scan_ports.map(|v| v as u64)),
        ("syn_flood_per_min", t.syn_flood_per_min),
        ("reflection_sources", t.reflection_sources.map(|v| v as u64)),
        ("flood_pps", t.flood_pps),
        ("peak_pps", t.peak_pps),
        ("peak_bps", t.peak_bps),
        ("new_flows_per_s", t.new_flows_per_s),
        ("latency_factor_pct", t.latency_factor_pct),
        ("latency_min_sessions", t.latency_min_sessions),
    ];
    for (key, v) in thresholds {
        if let Some(v) = v {
            kv(out, key, v);
        }
    }
}
