//! `classify` never panics and stays bounded on arbitrary evidence: random bytes, and random
//! bytes behind the openings the group A detectors look for (so that the parsers get past
//! their first checks).

use proptest::prelude::*;
use tapflow_classify::{classify, Evidence, Side, TCP, UDP};

const OPENINGS: &[&[u8]] = &[
    b"",
    b"\x16\x03\x01",
    b"\x16\x03\x03\x00\x30\x01\x00\x00\x2c\x03\x03",
    b"\x80\x2e\x01\x00\x02",
    b"SSH-2.0-x\r\n",
    b"SSH-1.5-x\r\n",
    b"GET / HTTP/1.1\r\nHost: ",
    b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n",
    b"CONNECT a:1 HTTP/1.1\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\n",
    b"220 ",
    b"EHLO x\r\nSTARTTLS\r\n",
    b"+OK x\r\n",
    b"* OK x\r\n",
    b"USER x\r\nPORT ",
    b"227 (",
    b"229 (|||",
    b"NICK a\r\nPRIVMSG b :\x01DCC SEND ",
    b":srv 001 a\r\n",
    b"<stream:stream xmlns='jabber:client'><starttls/>",
    b"\xc0\x00\x00\x00\x01\x08\x83\x94\xc8\xf0\x3e\x51\x57\x08\x00\x00\x44\x9e",
    b"\xd0\x6b\x33\x43\xcf\x08",
    b"\x12\x34\x01\x00\x00\x01\x00\x01\x00\x00\x00\x00",
    b"\x16\xfe\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x01\x00\x00\x74\x00\x00\x00\x00\x00\x00\x00\x74\xfe\xfd",
];

fn payload() -> impl Strategy<Value = Vec<u8>> {
    (
        0..OPENINGS.len(),
        prop::collection::vec(any::<u8>(), 0..1600),
    )
        .prop_map(|(i, tail)| {
            let mut p = OPENINGS[i].to_vec();
            p.extend(tail);
            p
        })
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(21u16),
        Just(22),
        Just(25),
        Just(53),
        Just(80),
        Just(110),
        Just(143),
        Just(443),
        Just(5222),
        Just(5353),
        Just(6667),
        any::<u16>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn classify_never_panics(
        proto in prop_oneof![Just(TCP), Just(UDP), any::<u8>()],
        ports in (port(), port()),
        orig in prop::collection::vec(payload(), 0..4),
        resp in prop::collection::vec(payload(), 0..4),
        cut in any::<(bool, bool)>(),
    ) {
        let o: Vec<&[u8]> = orig.iter().map(Vec::as_slice).collect();
        let r: Vec<&[u8]> = resp.iter().map(Vec::as_slice).collect();
        let ev = Evidence {
            proto,
            orig_port: ports.0,
            resp_port: ports.1,
            orig: Side { segments: &o, truncated: cut.0, len: None },
            resp: Side { segments: &r, truncated: cut.1, len: None },
        };
        let v = classify(&ev);
        // Every service is listed once, and a name never comes out of thin air.
        for (i, s) in v.services.iter().enumerate() {
            prop_assert!(!v.services[i + 1..].contains(s), "{s} listed twice");
        }
        prop_assert!(v.expects.len() <= 64);
        if o.is_empty() && r.is_empty() {
            prop_assert_eq!(v.service(), None);
        }
    }
}
