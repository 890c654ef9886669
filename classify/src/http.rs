//! `http`: Zeek's HTTP analyzer confirms on a reply line after a request line. The server name
//! is the request's `Host` header without its port. A `101 Switching Protocols` answer to an
//! `Upgrade: websocket` request adds `websocket` ([`crate::websocket`]); a `CONNECT` that the
//! proxy accepts carries another protocol, classified on the bytes after the two heads (Zeek
//! lists e.g. `http,smtp`).

use crate::scan::{leading_number, lines_with_end, starts_with_ci};
use crate::{Evidence, Found, Side, TCP, UDP};

/// At most this many header lines are read from a head.
const MAX_LINES: usize = 100;

/// A request or response head: its first line, its header lines and, when the blank line that
/// ends it was seen, the offset of the first byte after it.
pub(crate) struct Head<'a> {
    pub(crate) first: &'a [u8],
    pub(crate) headers: Vec<(&'a [u8], &'a [u8])>,
    pub(crate) end: Option<usize>,
}

impl<'a> Head<'a> {
    /// The first header called `name` (ASCII case-insensitive), value trimmed.
    pub(crate) fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim_ascii())
    }
}

pub(crate) fn head(stream: &[u8]) -> Option<Head<'_>> {
    // Zeek skips blank lines before a request or reply.
    let skip = stream
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let base = stream.get(skip..)?;
    let mut it = lines_with_end(base, MAX_LINES);
    let (first, _) = it.next()?;
    let mut h = Head {
        first,
        headers: Vec::new(),
        end: None,
    };
    for (line, end) in it {
        if line.is_empty() {
            h.end = Some(skip + end);
            break;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            h.headers
                .push((line[..colon].trim_ascii(), &line[colon + 1..]));
        }
    }
    Some(h)
}

/// `METHOD SP URI SP HTTP/x.y`: the method, when `line` is a request line.
pub(crate) fn request_method(line: &[u8]) -> Option<&[u8]> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let method = &line[..sp];
    let token = |b: &u8| b.is_ascii_alphabetic() || matches!(b, b'-' | b'_');
    if method.is_empty() || method.len() > 24 || !method.iter().all(token) {
        return None;
    }
    let version = line.rsplit(|&b| b == b' ').next()?;
    (version.len() > 5 && starts_with_ci(version, b"HTTP/") && line.len() > sp + 1)
        .then_some(method)
}

/// `HTTP/x.y SP NNN`: the status code, when `line` is a status line.
pub(crate) fn status(line: &[u8]) -> Option<u32> {
    let rest = line.strip_prefix(b"HTTP/")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    if !rest[..sp].iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        return None;
    }
    let (code, after) = leading_number(rest.get(sp + 1..)?.trim_ascii_start())?;
    ((100..1000).contains(&code) && after.first().is_none_or(|b| !b.is_ascii_digit()))
        .then_some(code)
}

/// A `Host` value without its port (`[v6]:port` keeps the brackets).
fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return host
            .iter()
            .position(|&b| b == b']')
            .map_or(host, |i| &host[..=i]);
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if host.iter().filter(|&&b| b == b':').count() == 1 => &host[..i],
        _ => host,
    }
}

pub fn detect(ev: &Evidence) -> Option<Found> {
    match ev.proto {
        TCP => tcp(ev),
        // HTTP over UDP (SSDP, ...): no analyzer confirms it, but the request names a host.
        UDP => {
            let req = head(ev.orig.segments.first()?)?;
            request_method(req.first)?;
            named(&req, Vec::new())
        }
        _ => None,
    }
}

fn tcp(ev: &Evidence) -> Option<Found> {
    let Some(req) = head(ev.orig.stream()) else {
        return long_request_line(ev);
    };
    let method = request_method(req.first)?;
    let reply = head(ev.resp.stream()).and_then(|h| Some((status(h.first)?, h)));
    // A request without a reply confirms nothing but still names the server.
    let Some((code, resp)) = reply else {
        return named(&req, Vec::new());
    };
    let mut found = named(&req, vec!["http"]).unwrap_or_else(|| crate::scan::found(&["http"]));
    if crate::websocket::upgraded(req.header(b"upgrade"), resp.header(b"upgrade"), code) {
        found.services.push("websocket");
    }
    if method.eq_ignore_ascii_case(b"CONNECT") && (200..300).contains(&code) {
        tunnel(ev, &req, &resp, &mut found);
    }
    Some(found)
}

/// A request line longer than the budget (a long URL): Zeek would read it whole, so a known
/// method and a reply confirm `http` (the `Host` header was not shipped).
fn long_request_line(ev: &Evidence) -> Option<Found> {
    const METHODS: &[&[u8]] = &[b"GET /", b"POST /", b"HEAD /", b"PUT /", b"OPTIONS /"];
    let line = ev.orig.stream();
    let known = ev.orig.truncated && METHODS.iter().any(|m| line.starts_with(m));
    let replied = head(ev.resp.stream())
        .and_then(|h| status(h.first))
        .is_some();
    (known && replied).then(|| crate::scan::found(&["http"]))
}

/// `services` with the request's `Host` (without its port) as the server name; `None` when
/// there are no services and no name.
fn named(req: &Head, services: Vec<&'static str>) -> Option<Found> {
    let name = req
        .header(b"host")
        .map(host_without_port)
        .filter(|h| !h.is_empty())
        .map(|h| String::from_utf8_lossy(h).into_owned());
    (name.is_some() || !services.is_empty()).then_some(Found {
        services,
        server_name: name,
        expects: Vec::new(),
    })
}

/// What a `CONNECT` tunnel carries, from the bytes after both heads.
fn tunnel(ev: &Evidence, req: &Head, resp: &Head, found: &mut Found) {
    let (Some(oe), Some(re)) = (req.end, resp.end) else {
        return;
    };
    let orig = [ev.orig.stream().get(oe..).unwrap_or(&[])];
    let resp_tail = [ev.resp.stream().get(re..).unwrap_or(&[])];
    let inner = Evidence {
        orig: Side {
            segments: &orig,
            ..ev.orig
        },
        resp: Side {
            segments: &resp_tail,
            ..ev.resp
        },
        ..*ev
    };
    let inside: [fn(&Evidence) -> Option<Found>; 6] = [
        crate::tls::detect,
        crate::ssh::detect,
        crate::mail::detect,
        crate::ftp::detect,
        crate::irc::detect,
        crate::xmpp::detect,
    ];
    for detect in inside {
        if let Some(f) = detect(&inner) {
            found.services.extend(f.services);
            if let Some(name) = f.server_name {
                found.server_name.get_or_insert(name);
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp<'a>(orig: &'a [&'a [u8]], resp: &'a [&'a [u8]]) -> Evidence<'a> {
        Evidence {
            proto: TCP,
            orig_port: 40000,
            resp_port: 22,
            orig: Side {
                segments: orig,
                truncated: false,
                len: None,
            },
            resp: Side {
                segments: resp,
                truncated: true,
                len: None,
            },
        }
    }

    #[test]
    fn a_reply_after_a_request_is_http_on_any_port() {
        let req: &[u8] =
            b"GET /index.html HTTP/1.1\r\nHost: www.example.com:8080\r\nAccept: */*\r\n\r\n";
        let resp: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let found = detect(&tcp(&[req], &[resp])).expect("request and reply");
        assert_eq!(found.services, vec!["http"]);
        assert_eq!(found.server_name.as_deref(), Some("www.example.com"));
    }

    #[test]
    fn a_request_without_a_reply_is_not_confirmed() {
        let req: &[u8] = b"POST /x HTTP/1.0\r\nHost: a\r\n\r\n";
        let named_only = Found {
            server_name: Some("a".into()),
            ..Found::default()
        };
        assert_eq!(detect(&tcp(&[req], &[])), Some(named_only.clone()));
        assert_eq!(
            detect(&tcp(&[req], &[b"SSH-2.0-OpenSSH\r\n"])),
            Some(named_only)
        );
        assert_eq!(detect(&tcp(&[b"GET / HTTP/1.1\r\n\r\n"], &[])), None);
        assert_eq!(
            detect(&tcp(&[b"HELLO there\r\n"], &[b"HTTP/1.1 400 Bad\r\n"])),
            None
        );
    }

    #[test]
    fn ssdp_over_udp_names_its_host_without_a_service() {
        let req: &[u8] =
            b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n\r\n";
        let (o, r): ([&[u8]; 1], [&[u8]; 0]) = ([req], []);
        let mut ev = tcp(&o, &r);
        ev.proto = UDP;
        let found = detect(&ev).expect("a named request");
        assert!(found.services.is_empty());
        assert_eq!(found.server_name.as_deref(), Some("239.255.255.250"));
    }

    #[test]
    fn a_request_line_cut_by_the_budget_still_counts() {
        let long = [&b"GET /"[..], &[b'a'; 1100]].concat();
        let resp: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";
        let (o, r): ([&[u8]; 1], [&[u8]; 1]) = ([&long[..1024]], [resp]);
        let mut ev = tcp(&o, &r);
        assert_eq!(detect(&ev), None, "not cut: the line never ended");
        ev.orig.truncated = true;
        assert_eq!(detect(&ev).expect("cut").services, vec!["http"]);
    }

    #[test]
    fn hosts_lose_their_port_but_not_their_address() {
        assert_eq!(host_without_port(b"[2001:db8::1]:80"), b"[2001:db8::1]");
        assert_eq!(host_without_port(b"2001:db8::1"), b"2001:db8::1");
        assert_eq!(host_without_port(b"example.net"), b"example.net");
    }

    #[test]
    fn an_accepted_connect_classifies_the_tunnel() {
        let req: &[u8] = b"CONNECT mail.example:25 HTTP/1.0\r\n\r\nEHLO me\r\n";
        let resp: &[u8] =
            b"HTTP/1.0 200 Connection established\r\n\r\n220 mail.example ESMTP\r\n250 ok\r\n";
        let found = detect(&tcp(&[req], &[resp])).expect("CONNECT");
        assert_eq!(found.services, vec!["http", "smtp"]);
    }

    #[test]
    fn status_lines_need_three_digits() {
        assert_eq!(status(b"HTTP/1.1 404 Not Found"), Some(404));
        assert_eq!(status(b"HTTP/1.1 20 x"), None);
        assert_eq!(status(b"HTTP/1.1 2000"), None);
        assert_eq!(request_method(b"GET / HTTP/1.1"), Some(&b"GET"[..]));
        assert_eq!(request_method(b"GET /"), None);
    }
}
