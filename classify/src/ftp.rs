//! `ftp`: a server reply code (`220 ...`) and an FTP command from the client confirm it. The
//! data connections it announces become expectations with the service `ftp-data`: `PORT` and
//! `EPRT` from the client, the `227` (`PASV`) and `229` (`EPSV`) replies from the server.
//! `AUTH TLS` followed by a TLS hello gives `ftp,ssl` (the announcements are then encrypted).

use std::net::{IpAddr, Ipv4Addr};

use crate::scan::{leading_number, lines, starts_with_ci};
use crate::{Evidence, Expect, Found, TCP};

const MAX_LINES: usize = 256;
const MAX_EXPECTS: usize = 32;
const DATA: &str = "ftp-data";

const COMMANDS: &[&[u8]] = &[
    b"USER", b"PASS", b"ACCT", b"AUTH", b"FEAT", b"SYST", b"OPTS", b"PORT", b"PASV", b"EPRT",
    b"EPSV", b"TYPE", b"CWD", b"PWD", b"LIST", b"NLST", b"RETR", b"STOR", b"QUIT", b"HELP",
    b"NOOP", b"MODE", b"STRU", b"SIZE", b"MDTM", b"REST", b"CLNT", b"HOST", b"PBSZ", b"PROT",
];

pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    let (client, server) = (ev.orig.stream(), ev.resp.stream());
    let greeting = lines(server, 1).next()?.trim_ascii_start();
    let command = lines(client, 1).next()?.trim_ascii_start();
    let coded = leading_number(greeting).is_some_and(|(code, rest)| {
        (100..600).contains(&code) && matches!(rest.first(), None | Some(b' ' | b'-'))
    });
    if !coded
        || !COMMANDS
            .iter()
            .any(|c| crate::mail::command_is(command, c, false))
    {
        return None;
    }
    if violates(server) {
        return None;
    }
    let auth = lines(client, MAX_LINES)
        .any(|l| starts_with_ci(l, b"AUTH TLS") || starts_with_ci(l, b"AUTH SSL"));
    if auth {
        let (o, r) = (
            crate::mail::tls_start(client),
            crate::mail::tls_start(server),
        );
        if let Some(found) = crate::tls::upgraded(ev, "ftp", o, r) {
            return Some(found);
        }
    }
    let mut found = crate::scan::found(&["ftp"]);
    let from_client = lines(client, MAX_LINES).filter_map(|l| announced(l, false));
    let from_server = lines(server, MAX_LINES).filter_map(|l| announced(l, true));
    found.expects = from_client.chain(from_server).take(MAX_EXPECTS).collect();
    Some(found)
}

/// Zeek's FTP analyzer reports a violation for a reply line outside a multi-line reply that
/// does not start with a code in 100..=599, and a violation takes the confirmed service back.
/// Lines after an AUTH TLS upgrade are not read (they are TLS records, not lines).
fn violates(server: &[u8]) -> bool {
    let plain = crate::mail::tls_start(server).map_or(server, |end| &server[..end]);
    let mut multi: Option<u32> = None;
    for line in lines(plain, MAX_LINES) {
        let parsed = leading_number(line)
            .filter(|(_, rest)| matches!(rest.first(), None | Some(b' ' | b'-')));
        match (multi, parsed) {
            (Some(code), Some((c, rest))) if c == code && rest.first() != Some(&b'-') => {
                multi = None
            }
            (Some(_), _) => {}
            (None, Some((c, rest))) if (100..600).contains(&c) => {
                if rest.first() == Some(&b'-') {
                    multi = Some(c);
                }
            }
            (None, _) => return true,
        }
    }
    false
}

/// The data connection a line announces, if it does.
pub(crate) fn announced(line: &[u8], by_resp: bool) -> Option<Expect> {
    let (addr, port) = if by_resp {
        let (code, rest) = leading_number(line)?;
        match code {
            227 => host_port(rest.get(rest.iter().position(u8::is_ascii_digit)?..)?)?,
            229 => (None, extended(rest)?.1),
            _ => return None,
        }
    } else if starts_with_ci(line, b"PORT ") {
        host_port(line[5..].trim_ascii())?
    } else if starts_with_ci(line, b"EPRT ") {
        let (addr, port) = extended(&line[5..])?;
        (Some(addr?), port)
    } else {
        return None;
    };
    Some(Expect {
        addr,
        port,
        by_resp,
        service: DATA,
    })
}

/// `h1,h2,h3,h4,p1,p2` (RFC 959).
fn host_port(s: &[u8]) -> Option<(Option<IpAddr>, u16)> {
    let mut n = [0u8; 6];
    let mut rest = s;
    for (i, slot) in n.iter_mut().enumerate() {
        let (v, after) = leading_number(rest.trim_ascii_start())?;
        *slot = u8::try_from(v).ok()?;
        rest = if i < 5 {
            after.strip_prefix(b",")?
        } else {
            after
        };
    }
    let addr = IpAddr::V4(Ipv4Addr::new(n[0], n[1], n[2], n[3]));
    Some((Some(addr), u16::from_be_bytes([n[4], n[5]])))
}

/// `<d>proto<d>addr<d>port<d>` (RFC 2428), found anywhere in `s` (a `229` reply wraps it in
/// parentheses and leaves the protocol and address empty).
fn extended(s: &[u8]) -> Option<(Option<IpAddr>, u16)> {
    let open = s.iter().position(|&b| b == b'(').map_or(0, |i| i + 1);
    let s = s.get(open..)?.trim_ascii_start();
    let delim = *s.first()?;
    if !(33..=126).contains(&delim) || delim.is_ascii_digit() {
        return None;
    }
    let mut parts = s[1..].split(|&b| b == delim);
    let (_proto, addr, port) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next()?; // the closing delimiter
    let addr = if addr.is_empty() {
        None
    } else {
        Some(std::str::from_utf8(addr).ok()?.parse().ok()?)
    };
    let (port, rest) = leading_number(port)?;
    rest.is_empty().then_some((addr, u16::try_from(port).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(client: &[u8], server: &[u8]) -> Option<Found> {
        crate::util::tests::found(detect, TCP, 21, client, server, false)
    }

    fn expect(addr: Option<[u8; 4]>, port: u16, by_resp: bool) -> Expect {
        let addr = addr.map(|a| IpAddr::V4(Ipv4Addr::from(a)));
        Expect {
            addr,
            port,
            by_resp,
            service: DATA,
        }
    }

    #[test]
    fn passive_and_active_announcements_become_expectations() {
        let c = b"USER anonymous\r\nPASS x\r\nPASV\r\nRETR a\r\nPORT 10,0,0,5,221,187\r\nEPSV\r\nEPRT |1|10.0.0.5|5001|\r\n";
        let s = b"220 ProFTPD\r\n331 ok\r\n230 in\r\n227 Entering Passive Mode (192,168,1,2,221,186).\r\n150 x\r\n200 PORT ok\r\n229 Entering Extended Passive Mode (|||6446|)\r\n";
        let found = run(c, s).expect("ftp");
        assert_eq!(found.services, vec!["ftp"]);
        assert_eq!(
            found.expects,
            vec![
                expect(Some([10, 0, 0, 5]), 56763, false),
                expect(Some([10, 0, 0, 5]), 5001, false),
                expect(Some([192, 168, 1, 2]), 56762, true),
                expect(None, 6446, true),
            ]
        );
    }

    #[test]
    fn auth_tls_then_a_hello_is_ftp_then_ssl() {
        use crate::tls::tests::{client_hello_msg, records};
        let mut c = b"AUTH TLS\r\n".to_vec();
        c.extend(records(&client_hello_msg("ftp.example"), 4000));
        let found = run(&c, b"220 hi\r\n234 AUTH TLS ok\r\n").expect("ftp over TLS");
        assert_eq!(found.services, vec!["ftp", "ssl"]);
        assert_eq!(
            run(b"AUTH TLS\r\n", b"220 hi\r\n500 no\r\n")
                .expect("ftp")
                .services,
            vec!["ftp"]
        );
    }

    #[test]
    fn a_reply_without_a_valid_code_takes_ftp_back() {
        let c = b"USER zeek\r\nPASS zeek\r\nSYST\r\nQUIT\r\n";
        let multi = b"220-Welcome\r\n free text\r\n220 ready\r\n230 ok\r\n";
        assert_eq!(
            run(c, multi).expect("multi-line greeting").services,
            vec!["ftp"]
        );
        assert_eq!(
            run(c, b"220 ready\r\n230 ok\r\nSYST not supported\r\n"),
            None
        );
        assert_eq!(run(c, b"220 ready\r\n230 ok\r\n99 bad code\r\n"), None);
    }

    #[test]
    fn other_dialogues_and_bad_announcements() {
        assert_eq!(run(b"EHLO x\r\n", b"220 mx ESMTP\r\n"), None);
        assert_eq!(run(b"USER x\r\n", b"+OK\r\n"), None);
        assert_eq!(announced(b"PORT 10,0,0,300,1,1", false), None);
        assert_eq!(announced(b"EPRT |1|not-an-ip|5|", false), None);
        assert_eq!(announced(b"229 (|||99999|)", true), None);
    }
}
