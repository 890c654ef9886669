//! A small, bounded BER (ASN.1) reader for the detectors of Kerberos, LDAP, GSSAPI and SNMP:
//! one tag-length-value at a time over a borrowed slice, no recursion, no allocation.
//! Definite lengths only (LDAP, Kerberos and SNMP forbid the indefinite form); lengths of up to
//! four octets; tag numbers of up to four octets.

/// One element: its identifier octet(s) and its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    /// The first identifier octet (class, constructed bit and low tag number), e.g. `0x30`.
    pub(crate) id: u8,
    /// The content the evidence holds: shorter than `len` when `short`.
    pub(crate) content: &'a [u8],
    /// The content length the header announces.
    pub(crate) len: usize,
    /// The evidence ends inside the content.
    pub(crate) short: bool,
}

/// Why an element could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BerError {
    /// The evidence ends inside the header.
    Short,
    /// Not BER (indefinite or oversized length, oversized tag).
    Bad,
}

/// Reads one element from the front of `b`; returns it and what follows it (empty when the
/// content runs past the end of `b`).
pub(crate) fn read(b: &[u8]) -> Result<(Tlv<'_>, &[u8]), BerError> {
    let (&id, mut rest) = b.split_first().ok_or(BerError::Short)?;
    if id & 0x1f == 0x1f {
        // High tag number: continuation octets with the top bit set, at most four.
        let mut n = 0;
        loop {
            let (&o, r) = rest.split_first().ok_or(BerError::Short)?;
            rest = r;
            n += 1;
            if o & 0x80 == 0 {
                break;
            }
            if n >= 4 {
                return Err(BerError::Bad);
            }
        }
    }
    let (&l0, r) = rest.split_first().ok_or(BerError::Short)?;
    rest = r;
    let len = if l0 & 0x80 == 0 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 {
            return Err(BerError::Bad);
        }
        let octets = rest.get(..n).ok_or(BerError::Short)?;
        rest = &rest[n..];
        octets
            .iter()
            .fold(0usize, |acc, &o| (acc << 8) | usize::from(o))
    };
    if rest.len() >= len {
        let (content, after) = rest.split_at(len);
        Ok((
            Tlv {
                id,
                content,
                len,
                short: false,
            },
            after,
        ))
    } else {
        Ok((
            Tlv {
                id,
                content: rest,
                len,
                short: true,
            },
            &[],
        ))
    }
}

/// Reads one element whose identifier octet must be `id`.
pub(crate) fn expect(b: &[u8], id: u8) -> Result<(Tlv<'_>, &[u8]), BerError> {
    let (t, rest) = read(b)?;
    if t.id == id {
        Ok((t, rest))
    } else {
        Err(BerError::Bad)
    }
}

/// A whole INTEGER's value (up to eight octets, sign-extended), `None` if it is not one.
pub(crate) fn int_value(t: &Tlv<'_>) -> Option<i64> {
    if t.id != 0x02 || t.short || t.content.is_empty() || t.content.len() > 8 {
        return None;
    }
    let first = i64::from(t.content[0] as i8);
    Some(
        t.content[1..]
            .iter()
            .fold(first, |acc, &o| (acc << 8) | i64::from(o)),
    )
}

/// The DER encoding (content octets) of OIDs the detectors look for.
pub(crate) mod oid {
    /// 1.3.6.1.5.5.2, SPNEGO.
    pub(crate) const SPNEGO: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
    /// 1.2.840.113554.1.2.2, Kerberos 5.
    #[cfg(test)]
    pub(crate) const KRB5: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02];
    /// 1.2.840.48018.1.2.2, Microsoft's Kerberos 5 (as Windows lists it first in SPNEGO).
    #[cfg(test)]
    pub(crate) const MS_KRB5: &[u8] = &[0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths_and_reports_cuts() {
        let (t, rest) = read(&[0x30, 0x03, 0x02, 0x01, 0x05, 0xff]).expect("short form");
        assert_eq!(
            (t.id, t.len, t.content, rest),
            (0x30, 3, &[2u8, 1, 5][..], &[0xffu8][..])
        );
        let (t, _) = read(&[0x04, 0x82, 0x01, 0x00, 0xaa]).expect("long form, cut");
        assert_eq!((t.len, t.short, t.content), (256, true, &[0xaau8][..]));
        let (t, _) = read(&[0x30, 0x84, 0, 0, 0, 1, 7]).expect("four-octet length");
        assert!(!t.short);
        assert_eq!(read(&[0x30]), Err(BerError::Short));
        assert_eq!(read(&[0x30, 0x82, 0x01]), Err(BerError::Short));
        assert_eq!(read(&[0x30, 0x80]), Err(BerError::Bad));
        assert_eq!(read(&[0x30, 0x85, 1, 1, 1, 1, 1]), Err(BerError::Bad));
        assert_eq!(
            read(&[0x1f, 0x81, 0x81, 0x81, 0x81, 0x01]),
            Err(BerError::Bad)
        );
        assert_eq!(read(&[]), Err(BerError::Short));
    }

    #[test]
    fn integers_are_sign_extended() {
        let (t, _) = read(&[0x02, 0x01, 0x05]).expect("int");
        assert_eq!(int_value(&t), Some(5));
        let (t, _) = read(&[0x02, 0x02, 0xff, 0x00]).expect("negative int");
        assert_eq!(int_value(&t), Some(-256));
        let (t, _) = read(&[0x04, 0x01, 0x05]).expect("octet string");
        assert_eq!(int_value(&t), None);
    }
}
