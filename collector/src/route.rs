//! Routing: which link each summary goes to. Fixed shards (`--processor`, the jump hash of the
//! flow key over the links) or a processor set (`--processor-set`, `epochs.rs`: the owner of
//! the key's slot under the epoch in force at the packet's time).

use tapflow_proto::{shard, FlowKey};

use crate::config::Config;
use crate::epochs::{Reload, ReloadError, SetRouting};

pub struct Router {
    /// `None`: fixed shards.
    set: Option<SetRouting>,
    /// The fixed shard count (links at start).
    shards: u16,
    /// The epoch batches are tagged with.
    epoch: u32,
    /// The set's next switch time, `u64::MAX` when none (checked per packet).
    next_switch_ns: u64,
}

impl Router {
    pub fn new(config: &Config) -> Router {
        let set = config
            .processor_set
            .as_ref()
            .map(|(path, set)| SetRouting::new(path.clone(), set.clone(), set.all_members()));
        Router {
            next_switch_ns: set.as_ref().map_or(u64::MAX, SetRouting::next_switch_ns),
            set,
            shards: u16::try_from(config.processors.len()).unwrap_or(u16::MAX),
            epoch: config.epoch,
        }
    }

    /// What each link claims in its header, by link index: the shard index, or with a
    /// processor set the member id. The links are `config.processors`, in order.
    pub fn link_ids(&self) -> Vec<u16> {
        match &self.set {
            Some(r) => r.ids().to_vec(),
            None => (0..self.shards).collect(),
        }
    }

    /// The epoch and shard count the links claim at start. With a processor set links are per
    /// member id and claim no shard count (0): each batch's epoch says who owns what.
    pub fn link_claims(&self) -> (u32, u16) {
        match &self.set {
            Some(_) => (1, 0),
            None => (self.epoch, self.shards),
        }
    }

    /// The link `key` goes to.
    #[inline]
    pub fn link_of(&self, key: &FlowKey) -> usize {
        match &self.set {
            Some(r) => r.link_of(key),
            None => usize::from(shard(key, self.shards)),
        }
    }

    /// Whether a packet at `ts_ns` is past the next switch ([`Router::switch`] is due).
    #[inline]
    pub fn is_switch_due(&self, ts_ns: u64) -> bool {
        ts_ns >= self.next_switch_ns
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Moves to the epoch in force at `ts_ns` (the caller has flushed every batch of the
    /// current one); returns the links whose member left for good, to end.
    pub fn switch(&mut self, ts_ns: u64) -> Vec<usize> {
        let Some(r) = self.set.as_mut() else {
            return Vec::new();
        };
        let gone = r.advance(ts_ns);
        self.epoch = r.epoch();
        self.next_switch_ns = r.next_switch_ns();
        gone
    }

    /// Re-reads the processor set (see [`SetRouting::reload`]); `None` without one.
    pub fn reload(&mut self, max_ts: u64) -> Option<Result<Reload, ReloadError>> {
        self.set.as_mut().map(|r| r.reload(max_ts))
    }

    /// The history the aggregator announced (see [`SetRouting::apply_announced`]); `None`
    /// without a processor set.
    pub fn apply_announced(
        &mut self,
        announced: &tapflow_proto::control::SetHistory,
        max_ts: u64,
    ) -> Option<Result<Reload, ReloadError>> {
        self.set
            .as_mut()
            .map(|r| r.apply_announced(announced, max_ts))
    }

    /// Switches applied late (announced after the capture passed their instant).
    pub fn late_switches(&self) -> u64 {
        self.set.as_ref().map_or(0, SetRouting::late_switches)
    }

    /// The endpoint of member `id`.
    pub fn endpoint(&self, id: u16) -> Option<&str> {
        self.set.as_ref().and_then(|r| r.endpoint(id))
    }

    /// A link for member `id` now exists at the next link index.
    pub fn add_link(&mut self, id: u16) {
        if let Some(r) = self.set.as_mut() {
            r.add_link(id);
        }
    }

    /// After a reload: whether a switch it announced is already behind packet time `max_ts`.
    pub fn refresh_switch(&mut self, max_ts: u64) -> bool {
        if let Some(r) = &self.set {
            self.next_switch_ns = r.next_switch_ns();
        }
        self.next_switch_ns <= max_ts
    }

    /// Whether `link`'s member was removed by the aggregator as dead.
    pub fn is_declared_dead(&self, link: usize) -> bool {
        self.set.as_ref().is_some_and(|r| r.is_declared_dead(link))
    }

    pub fn is_retired(&self, link: usize) -> bool {
        self.set.as_ref().is_some_and(|r| r.is_retired(link))
    }

    /// Summaries sent per link as the accounting reads them: by shard, or by member id.
    pub fn sent_by_claim(&self, sent: &[u64]) -> Vec<u64> {
        match &self.set {
            Some(r) => r.by_id(sent),
            None => sent.to_vec(),
        }
    }
}
