//! `--check-config`: the resolved configuration as a TOML file with the file's keys.

use std::fmt::Write as _;

use tapflow_runtime::{toml_kv as kv, toml_string as toml_str};

use super::{default_name, Config, SlowPolicy, SourceSpec};

impl Config {
    /// The settings `run` works from, defaults included, as a TOML config file with the file's
    /// key names (one `key = value` per line; unset options as comments). Read back with
    /// `--config`, it gives the same configuration.
    pub fn resolved(&self) -> String {
        let mut out = String::new();
        source(&mut out, &self.source);
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
        control(&mut out, self.control.as_ref());
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
        kv(&mut out, "payload_bytes", self.decode.evidence.bytes);
        kv(&mut out, "payload_flows", self.decode.evidence.flows);
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
        tapflow_runtime::config::toml_metrics_listen(&mut out, self.metrics_listen.as_deref());
        out.push_str(&self.security.resolved());
        out
    }
}

/// The aggregator's control channel (`control`) and, with CURVE, its public key.
fn control(out: &mut String, control: Option<&super::ControlSpec>) {
    let Some(c) = control else {
        out.push_str("# control: none, processor-set changes only by the file (SIGHUP)\n");
        return;
    };
    kv(out, "control", toml_str(&c.endpoint));
    if let tapflow_runtime::curve::LinkSecurity::Curve(curve) = &c.security {
        if let Some(p) = &curve.server_key_path {
            kv(out, "control_server_key", toml_str(&p.to_string_lossy()));
        }
    }
}

/// The packet source and, for live capture, its settings.
fn source(out: &mut String, source: &SourceSpec) {
    match source {
        SourceSpec::File(p) => kv(out, "pcap", toml_str(&p.to_string_lossy())),
        SourceSpec::Live(l) => {
            kv(out, "interface", toml_str(&l.interface));
            kv(out, "snaplen", l.snaplen);
            kv(out, "buffer_mb", l.buffer_bytes >> 20);
            kv(out, "promisc", l.promisc);
            kv(out, "immediate", l.immediate);
            kv(out, "capture_threads", l.threads);
            match l.retry_for {
                Some(d) => kv(out, "interface_retry_s", d.as_secs()),
                None => out.push_str(
                    "# interface_retry_s: none (reopen a failed interface until stopped)\n",
                ),
            }
        }
    }
}
