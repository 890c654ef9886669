//! Input accounting for one processor (sans-IO): which collectors feed it, what they claim,
//! sequence gaps, misrouting, watermarks and end-of-stream.
//!
//! A processor serves one shard of one processor set. The first claim (epoch, N, index) it
//! receives, or the one it was configured with, is its own; a message claiming anything else was
//! routed by a collector that disagrees on the set or its order, and is counted and dropped
//! loudly as `misrouted`.
//!
//! Before any of that, a message must be one its sender may send: with CURVE, its collector
//! name must be one the key that sent it may speak for (`curve_clients` `names`), and it may
//! open a new link (a collector name and incarnation) only while fewer than `max_senders` of
//! its kind are known. There are two kinds, each with its own `max_senders`: links under a
//! name their key is bound to, and links under any other name (keys without `names`, plain
//! links), so that made-up names can never crowd out the configured ones. Refused messages are counted (`names_refused`, `senders_refused`) and touch nothing
//! else: no link, watermark or end-of-stream, so made-up names cost neither memory nor time.

use std::collections::{BTreeMap, HashMap};

use tapflow_proto::procset::ProcessorSet;
use tapflow_proto::upstream::{LinkAccount, LinkProgress, ProcessorAccount, ShardClaim};
use tapflow_proto::{shard, DecodeError, LinkHeader, Message, PacketSummary};
use tapflow_runtime::curve::{NameBindings, Speaker};

/// Why a message was refused before it was accounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its CURVE key may not speak for its sender name (`names_refused`).
    NameNotBound,
    /// It would open a link past `max_senders` (`senders_refused`).
    OverCap,
}

/// What the caller should do after [`Inputs::on_message`].
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Summaries to process (a batch whose claim matches).
    Accept {
        header: LinkHeader,
        /// Taken by the caller (moved into the merge, not cloned); the vector stays for reuse.
        summaries: &'a mut Vec<PacketSummary>,
    },
    /// A batch dropped because its claim conflicts with ours.
    Misrouted {
        header: LinkHeader,
        claim: ShardClaim,
        ours: ShardClaim,
        first: bool,
    },
    /// A heartbeat, or the input's end-of-stream (`ended`): its watermark moves on.
    Progress { header: LinkHeader, ended: bool },
    /// Refused and counted, nothing else done.
    Refused { header: LinkHeader, reason: Refused },
}

#[derive(Debug)]
pub struct Inputs {
    claim: Option<ShardClaim>,
    /// Routing by processor set: the set and this processor's id. Batches then claim
    /// `(epoch, 0, id)` and are checked against the slot table of their own epoch.
    set: Option<(ProcessorSet, u16)>,
    /// Summaries in batches of an epoch this processor's set does not have yet (processed,
    /// but their routing could not be checked).
    epoch_unknown: u64,
    links: HashMap<(String, u64), LinkAccount>,
    malformed: BTreeMap<String, u64>,
    misrouted_messages: u64,
    wrong_shard: u64,
    scratch: Vec<PacketSummary>,
    /// The collector names each CURVE key may speak for (nothing checked on plain links).
    bindings: NameBindings,
    /// Links (collector name and incarnation) kept at most, of each kind (see the module doc).
    max_senders: usize,
    /// Links opened under a name their key is bound to, and under any other name.
    links_bound: usize,
    links_any: usize,
    names_refused: u64,
    senders_refused: u64,
    /// Links that have sent end-of-stream (kept as a count: asked after every message).
    ended: usize,
}

impl Inputs {
    pub fn new(claim: Option<ShardClaim>) -> Inputs {
        Inputs {
            claim,
            set: None,
            epoch_unknown: 0,
            links: HashMap::new(),
            malformed: BTreeMap::new(),
            misrouted_messages: 0,
            wrong_shard: 0,
            scratch: Vec::new(),
            bindings: NameBindings::default(),
            max_senders: usize::MAX,
            links_bound: 0,
            links_any: 0,
            names_refused: 0,
            senders_refused: 0,
            ended: 0,
        }
    }

    /// These inputs, refusing names `bindings` does not allow and links past `max_senders`.
    pub fn guarded(self, bindings: NameBindings, max_senders: usize) -> Inputs {
        Inputs {
            bindings,
            max_senders,
            ..self
        }
    }

    /// Messages refused because their key may not speak for their collector name.
    pub fn names_refused(&self) -> u64 {
        self.names_refused
    }

    /// Messages refused because they would open a link past `max_senders`.
    pub fn senders_refused(&self) -> u64 {
        self.senders_refused
    }

    /// Inputs of processor `id` of a processor set.
    pub fn with_set(set: ProcessorSet, id: u16) -> Inputs {
        Inputs {
            set: Some((set, id)),
            ..Inputs::new(None)
        }
    }

    /// A reloaded processor set (the caller checked that it extends the one in use).
    pub fn update_set(&mut self, set: ProcessorSet) {
        if let Some((s, _)) = self.set.as_mut() {
            *s = set;
        }
    }

    pub fn epoch_unknown(&self) -> u64 {
        self.epoch_unknown
    }

    pub fn claim(&self) -> Option<ShardClaim> {
        self.claim
    }

    /// Counts a message that could not be decoded.
    pub fn on_malformed(&mut self, e: &DecodeError) {
        *self.malformed.entry(e.reason().to_owned()).or_default() += 1;
    }

    /// Decodes and accounts one message, which its link authenticated as `user_id` (the
    /// sending key's ZAP user id; `None` on a plain link).
    pub fn on_bytes(
        &mut self,
        bytes: &[u8],
        user_id: Option<&str>,
    ) -> Result<Verdict<'_>, DecodeError> {
        match Message::decode(bytes) {
            Ok(m) => Ok(self.on_message_from(m, user_id)),
            Err(e) => {
                self.on_malformed(&e);
                Err(e)
            }
        }
    }

    /// A message authenticated as `user_id`: refused unless that key may speak for its
    /// collector name, else [`Inputs::on_message`].
    pub fn on_message_from(&mut self, msg: Message, user_id: Option<&str>) -> Verdict<'_> {
        let speaker = self.bindings.speaker(user_id, &msg.header().sender);
        if speaker == Speaker::Refused {
            self.names_refused += 1;
            return Verdict::Refused {
                header: msg.header().clone(),
                reason: Refused::NameNotBound,
            };
        }
        self.accounted(msg, speaker)
    }

    /// Accounts one message of a plain link (a new link past `max_senders` refused).
    pub fn on_message(&mut self, msg: Message) -> Verdict<'_> {
        self.accounted(msg, Speaker::Any)
    }

    /// Accounts one message whose name `speaker` may use.
    fn accounted(&mut self, msg: Message, speaker: Speaker) -> Verdict<'_> {
        let h = msg.header().clone();
        if let Some(reason) = self.admit(&h, speaker) {
            return Verdict::Refused { header: h, reason };
        }
        let claim = ShardClaim {
            epoch: h.epoch,
            shard_count: h.shard_count,
            shard: h.shard,
        };
        let ours = self.our_claim(&h, claim);
        let link = link_entry(&mut self.links, &h, claim);
        let n = match &msg {
            Message::Batch { summaries, .. } => summaries.len() as u64,
            _ => 0,
        };
        // Sequence numbers count summaries: a jump forward is that many summaries lost. The
        // first message sets where this incarnation joined the link (not a gap: what came
        // before went to an earlier incarnation of this processor).
        let expected = link.first_seq + link.summaries_received + link.gaps;
        if h.seq > expected {
            link.gaps += h.seq - expected;
        }
        link.summaries_received += n;
        link.watermark_ns = link.watermark_ns.max(h.watermark_ns);
        let misrouted = claim != ours;
        match msg {
            Message::Batch { summaries, .. } => {
                if misrouted {
                    let first = link.misrouted == 0;
                    link.misrouted += n;
                    self.misrouted_messages += 1;
                    return Verdict::Misrouted {
                        header: h,
                        claim,
                        ours,
                        first,
                    };
                }
                self.check_shards(&h, &summaries);
                self.scratch = summaries;
                Verdict::Accept {
                    header: h,
                    summaries: &mut self.scratch,
                }
            }
            Message::Heartbeat { counters, .. } => {
                link.counters = Some(counters);
                self.moved_on(h, misrouted, false)
            }
            Message::Eos {
                status, counters, ..
            } => {
                if link.eos_seq.is_none() {
                    self.ended += 1;
                }
                link.eos_seq = Some(h.seq);
                link.eos_status = Some(status);
                link.counters = Some(counters);
                self.moved_on(h, misrouted, true)
            }
        }
    }

    /// Collector incarnations that have sent end-of-stream.
    pub fn ended(&self) -> usize {
        self.ended
    }

    /// Minimum watermark over inputs that have not ended (u64::MAX when none is live).
    pub fn watermark_ns(&self) -> u64 {
        self.links
            .values()
            .filter(|l| l.eos_seq.is_none())
            .map(|l| l.watermark_ns)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Each collector's latest read and drop counts (one entry per incarnation).
    pub fn collector_health(&self) -> Vec<tapflow_proto::upstream::CollectorHealth> {
        let mut v: Vec<_> = self
            .links
            .values()
            .filter_map(|l| {
                l.counters
                    .as_ref()
                    .map(|c| tapflow_proto::upstream::CollectorHealth {
                        sender: l.sender.clone(),
                        packets_read: c.packets_read,
                        // Loss only: a tap full of ARP is not a pipeline losing packets.
                        drops: c
                            .drops
                            .iter()
                            .filter(|(name, _)| {
                                tapflow_proto::DropReason::from_name(name)
                                    .is_some_and(tapflow_proto::DropReason::is_loss)
                            })
                            .map(|(_, n)| n)
                            .sum::<u64>()
                            + c.capture.kernel_dropped
                            + c.capture.if_dropped,
                    })
            })
            .collect();
        v.sort_by(|a, b| a.sender.cmp(&b.sender));
        v
    }

    /// What each link has delivered so far, for heartbeats.
    pub fn progress(&self) -> Vec<LinkProgress> {
        let mut v: Vec<LinkProgress> = self
            .links
            .values()
            .map(|l| LinkProgress {
                sender: l.sender.clone(),
                incarnation: l.incarnation,
                shard: l.claim.map_or(0, |c| c.shard),
                first_seq: l.first_seq,
                summaries_received: l.summaries_received,
                gaps: l.gaps,
            })
            .collect();
        v.sort_by(|a, b| (&a.sender, a.incarnation).cmp(&(&b.sender, b.incarnation)));
        v
    }

    pub fn account(&self, processor: &str, incarnation: u64) -> ProcessorAccount {
        let mut links: Vec<LinkAccount> = self.links.values().cloned().collect();
        links.sort_by(|a, b| (&a.sender, a.incarnation).cmp(&(&b.sender, b.incarnation)));
        ProcessorAccount {
            processor: processor.to_owned(),
            incarnation,
            claim: self.claim,
            links,
            malformed: self.malformed.clone(),
            misrouted_messages: self.misrouted_messages,
            summaries_wrong_shard: self.wrong_shard,
            counters: Default::default(),
        }
    }

    /// `Some` when a message with header `h` would open a link past `max_senders` of its
    /// kind (counted); else its link is known or now counted as opened.
    fn admit(&mut self, h: &LinkHeader, speaker: Speaker) -> Option<Refused> {
        let opened = match speaker {
            Speaker::Bound => &mut self.links_bound,
            _ => &mut self.links_any,
        };
        if *opened < self.max_senders {
            if !self.links.contains_key(&(h.sender.clone(), h.incarnation)) {
                *opened += 1;
            }
            return None;
        }
        if self.links.contains_key(&(h.sender.clone(), h.incarnation)) {
            return None;
        }
        self.senders_refused += 1;
        Some(Refused::OverCap)
    }

    /// The claim a message with header `h` (claiming `claim`) must make to be ours. With a
    /// processor set: its own epoch, N 0 and our id (and our claim follows the latest epoch);
    /// otherwise the first claim received, or the configured one.
    fn our_claim(&mut self, h: &LinkHeader, claim: ShardClaim) -> ShardClaim {
        match &self.set {
            Some((_, id)) => {
                let latest = self.claim.map_or(0, |c| c.epoch).max(h.epoch);
                self.claim = Some(ShardClaim {
                    epoch: latest,
                    shard_count: 0,
                    shard: *id,
                });
                ShardClaim {
                    epoch: h.epoch,
                    shard_count: 0,
                    shard: *id,
                }
            }
            None => *self.claim.get_or_insert(claim),
        }
    }

    /// Counts the summaries of an accepted batch whose key is not ours by the slot table of
    /// the batch's epoch (or by the hash over its N), and those of an epoch not known yet.
    fn check_shards(&mut self, h: &LinkHeader, summaries: &[PacketSummary]) {
        match &self.set {
            Some((set, id)) => match set.epoch(h.epoch) {
                Some(e) => {
                    self.wrong_shard += summaries
                        .iter()
                        .filter(|s| e.table.owner(&s.key) != *id)
                        .count() as u64
                }
                None => self.epoch_unknown += summaries.len() as u64,
            },
            None => {
                self.wrong_shard += summaries
                    .iter()
                    .filter(|s| shard(&s.key, h.shard_count) != h.shard)
                    .count() as u64
            }
        }
    }

    /// A heartbeat or end-of-stream (`ended`): counted when `misrouted`, its watermark moves on.
    fn moved_on(&mut self, header: LinkHeader, misrouted: bool, ended: bool) -> Verdict<'static> {
        if misrouted {
            self.misrouted_messages += 1;
        }
        Verdict::Progress { header, ended }
    }
}

fn link_entry<'a>(
    links: &'a mut HashMap<(String, u64), LinkAccount>,
    h: &LinkHeader,
    claim: ShardClaim,
) -> &'a mut LinkAccount {
    links
        .entry((h.sender.clone(), h.incarnation))
        .or_insert_with(|| LinkAccount {
            sender: h.sender.clone(),
            incarnation: h.incarnation,
            claim: Some(claim),
            first_seq: h.seq,
            ..LinkAccount::default()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapflow_proto::{Addr, CollectorCounters, EosStatus, FiveTuple};

    fn header(sender: &str, shard: u16, seq: u64) -> LinkHeader {
        LinkHeader {
            sender: sender.into(),
            incarnation: 1,
            epoch: 1,
            shard_count: 2,
            shard,
            seq,
            watermark_ns: seq * 10,
        }
    }

    /// Summaries that really belong to `want` of 2 shards.
    fn summaries(want: u16, n: usize) -> Vec<PacketSummary> {
        (0u16..)
            .map(|p| {
                let mut s = PacketSummary::default();
                s.set_tuple(
                    &FiveTuple {
                        proto: 6,
                        src: Addr::from_v4([10, 0, 0, 1]),
                        dst: Addr::from_v4([10, 0, 0, 2]),
                        sport: p,
                        dport: 80,
                    },
                    0,
                );
                s
            })
            .filter(|s| shard(&s.key, 2) == want)
            .take(n)
            .collect()
    }

    fn batch(sender: &str, shard: u16, seq: u64, n: usize) -> Message {
        Message::Batch {
            header: header(sender, shard, seq),
            summaries: summaries(shard, n),
        }
    }

    fn eos(sender: &str, shard: u16, seq: u64) -> Message {
        Message::Eos {
            header: header(sender, shard, seq),
            status: EosStatus::Complete,
            counters: CollectorCounters::default(),
        }
    }

    #[test]
    fn gaps_count_missing_summaries() {
        let mut inputs = Inputs::new(None);
        assert!(
            matches!(inputs.on_message(batch("a", 0, 0, 5)), Verdict::Accept { summaries, .. } if summaries.len() == 5)
        );
        inputs.on_message(batch("a", 0, 8, 2)); // 3 lost
        inputs.on_message(eos("a", 0, 14)); // 4 more lost
        let acc = inputs.account("p", 1);
        assert_eq!(
            (
                acc.links[0].summaries_received,
                acc.links[0].gaps,
                acc.links[0].eos_seq
            ),
            (7, 7, Some(14))
        );
        assert_eq!(acc.summaries_wrong_shard, 0);
        assert_eq!(inputs.ended(), 1);
    }

    #[test]
    fn joining_mid_stream_is_not_a_gap() {
        // A restarted processor: the collector had sent 100 summaries on this link before.
        let mut inputs = Inputs::new(None);
        inputs.on_message(batch("a", 0, 100, 5));
        inputs.on_message(batch("a", 0, 108, 2)); // 3 lost
        inputs.on_message(eos("a", 0, 110));
        let l = &inputs.account("p", 1).links[0];
        assert_eq!(
            (l.first_seq, l.summaries_received, l.gaps, l.eos_seq),
            (100, 7, 3, Some(110))
        );
        let p = &inputs.progress()[0];
        assert_eq!((p.first_seq, p.summaries_received, p.gaps), (100, 7, 3));
    }

    #[test]
    fn conflicting_claims_are_misrouted() {
        let mut inputs = Inputs::new(None);
        inputs.on_message(batch("a", 0, 0, 3));
        let v = inputs.on_message(batch("b", 1, 0, 4));
        assert!(matches!(v, Verdict::Misrouted { first: true, .. }), "{v:?}");
        let v = inputs.on_message(batch("b", 1, 4, 4));
        assert!(
            matches!(v, Verdict::Misrouted { first: false, .. }),
            "{v:?}"
        );
        let acc = inputs.account("p", 1);
        assert_eq!(acc.misrouted_messages, 2);
        let b = acc
            .links
            .iter()
            .find(|l| l.sender == "b")
            .map(|l| (l.summaries_received, l.misrouted));
        assert_eq!(b, Some((8, 8)));
    }

    #[test]
    fn configured_claim_wins() {
        let mut inputs = Inputs::new(Some(ShardClaim {
            epoch: 1,
            shard_count: 2,
            shard: 1,
        }));
        assert!(matches!(
            inputs.on_message(batch("a", 0, 0, 1)),
            Verdict::Misrouted { .. }
        ));
        assert!(matches!(
            inputs.on_message(batch("b", 1, 0, 1)),
            Verdict::Accept { .. }
        ));
    }

    #[test]
    fn wrong_shard_summaries_are_counted() {
        let mut inputs = Inputs::new(None);
        let m = Message::Batch {
            header: header("a", 0, 0),
            summaries: summaries(1, 3),
        };
        inputs.on_message(m);
        assert_eq!(inputs.account("p", 1).summaries_wrong_shard, 3);
    }

    #[test]
    fn watermark_is_minimum_over_live_inputs() {
        let mut inputs = Inputs::new(None);
        inputs.on_message(batch("a", 0, 0, 1)); // watermark 0
        inputs.on_message(batch("a", 0, 1, 1)); // 10
        inputs.on_message(Message::Batch {
            header: header("b", 0, 50),
            summaries: vec![],
        }); // 500
        assert_eq!(inputs.watermark_ns(), 10);
        inputs.on_message(eos("a", 0, 2));
        assert_eq!(inputs.watermark_ns(), 500);
    }

    #[test]
    fn garbage_is_counted_by_reason() {
        let mut inputs = Inputs::new(None);
        assert!(inputs.on_bytes(b"nonsense", None).is_err());
        assert!(inputs.on_bytes(b"TF\x09\x01", None).is_err());
        let acc = inputs.account("p", 1);
        assert_eq!(acc.malformed.get("bad_magic"), Some(&1));
        assert_eq!(acc.malformed.get("unknown_version"), Some(&1));
    }

    /// CURVE bindings: key `tap` may speak for "tap-a" only, key `any` for any name.
    fn bindings() -> (NameBindings, String, String) {
        use tapflow_runtime::curve::{Client, CurveConfig, KeyPair, LinkSecurity};
        let pair = || KeyPair::generate().expect("generate a key pair");
        let (tap, any) = (pair().public, pair().public);
        let security = LinkSecurity::Curve(std::sync::Arc::new(CurveConfig {
            key_path: "server.key".into(),
            key: pair(),
            clients_path: Some("clients".into()),
            clients: vec![
                Client {
                    key: tap,
                    names: Some(vec!["tap-a".into()]),
                },
                Client {
                    key: any,
                    names: None,
                },
            ],
            server_key_path: None,
            server_key: None,
        }));
        (NameBindings::of(&security), tap.z85(), any.z85())
    }

    #[test]
    fn a_key_speaks_only_for_its_names() {
        let (b, tap, any) = bindings();
        let mut inputs = Inputs::new(None).guarded(b, 1);
        let v = inputs.on_message_from(eos("some-other-tap", 0, 0), Some(&tap));
        assert!(
            matches!(
                v,
                Verdict::Refused {
                    reason: Refused::NameNotBound,
                    ..
                }
            ),
            "{v:?}"
        );
        assert!(matches!(
            inputs.on_message_from(batch("tap-a", 0, 0, 2), None),
            Verdict::Refused { .. }
        ));
        // Nothing of the refused messages is accounted: no link, no end-of-stream.
        assert_eq!((inputs.ended(), inputs.names_refused()), (0, 2));
        assert!(inputs.account("p", 1).links.is_empty());
        assert!(matches!(
            inputs.on_message_from(batch("tap-a", 0, 0, 2), Some(&tap)),
            Verdict::Accept { .. }
        ));
        assert!(matches!(
            inputs.on_message_from(batch("tap-b", 0, 0, 2), Some(&any)),
            Verdict::Accept { .. }
        ));
        // The links under any name are at their cap: no more of them, but a bound name's
        // link was never in their count.
        assert!(matches!(
            inputs.on_message_from(batch("tap-c", 0, 0, 2), Some(&any)),
            Verdict::Refused {
                reason: Refused::OverCap,
                ..
            }
        ));
        inputs.on_message_from(eos("tap-a", 0, 2), Some(&tap));
        assert_eq!((inputs.ended(), inputs.names_refused()), (1, 2));
        assert_eq!(inputs.senders_refused(), 1);
    }

    #[test]
    fn new_links_past_the_cap_are_refused() {
        let mut inputs = Inputs::new(None).guarded(NameBindings::default(), 3);
        inputs.on_message(batch("real", 0, 0, 1));
        for i in 0..10_000 {
            let hb = Message::Heartbeat {
                header: header(&format!("made-up-{i}"), 0, 0),
                counters: CollectorCounters::default(),
            };
            inputs.on_message(hb);
        }
        assert_eq!(inputs.progress().len(), 3);
        assert_eq!(inputs.senders_refused(), 10_000 - 2);
        // Known links go on; the real collector still ends.
        assert!(matches!(
            inputs.on_message(batch("real", 0, 1, 1)),
            Verdict::Accept { .. }
        ));
        inputs.on_message(eos("real", 0, 2));
        assert_eq!(inputs.ended(), 1);
        assert_eq!(inputs.senders_refused(), 10_000 - 2);
    }
}
