//! Zeek's bare-mode tests (`zeek -b`) run as their scripts configured Zeek (issue 17). In bare
//! mode Zeek loads only the scripts a test names, so only those protocols' analyzers are
//! reached (their ports registered, their DPD signatures loaded): an analyzer not loaded never
//! confirms, and its service is never listed. `zeek_bare.tsv` gives, for every bare test of
//! `../shared/zeek-corpus`, its script in zeek/zeek and the script's `@load` lines, the
//! analyzers it registers for ports itself and its redefs; [`processor_flags`] turns a row into
//! the processor's `--disable-services` (every service the loaded analyzers cannot confirm) and
//! `--dns-max-queries` (Zeek's `dns_max_queries`). A test whose script was not found is left in
//! full mode. Tunnels are packet analyzers, loaded even in bare mode: never disabled here.

use tapflow_classify::SERVICES;

/// The table, one row per bare test (see its header).
const TABLE: &str = include_str!("zeek_bare.tsv");

/// One bare test and how its script configured Zeek.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BareTest {
    /// MANIFEST.tsv's test, without a `:FILE` suffix.
    pub test: String,
    /// The script's path in zeek/zeek; `None`: no stored version runs bare (full mode).
    pub script: Option<String>,
    pub loads: Vec<String>,
    /// Analyzers registered for ports by the script (`POP3 110/tcp`).
    pub registers: Vec<String>,
    pub redefs: Vec<String>,
    pub note: String,
}

/// Every row of the table.
pub fn table() -> Vec<BareTest> {
    let list = |cell: &str, sep: char| -> Vec<String> {
        match cell {
            "-" | "" => Vec::new(),
            c => c.split(sep).map(|s| s.trim().to_owned()).collect(),
        }
    };
    TABLE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let cell = |i: usize| c.get(i).copied().unwrap_or("-");
            BareTest {
                test: cell(0).to_owned(),
                script: (cell(1) != "-").then(|| cell(1).to_owned()),
                loads: list(cell(2), ','),
                registers: list(cell(3), ','),
                redefs: list(cell(4), ';'),
                note: cell(5).to_owned(),
            }
        })
        .collect()
}

/// The services a loaded script's analyzers confirm, as its `__load__.zeek` loads them
/// (`base/protocols/ssl` also registers DTLS; `websocket` loads `http`; `ftp` and `irc`
/// schedule their data connections).
fn services_of_load(load: &str) -> &'static [&'static str] {
    let Some(proto) = load.strip_prefix("base/protocols/") else {
        return &[];
    };
    match proto {
        "ftp" => &["ftp", "ftp-data"],
        "irc" => &["irc", "irc-dcc-data"],
        "krb" => &["krb", "krb_tcp"],
        "ldap" => &["ldap_tcp", "ldap_udp"],
        "rdp" => &["rdp", "rdpeudp"],
        "ssl" => &["ssl", "dtls"],
        "websocket" => &["websocket", "http"],
        other => SERVICES
            .iter()
            .position(|s| *s == other)
            .map_or(&[], |i| &SERVICES[i..=i]),
    }
}

/// The service of an analyzer registered for a port (`POP3 110/tcp`), if tapflow has it.
fn service_of_register(reg: &str) -> &'static [&'static str] {
    let tag = reg
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    services_of_load(&format!("base/protocols/{tag}"))
}

/// Analyzers that an analyzer starts itself, compiled in and enabled whatever the scripts
/// loaded: TLS after STARTTLS (`smtp`, `imap`, `pop3`, `xmpp`, `irc`, `ldap_tcp`), `AUTH TLS`
/// (`ftp`), RDP's switch to TLS and QUIC's handshake.
fn spawned(service: &str) -> &'static [&'static str] {
    match service {
        "smtp" | "imap" | "pop3" | "xmpp" | "irc" | "ldap_tcp" | "ftp" | "rdp" | "quic" => &["ssl"],
        _ => &[],
    }
}

impl BareTest {
    /// The services Zeek could confirm in this test (empty when left in full mode).
    pub fn enabled(&self) -> Vec<&'static str> {
        let direct = self.loads.iter().map(|l| services_of_load(l));
        let registered = self.registers.iter().map(|r| service_of_register(r));
        let mut on: Vec<&'static str> = direct.chain(registered).flatten().copied().collect();
        let children: Vec<&'static str> = on.iter().flat_map(|s| spawned(s)).copied().collect();
        on.extend(children);
        on.sort_unstable();
        on.dedup();
        on
    }

    /// The redefined `dns_max_queries`, if the test sets it.
    pub fn dns_max_queries(&self) -> Option<u16> {
        self.redefs.iter().find_map(|r| {
            let (name, value) = r.split_once('=')?;
            (name.trim() == "dns_max_queries").then(|| value.trim().parse().ok())?
        })
    }

    /// The processor flags that reproduce the test's configuration (none in full mode).
    pub fn processor_flags(&self) -> Vec<String> {
        if self.script.is_none() {
            return Vec::new();
        }
        let on = self.enabled();
        let off: Vec<&str> = SERVICES
            .iter()
            .copied()
            .filter(|s| !on.contains(s))
            .collect();
        let mut flags = Vec::new();
        if !off.is_empty() {
            flags.extend(["--disable-services".to_owned(), off.join(",")]);
        }
        if let Some(n) = self.dns_max_queries() {
            flags.extend(["--dns-max-queries".to_owned(), n.to_string()]);
        }
        flags
    }
}

/// The row of a MANIFEST test (`NAME` or `NAME:FILE`), if it ran bare.
pub fn bare_test(test: &str) -> Option<BareTest> {
    let name = test.split(':').next().unwrap_or(test);
    table().into_iter().find(|t| t.test == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_read_once() {
        let t = table();
        assert_eq!(t.len(), 50);
        let mut names: Vec<&str> = t.iter().map(|r| r.test.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 50, "a test twice");
        assert_eq!(t.iter().filter(|r| r.script.is_none()).count(), 2);
        for r in &t {
            if let Some(s) = &r.script {
                assert!(s.starts_with("testing/btest/"), "{s}");
            }
        }
    }

    #[test]
    fn flags_follow_the_scripts() {
        let flags = |t: &str| bare_test(t).expect("a bare test").processor_flags();
        let off = |t: &str| -> Vec<String> {
            let f = flags(t);
            let at = f.iter().position(|x| x == "--disable-services");
            at.map(|i| f[i + 1].split(',').map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let geneve = off("core.tunnels.geneve-many-options");
        assert!(geneve.contains(&"http".to_owned()) && geneve.len() == SERVICES.len());
        let redis = off("scripts.base.protocols.pop3.redis");
        assert!(redis.contains(&"redis".to_owned()));
        assert!(
            !redis.iter().any(|s| s == "pop3" || s == "ssl"),
            "{redis:?}"
        );
        let dns = flags("scripts.base.protocols.dns.max-queries");
        assert!(dns.ends_with(&["--dns-max-queries".to_owned(), "3".to_owned()]));
        assert!(!off("scripts.base.protocols.dns.max-queries").contains(&"dns".to_owned()));
        let ws = off("scripts.base.protocols.websocket.wstunnel-http:conn.log");
        assert!(!ws
            .iter()
            .any(|s| ["http", "websocket", "ssh"].contains(&s.as_str())));
        let gnutella = bare_test("scripts.base.protocols.pop3.bad-list-retr-crafted");
        assert!(gnutella.expect("row").enabled().contains(&"pop3"));
        assert!(
            flags("scripts.base.protocols.ftp.ftp-ipv4").is_empty(),
            "full mode"
        );
        assert_eq!(bare_test("core.cisco-fabric-path"), None);
    }
}
