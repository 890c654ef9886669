//! How a flow feeds its timing box ([`super::timing`]): which packets count, when the box is
//! made, and how the first packet is recalled from the flow's own fields.

use tapflow_proto::conn::Timing;
use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::tcp as tf;
use tapflow_proto::PacketSummary;

use super::flow::{physical, Ctx, Flow, L4};
use super::timing::TimingState;

impl Flow {
    /// Starts loading the timing box (see `TimingState::touch`), right after the flow's lookup.
    #[inline]
    pub fn touch_timing(&self, s: &PacketSummary) {
        if let Some(t) = self.timing.as_deref() {
            std::hint::black_box(t.touch(physical(s), self.key.proto == ip_proto::TCP));
        }
    }

    /// Applies one packet from collector `tap` ([`Flow::apply`]) and updates the timing;
    /// `created`: the packet created the flow. Boxes come from `spare` (ended flows' boxes)
    /// while it has any.
    pub fn apply_timed(
        &mut self,
        s: &PacketSummary,
        tap: u16,
        ctx: &Ctx,
        created: bool,
        spare: &mut Spare,
    ) {
        if self.timing.is_none() && self.pkts != [0, 0] {
            self.timing = Some(spare.take(self.seed_timing()));
        }
        let before = self.pkts;
        self.apply(s, ctx);
        let k = if self.pkts[0] != before[0] {
            0
        } else if self.pkts[1] != before[1] {
            1
        } else {
            return;
        };
        if self.timing.is_none() && created {
            self.tap0 = tap;
            return;
        }
        let tcp = self.key.proto == ip_proto::TCP;
        let st = self
            .timing
            .get_or_insert_with(|| spare.take(TimingState::default()));
        st.gap(k, s.ts_ns);
        if tcp {
            st.tcp(s, physical(s), tap);
        }
    }

    /// The box for a flow whose one counted packet so far is the one that created it, as that
    /// packet left it (called before the flow's next packet is applied).
    fn seed_timing(&self) -> TimingState {
        let k = usize::from(self.pkts[0] == 0);
        let mut syn = None;
        if let L4::Tcp(e) = &self.l4 {
            // Only the first packet's sender has flags: a SYN without ACK starts a handshake,
            // and its sequence number is the sender's initial one.
            for (a, ep) in e.iter().enumerate() {
                if self.tcp_flags[a] & (tf::SYN | tf::ACK | tf::RST) == tf::SYN {
                    syn = Some((a, ep.start_seq));
                }
            }
        }
        TimingState::seeded(self.first_ts, k, self.tap0, syn)
    }

    /// The record's timing as it stands.
    pub fn timing_record(&self) -> Option<Box<Timing>> {
        self.timing.as_ref()?.record(self.orig_index(), self.pkts)
    }
}

/// Timing boxes of ended flows kept for new ones (a box costs an allocation and a free
/// otherwise, 10% of the table's time in `tapflow-procbench`), at most [`Spare::CAP`].
#[derive(Default)]
#[expect(
    clippy::vec_box,
    reason = "the boxes themselves are kept, to move into flows without an allocation"
)]
pub(super) struct Spare(Vec<Box<TimingState>>);

impl Spare {
    /// Boxes kept at most: 8192 of [`super::timing::BOX_BYTES`] (2.6 MB).
    pub const CAP: usize = 8192;

    /// A box holding `st`.
    fn take(&mut self, st: TimingState) -> Box<TimingState> {
        match self.0.pop() {
            Some(mut b) => {
                *b = st;
                b
            }
            None => Box::new(st),
        }
    }

    /// Keeps an ended flow's box, if there is room.
    pub fn give(&mut self, b: Option<Box<TimingState>>) {
        if let Some(b) = b {
            if self.0.len() < Self::CAP {
                self.0.push(b);
            }
        }
    }
}
