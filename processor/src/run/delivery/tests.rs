use super::*;
use crate::config::SpoolConfig;
use tapflow_proto::delivery::Ack;

#[test]
fn the_base_is_rewritten_in_place_as_encoded() {
    let inner = b"TF\x05\x07some message".to_vec();
    let mut frame = Vec::new();
    encode_sequenced(Seq { seq: 9, base: 2 }, &inner, &mut frame);
    set_base(&mut frame, 7);
    let mut want = Vec::new();
    encode_sequenced(Seq { seq: 9, base: 7 }, &inner, &mut want);
    assert_eq!(frame, want);
    // Too short to be a sequenced frame: left alone, no panic.
    let mut short = vec![1u8; BASE_AT + 3];
    set_base(&mut short, 7);
    assert_eq!(short, vec![1u8; BASE_AT + 3]);
}

#[test]
fn past_damaged_frames_the_first_readable_one_is_the_base() {
    for (seq, lowest, damaged, want) in [
        (10, 5, None, 5),
        (10, 5, Some(8), 9),
        (9, 5, Some(8), 9),
        (8, 5, Some(8), 5),
        (7, 5, Some(8), 5),
        // Damage already behind what is held: no effect.
        (10, 9, Some(8), 9),
    ] {
        assert_eq!(
            stamp(seq, lowest, damaged),
            want,
            "{seq} {lowest} {damaged:?}"
        );
    }
}

/// An aggregator on inproc sockets: what it receives, and the acknowledgements it publishes.
struct Aggregator {
    pull: zmq::Socket,
    publish: zmq::Socket,
}

impl Aggregator {
    /// Every message waiting: (seq, base).
    fn receive(&self, delivery: &mut Delivery) -> Vec<(u64, u64)> {
        let mut got = Vec::new();
        for _ in 0..2000 {
            delivery.service();
            let mut idle = true;
            while let Ok(b) = self.pull.recv_bytes(zmq::DONTWAIT) {
                let number = |at: usize| {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&b[at..at + 8]);
                    u64::from_be_bytes(n)
                };
                got.push((number(BASE_AT - 8), number(BASE_AT)));
                idle = false;
            }
            if idle
                && delivery
                    .acks
                    .as_ref()
                    .is_some_and(|a| a.next_send == a.next_seq)
            {
                break;
            }
            // ZeroMQ handles its pipes' commands (room again) at most every millisecond or so.
            std::thread::sleep(Duration::from_millis(2));
        }
        got
    }

    fn ack(&self, delivery: &mut Delivery, aggregator: u64, seq: u64) {
        let m = AckMessage {
            aggregator,
            acks: vec![Ack {
                processor: "p0".into(),
                incarnation: 1,
                seq,
            }],
        };
        let mut buf = Vec::new();
        m.encode(&mut buf);
        for _ in 0..100 {
            self.publish.send(&buf[..], 0).expect("publish");
            std::thread::sleep(Duration::from_millis(5));
            delivery.service();
            if delivery.acks.as_ref().is_some_and(|a| a.acked >= seq) {
                return;
            }
        }
        panic!("acknowledgement {seq} never arrived");
    }
}

/// A processor's delivery (name `p0`, incarnation 1) holding 2 KiB in memory and a spool
/// of `spool_max` bytes, connected over inproc sockets (room for a few messages) to an
/// aggregator that reads only when asked.
fn connected(ctx: &zmq::Context, spool_max: u64) -> (Delivery, Aggregator, tempfile::TempDir) {
    let id = format!("{spool_max}-{:?}", std::thread::current().id());
    let (agg, acks) = (format!("inproc://agg-{id}"), format!("inproc://acks-{id}"));
    let pull = ctx.socket(zmq::PULL).expect("pull");
    pull.set_rcvhwm(5).expect("hwm");
    pull.bind(&agg).expect("bind");
    let publish = ctx.socket(zmq::PUB).expect("pub");
    publish.bind(&acks).expect("bind");
    let push = ctx.socket(zmq::PUSH).expect("push");
    push.set_sndhwm(5).expect("hwm");
    push.connect(&agg).expect("connect");
    let sub = ctx.socket(zmq::SUB).expect("sub");
    sub.set_subscribe(b"").expect("subscribe");
    sub.connect(&acks).expect("connect");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = AckConfig {
        endpoint: acks,
        max_bytes: 2048,
        resend_after: Duration::from_secs(3600),
        wait: Duration::ZERO,
        spool: Some(SpoolConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: spool_max,
        }),
    };
    let d = Delivery::acknowledged(push, sub, "p0", 1, &config);
    (d, Aggregator { pull, publish }, dir)
}

/// Message `i`: 100 bytes.
fn message(i: u32) -> Vec<u8> {
    i.to_be_bytes().iter().copied().cycle().take(100).collect()
}

/// Real sockets (inproc): a processor whose memory holds 2 KiB sends 300 messages to an
/// aggregator that does not read; most go to the spool. Read, acknowledged in part, then a
/// restarted aggregator gets the rest again in order, from the spool then from memory.
#[test]
fn spooled_messages_are_sent_in_order_trimmed_by_acks_and_sent_again() {
    let ctx = zmq::Context::new();
    let (mut d, agg, dir) = connected(&ctx, 1 << 20);
    for i in 0..300u32 {
        d.send_data(&message(i), zmq::DONTWAIT).expect("kept");
    }
    let spooled = d
        .acks
        .as_ref()
        .and_then(|a| a.spool.as_ref())
        .map_or(0, |s| s.stats.spooled_frames);
    assert!(
        spooled > 250,
        "the aggregator reads nothing yet: most are spooled ({spooled})"
    );
    let got = agg.receive(&mut d);
    let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>(), "in order, once each");
    assert!(got.iter().all(|g| g.1 == 1), "nothing given up: base 1");
    agg.ack(&mut d, 100, 150);
    let a = d.acks.as_ref().expect("acks");
    assert!(a.spool.as_ref().is_some_and(|s| s.first() == 151));
    // A new aggregator incarnation: everything from 151 again, with 151 as the base.
    agg.ack(&mut d, 200, 150);
    let again = agg.receive(&mut d);
    assert_eq!(
        again,
        (151..=300).map(|s| (s, 151)).collect::<Vec<_>>(),
        "sent again in order"
    );
    agg.ack(&mut d, 200, 300);
    let stats = d.drain(Duration::ZERO, None).expect("stats");
    assert!(stats.spool.spooled_frames > 250, "{stats:?}");
    assert_eq!((stats.given_up, stats.spool.spool_given_up), (0, 0));
    assert_eq!(stats.acknowledged, 300);
    assert_eq!(stats.resent, 150);
    drop(d);
    assert_eq!(
        std::fs::read_dir(dir.path()).map(Iterator::count).ok(),
        Some(0)
    );
}

/// Past the spool's maximum the oldest are given up, counted; what is sent after a given-up
/// run carries its own number as the lowest held, which is what the aggregator takes as "the
/// run before was given up" (any other gap it waits for).
#[test]
fn past_the_spools_maximum_the_first_message_after_a_gap_says_so() {
    let ctx = zmq::Context::new();
    // Some 8 messages of 136 bytes on disk (a frame's header and the sequenced wrapping).
    let (mut d, agg, _dir) = connected(&ctx, 1100);
    for i in 0..300u32 {
        d.send_data(&message(i), zmq::DONTWAIT).expect("kept");
    }
    let got = agg.receive(&mut d);
    let stats = d.drain(Duration::ZERO, None).expect("stats");
    assert!(stats.spool.spool_given_up > 200, "{stats:?}");
    // The first few were handed to the socket before they were given up: they arrive too.
    assert!(
        got.len() as u64 + stats.spool.spool_given_up >= 300,
        "{got:?} {stats:?}"
    );
    assert_eq!(got.last().map(|g| g.0), Some(300), "{got:?}");
    let one = (message(0).len() + 20) as u64;
    assert_eq!(
        stats.spool.spool_given_up_bytes,
        stats.spool.spool_given_up * one
    );
    let mut gaps = 0;
    for w in got.windows(2) {
        let ((before, _), (seq, base)) = (w[0], w[1]);
        assert!(seq > before, "{got:?}");
        if seq > before + 1 {
            gaps += 1;
            assert_eq!(base, seq, "the first after a gap: {got:?}");
        }
    }
    assert!(gaps > 0, "{got:?}");
}

/// What is held is counted for the heartbeat, and while the end waits for acknowledgements a
/// heartbeat says it every period.
#[test]
fn what_is_held_is_counted_and_said_while_waiting_at_the_end() {
    let ctx = zmq::Context::new();
    let (mut d, agg, _dir) = connected(&ctx, 1 << 20);
    for i in 0..30u32 {
        d.send_data(&message(i), zmq::DONTWAIT).expect("kept");
    }
    assert_eq!(agg.receive(&mut d).len(), 30);
    let u = d.unacked().expect("acknowledged delivery");
    assert_eq!(u.memory_messages + u.spool_messages, 30, "{u:?}");
    assert!(u.spool_messages > 0 && u.spool_bytes > 0, "{u:?}");
    assert_eq!(u.memory_bytes, u.memory_messages * 120, "{u:?}");
    assert_eq!((u.given_up_messages, u.given_up_bytes), (0, 0));
    // Nothing acknowledged: the end waits 300 ms, a heartbeat every 50 ms.
    let beat = Beat {
        hb: ProcessorHeartbeat {
            processor: "p0".into(),
            incarnation: 1,
            ..ProcessorHeartbeat::default()
        },
        every: Duration::from_millis(50),
    };
    d.drain(Duration::from_millis(300), Some(beat));
    let mut heard = Vec::new();
    while let Ok(b) = agg.pull.recv_bytes(zmq::DONTWAIT) {
        if let Ok(tapflow_proto::delivery::Delivered {
            message: UpMessage::Heartbeat(hb),
            seq,
        }) = tapflow_proto::delivery::Delivered::decode(&b)
        {
            heard.push((seq.map(|s| s.seq), hb.unacked.map(|u| *u)));
        }
    }
    assert!(heard.len() >= 3, "{heard:?}");
    assert!(
        heard.iter().all(|h| *h == (Some(30), Some(u))),
        "sequenced after the last message handed over, saying what is held: {heard:?}"
    );
    agg.ack(&mut d, 200, 30);
    let after = d.unacked().expect("acknowledged delivery");
    assert_eq!(after.memory_messages + after.spool_messages, 0, "{after:?}");
    assert!(Delivery::plain(ctx.socket(zmq::PUSH).expect("push"))
        .unacked()
        .is_none());
}
