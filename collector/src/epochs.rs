//! Routing by a processor set (`--processor-set`, docs/scaling.md): one link per member id, each
//! flow to the owner of its slot under the epoch in force at the packet's time.
//!
//! The set file holds the whole history, so a collector switches epochs when its packets reach
//! each announced `switch_at`, never when it happens to read the file: every collector of a
//! deployment switches at the same packet-time instant, and both halves of an asymmetric flow
//! stay together. SIGHUP re-reads the file; a reload must extend the history in use. A member
//! that no later epoch keeps gets end-of-stream on its link once the capture passes its leaving
//! switch (after every batch of the older epoch), so it can drain and exit.

use std::path::PathBuf;

use tapflow_proto::procset::ProcessorSet;
use tapflow_proto::slots::{slot, SLOTS};
use tapflow_proto::FlowKey;
use tracing::{error, info, warn};

pub struct SetRouting {
    path: PathBuf,
    set: ProcessorSet,
    /// The member id each link serves, by link index.
    ids: Vec<u16>,
    /// Links whose member left the set for good: end-of-stream sent, nothing more goes there.
    retired: Vec<bool>,
    epoch: u32,
    /// Link index of each slot's owner under `epoch`.
    route: Vec<u16>,
}

/// What a reload found.
pub enum Reload {
    /// Nothing new.
    Unchanged,
    /// New epochs; these member ids need links first.
    Extended { new_ids: Vec<u16> },
}

impl SetRouting {
    /// Routing by `set`, with one link per id of `ids` (every member of any epoch, in link
    /// order), starting in epoch 1.
    pub fn new(path: PathBuf, set: ProcessorSet, ids: Vec<u16>) -> SetRouting {
        let mut r = SetRouting {
            path,
            set,
            retired: vec![false; ids.len()],
            ids,
            epoch: 1,
            route: vec![0; SLOTS],
        };
        r.compute_route();
        r
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn is_retired(&self, link: usize) -> bool {
        self.retired.get(link).copied().unwrap_or(false)
    }

    /// The link of `key`'s owner under the current epoch.
    #[inline]
    pub fn link_of(&self, key: &FlowKey) -> usize {
        usize::from(self.route[usize::from(slot(key))])
    }

    /// Packet time of the next switch (`u64::MAX`: none announced).
    pub fn next_switch_ns(&self) -> u64 {
        self.set
            .epoch(self.epoch + 1)
            .map_or(u64::MAX, |e| e.starts_ns)
    }

    /// Moves to the epoch in force at packet time `ts_ns` (the caller has flushed every batch
    /// of the current one). Returns the links whose member no later epoch keeps, to end.
    pub fn advance(&mut self, ts_ns: u64) -> Vec<usize> {
        while let Some(next) = self.set.epoch(self.epoch + 1) {
            if next.starts_ns > ts_ns {
                break;
            }
            let Some(old) = self.set.epoch(self.epoch) else {
                break;
            };
            let moved = old.table.moved(&next.table).len();
            info!(
                epoch = next.table.epoch(),
                change = ?next.change,
                switch_at_ns = next.starts_ns,
                members = ?next.table.members(),
                moved_slots = moved,
                moved_fraction = format!("{:.4}", moved as f64 / SLOTS as f64),
                late_ms = ts_ns.saturating_sub(next.starts_ns) / 1_000_000,
                "processor set: switched epoch"
            );
            self.epoch += 1;
        }
        self.compute_route();
        let mut gone = Vec::new();
        for (i, id) in self.ids.iter().enumerate() {
            let kept = self.set.epochs()[(self.epoch - 1) as usize..]
                .iter()
                .any(|e| e.table.contains(*id));
            if !kept && !self.retired[i] {
                self.retired[i] = true;
                gone.push(i);
            }
        }
        gone
    }

    /// Re-reads the set file. On success the new epochs are in force for routing once links
    /// exist for `new_ids` ([`SetRouting::add_link`]); on error nothing changes.
    pub fn reload(&mut self, max_ts: u64) -> Result<Reload, String> {
        let new = tapflow_runtime::read_processor_set(&self.path, true)?;
        if !new.extends(&self.set) {
            return Err(format!(
                "processor set {} does not extend the history in use (a reload may only append \
                 [[change]] entries); keeping epoch {}",
                self.path.display(),
                self.epoch
            ));
        }
        let old_len = self.set.epochs().len();
        if new.epochs().len() == old_len {
            return Ok(Reload::Unchanged);
        }
        for e in &new.epochs()[old_len..] {
            if e.starts_ns <= max_ts {
                warn!(
                    epoch = e.table.epoch(),
                    switch_at_ns = e.starts_ns,
                    late_ms = (max_ts - e.starts_ns) / 1_000_000,
                    "processor set: this change was announced after the capture passed its switch time; switching now (packets in between went by the older epoch)"
                );
            } else {
                info!(
                    epoch = e.table.epoch(),
                    change = ?e.change,
                    switch_at_ns = e.starts_ns,
                    members = ?e.table.members(),
                    "processor set: change announced"
                );
            }
        }
        let new_ids = new
            .all_members()
            .into_iter()
            .filter(|id| !self.ids.contains(id))
            .collect();
        self.set = new;
        Ok(Reload::Extended { new_ids })
    }

    /// The endpoint of member `id` (for a new link).
    pub fn endpoint(&self, id: u16) -> Option<&str> {
        self.set.endpoint(id)
    }

    /// A link for `id` now exists at the next link index.
    pub fn add_link(&mut self, id: u16) {
        self.ids.push(id);
        self.retired.push(false);
        self.compute_route();
    }

    /// Summaries sent per link, re-indexed by member id (what each processor's accounting
    /// reads under its id).
    pub fn by_id(&self, sent: &[u64]) -> Vec<u64> {
        let len = self
            .ids
            .iter()
            .map(|&id| usize::from(id) + 1)
            .max()
            .unwrap_or(0);
        let mut out = vec![0; len];
        for (i, &id) in self.ids.iter().enumerate() {
            out[usize::from(id)] = sent.get(i).copied().unwrap_or(0);
        }
        out
    }

    fn compute_route(&mut self) {
        let Some(e) = self.set.epoch(self.epoch) else {
            return;
        };
        let mut missing = Vec::new();
        for (s, owner) in e.table.owners().iter().enumerate() {
            match self.ids.iter().position(|id| id == owner) {
                Some(i) => self.route[s] = i as u16,
                None => missing.push(*owner),
            }
        }
        missing.dedup();
        if !missing.is_empty() {
            error!(
                ?missing,
                "processor set: no link for these members (their links could not be set up); their slots stay with their previous owners"
            );
        }
    }
}
