use super::*;
use crate::conn::split;
use crate::wire::decode_body;

/// A small deterministic generator (xorshift64*); `.1` allows strings past 31 bytes.
struct Rng(u64, bool);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value of a random width, so that every integer form is written.
    fn int(&mut self) -> u64 {
        let bits = self.next() % 65;
        if bits == 64 {
            self.next()
        } else {
            self.next() & ((1u64 << bits) - 1)
        }
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn opt<T>(&mut self, f: impl FnOnce(&mut Rng) -> T) -> Option<T> {
        if self.coin() {
            Some(f(self))
        } else {
            None
        }
    }

    /// Strings of every length form: fix (up to 31 bytes), 8-bit and 16-bit lengths, with
    /// multi-byte characters.
    fn string(&mut self) -> String {
        let n = match self.next() % 8 {
            0 => 0,
            _ if !self.1 => self.next() % 6,
            1..=4 => self.next() % 32,
            5 | 6 => 32 + self.next() % 300,
            _ => 256 + self.next() % 70_000,
        } as usize;
        (0..n)
            .map(|i| {
                if i % 7 == 3 {
                    'é'
                } else {
                    (b'a' + (i % 26) as u8) as char
                }
            })
            .collect()
    }

    fn addr(&mut self) -> Addr {
        let b = self.next().to_be_bytes();
        if self.coin() {
            Addr::from_v4([b[0], b[1], b[2], b[3]])
        } else {
            let mut a = [0u8; 16];
            a[..8].copy_from_slice(&b);
            a[8..].copy_from_slice(&self.next().to_be_bytes());
            Addr::from_v6(a)
        }
    }

    fn key(&mut self) -> FlowKey {
        FlowKey {
            proto: self.int() as u8,
            lo: self.addr(),
            hi: self.addr(),
            lo_port: self.int() as u16,
            hi_port: self.int() as u16,
            vlan: self.int() as u16,
        }
    }

    fn stats(&mut self) -> DurStats {
        DurStats {
            n: self.int(),
            sum: self.int(),
            sum_sq: u128::from(self.int()) << (self.next() % 64) | u128::from(self.int()),
            min: self.int(),
            max: self.int(),
        }
    }

    fn timing(&mut self) -> Timing {
        Timing {
            tcp_synack_ns: self.opt(Rng::int),
            tcp_ackdat_ns: self.opt(Rng::int),
            orig_iat: self.stats(),
            resp_iat: self.stats(),
            orig_ack_rtt: self.stats(),
            resp_ack_rtt: self.stats(),
            rtt_cross_tap: self.coin(),
        }
    }

    fn record(&mut self) -> ConnRecord {
        let parents = (self.next() % 4) as usize * usize::from(self.next().is_multiple_of(3));
        ConnRecord {
            ts_ns: self.int(),
            uid: self.string().into(),
            orig_h: self.addr(),
            orig_p: self.int() as u16,
            resp_h: self.addr(),
            resp_p: self.int() as u16,
            proto: self.int() as u8,
            duration_ns: self.opt(Rng::int),
            orig_bytes: self.opt(Rng::int),
            resp_bytes: self.opt(Rng::int),
            conn_state: ConnState::ALL[(self.next() % 13) as usize],
            local_orig: self.opt(Rng::coin),
            local_resp: self.opt(Rng::coin),
            missed_bytes: self.int(),
            history: self.string().into(),
            orig_pkts: self.int(),
            orig_ip_bytes: self.int(),
            resp_pkts: self.int(),
            resp_ip_bytes: self.int(),
            tunnel_parents: (0..parents).map(|_| self.key()).collect(),
            community_id: self.string().into(),
            interim: self.coin(),
            evicted: self.coin(),
            key: self.key(),
            orig_tcp_flags: self.int() as u8,
            resp_tcp_flags: self.int() as u8,
            split: (self.next() as u8) & (split::CLOSED | split::CONTINUED),
            timing: self.opt(|r| Box::new(r.timing())),
            service: self.opt(Rng::string),
            server_name: self.opt(Rng::string),
            service_incomplete: self.coin(),
        }
    }

    fn batch(&mut self, records: usize) -> ConnBatch {
        ConnBatch {
            processor: self.string(),
            incarnation: self.int(),
            watermark_ns: self.int(),
            settle_ns: self.int(),
            records: (0..records).map(|_| self.record()).collect(),
            tunnel_outers: (0..self.next() % 20)
                .map(|_| (self.key(), self.int()))
                .collect(),
            traffic: (0..self.next() % 20)
                .map(|_| TrafficPartial {
                    window_start_ns: self.int(),
                    window_s: self.int() as u32,
                    collector: self.string(),
                    proto: self.int() as u8,
                    packets: self.int(),
                    bytes: self.int(),
                    flows: self.int(),
                    complete: self.coin(),
                })
                .collect(),
            records_seq: self.int(),
        }
    }
}

fn rmp_bytes(b: &ConnBatch) -> Vec<u8> {
    rmp_serde::encode::to_vec(b).expect("encodes")
}

fn written(b: &ConnBatch) -> Vec<u8> {
    let mut out = Vec::new();
    write_batch(b, &mut out);
    out
}

#[test]
fn writes_the_bytes_rmp_serde_writes_and_reads_them_back() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15, true);
    for i in 0..400 {
        // Record counts in the fix and 16-bit array forms.
        let n = if i % 50 == 0 { 16 + i % 40 } else { i % 6 };
        let b = rng.batch(n);
        let bytes = written(&b);
        assert_eq!(bytes, rmp_bytes(&b), "batch {i}");
        assert_eq!(read_batch(&bytes).as_ref(), Some(&b), "batch {i}");
    }
}

/// An empty batch; empty strings, `None`s and records without timing or parents are among
/// the generated ones above.
#[test]
fn an_empty_batch_round_trips() {
    let b = ConnBatch::default();
    let bytes = written(&b);
    assert_eq!(bytes, rmp_bytes(&b));
    assert_eq!(read_batch(&bytes), Some(b));
}

/// Whatever the bytes, a body the hand reader takes is one rmp_serde reads to the same batch.
fn agrees_with_rmp_serde(body: &[u8]) {
    if let Some(fast) = read_batch(body) {
        let slow: ConnBatch = decode_body(body).expect("rmp_serde reads what the hand reader read");
        assert_eq!(fast, slow, "{body:02x?}");
    }
}

#[test]
fn on_cut_overwritten_and_grown_bodies_it_reads_what_rmp_serde_reads_or_nothing() {
    let mut rng = Rng(7, false);
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| written(&rng.batch(i % 2 + 1))).collect();
    // Markers of every family, and values at the edges of the integer forms.
    let markers = [
        0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x91, 0x9f, 0xa0, 0xa1, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3,
        0xc4, 0xc5, 0xc6, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd3, 0xd9, 0xda, 0xdb, 0xdc,
        0xdd, 0xde, 0xe0, 0xff,
    ];
    let mut tried = 0u64;
    let mut read_fast = 0u64;
    for body in &bodies {
        for cut in 0..body.len() {
            agrees_with_rmp_serde(&body[..cut]);
            assert_eq!(
                read_batch(&body[..cut]),
                None,
                "a strict prefix is not a batch"
            );
        }
        for at in 0..body.len() {
            for &m in &markers {
                let mut b = body.clone();
                b[at] = m;
                agrees_with_rmp_serde(&b);
                read_fast += u64::from(read_batch(&b).is_some());
                b.insert(at, m);
                agrees_with_rmp_serde(&b);
                tried += 2;
            }
        }
        let mut longer = body.clone();
        longer.push(0xc0);
        assert_eq!(read_batch(&longer), None, "bytes left over");
    }
    // The check above must have had bodies the hand reader took besides the originals.
    assert!(
        read_fast > 100,
        "{read_fast} of {tried} mutated bodies read"
    );
}

/// Bodies in forms the writer never uses (other integer widths, a shorter record from an
/// older writer) are left to rmp_serde, which reads them.
#[test]
fn other_forms_are_left_to_rmp_serde() {
    let mut rng = Rng(11, false);
    let mut b = rng.batch(1);
    b.processor = "p1".into();
    let mut body = written(&b);
    // The array marker, then "p1" as a fix string.
    let start = 1 + 1 + 2;
    let mut signed = body[..start].to_vec();
    signed.push(0xd3);
    signed.extend_from_slice(&(b.incarnation as i64 & i64::MAX).to_be_bytes());
    let rest = start + written_uint_len(b.incarnation);
    signed.extend_from_slice(&body[rest..]);
    assert_eq!(read_batch(&signed), None);
    let slow: ConnBatch = decode_body(&signed).expect("rmp_serde reads a signed form");
    assert_eq!(slow.incarnation, b.incarnation & i64::MAX as u64);
    // A trailing byte.
    body.push(0);
    assert_eq!(read_batch(&body), None);
}

fn written_uint_len(v: u64) -> usize {
    let mut out = Vec::new();
    uint(&mut out, v);
    out.len()
}
