//! The dashboard's HTTP/1.1 server, hand-written on `std::net` (a page, two assets and a
//! read-only JSON API need no framework): one acceptor thread, one thread per connection and at
//! most [`MAX_CONNECTIONS`] of them (more are answered 503 without waiting), one request per
//! connection, a request head of [`MAX_HEAD`] bytes at most read within [`HEAD_DEADLINE`],
//! writes that time out, GET and HEAD only (405 otherwise), and a `Host` that must name
//! loopback unless the dashboard is public (no DNS rebinding from a web page).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::api;
use super::state::DashState;

pub const MAX_CONNECTIONS: usize = 16;
pub const MAX_HEAD: usize = 8 * 1024;
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");

/// Scripts, styles and data from this origin only; no inline script or style, no frames, no
/// forms, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Starts the acceptor thread on `listener`. `public`: any `Host` is accepted.
pub fn serve(
    listener: TcpListener,
    state: Arc<Mutex<DashState>>,
    public: bool,
) -> std::io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("dashboard-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else {
                    // Out of descriptors, most likely: let some connections end.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    busy(stream);
                    continue;
                }
                let (state, done) = (Arc::clone(&state), Arc::clone(&active));
                let spawned = std::thread::Builder::new()
                    .name("dashboard-conn".into())
                    .spawn(move || {
                        handle(stream, &state, public);
                        done.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })?;
    Ok(())
}

/// 503 to a connection over the limit, written without waiting (or not at all).
fn busy(stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let mut s = &stream;
    let _ = s.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
    );
}

/// One response.
pub struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: String,
    pub allow: bool,
}

impl Response {
    fn new(status: &'static str, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            body,
            allow: false,
        }
    }

    fn error(status: &'static str, message: &str) -> Response {
        let body = serde_json::json!({ "error": message }).to_string();
        Response::new(status, "application/json", body)
    }
}

fn handle(mut stream: TcpStream, state: &Mutex<DashState>, public: bool) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let (response, head_only) = match head {
        Ok(head) => (respond(&head, state, public), head.starts_with("HEAD ")),
        Err(r) => (r, false),
    };
    write_response(&mut stream, &response, head_only);
}

/// The request head (up to the blank line), or the response refusing it; `None` when the
/// client went away or was too slow.
fn read_head(stream: &mut TcpStream) -> Option<Result<String, Response>> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.truncate(end);
            return Some(
                String::from_utf8(buf).map_err(|_| Response::error("400 Bad Request", "not UTF-8")),
            );
        }
        if buf.len() > MAX_HEAD {
            return Some(Err(Response::error(
                "431 Request Header Fields Too Large",
                "request head over 8 KiB",
            )));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The response to a complete request head.
pub fn respond(head: &str, state: &Mutex<DashState>, public: bool) -> Response {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        let mut r = Response::error("405 Method Not Allowed", "read-only: GET and HEAD only");
        r.allow = true;
        return r;
    }
    let host = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.trim());
    match host {
        None => return Response::error("400 Bad Request", "no Host header"),
        Some(h) if !public && !loopback_host(h) => {
            return Response::error("421 Misdirected Request", "Host must name loopback")
        }
        Some(_) => {}
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/" | "/index.html" => {
            Response::new("200 OK", "text/html; charset=utf-8", INDEX_HTML.into())
        }
        "/app.js" => Response::new("200 OK", "text/javascript; charset=utf-8", APP_JS.into()),
        "/app.css" => Response::new("200 OK", "text/css; charset=utf-8", APP_CSS.into()),
        p if p.starts_with("/api/") => api_response(p, query, state),
        _ => Response::error("404 Not Found", "no such page"),
    }
}

fn api_response(path: &str, query: &str, state: &Mutex<DashState>) -> Response {
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let Ok(s) = state.lock() else {
        return Response::error("500 Internal Server Error", "state unavailable");
    };
    match api::render(&s, path, query, now_ns) {
        Some(Ok(body)) => Response::new("200 OK", "application/json", body),
        Some(Err(api::BadRequest(why))) => Response::error("400 Bad Request", &why),
        None => Response::error("404 Not Found", "no such endpoint (see /api/summary)"),
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

fn write_response(stream: &mut TcpStream, r: &Response, head_only: bool) {
    let allow = if r.allow { "Allow: GET, HEAD\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
         Content-Security-Policy: {CSP}\r\nX-Content-Type-Options: nosniff\r\n\
         X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nCache-Control: no-store\r\n\
         Connection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() || head_only {
        return;
    }
    let _ = stream.write_all(r.body.as_bytes());
    let _ = stream.flush();
}
