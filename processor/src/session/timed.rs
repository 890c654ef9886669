//! How a flow feeds its timing box ([`super::timing`]): which packets count, when the box is
//! made, and how the first packet is recalled from the flow's own fields.

use tapflow_proto::conn::Timing;
use tapflow_proto::key::ip_proto;
use tapflow_proto::summary::tcp as tf;
use tapflow_proto::PacketSummary;

use super::flow::{physical, Ctx, Flow, L4};
use super::timing::TimingState;

impl Flow {
    /// Applies one packet from collector `tap` ([`Flow::apply`]) and updates the timing;
    /// `created`: the packet created the flow.
    pub fn apply_timed(&mut self, s: &PacketSummary, tap: u16, ctx: &Ctx, created: bool) {
        if self.timing.is_none() && self.pkts != [0, 0] {
            self.timing = Some(self.seed_timing());
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
        let st = self.timing.get_or_insert_with(Box::default);
        st.gap(k, s.ts_ns);
        if tcp {
            st.tcp(s, physical(s), tap);
        }
    }

    /// The box for a flow whose one counted packet so far is the one that created it, as that
    /// packet left it (called before the flow's next packet is applied).
    fn seed_timing(&self) -> Box<TimingState> {
        let k = usize::from(self.pkts[0] == 0);
        let mut syn = None;
        if let L4::Tcp(e) = &self.l4 {
            // Only the first packet's sender has flags: a SYN without ACK starts a handshake,
            // and its sequence number is the sender's initial one.
            for a in 0..2 {
                if self.tcp_flags[a] & (tf::SYN | tf::ACK | tf::RST) == tf::SYN {
                    syn = Some((a, e[a].start_seq));
                }
            }
        }
        Box::new(TimingState::seeded(self.first_ts, k, self.tap0, syn))
    }

    /// The record's timing as it stands.
    pub fn timing_record(&self) -> Option<Box<Timing>> {
        self.timing.as_ref()?.record(self.orig_index())
    }
}
