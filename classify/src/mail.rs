//! `smtp`, `pop3`, `imap`: the server's greeting and a client command of the protocol confirm
//! it (Zeek's DPD signatures pair the same two; its analyzers then parse the command/reply
//! dialogue). After `STARTTLS` (POP3: `STLS`) the TLS hello that follows the plaintext part
//! confirms `ssl` as well: `smtp,ssl`, `pop3,ssl`, `imap,ssl`. That hello comes after the
//! greeting, the capabilities and the upgrade command, so the budget must reach past them.

use crate::scan::{lines, lines_with_end, starts_with_ci};
use crate::{Evidence, Found, TCP};

/// Lines read from each side, at most.
const MAX_LINES: usize = 64;

const POP3_COMMANDS: &[&[u8]] = &[
    b"USER", b"PASS", b"APOP", b"CAPA", b"STLS", b"AUTH", b"QUIT", b"STAT", b"LIST", b"RETR",
    b"UIDL", b"TOP", b"NOOP", b"DELE", b"RSET", b"XTND",
];

pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != TCP {
        return None;
    }
    let (client, server) = (ev.orig.stream(), ev.resp.stream());
    let greeting = first_line(server)?;
    let command = first_line(client)?;
    let (name, upgrade): (&'static str, &[u8]) = if smtp(greeting, command) {
        ("smtp", b"STARTTLS")
    } else if pop3(greeting, command) && !pop3_violates(client, server) {
        ("pop3", b"STLS")
    } else if imap(greeting, command) {
        ("imap", b"STARTTLS")
    } else {
        return None;
    };
    let asked = lines(client, MAX_LINES).any(|l| command_is(l, upgrade, name == "imap"));
    if asked {
        let found = crate::tls::upgraded(ev, name, tls_start(client), tls_start(server));
        if found.is_some() {
            return found;
        }
    }
    Some(crate::scan::found(&[name]))
}

fn first_line(stream: &[u8]) -> Option<&[u8]> {
    lines(stream, 1).next().map(|l| l.trim_ascii_start())
}

fn smtp(greeting: &[u8], command: &[u8]) -> bool {
    let g = greeting.starts_with(b"220") && matches!(greeting.get(3), None | Some(b' ' | b'-'));
    g && (starts_with_ci(command, b"HELO") || starts_with_ci(command, b"EHLO"))
}

fn pop3(greeting: &[u8], command: &[u8]) -> bool {
    greeting.starts_with(b"+OK") && POP3_COMMANDS.iter().any(|c| command_is(command, c, false))
}

/// Zeek's POP3 analyzer reports a violation for a server line that is neither a status
/// (`+OK`, `-ERR`, a `+ ` continuation) nor part of a multi-line answer (`LIST`, `UIDL`,
/// `RETR`, `TOP`, `CAPA`, up to the `.` line); a violation takes the confirmed service back.
/// Answers are matched to the client's commands in order (an `AUTH` exchange included).
fn pop3_violates(client: &[u8], server: &[u8]) -> bool {
    let server = tls_start(server).map_or(server, |end| &server[..end]);
    let client = tls_start(client).map_or(client, |end| &client[..end]);
    let mut commands = lines(client, MAX_LINES);
    let mut in_list = false;
    let mut first = true;
    let mut in_auth = false;
    for line in lines(server, MAX_LINES) {
        if in_list {
            in_list = line != b".";
            continue;
        }
        if !matches!(line.first(), Some(b'+' | b'-')) {
            return true;
        }
        if first {
            first = false; // the greeting answers no command
            continue;
        }
        if line.starts_with(b"+ ") || line == b"+" {
            // An AUTH challenge: the client's next line answers it; the AUTH goes on.
            if !in_auth {
                commands.next();
            }
            commands.next();
            in_auth = true;
            continue;
        }
        if std::mem::take(&mut in_auth) {
            continue; // the AUTH's final status
        }
        let cmd = commands.next().unwrap_or(&[]);
        let multi = (command_is(cmd, b"LIST", false) || command_is(cmd, b"UIDL", false))
            && cmd.len() == 4
            || command_is(cmd, b"RETR", false)
            || command_is(cmd, b"TOP", false)
            || command_is(cmd, b"CAPA", false);
        in_list = multi && line.starts_with(b"+OK");
    }
    false
}

fn imap(greeting: &[u8], command: &[u8]) -> bool {
    let g = greeting.starts_with(b"* OK") || greeting.starts_with(b"* PREAUTH");
    let mut words = command.split(|&b| b == b' ');
    let tag_ok = words
        .next()
        .is_some_and(|t| !t.is_empty() && t.iter().all(u8::is_ascii_graphic));
    g && tag_ok
        && words
            .next()
            .is_some_and(|c| !c.is_empty() && c.iter().all(u8::is_ascii_alphabetic))
}

/// `line` is the command `cmd` (after an IMAP tag when `tagged`), alone or with arguments.
pub(crate) fn command_is(line: &[u8], cmd: &[u8], tagged: bool) -> bool {
    let line = if tagged {
        line.splitn(2, |&b| b == b' ').nth(1).unwrap_or(&[])
    } else {
        line
    };
    starts_with_ci(line, cmd) && matches!(line.get(cmd.len()), None | Some(b' '))
}

/// Where a TLS record starts right after a plaintext line, if one does.
pub(crate) fn tls_start(stream: &[u8]) -> Option<usize> {
    lines_with_end(stream, MAX_LINES)
        .map(|(_, end)| end)
        .find(|&end| stream.get(end..end + 2) == Some(&[0x16, 0x03]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::{client_hello_msg, records, server_hello};
    use crate::Side;

    fn ev<'a>(orig: &'a [&'a [u8]], resp: &'a [&'a [u8]]) -> Evidence<'a> {
        Evidence {
            proto: TCP,
            orig_port: 45000,
            resp_port: 25,
            orig: Side {
                segments: orig,
                truncated: false,
                len: None,
            },
            resp: Side {
                segments: resp,
                truncated: false,
                len: None,
            },
        }
    }

    fn services(orig: &[u8], resp: &[u8]) -> Option<Vec<&'static str>> {
        detect(&ev(&[orig], &[resp])).map(|f| f.services)
    }

    #[test]
    fn smtp_with_and_without_starttls() {
        let greet = b"220 mx.example ESMTP\r\n250-mx.example\r\n250 STARTTLS\r\n220 go ahead\r\n";
        assert_eq!(
            services(b"EHLO client\r\nMAIL FROM:<a@b>\r\n", greet),
            Some(vec!["smtp"])
        );
        let mut c = b"EHLO client\r\nSTARTTLS\r\n".to_vec();
        c.extend(records(&client_hello_msg("mx.example"), 4000));
        let found = detect(&ev(&[&c], &[greet])).expect("smtp with TLS");
        assert_eq!(found.services, vec!["smtp", "ssl"]);
        assert_eq!(found.server_name.as_deref(), Some("mx.example"));
    }

    #[test]
    fn pop3_and_imap_upgrades() {
        assert_eq!(
            services(b"USER bob\r\n", b"+OK POP3 ready\r\n"),
            Some(vec!["pop3"])
        );
        let mut s = b"+OK ready\r\n+OK begin TLS\r\n".to_vec();
        s.extend(server_hello());
        assert_eq!(services(b"STLS\r\n", &s), Some(vec!["pop3", "ssl"]));
        let mut c = b"a1 CAPABILITY\r\na2 STARTTLS\r\n".to_vec();
        c.extend(records(&client_hello_msg("imap.example"), 4000));
        let s = b"* OK IMAP4rev1 ready\r\n* CAPABILITY IMAP4rev1 STARTTLS\r\na1 OK\r\na2 OK go\r\n";
        assert_eq!(services(&c, s), Some(vec!["imap", "ssl"]));
    }

    #[test]
    fn a_pop3_server_line_out_of_place_takes_pop3_back() {
        let c = b"LIST\r\nRETR 1\r\nQUIT\r\n";
        let good = b"+OK ready\r\n+OK 1 messages\r\n1 120\r\n.\r\n+OK follows\r\nSubject: x\r\n\r\nbody\r\n.\r\n+OK bye\r\n";
        assert_eq!(services(c, good), Some(vec!["pop3"]));
        let c = b"AUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\nLIST\r\nQUIT\r\n";
        let s = b"+OK ready\r\n+ \r\n+OK logged in\r\n+OK\r\n1 5565\r\n.\r\n+OK bye\r\n";
        assert_eq!(services(c, s), Some(vec!["pop3"]), "AUTH challenge");
        let bad = b"+OK ready\r\nGARBAGE\r\n+OK 1 messages\r\n1 120\r\n.\r\n";
        assert_eq!(services(c, bad), None);
    }

    #[test]
    fn a_greeting_alone_or_a_refused_upgrade_is_plaintext_or_nothing() {
        assert_eq!(services(b"", b"220 mx ESMTP\r\n"), None);
        assert_eq!(services(b"GET / HTTP/1.1\r\n", b"220 mx ESMTP\r\n"), None);
        let c = b"EHLO x\r\nSTARTTLS\r\nQUIT\r\n";
        assert_eq!(services(c, b"220 mx\r\n454 no TLS\r\n"), Some(vec!["smtp"]));
    }
}
