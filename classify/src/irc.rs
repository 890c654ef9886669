//! `irc`: a client registration line (`NICK`, `USER` or `PASS`, Zeek's DPD signature) and a
//! server line with a prefix (`:server 001 ...`) confirm it. A `DCC SEND` offer (CTCP inside a
//! `PRIVMSG`) announces a data connection to the offered address and port, which Zeek labels
//! `irc-dcc-data` (it does not label `DCC CHAT`).

use std::net::{IpAddr, Ipv4Addr};

use crate::scan::{find, lines, starts_with_ci};
use crate::{Evidence, Expect, Found, TCP};

const MAX_LINES: usize = 256;
const MAX_EXPECTS: usize = 32;

pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    let (client, server) = (ev.orig.stream(), ev.resp.stream());
    let registers = lines(client, MAX_LINES).any(|l| {
        [&b"NICK "[..], b"USER ", b"PASS "]
            .iter()
            .any(|c| starts_with_ci(l.trim_ascii_start(), c))
    });
    if !registers || !lines(server, MAX_LINES).any(server_line) {
        return None;
    }
    let mut found = crate::scan::found(&["irc"]);
    let from_client = lines(client, MAX_LINES).filter_map(|l| dcc_send(l, false));
    let from_server = lines(server, MAX_LINES).filter_map(|l| dcc_send(l, true));
    found.expects = from_client.chain(from_server).take(MAX_EXPECTS).collect();
    Some(found)
}

/// `:prefix COMMAND ...` with a word as the command.
fn server_line(line: &[u8]) -> bool {
    let Some(rest) = line.trim_ascii_start().strip_prefix(b":") else {
        return false;
    };
    let mut words = rest.split(|&b| b == b' ');
    let prefix = words.next().is_some_and(|p| !p.is_empty());
    prefix
        && words
            .next()
            .is_some_and(|c| !c.is_empty() && c.iter().all(u8::is_ascii_alphanumeric))
}

/// `... :\x01DCC SEND <file> <ip as a number> <port> [<size>]\x01`.
fn dcc_send(line: &[u8], by_resp: bool) -> Option<Expect> {
    let at = find(line, b"\x01DCC SEND ")?;
    let args = &line[at + 10..];
    let args = &args[..args.iter().position(|&b| b == 1).unwrap_or(args.len())];
    // The file name may be quoted and hold spaces: read the numbers from the end.
    let words: Vec<&[u8]> = args
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .collect();
    let tail = words
        .iter()
        .rev()
        .take_while(|w| parse_u32(w).is_some())
        .count();
    // `ip port` or `ip port size` after the file name (which may itself be a number).
    let base = match tail {
        0 | 1 => return None,
        2 => words.len() - 2,
        _ => words.len() - 3,
    };
    let ip = parse_u32(words.get(base)?)?;
    let port = u16::try_from(parse_u32(words.get(base + 1)?)?).ok()?;
    (port != 0).then_some(Expect {
        addr: Some(IpAddr::V4(Ipv4Addr::from(ip))),
        port,
        by_resp,
        service: "irc-dcc-data",
    })
}

/// A decimal `u32` (an IPv4 address as DCC writes it has up to 10 digits).
fn parse_u32(w: &[u8]) -> Option<u32> {
    if w.is_empty() || w.len() > 10 || !w.iter().all(u8::is_ascii_digit) {
        return None;
    }
    w.iter().try_fold(0u32, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(client: &[u8], server: &[u8]) -> Option<Found> {
        crate::util::tests::found(detect, TCP, 6667, client, server, false)
    }

    #[test]
    fn registration_and_a_dcc_send_offer() {
        let c = b"CAP LS 302\r\nNICK alice\r\nUSER alice 0 * :Alice\r\nPRIVMSG bob :\x01DCC SEND notes.txt 3232235777 5000 1234\x01\r\nPRIVMSG bob :\x01DCC CHAT chat 3232235777 5001\x01\r\n";
        let s = b":irc.example NOTICE * :*** Looking up your hostname\r\n:irc.example 001 alice :Welcome\r\n";
        let found = run(c, s).expect("irc");
        assert_eq!(found.services, vec!["irc"]);
        assert_eq!(
            found.expects,
            vec![Expect {
                addr: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1))),
                port: 5000,
                by_resp: false,
                service: "irc-dcc-data",
            }]
        );
    }

    #[test]
    fn no_registration_or_no_server_prefix_is_not_irc() {
        assert_eq!(run(b"NICK a\r\n", b"HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(run(b"GET / HTTP/1.1\r\n", b":srv 001 a :hi\r\n"), None);
        assert_eq!(
            dcc_send(b"PRIVMSG b :\x01DCC SEND f 99999999999 5\x01", false),
            None
        );
        assert_eq!(dcc_send(b"PRIVMSG b :\x01DCC SEND f 1 0\x01", false), None);
    }
}
