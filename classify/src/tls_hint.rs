//! A deliberately small check for the protocols of group B that switch to TLS (LDAP StartTLS,
//! RDP's enhanced security, PostgreSQL's SSLRequest): does a TLS handshake record carrying a
//! ClientHello or ServerHello start here? Zeek's SSL analyzer confirms on a parsed hello; the
//! full parse (and the server name) is the TLS detector's business.

/// `b` starts with a TLS handshake record (`0x16`, version 3.x) whose first message is a
/// ClientHello or ServerHello of plausible length. `cut`: the evidence ended inside the record.
pub(crate) fn hello(b: &[u8], cut: bool) -> bool {
    let [0x16, 0x03, minor, l0, l1, kind, ..] = *b else {
        return false;
    };
    let record = usize::from(u16::from_be_bytes([l0, l1]));
    if minor > 4 || !(kind == 1 || kind == 2) || !(38..=0x4800).contains(&record) {
        return false;
    }
    match b.get(6..9) {
        Some(l) => {
            let msg = usize::from(l[0]) << 16 | usize::from(l[1]) << 8 | usize::from(l[2]);
            msg + 4 <= record || (cut && b.len() < 5 + record)
        }
        None => cut,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello record's first bytes (the body is zeros: the hint reads only headers).
    pub(crate) fn client_hello() -> Vec<u8> {
        let mut b = vec![
            0x16, 0x03, 0x01, 0x00, 0x30, 0x01, 0x00, 0x00, 0x2c, 0x03, 0x03,
        ];
        b.resize(5 + 0x30, 0);
        b
    }

    #[test]
    fn hellos_and_other_records() {
        let ch = client_hello();
        assert!(hello(&ch, false));
        assert!(!hello(&ch[..7], false));
        assert!(hello(&ch[..7], true));
        let mut alert = ch.clone();
        alert[0] = 0x15;
        assert!(!hello(&alert, true));
        let mut finished = ch.clone();
        finished[5] = 20;
        assert!(!hello(&finished, true));
        assert!(!hello(b"\x16\x03", true));
    }
}
