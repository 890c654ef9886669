//! The JSON API (`/api/...`), rendered from [`DashState`] with the logs' field names: sessions
//! and alert events are the conn log's and the alerts log's lines as they are, the final
//! report the health log's.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::state::{DashState, Session};

/// Sessions returned by one search at most, and by default.
pub const MAX_SESSIONS: usize = 500;
pub const DEFAULT_SESSIONS: usize = 100;
/// Rows of the tops.
pub const TOP: usize = 10;
/// Windows the tops cover at most, and by default.
pub const MAX_TOP_WINDOWS: u64 = 60;
pub const DEFAULT_TOP_WINDOWS: u64 = 5;

/// A request the API refuses (400), with why.
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest(pub String);

/// The body of `GET path?query`, `None` for an unknown path.
pub fn render(
    s: &DashState,
    path: &str,
    query: &str,
    now_ns: u64,
) -> Option<Result<String, BadRequest>> {
    let q = parse_query(query);
    Some(match path {
        "/api/summary" => Ok(summary(s, now_ns)),
        "/api/traffic" => Ok(traffic(s)),
        "/api/alerts" => Ok(alerts(s)),
        "/api/top" => top(s, &q),
        "/api/sessions" => sessions(s, &q),
        "/api/health" => Ok(health(s, now_ns)),
        _ => return None,
    })
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn summary(s: &DashState, now_ns: u64) -> String {
    json!({
        "now": secs(now_ns),
        "ended": s.report.is_some(),
        "window_s": s.window_s,
        "sessions_received": s.sessions_received,
        "sessions_held": s.sessions.len(),
        "sessions_cap": s.cap,
        "alert_events": s.alert_events,
        "episodes_started": s.episodes_started,
        "episodes_open": s.open.len(),
        "processors": s.processors.len(),
    })
    .to_string()
}

fn traffic(s: &DashState) -> String {
    let windows: Vec<Value> = s
        .traffic
        .iter()
        .map(|(start, by)| {
            let proto: Map<String, Value> = by
                .iter()
                .map(|(p, t)| {
                    let v = json!({"packets": t.packets, "bytes": t.bytes, "flows": t.flows, "complete": t.complete});
                    ((*p).to_owned(), v)
                })
                .collect();
            json!({"window_start": secs(*start), "proto": proto})
        })
        .collect();
    let services: Vec<Value> = s
        .services
        .iter()
        .map(|(start, by)| {
            let service: Map<String, Value> = by
                .iter()
                .map(|(name, t)| (name.clone(), json!({"sessions": t.flows, "bytes": t.bytes})))
                .collect();
            json!({"window_start": secs(*start), "service": service})
        })
        .collect();
    json!({"window_s": s.window_s, "windows": windows, "services": services}).to_string()
}

fn alerts(s: &DashState) -> String {
    let meta = json!({
        "alert_events": s.alert_events,
        "episodes_started": s.episodes_started,
        "episodes_open": s.open.len(),
        "episodes_not_kept": s.episodes_not_kept,
    });
    let open: Vec<&str> = s.open.values().map(|e| e.line.as_str()).collect();
    let recent: Vec<&str> = s.recent.iter().rev().map(|e| e.line.as_str()).collect();
    with_raw(meta, &[("open", &open), ("recent", &recent)])
}

/// `meta` (an object) with arrays of JSON texts added as they are.
fn with_raw(meta: Value, lists: &[(&str, &[&str])]) -> String {
    let mut out = meta.to_string();
    out.pop(); // its closing brace
    for (name, items) in lists {
        if out.len() > 1 {
            out.push(',');
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\":[");
        out.push_str(&items.join(","));
        out.push(']');
    }
    out.push('}');
    out
}

fn number<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, BadRequest> {
    q.get(key)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse()
                .map_err(|_| BadRequest(format!("{key}: not a number: {v:?}")))
        })
        .transpose()
}

fn top(s: &DashState, q: &HashMap<String, String>) -> Result<String, BadRequest> {
    let windows = number::<u64>(q, "windows")?
        .unwrap_or(DEFAULT_TOP_WINDOWS)
        .clamp(1, MAX_TOP_WINDOWS);
    let w = s.window_s.max(1) * 1_000_000_000;
    let newest = s
        .traffic
        .keys()
        .next_back()
        .copied()
        .or_else(|| s.sessions.back().map(|x| x.ts_ns / w * w))
        .unwrap_or(0);
    let from = newest.saturating_sub((windows - 1) * w);
    let mut talkers: HashMap<&str, [u64; 3]> = HashMap::new();
    let mut servers: HashMap<(&str, u16, u8), [u64; 3]> = HashMap::new();
    for x in s.sessions.iter().filter(|x| x.ts_ns >= from) {
        for sum in [
            talkers.entry(x.orig_h.as_str()).or_default(),
            servers
                .entry((x.resp_h.as_str(), x.resp_p, x.proto))
                .or_default(),
        ] {
            sum[0] += x.bytes;
            sum[1] += x.pkts;
            sum[2] += 1;
        }
    }
    let talkers: Vec<Value> = largest(talkers)
        .into_iter()
        .map(|(h, [b, p, n])| json!({"id.orig_h": h, "bytes": b, "pkts": p, "sessions": n}))
        .collect();
    let servers: Vec<Value> = largest(servers)
        .into_iter()
        .map(|((h, port, proto), [b, p, n])| {
            json!({"id.resp_h": h, "id.resp_p": port, "proto": super::state::proto_name(proto),
                   "bytes": b, "pkts": p, "sessions": n})
        })
        .collect();
    Ok(json!({
        "window_s": s.window_s, "windows": windows, "from": secs(from),
        "talkers": talkers, "servers": servers,
    })
    .to_string())
}

/// The [`TOP`] entries with the most bytes (then the most sessions).
fn largest<K: Ord>(m: HashMap<K, [u64; 3]>) -> Vec<(K, [u64; 3])> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(TOP);
    v
}

/// What a search matches.
enum Needle {
    All,
    Port(u16),
    Addr(String),
    Uid(String),
}

fn needle(q: &str) -> Result<Needle, BadRequest> {
    let q = q.trim();
    if q.is_empty() {
        return Ok(Needle::All);
    }
    if let Ok(p) = q.parse::<u16>() {
        return Ok(Needle::Port(p));
    }
    if let Ok(a) = q.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok(Needle::Addr(a.to_string()));
    }
    if q.len() <= 32 && q.starts_with('C') && q.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(Needle::Uid(q.to_owned()));
    }
    Err(BadRequest(
        "q: give an address, a port or a uid (C...)".to_owned(),
    ))
}

impl Needle {
    fn matches(&self, x: &Session) -> bool {
        match self {
            Needle::All => true,
            Needle::Port(p) => x.orig_p == *p || x.resp_p == *p,
            Needle::Addr(a) => x.orig_h == *a || x.resp_h == *a,
            Needle::Uid(u) => x.uid == *u,
        }
    }
}

fn sessions(s: &DashState, q: &HashMap<String, String>) -> Result<String, BadRequest> {
    let needle = needle(q.get("q").map_or("", String::as_str))?;
    let limit = number::<usize>(q, "limit")?
        .unwrap_or(DEFAULT_SESSIONS)
        .clamp(1, MAX_SESSIONS);
    let ns = |v: Option<f64>| v.map(|t| (t.max(0.0) * 1e9) as u64);
    let from = ns(number::<f64>(q, "from")?).unwrap_or(0);
    let to = ns(number::<f64>(q, "to")?).unwrap_or(u64::MAX);
    let mut matched = 0usize;
    let mut lines = Vec::new();
    for x in s.sessions.iter().rev() {
        if x.ts_ns < from || x.ts_ns > to || !needle.matches(x) {
            continue;
        }
        matched += 1;
        if lines.len() < limit {
            lines.push(x.line.as_str());
        }
    }
    let meta = json!({
        "q": q.get("q").map_or("", String::as_str),
        "matched": matched,
        "returned": lines.len(),
        "sessions_held": s.sessions.len(),
        "sessions_cap": s.cap,
        "sessions_received": s.sessions_received,
        "sessions_skipped": s.records_skipped,
    });
    Ok(with_raw(meta, &[("sessions", &lines)]))
}

fn health(s: &DashState, now_ns: u64) -> String {
    let processors: Vec<Value> = s
        .processors
        .values()
        .map(|(hb, at)| {
            let mut v = serde_json::to_value(hb).unwrap_or(Value::Null);
            if let Value::Object(o) = &mut v {
                o.insert("received".into(), json!(secs(*at)));
                o.insert("age_s".into(), json!(secs(now_ns.saturating_sub(*at))));
                let lag = at.saturating_sub(hb.watermark_ns);
                o.insert("watermark_lag_s".into(), json!(secs(lag)));
            }
            v
        })
        .collect();
    let metrics = s.metrics.lock().map(|m| m.clone()).unwrap_or_default();
    let report: Value = s
        .report
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null);
    json!({
        "processors": processors,
        "counters": counters(&metrics),
        "dashboard": {
            "batches_dropped": s.batches_dropped.load(std::sync::atomic::Ordering::Relaxed),
            "records_skipped": s.records_skipped,
        },
        "report": report,
    })
    .to_string()
}

/// The aggregator's counters from its Prometheus text: `tapflow_aggregator_X_total{labels} N`
/// as `"X{labels}": N`.
pub fn counters(text: &str) -> Map<String, Value> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let value: u64 = value.parse().ok()?;
            let name = name.strip_prefix("tapflow_aggregator_").unwrap_or(name);
            let (base, labels) = name.split_once('{').map_or((name, ""), |(b, l)| (b, l));
            let base = base.strip_suffix("_total").unwrap_or(base);
            let key = if labels.is_empty() {
                base.to_owned()
            } else {
                format!("{base}{{{labels}")
            };
            Some((key, json!(value)))
        })
        .collect()
}

/// `a=1&b=x%20y`, decoded (`+` is a space); a key given twice keeps its last value.
pub fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
