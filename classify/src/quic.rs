//! `quic`: a client Initial packet (QUIC v1, RFC 9000/9001, or v2, RFC 9369) is decrypted with
//! the keys every observer can derive from its destination connection ID, its CRYPTO frames
//! are reassembled, and a ClientHello in them confirms `quic` and `ssl` (Zeek hands the CRYPTO
//! stream to its SSL analyzer: `quic,ssl`); its SNI is the server name.
//!
//! Crypto comes from `ring` (already in the workspace through rustls): HKDF-SHA256, AES-128-GCM
//! and the AES header-protection mask of its `aead::quic` module.

use ring::aead::{self, quic as hp, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{self, KeyType, Prk, Salt};

use crate::scan::Reader;
use crate::{Evidence, Found, UDP};

const V1: u32 = 1;
const V2: u32 = 0x6b33_43cf;
const V1_SALT: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const V2_SALT: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];
/// Datagrams of the originator tried, and packets per datagram, at most.
const MAX_DATAGRAMS: usize = 8;
const MAX_PACKETS: usize = 4;
/// CRYPTO bytes gathered, at most (a ClientHello with post-quantum key shares is ~2 KiB).
const MAX_CRYPTO: usize = 16 * 1024;
const MAX_FRAMES: usize = 256;

pub fn detect(ev: &Evidence) -> Option<Found> {
    if ev.proto != UDP {
        return None;
    }
    let mut crypto = Crypto::default();
    for d in ev.orig.segments.iter().take(MAX_DATAGRAMS) {
        datagram(d, &mut crypto);
    }
    let cut = ev.orig.truncated || ev.orig.segments.len() > MAX_DATAGRAMS;
    crypto.hello(cut)
}

/// The CRYPTO stream of the client's Initial packets, as received fragments.
#[derive(Default)]
struct Crypto {
    frags: Vec<(usize, Vec<u8>)>,
    size: usize,
}

impl Crypto {
    fn add(&mut self, offset: u64, data: &[u8]) {
        let Ok(offset) = usize::try_from(offset) else {
            return;
        };
        if offset >= MAX_CRYPTO || self.size + data.len() > MAX_CRYPTO {
            return;
        }
        self.size += data.len();
        self.frags.push((offset, data.to_vec()));
    }

    /// The stream's contiguous prefix.
    fn prefix(&self) -> Vec<u8> {
        let mut frags: Vec<&(usize, Vec<u8>)> = self.frags.iter().collect();
        frags.sort_by_key(|(o, _)| *o);
        let mut out: Vec<u8> = Vec::new();
        for (offset, data) in frags {
            if *offset > out.len() {
                break;
            }
            let skip = out.len() - offset;
            out.extend_from_slice(data.get(skip..).unwrap_or(&[]));
        }
        out
    }

    /// `quic,ssl` once the prefix holds a whole ClientHello (or as much as a cut budget left).
    fn hello(&self, truncated: bool) -> Option<Found> {
        let prefix = self.prefix();
        let mut r = Reader::new(&prefix);
        if r.u8()? != 1 {
            return None;
        }
        let len = r.u24()?;
        let body = match r.take(len) {
            Some(b) => b,
            None if truncated => r.rest(),
            None => return None,
        };
        let sni = crate::tls::client_hello_body(body)?;
        Some(Found {
            services: vec!["quic", "ssl"],
            server_name: sni,
            expects: Vec::new(),
        })
    }
}

/// Decrypts the client Initial packets coalesced in one datagram into `crypto`.
fn datagram(d: &[u8], crypto: &mut Crypto) {
    let mut rest = d;
    for _ in 0..MAX_PACKETS {
        let Some(next) = packet(rest, crypto) else {
            return;
        };
        rest = next;
    }
}

/// One long-header packet at the start of `buf`: decrypts it when it is a v1/v2 Initial and
/// returns what follows it.
fn packet<'a>(buf: &'a [u8], crypto: &mut Crypto) -> Option<&'a [u8]> {
    let mut r = Reader::new(buf);
    let first = r.u8()?;
    if first & 0xc0 != 0xc0 {
        return None; // a short header (or not QUIC) runs to the end of the datagram
    }
    let version = r.u32()?;
    let initial_type = match version {
        V1 => 0,
        V2 => 1,
        _ => return None,
    };
    let dcid = r.vec8()?;
    r.vec8()?; // source connection id
    let kind = (first >> 4) & 3;
    if kind == initial_type {
        let token_len = varint(&mut r)?;
        r.take(usize::try_from(token_len).ok()?)?;
    }
    let length = usize::try_from(varint(&mut r)?).ok()?;
    let pn_offset = r.pos();
    let end = pn_offset.checked_add(length)?;
    let packet = buf.get(..end)?;
    if kind == initial_type && dcid.len() <= 20 {
        if let Some(plain) = decrypt(version, dcid, packet, pn_offset) {
            frames(&plain, crypto);
        }
    }
    buf.get(end..)
}

/// Removes header protection and opens the payload of an Initial packet.
fn decrypt(version: u32, dcid: &[u8], packet: &[u8], pn_offset: usize) -> Option<Vec<u8>> {
    let keys = Keys::client(version, dcid)?;
    let sample = packet.get(pn_offset + 4..pn_offset + 20)?;
    let mask = keys.hp.new_mask(sample).ok()?;
    let mut header = packet.get(..pn_offset + 4)?.to_vec();
    header[0] ^= mask[0] & 0x0f;
    let pn_len = usize::from(header[0] & 3) + 1;
    let mut pn = 0u64;
    for i in 0..pn_len {
        header[pn_offset + i] ^= mask[1 + i];
        pn = (pn << 8) | u64::from(header[pn_offset + i]);
    }
    header.truncate(pn_offset + pn_len);
    let mut nonce = keys.iv;
    for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
        *n ^= p;
    }
    let mut payload = packet.get(pn_offset + pn_len..)?.to_vec();
    let nonce = Nonce::assume_unique_for_key(nonce);
    let plain = keys
        .key
        .open_in_place(nonce, Aad::from(&header), &mut payload)
        .ok()?;
    let n = plain.len();
    payload.truncate(n);
    Some(payload)
}

/// The CRYPTO frames of a decrypted Initial payload (PADDING, PING, ACK and
/// CONNECTION_CLOSE are stepped over; anything else ends the walk).
fn frames(plain: &[u8], crypto: &mut Crypto) {
    let mut r = Reader::new(plain);
    for _ in 0..MAX_FRAMES {
        let Some(kind) = varint(&mut r) else { return };
        let ok = match kind {
            // A run of PADDING counts as one frame.
            0x00 => {
                let run = r.rest().iter().take_while(|&&b| b == 0).count();
                r.take(run).map(|_| ())
            }
            0x01 => Some(()),
            0x02 | 0x03 => ack(&mut r, kind == 0x03),
            0x06 => (|| {
                let offset = varint(&mut r)?;
                let len = usize::try_from(varint(&mut r)?).ok()?;
                crypto.add(offset, r.take(len)?);
                Some(())
            })(),
            0x1c => (|| {
                varint(&mut r)?;
                varint(&mut r)?;
                let len = usize::try_from(varint(&mut r)?).ok()?;
                r.take(len).map(|_| ())
            })(),
            _ => None,
        };
        if ok.is_none() {
            return;
        }
    }
}

fn ack(r: &mut Reader, ecn: bool) -> Option<()> {
    varint(r)?; // largest acknowledged
    varint(r)?; // delay
    let ranges = varint(r)?;
    varint(r)?; // first range
    for _ in 0..ranges.min(MAX_FRAMES as u64) {
        varint(r)?;
        varint(r)?;
    }
    if ecn {
        for _ in 0..3 {
            varint(r)?;
        }
    }
    Some(())
}

/// A QUIC variable-length integer (RFC 9000 section 16).
fn varint(r: &mut Reader) -> Option<u64> {
    let first = r.u8()?;
    let extra = (1usize << (first >> 6)) - 1;
    let mut v = u64::from(first & 0x3f);
    for b in r.take(extra)? {
        v = (v << 8) | u64::from(*b);
    }
    Some(v)
}

/// The client's Initial keys.
struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    hp: hp::HeaderProtectionKey,
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context.
fn expand_label(prk: &Prk, label: &[u8], out: &mut [u8]) -> Option<()> {
    let len = u16::try_from(out.len()).ok()?.to_be_bytes();
    let full_len = [u8::try_from(6 + label.len()).ok()?];
    let info: [&[u8]; 5] = [&len, &full_len, b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len())).ok()?.fill(out).ok()
}

/// The client's Initial key, IV and header-protection key for `dcid`.
fn material(version: u32, dcid: &[u8]) -> Option<([u8; 16], [u8; 12], [u8; 16])> {
    let (salt, key_l, iv_l, hp_l): (&[u8], &[u8], &[u8], &[u8]) = if version == V2 {
        (&V2_SALT, b"quicv2 key", b"quicv2 iv", b"quicv2 hp")
    } else {
        (&V1_SALT, b"quic key", b"quic iv", b"quic hp")
    };
    let initial = Salt::new(hkdf::HKDF_SHA256, salt).extract(dcid);
    let mut secret = [0u8; 32];
    expand_label(&initial, b"client in", &mut secret)?;
    let client = Prk::new_less_safe(hkdf::HKDF_SHA256, &secret);
    let (mut key, mut iv, mut hp_key) = ([0u8; 16], [0u8; 12], [0u8; 16]);
    expand_label(&client, key_l, &mut key)?;
    expand_label(&client, iv_l, &mut iv)?;
    expand_label(&client, hp_l, &mut hp_key)?;
    Some((key, iv, hp_key))
}

impl Keys {
    fn client(version: u32, dcid: &[u8]) -> Option<Keys> {
        let (key, iv, hp_key) = material(version, dcid)?;
        Some(Keys {
            key: LessSafeKey::new(UnboundKey::new(&aead::AES_128_GCM, &key).ok()?),
            iv,
            hp: hp::HeaderProtectionKey::new(&hp::AES_128, &hp_key).ok()?,
        })
    }
}

#[cfg(test)]
mod tests;
