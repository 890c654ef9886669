//! https to InfluxDB: which certificates are trusted, what a TLS failure is called, and URLs
//! shown without the credentials they might carry.
//!
//! rustls (ring) through ureq. The server's certificate is checked against the system's roots
//! (rustls-platform-verifier: on Linux the bundle `SSL_CERT_FILE` / `SSL_CERT_DIR` name, else
//! OpenSSL's usual places, `/etc/ssl/certs/ca-certificates.crt` on Debian), or, with a CA file,
//! against the certificates in that file only (like `curl --cacert`). Verification cannot be
//! turned off.

use std::path::Path;
use std::sync::Arc;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

use super::InfluxError;

/// Reads a PEM file of CA certificates (a private CA, or a self-signed server certificate).
/// Fails when the file cannot be read, is not PEM, or holds no certificate.
pub fn load_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, InfluxError> {
    let bad = |reason: String| InfluxError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(bad(format!("not PEM: {e}"))),
        }
    }
    if certs.is_empty() {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// The agent's TLS settings: the CA file's certificates, or the system's roots.
pub(crate) fn config(ca_file: Option<&Path>) -> Result<TlsConfig, InfluxError> {
    let roots = match ca_file {
        Some(p) => RootCerts::Specific(Arc::new(load_ca_file(p)?)),
        None => RootCerts::PlatformVerifier,
    };
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(roots)
        .build())
}

/// True for a failure of the TLS layer: the handshake (certificate refused, a server that
/// does not speak TLS), or the trust store itself (no system roots).
pub(crate) fn is_tls_error(e: &ureq::Error, https: bool) -> bool {
    match e {
        ureq::Error::Rustls(_)
        | ureq::Error::Tls(_)
        | ureq::Error::Pem(_)
        | ureq::Error::TlsRequired => true,
        // rustls reports handshake failures as InvalidData I/O errors wrapping its own error;
        // nothing else on a request's way gives InvalidData before an answer.
        ureq::Error::Io(io) => https && io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

/// The message for a TLS failure: what rustls said, and what to check.
pub(crate) fn describe(e: &ureq::Error, ca_file: Option<&Path>) -> String {
    let detail = match e {
        ureq::Error::Io(io) => io.to_string(),
        e => e.to_string(),
    };
    let hint = if detail.contains("UnknownIssuer") {
        match ca_file {
            Some(p) => format!(
                "the server's certificate is not signed by a CA in --influx-ca-file {}",
                p.display()
            ),
            None => "the server's certificate is not signed by a CA the system trusts: give \
                     its CA (or the self-signed certificate) with --influx-ca-file"
                .to_owned(),
        }
    } else if detail.contains("NotValidForName") || detail.contains("not valid for name") {
        "the server's certificate does not name the host of --influx-url".to_owned()
    } else if detail.contains("CaUsedAsEndEntity") {
        "the server's certificate is a CA certificate (basicConstraints CA:TRUE): make it with \
         CA:FALSE, or sign it with a CA and give that CA with --influx-ca-file"
            .to_owned()
    } else if detail.contains("BadSignature") {
        "a trusted CA has the name of the certificate's issuer but did not sign it".to_owned()
    } else if detail.contains("Expired") || detail.contains("NotValidYet") {
        "the server's certificate is outside its validity period (check both clocks)".to_owned()
    } else if detail.contains("corrupt message") || detail.contains("InvalidContentType") {
        "the server does not speak TLS: is it plain http (use http://, or enable https in \
         InfluxDB)?"
            .to_owned()
    } else if detail.contains("No CA certificates") {
        "no system CA certificates (install ca-certificates) and no --influx-ca-file".to_owned()
    } else {
        String::new()
    };
    if hint.is_empty() {
        format!("TLS failed: {detail}")
    } else {
        format!("TLS failed: {detail}; {hint}")
    }
}

/// `url` with any `user:password@` and query string replaced by `<redacted>`, for messages.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // A password may hold `/`, `?` or `#`: everything up to the last `@` goes.
    let (user, rest) = match rest.rfind('@') {
        Some(at) => ("<redacted>@", &rest[at + 1..]),
        None => ("", rest),
    };
    let (before, query) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    let query = if query.is_empty() { "" } else { "?<redacted>" };
    format!("{scheme}{user}{before}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        for (url, want) in [
            ("http://127.0.0.1:8086", "http://127.0.0.1:8086"),
            (
                "https://influx.example/prefix",
                "https://influx.example/prefix",
            ),
            (
                "https://admin:hunter2@influx.example:8086/x",
                "https://<redacted>@influx.example:8086/x",
            ),
            ("http://u:p@ss@h", "http://<redacted>@h"),
            (
                "http://h:8086/?u=admin&p=hunter2",
                "http://h:8086/?<redacted>",
            ),
            ("http://h?p=hunter2", "http://h?<redacted>"),
            ("admin:hunter2@h", "<redacted>@h"),
            ("http://u:pa/ss@h:8086", "http://<redacted>@h:8086"),
            ("http://u:pa?ss@h/p?x=1", "http://<redacted>@h/p?<redacted>"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn ca_files_are_checked() {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write the CA file");
        for p in [&missing, &empty] {
            let Err(e) = load_ca_file(p) else {
                panic!("accepted {}", p.display())
            };
            assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        }
    }
}
