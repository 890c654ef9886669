//! Which application a connection carries, from the evidence the collector ships: the first
//! payload bytes of each direction (issue 17). Sans-IO and panic-free on any input: the
//! evidence comes off the wire.
//!
//! The names and rules are Zeek's: a protocol is listed once its analyzer would confirm it
//! (for `ssl` a parsed ClientHello or ServerHello, for `http` a reply after a request, for
//! `dns` one parsed message, ...), several in the order Zeek confirms them (`smtp,ssl` after
//! STARTTLS). Each protocol lives in a module of its own with one entry point,
//! `fn detect(ev: &Evidence) -> Option<Found>`; [`classify`] runs them in [`DETECTORS`]
//! order and merges what they find.

#![forbid(unsafe_code)]

// Group A detectors.
mod dns;
mod dtls;
mod ftp;
mod http;
mod irc;
mod mail;
mod quic;
mod scan;
mod ssh;
mod tls;
mod websocket;
mod xmpp;
// Group B detectors (issue 17) and their helpers.
mod ber;
pub mod dce_rpc;
pub mod dhcp;
pub mod gssapi;
pub mod krb;
pub mod ldap;
pub mod modbus;
pub mod mqtt;
pub mod mysql;
pub mod ntlm;
pub mod ntp;
pub mod postgresql;
pub mod prefix;
pub mod radius;
pub mod rdp;
pub mod redis;
pub mod rfb;
mod settings;
pub mod sip;
pub mod smb;
pub mod snmp;
pub mod socks;
pub mod syslog;
mod tls_hint;
mod util;

pub use prefix::may_match;
pub use settings::{parse_services, Settings, DEFAULT_DNS_MAX_QUERIES, SERVICES, TUNNEL_SERVICES};

/// Transport protocol numbers.
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// One direction's evidence.
#[derive(Clone, Copy, Debug, Default)]
pub struct Side<'a> {
    /// TCP: one element, the stream's first bytes in sequence order from the initial sequence
    /// number + 1, without gaps (empty when nothing was shipped). UDP: the payloads of the
    /// direction's first datagrams, in order, each whole or cut at the budget.
    pub segments: &'a [&'a [u8]],
    /// The budget ran out (or the collector could not ship everything): more payload existed.
    pub truncated: bool,
    /// TCP: the stream's whole length as the connection's record counts it (bytes by
    /// sequence number), when known; what a cut side sent after its shipped prefix is then
    /// bounded. `None` when unknown (UDP, or a caller without the counts).
    pub len: Option<u64>,
}

impl<'a> Side<'a> {
    /// The TCP stream prefix (the first segment), or empty.
    pub fn stream(&self) -> &'a [u8] {
        self.segments.first().copied().unwrap_or(&[])
    }
}

/// A connection's evidence, by Zeek's roles (`orig` opened it).
#[derive(Clone, Copy, Debug, Default)]
pub struct Evidence<'a> {
    /// [`TCP`] or [`UDP`] (anything else classifies as nothing).
    pub proto: u8,
    pub orig_port: u16,
    pub resp_port: u16,
    pub orig: Side<'a>,
    pub resp: Side<'a>,
}

/// A data connection announced on a control connection (FTP `PORT`, `PASV`, `EPRT`, `EPSV`;
/// IRC DCC), which Zeek labels with `service` when it is seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The address the data connection goes to; `None` for "the announcing side's own address"
    /// (`EPSV`, or an address the announcement does not carry).
    pub addr: Option<std::net::IpAddr>,
    pub port: u16,
    /// `true` when the responder (server) announced it (`PASV`/`EPSV` replies), `false` when
    /// the originator did (`PORT`/`EPRT`).
    pub by_resp: bool,
    /// The service the data connection gets (`ftp-data`, `irc-dcc-data`).
    pub service: &'static str,
}

/// What one detector found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Zeek's analyzer names in the order confirmed (`["smtp", "ssl"]`).
    pub services: Vec<&'static str>,
    /// TLS SNI, HTTP Host, QUIC SNI (raw bytes as sent, lossily decoded; the writer escapes).
    pub server_name: Option<String>,
    pub expects: Vec<Expect>,
}

/// The classification of a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Zeek's `service`, comma-joined when written; empty = none (`-`).
    pub services: Vec<&'static str>,
    pub server_name: Option<String>,
    pub expects: Vec<Expect>,
}

impl Verdict {
    /// Zeek's `service` column value, `None` when empty.
    pub fn service(&self) -> Option<String> {
        (!self.services.is_empty()).then(|| self.services.join(","))
    }
}

/// The FTP control port, where [`ftp_late_line`] is looked for.
pub const FTP_PORT: u16 = 21;
/// The longest announcement line [`ftp_late_line`] finds.
pub const FTP_LINE_MAX: usize = 256;
/// A UDP datagram that starts within the evidence budget is shipped whole up to this many
/// bytes, past the budget if need be (a QUIC Initial is at least 1200 bytes, and a cut one
/// cannot be decrypted); the collector and the processor keep it alike.
pub const UDP_WHOLE: u32 = 1500;

/// FTP announces data connections (`227`/`229` replies, `PORT`/`EPRT` commands) all session
/// long, mostly after the evidence budget is spent (a long login message is enough): the
/// first line of `data` (a segment past the budget) that may be one, as `start..end` with its
/// `\n`, at most [`FTP_LINE_MAX`] bytes. The collector ships such lines of port-21 flows.
pub fn ftp_late_line(data: &[u8]) -> Option<std::ops::Range<usize>> {
    const STARTS: [&[u8]; 4] = [b"227 ", b"229 ", b"PORT ", b"EPRT "];
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        let end = rest.iter().position(|&b| b == b'\n').map(|e| e + 1);
        let candidate = STARTS.iter().any(|p| scan::starts_with_ci(rest, p));
        match end {
            Some(e) if candidate && e <= FTP_LINE_MAX => return Some(at..at + e),
            Some(e) => at += e,
            None => return None,
        }
    }
    None
}

/// The data connection an FTP control line announces (`by_resp`: a server reply), if it does.
pub fn ftp_announcement(line: &[u8], by_resp: bool) -> Option<Expect> {
    ftp::announced(line.trim_ascii(), by_resp)
}

/// A detector: the evidence and the operator's settings in, what it confirmed out.
pub type Detector = fn(&Evidence, &Settings) -> Option<Found>;

/// A detector that reads no setting.
macro_rules! plain {
    ($m:ident) => {
        |ev: &Evidence, _: &Settings| $m::detect(ev)
    };
}

/// Every detector, in the order their findings are merged (a detector that confirms several
/// protocols, such as STARTTLS, returns them in its own order).
pub const DETECTORS: &[Detector] = &[
    // Group A.
    plain!(tls),
    plain!(quic),
    plain!(dtls),
    plain!(ssh),
    plain!(http),
    |ev: &Evidence, s: &Settings| dns::detect(ev, s.dns_max_queries),
    plain!(mail),
    plain!(ftp),
    plain!(irc),
    plain!(xmpp),
    // group B
    plain!(ldap),
    plain!(krb),
    plain!(dhcp),
    plain!(ntp),
    plain!(rdp),
    plain!(smb),
    plain!(sip),
    plain!(snmp),
    plain!(mysql),
    plain!(syslog),
    plain!(radius),
    plain!(modbus),
    plain!(dce_rpc),
    plain!(socks),
    plain!(mqtt),
    plain!(postgresql),
    plain!(redis),
    plain!(rfb),
];

/// Runs every detector over `ev` with the default [`Settings`] (every service on, Zeek's
/// `dns_max_queries` of 25) and merges their findings: see [`classify_with`].
pub fn classify(ev: &Evidence) -> Verdict {
    classify_with(ev, &Settings::default())
}

/// Runs every detector over `ev` and merges their findings: services in detector order, each
/// once; the first server name found; every expectation. A service `settings` disables is
/// never listed (it takes no place in the order); a detector whose every service is disabled
/// gives neither its server name nor its announced connections, and an announced connection
/// whose service is disabled is left out.
pub fn classify_with(ev: &Evidence, settings: &Settings) -> Verdict {
    merge(ev, settings, DETECTORS)
}

/// The detectors that can announce a data connection (FTP, IRC) or confirm `ftp` (FTP, and
/// HTTP for FTP inside a `CONNECT` tunnel), in [`DETECTORS`]' order.
const ANNOUNCERS: &[Detector] = &[plain!(http), plain!(ftp), plain!(irc)];

/// What [`classify_with`] gives of announced data connections (`expects`) and of whether
/// `ftp` is among the services, from the detectors that can give them alone ([`ANNOUNCERS`]):
/// for a look at every payload packet, where the other detectors' work would be thrown away.
/// Its other services and server name are those of these detectors only.
pub fn announcements_with(ev: &Evidence, settings: &Settings) -> Verdict {
    merge(ev, settings, ANNOUNCERS)
}

/// Runs `detectors` over `ev` and merges their findings (see [`classify_with`]).
fn merge(ev: &Evidence, settings: &Settings, detectors: &[Detector]) -> Verdict {
    let mut v = Verdict::default();
    if ev.proto != TCP && ev.proto != UDP {
        return v;
    }
    let ev = &usable(ev);
    for detect in detectors {
        let Some(mut found) = detect(ev, settings) else {
            continue;
        };
        let any = !found.services.is_empty();
        found.services.retain(|s| settings.enabled(s));
        if any && found.services.is_empty() {
            continue;
        }
        for s in found.services {
            if !v.services.contains(&s) {
                v.services.push(s);
            }
        }
        if v.server_name.is_none() {
            v.server_name = found.server_name;
        }
        let expects = found.expects.into_iter();
        v.expects
            .extend(expects.filter(|e| settings.enabled(e.service)));
    }
    v
}

/// The evidence as the collector ships it: a side whose first bytes no detector can use
/// ([`may_match`]) is given up, so no detector reads past such an opening (IRC's and FTP's
/// lines may follow anything), and what the collector gives up never changes a verdict.
fn usable<'a>(ev: &Evidence<'a>) -> Evidence<'a> {
    let ports = [ev.orig_port, ev.resp_port];
    let keep = |s: &Side<'a>| {
        s.segments
            .first()
            .is_none_or(|f| may_match(ev.proto, ports, f))
    };
    Evidence {
        orig: if keep(&ev.orig) {
            ev.orig
        } else {
            Side::default()
        },
        resp: if keep(&ev.resp) {
            ev.resp
        } else {
            Side::default()
        },
        ..*ev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftp_announcements_are_found_in_segments_past_the_budget() {
        let seg = b"ignored tail\r\n227 Entering Passive Mode (10,0,0,2,221,90).\r\n150 x\r\n";
        let r = ftp_late_line(seg).expect("a line");
        assert_eq!(
            &seg[r.clone()],
            b"227 Entering Passive Mode (10,0,0,2,221,90).\r\n"
        );
        let e = ftp_announcement(&seg[r], true).expect("announced");
        assert_eq!((e.port, e.by_resp, e.service), (56666, true, "ftp-data"));
        assert_eq!(ftp_late_line(b"port 10,0,0,1,4,1\r\n"), Some(0..19));
        assert_eq!(ftp_late_line(b"227 unterminated"), None);
        assert_eq!(ftp_late_line(b"150 Opening\r\n226 Done\r\n"), None);
        let long = [&b"227 "[..], &[b'x'; FTP_LINE_MAX], b"\n"].concat();
        assert_eq!(ftp_late_line(&long), None);
        assert_eq!(
            ftp_announcement(b"PORT 10,0,0,1,4,1\r\n", false).map(|e| e.port),
            Some(1025)
        );
    }

    #[test]
    fn other_protocols_and_empty_evidence_classify_as_nothing() {
        let seg: &[&[u8]] = &[b"GET / HTTP/1.1\r\n\r\n"];
        let ev = Evidence {
            proto: 1,
            orig: Side {
                segments: seg,
                truncated: false,
                len: None,
            },
            ..Evidence::default()
        };
        assert_eq!(classify(&ev), Verdict::default());
        assert_eq!(classify(&Evidence::default()).service(), None);
    }

    fn tcp<'a>(port: u16, orig: &'a [&'a [u8]], resp: &'a [&'a [u8]]) -> Evidence<'a> {
        let side = |segments| Side {
            segments,
            truncated: false,
            len: None,
        };
        Evidence {
            proto: TCP,
            orig_port: 40000,
            resp_port: port,
            orig: side(orig),
            resp: side(resp),
        }
    }

    fn off(names: &str) -> Settings {
        Settings {
            disabled: parse_services(names).expect("known names"),
            ..Settings::default()
        }
    }

    #[test]
    fn a_disabled_service_is_never_listed_and_takes_no_place() {
        use crate::tls::tests::{client_hello_msg, records};
        let mut c = b"AUTH TLS\r\n".to_vec();
        c.extend(records(&client_hello_msg("ftp.example"), 4000));
        let (orig, resp): (&[&[u8]], &[&[u8]]) = (&[&c], &[b"220 hi\r\n234 AUTH TLS ok\r\n"]);
        let ev = tcp(21, orig, resp);
        let all = classify(&ev);
        assert_eq!(all.service().as_deref(), Some("ftp,ssl"));
        assert_eq!(all.server_name.as_deref(), Some("ftp.example"));
        let no_ftp = classify_with(&ev, &off("ftp"));
        assert_eq!(no_ftp.service().as_deref(), Some("ssl"));
        let no_ssl = classify_with(&ev, &off("ssl"));
        assert_eq!(no_ssl.service().as_deref(), Some("ftp"));
        assert_eq!(classify_with(&ev, &off("ftp, ssl")), Verdict::default());
    }

    #[test]
    fn announced_connections_go_with_their_service_and_their_announcer() {
        let c: &[&[u8]] = &[b"USER a\r\nPASS b\r\nPASV\r\n"];
        let s: &[&[u8]] =
            &[b"220 hi\r\n331 ok\r\n230 in\r\n227 Entering Passive Mode (10,0,0,2,221,90).\r\n"];
        let ev = tcp(21, c, s);
        assert_eq!(classify(&ev).expects.len(), 1);
        let no_data = classify_with(&ev, &off("ftp-data"));
        assert_eq!(no_data.service().as_deref(), Some("ftp"));
        assert!(no_data.expects.is_empty(), "ftp-data disabled");
        assert!(
            classify_with(&ev, &off("ftp")).expects.is_empty(),
            "no FTP analyzer"
        );
    }

    /// What the processor looks at on every payload packet (announcements, and whether `ftp`
    /// is confirmed) is what the whole classifier gives: FTP and IRC announcements, FTP in a
    /// TLS upgrade and in an HTTP `CONNECT` tunnel, protocols that announce nothing, every
    /// prefix of each, with the announcers and their data services on and off.
    #[test]
    fn announcements_are_those_of_the_whole_classifier() {
        use crate::tls::tests::{client_hello_msg, records};
        let mut tls_ftp = b"AUTH TLS\r\n".to_vec();
        tls_ftp.extend(records(&client_hello_msg("ftp.example"), 600));
        let sessions: [(u16, &[u8], &[u8]); 6] = [
            (21, b"USER a\r\nPASS b\r\nPASV\r\nPORT 10,0,0,5,221,187\r\n", b"220 hi\r\n331 ok\r\n230 in\r\n227 Entering Passive Mode (10,0,0,2,221,90).\r\n"),
            (6667, b"NICK alice\r\nUSER alice 0 * :A\r\nPRIVMSG bob :\x01DCC SEND f 3232235777 5000 12\x01\r\n", b":irc.example 001 alice :Welcome\r\n"),
            (21, &tls_ftp, b"220 hi\r\n234 AUTH TLS ok\r\n"),
            (8080, b"CONNECT ftp.example:21 HTTP/1.1\r\nHost: ftp.example:21\r\n\r\nUSER a\r\nEPSV\r\n", b"HTTP/1.1 200 OK\r\n\r\n220 hi\r\n331 ok\r\n229 Entering Extended Passive Mode (|||6446|)\r\n"),
            (80, b"GET / HTTP/1.1\r\nHost: www.example\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"),
            (25, b"EHLO a\r\nMAIL FROM:<a@b>\r\n", b"220 mail ESMTP\r\n250 ok\r\n"),
        ];
        let settings = ["", "ftp", "irc", "http", "ftp-data", "irc-dcc-data", "ssl"].map(off);
        let mut announced = 0;
        for (port, c, s) in sessions {
            for cut in (0..=c.len().max(s.len())).step_by(7).chain([usize::MAX]) {
                let (c, s) = (&c[..cut.min(c.len())], &s[..cut.min(s.len())]);
                let (orig, resp): (&[&[u8]], &[&[u8]]) = (&[c], &[s]);
                let ev = tcp(port, orig, resp);
                for set in &settings {
                    let (all, some) = (classify_with(&ev, set), announcements_with(&ev, set));
                    assert_eq!(all.expects, some.expects, "port {port}, cut {cut}");
                    let ftp = |v: &Verdict| v.services.contains(&"ftp");
                    assert_eq!(ftp(&all), ftp(&some), "port {port}, cut {cut}");
                    announced += some.expects.len();
                }
            }
        }
        assert!(announced > 0, "some cuts announce");
    }

    #[test]
    fn the_dns_limit_reaches_the_dns_detector() {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 4, 0, 0, 0, 0, 0, 0];
        for c in b"abcd" {
            q.extend_from_slice(&[1, *c, 0, 0, 1, 0, 1]);
        }
        let seg: &[&[u8]] = &[&q];
        let ev = Evidence {
            proto: UDP,
            ..tcp(53, seg, &[])
        };
        assert_eq!(classify(&ev).service().as_deref(), Some("dns"));
        let three = Settings {
            dns_max_queries: 3,
            ..Settings::default()
        };
        assert_eq!(classify_with(&ev, &three).service(), None);
    }

    #[test]
    fn unknown_service_names_are_refused_with_the_valid_ones() {
        assert_eq!(
            parse_services(" http,,geneve , http"),
            Ok(vec!["http", "geneve"])
        );
        let err = parse_services("http,gopher").expect_err("gopher is unknown");
        assert!(err.contains("\"gopher\""), "{err}");
        assert!(err.contains("ldap_tcp") && err.contains("vxlan"), "{err}");
        for s in SERVICES.iter().chain(TUNNEL_SERVICES) {
            assert_eq!(parse_services(s), Ok(vec![*s]));
        }
    }
}
