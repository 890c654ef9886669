//! What an operator configures about the classifier, as a Zeek or Suricata operator does:
//! services turned off (Zeek's `Analyzer::disable_analyzer` and bare mode, where only the
//! analyzers of the loaded scripts run; Suricata's `app-layer.protocols.X.enabled: no`) and
//! Zeek's `dns_max_queries`.

/// Zeek's `dns_max_queries`: a DNS message with more questions is an analyzer violation.
pub const DEFAULT_DNS_MAX_QUERIES: u16 = 25;

/// Every application service the classifier can list (Zeek's names), and the services of
/// announced connections (`ftp-data`, `irc-dcc-data`).
pub const SERVICES: &[&str] = &[
    "dce_rpc",
    "dhcp",
    "dns",
    "dtls",
    "ftp",
    "ftp-data",
    "gssapi",
    "http",
    "imap",
    "irc",
    "irc-dcc-data",
    "krb",
    "krb_tcp",
    "ldap_tcp",
    "ldap_udp",
    "modbus",
    "mqtt",
    "mysql",
    "ntlm",
    "ntp",
    "pop3",
    "postgresql",
    "quic",
    "radius",
    "rdp",
    "rdpeudp",
    "redis",
    "rfb",
    "sip",
    "smb",
    "smtp",
    "snmp",
    "socks",
    "ssh",
    "ssl",
    "syslog",
    "websocket",
    "xmpp",
];

/// The tunnels' services (packet analyzers in Zeek, loaded even in bare mode). Disabling one
/// removes its label only: the collector still decapsulates it.
pub const TUNNEL_SERVICES: &[&str] = &["vxlan", "geneve", "gtpv1", "teredo", "ayiya"];

/// The classifier's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Services never listed, by Zeek's names (from [`SERVICES`] and [`TUNNEL_SERVICES`]).
    pub disabled: Vec<&'static str>,
    /// A DNS message with more questions than this is not DNS (Zeek's `dns_max_queries`;
    /// 0 = no limit, as in Zeek).
    pub dns_max_queries: u16,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            disabled: Vec::new(),
            dns_max_queries: DEFAULT_DNS_MAX_QUERIES,
        }
    }
}

impl Settings {
    /// `service` may be listed.
    pub fn enabled(&self, service: &str) -> bool {
        !self.disabled.contains(&service)
    }
}

/// A comma-separated list of service names (blanks around names and empty items ignored),
/// each known, in the order given without repeats; an unknown name is an error listing the
/// valid ones.
pub fn parse_services(list: &str) -> Result<Vec<&'static str>, String> {
    let mut out: Vec<&'static str> = Vec::new();
    let mut unknown = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let known = SERVICES.iter().chain(TUNNEL_SERVICES).find(|s| **s == name);
        match known {
            Some(s) if !out.contains(s) => out.push(s),
            Some(_) => {}
            None => unknown.push(name),
        }
    }
    if unknown.is_empty() {
        return Ok(out);
    }
    Err(format!(
        "unknown service {}; valid: {}, and the tunnels {}",
        unknown
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        SERVICES.join(","),
        TUNNEL_SERVICES.join(",")
    ))
}
