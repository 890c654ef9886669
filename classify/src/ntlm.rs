//! NTLMSSP (Zeek's `ntlm`): never on a port of its own; GSSAPI (SPNEGO tokens in SMB, HTTP and
//! LDAP) and LDAP's SASL binds hand it a token, and Zeek's NTLM analyzer confirms once that token
//! parses as a NEGOTIATE, CHALLENGE or AUTHENTICATE message.

const SIGNATURE: &[u8] = b"NTLMSSP\0";

/// `token` is an NTLMSSP message whose fixed part parses; `cut`: the evidence ended inside it,
/// so a sound beginning counts.
pub(crate) fn message_ok(token: &[u8], cut: bool) -> bool {
    if token.len() < 12 {
        return cut && SIGNATURE.starts_with(token) && !token.is_empty() && token.len() >= 7;
    }
    if &token[..8] != SIGNATURE {
        return false;
    }
    let kind = u32::from_le_bytes([token[8], token[9], token[10], token[11]]);
    // The fixed part of each message: NEGOTIATE has flags and two security buffers,
    // CHALLENGE a target name buffer, flags, the challenge and a reserved field, AUTHENTICATE
    // six buffers and flags.
    let fixed = match kind {
        1 => 32,
        2 => 48,
        3 => 64,
        _ => return false,
    };
    token.len() >= fixed || cut
}

/// Whether a token starts as NTLMSSP (what GSSAPI and LDAP look at to forward it).
pub(crate) fn looks_like(token: &[u8]) -> bool {
    token.starts_with(b"NTLMSSP")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A NEGOTIATE message as Windows 7 sends it (flags, empty domain and workstation, version).
    pub(crate) fn negotiate() -> Vec<u8> {
        let mut m = SIGNATURE.to_vec();
        m.extend(1u32.to_le_bytes());
        m.extend(0xe208_8297u32.to_le_bytes());
        m.extend([0u8; 16]);
        m.extend([6, 1, 0xb1, 0x1d, 0, 0, 0, 0x0f]);
        m
    }

    #[test]
    fn negotiate_challenge_authenticate() {
        let m = negotiate();
        assert!(looks_like(&m));
        assert!(message_ok(&m, false));
        assert!(!message_ok(&m[..20], false));
        assert!(message_ok(&m[..20], true));
        let mut bad = m.clone();
        bad[8] = 9;
        assert!(!message_ok(&bad, false));
        assert!(!message_ok(b"NTLMSSQ\0\x01\0\0\0", true));
        assert!(!message_ok(b"", true));
    }
}
