//! Routing by a processor set (`--processor-set`, docs/scaling.md): one link per member id, each
//! flow to the owner of its slot under the epoch in force at the packet's time.
//!
//! The set file holds the whole history, so a collector switches epochs when its packets reach
//! each announced `switch_at`, never when it happens to read the file: every collector of a
//! deployment switches at the same packet-time instant, and both halves of an asymmetric flow
//! stay together. SIGHUP re-reads the file; a reload must extend the history in use. A member
//! that no later epoch keeps gets end-of-stream on its link once the capture passes its leaving
//! switch (after every batch of the older epoch), so it can drain and exit.
//!
//! The aggregator may announce the history too (`--control`, issue 18: a processor declared
//! dead is removed, one back for its hold-down added again): [`SetRouting::apply_announced`]
//! takes it through the same path as a reload. A member added again after it left gets a new
//! link (its old one was ended); routing always uses a member's newest live link.

use std::path::PathBuf;

use tapflow_proto::control::SetHistory;
use tapflow_proto::procset::{Change, ProcessorSet, SetError};
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
    /// Switches announced (by reload or by the aggregator) after the capture had passed their
    /// instant: applied at once, the packets in between routed by the older epoch.
    late_switches: u64,
    /// Members the aggregator removed (it declared them dead): their links are given up at
    /// the switch without end-of-stream, so a later incarnation is not sent this one's.
    declared_dead: Vec<u16>,
}

/// Why a reload kept the set in use.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read or parsed (the message names it).
    #[error(transparent)]
    Read(#[from] tapflow_runtime::config::ProcessorSetFileError),
    #[error(
        "processor set {} does not extend the history in use (a reload may only append \
         [[change]] entries); keeping epoch {epoch}",
        path.display()
    )]
    NotAnExtension { path: PathBuf, epoch: u32 },
    /// The aggregator's announced history cannot be replayed over this collector's set.
    #[error("processor set announced by the aggregator: {0}; keeping the set in use")]
    Announced(#[from] SetError),
    #[error(
        "processor set announced by the aggregator does not extend the history in use; keeping \
         epoch {epoch}"
    )]
    AnnouncedNotAnExtension { epoch: u32 },
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
            late_switches: 0,
            declared_dead: Vec::new(),
        };
        r.compute_route();
        r
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The member id each link serves, by link index.
    pub fn ids(&self) -> &[u16] {
        &self.ids
    }

    /// Switches applied late (announced after the capture passed their instant).
    pub fn late_switches(&self) -> u64 {
        self.late_switches
    }

    /// Whether the member of `link` was removed by the aggregator as dead (its link is to be
    /// abandoned rather than sent end-of-stream).
    pub fn is_declared_dead(&self, link: usize) -> bool {
        self.ids
            .get(link)
            .is_some_and(|id| self.declared_dead.contains(id))
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
    pub fn reload(&mut self, max_ts: u64) -> Result<Reload, ReloadError> {
        let new =
            tapflow_runtime::read_processor_set(&self.path, true).map_err(ReloadError::Read)?;
        if !new.extends(&self.set) {
            return Err(ReloadError::NotAnExtension {
                path: self.path.clone(),
                epoch: self.epoch,
            });
        }
        Ok(self.extend(new, max_ts))
    }

    /// The history the aggregator announced: taken as a reload of the file would be (it must
    /// extend the history in use; an equal one is [`Reload::Unchanged`]).
    pub fn apply_announced(
        &mut self,
        announced: &SetHistory,
        max_ts: u64,
    ) -> Result<Reload, ReloadError> {
        let new = self
            .set
            .with_history(&announced.initial, &announced.changes, true)?;
        if !new.extends(&self.set) {
            return Err(ReloadError::AnnouncedNotAnExtension { epoch: self.epoch });
        }
        for e in &new.epochs()[self.set.epochs().len()..] {
            if let Some(Change::Remove(id)) = e.change {
                self.declared_dead.push(id);
            }
        }
        Ok(self.extend(new, max_ts))
    }

    /// `new` (which extends the set in use) becomes the set; returns the member ids of the
    /// current and later epochs that have no live link.
    fn extend(&mut self, new: ProcessorSet, max_ts: u64) -> Reload {
        let old_len = self.set.epochs().len();
        if new.epochs().len() == old_len {
            return Reload::Unchanged;
        }
        for e in &new.epochs()[old_len..] {
            if e.starts_ns <= max_ts {
                self.late_switches += 1;
                warn!(
                    epoch = e.table.epoch(),
                    switch_at_ns = e.starts_ns,
                    late_ms = (max_ts - e.starts_ns) / 1_000_000,
                    late_switches = self.late_switches,
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
        let mut new_ids: Vec<u16> = new.epochs()[(self.epoch - 1) as usize..]
            .iter()
            .flat_map(|e| e.table.members().iter().copied())
            .filter(|&id| self.live_link(id).is_none())
            .collect();
        new_ids.sort_unstable();
        new_ids.dedup();
        self.set = new;
        Reload::Extended { new_ids }
    }

    /// The newest link of member `id` not yet ended.
    fn live_link(&self, id: u16) -> Option<usize> {
        (0..self.ids.len())
            .rev()
            .find(|&i| self.ids[i] == id && !self.retired[i])
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
        // A member added again after it left has two links: both count under its id.
        for (i, &id) in self.ids.iter().enumerate() {
            out[usize::from(id)] += sent.get(i).copied().unwrap_or(0);
        }
        out
    }

    fn compute_route(&mut self) {
        let Some(e) = self.set.epoch(self.epoch) else {
            return;
        };
        let mut missing = Vec::new();
        let links: Vec<Option<usize>> = e
            .table
            .members()
            .iter()
            .map(|&id| self.live_link(id))
            .collect();
        for (s, owner) in e.table.owners().iter().enumerate() {
            let member = e.table.members().binary_search(owner).ok();
            match member.and_then(|m| links[m]) {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use tapflow_proto::key::ip_proto;
    use tapflow_proto::slots::SlotTable;
    use tapflow_proto::{Addr, FiveTuple};

    use super::*;

    /// The history most tests route by: members 3 and 7 (epoch 1), 5 joins (epoch 2), 7 leaves
    /// (epoch 3). Ids are not link indices: links are 3 -> 0, 5 -> 1, 7 -> 2.
    const CHANGES: [(&str, u16, f64); 2] = [("add", 5, 100.5), ("remove", 7, 200.0)];
    const ADD_NS: u64 = 100_500_000_000;
    const REMOVE_NS: u64 = 200_000_000_000;

    /// A set file: `initial`, an endpoint for each of `endpoints`, then `changes` as
    /// `(add | remove, id, switch_at in seconds)`.
    fn set_file(initial: &[u16], endpoints: &[u16], changes: &[(&str, u16, f64)]) -> String {
        let mut text = format!("initial = {initial:?}\n[processors]\n");
        for id in endpoints {
            text += &format!("{id} = \"tcp://127.0.0.1:{}\"\n", 5600 + id);
        }
        for (op, id, at) in changes {
            text += &format!("[[change]]\n{op} = {id}\nswitch_at = {at:?}\n");
        }
        text
    }

    fn base() -> String {
        set_file(&[3, 7], &[3, 5, 7], &CHANGES)
    }

    /// Routing by `text` with one link per member, as the collector starts it.
    fn routing(text: &str) -> (SetRouting, ProcessorSet, Vec<u16>) {
        let set = ProcessorSet::parse(text, true).expect("valid set file");
        let ids = set.all_members();
        let r = SetRouting::new(PathBuf::from("set.toml"), set.clone(), ids.clone());
        (r, set, ids)
    }

    fn table(set: &ProcessorSet, epoch: u32) -> SlotTable {
        set.epoch(epoch).expect("epoch in history").table.clone()
    }

    /// 20,000 pseudo-random flows (IPv4 and IPv6, TCP and UDP): nearly every slot.
    fn keys() -> Vec<FlowKey> {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let [a, b, c, d, e, f, g, h] = x.to_le_bytes();
                let (src, dst) = if a & 2 == 0 {
                    (
                        Addr::from_v4([10, b, c, d]),
                        Addr::from_v4([192, 168, e, f]),
                    )
                } else {
                    let mut v6 = [0u8; 16];
                    v6[..2].copy_from_slice(&[0x20, 0x01]);
                    v6[8..].copy_from_slice(&x.to_be_bytes());
                    (Addr::from_v6(v6), Addr::from_v4([8, 8, e, f]))
                };
                let tuple = FiveTuple {
                    proto: if a & 1 == 0 {
                        ip_proto::TCP
                    } else {
                        ip_proto::UDP
                    },
                    src,
                    dst,
                    sport: u16::from_le_bytes([g, h]),
                    dport: 443,
                };
                tuple.key(0).0
            })
            .collect()
    }

    /// Every key goes to the link (index into `links`, the member id of each link) of its owner
    /// under `table`. Returns the links that received keys.
    fn check_routes(r: &SetRouting, table: &SlotTable, links: &[u16]) -> BTreeSet<usize> {
        let mut used = BTreeSet::new();
        for key in keys() {
            let owner = table.owner(&key);
            let link = links
                .iter()
                .position(|&id| id == owner)
                .expect("every owner has a link");
            assert_eq!(
                r.link_of(&key),
                link,
                "{key} (slot {}) is owned by {owner} in epoch {}",
                slot(&key),
                table.epoch()
            );
            used.insert(link);
        }
        used
    }

    #[test]
    fn routes_by_epoch_one_until_the_first_switch() {
        let (mut r, set, ids) = routing(&base());
        assert_eq!(ids, [3, 5, 7]);
        assert_eq!(r.epoch(), 1);
        assert_eq!(r.next_switch_ns(), ADD_NS);
        // 5 is not a member yet: its link (1) gets nothing.
        let e1 = table(&set, 1);
        assert_eq!(check_routes(&r, &e1, &ids), BTreeSet::from([0, 2]));
        // One nanosecond before the switch is still epoch 1.
        assert!(r.advance(ADD_NS - 1).is_empty());
        assert_eq!(r.epoch(), 1);
        assert_eq!(r.next_switch_ns(), ADD_NS);
        assert_eq!(check_routes(&r, &e1, &ids), BTreeSet::from([0, 2]));
    }

    #[test]
    fn an_add_switches_at_its_time_and_retires_nothing() {
        let (mut r, set, ids) = routing(&base());
        assert_eq!(r.advance(ADD_NS), Vec::<usize>::new());
        assert_eq!(r.epoch(), 2);
        assert_eq!(r.next_switch_ns(), REMOVE_NS);
        assert_eq!(
            check_routes(&r, &table(&set, 2), &ids),
            BTreeSet::from([0, 1, 2])
        );
        assert!((0..ids.len()).all(|link| !r.is_retired(link)));
    }

    #[test]
    fn a_remove_retires_the_leavers_link_once() {
        // Past both switches at once, or one at a time: the same end.
        for steps in [&[REMOVE_NS + 1][..], &[ADD_NS + 1, REMOVE_NS + 1]] {
            let (mut r, set, ids) = routing(&base());
            let gone: Vec<usize> = steps.iter().flat_map(|&ts| r.advance(ts)).collect();
            assert_eq!(gone, [2], "the link of 7, once ({steps:?})");
            assert_eq!(r.epoch(), 3);
            assert!(r.advance(REMOVE_NS + 2).is_empty());
            assert!(r.advance(u64::MAX).is_empty());
            assert_eq!(r.epoch(), 3);
            assert!(r.is_retired(2));
            assert!(!r.is_retired(0) && !r.is_retired(1) && !r.is_retired(3));
            assert_eq!(r.next_switch_ns(), u64::MAX);
            assert_eq!(
                check_routes(&r, &table(&set, 3), &ids),
                BTreeSet::from([0, 1])
            );
        }
    }

    #[test]
    fn by_id_reindexes_counts_by_member_id() {
        let (r, _, _) = routing(&base());
        assert_eq!(r.by_id(&[10, 20, 30]), [0, 0, 0, 10, 0, 20, 0, 30]);
        // A link with no count yet reads 0.
        assert_eq!(r.by_id(&[10]), [0, 0, 0, 10, 0, 0, 0, 0]);
        // Links in any order: each count lands under its link's id, and routing agrees.
        let set = ProcessorSet::parse(&set_file(&[3, 7], &[3, 7], &[]), true).expect("valid");
        let e1 = table(&set, 1);
        let r = SetRouting::new(PathBuf::from("set.toml"), set, vec![7, 3]);
        assert_eq!(r.by_id(&[1, 2]), [0, 0, 0, 2, 0, 0, 0, 1]);
        assert_eq!(check_routes(&r, &e1, &[7, 3]), BTreeSet::from([0, 1]));
    }

    #[test]
    fn a_reload_appends_epochs_and_refuses_another_history() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("set.toml");
        std::fs::write(&path, base()).expect("write set file");
        let set = ProcessorSet::parse(&base(), true).expect("valid");
        let mut links = set.all_members();
        let mut r = SetRouting::new(path.clone(), set.clone(), links.clone());
        assert!(matches!(r.reload(0), Ok(Reload::Unchanged)));
        assert!(r.advance(ADD_NS).is_empty());
        let e2 = table(&set, 2);

        // Anything but an extension is refused and routing stays in epoch 2.
        let refused = [
            (
                set_file(&[3, 8], &[3, 5, 8], &[CHANGES[0], ("remove", 8, 200.0)]),
                "does not extend",
            ),
            (
                set_file(&[3, 7], &[3, 5, 7], &[("add", 5, 100.0), CHANGES[1]]),
                "does not extend",
            ),
            (
                set_file(&[3, 7], &[3, 5, 7], &CHANGES[..1]),
                "does not extend",
            ),
            ("initial = [3, 7".to_string(), "not a processor set file"),
        ];
        for (text, why) in refused {
            std::fs::write(&path, &text).expect("write set file");
            let err = match r.reload(ADD_NS) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("reload accepted {text:?}"),
            };
            assert!(err.contains(why), "{err}");
            assert_eq!(r.epoch(), 2);
            assert_eq!(r.next_switch_ns(), REMOVE_NS);
            assert_eq!(check_routes(&r, &e2, &links), BTreeSet::from([0, 1, 2]));
        }

        // Appending a change: 1 joins at 300 s. It needs a link; nothing switches yet.
        let grown = [CHANGES[0], CHANGES[1], ("add", 1, 300.0)];
        let text = set_file(&[3, 7], &[1, 3, 5, 7], &grown);
        std::fs::write(&path, &text).expect("write set file");
        let new_ids = match r.reload(ADD_NS) {
            Ok(Reload::Extended { new_ids }) => new_ids,
            Ok(Reload::Unchanged) => panic!("an appended change read as unchanged"),
            Err(e) => panic!("an appended change was refused: {e}"),
        };
        assert_eq!(new_ids, [1]);
        assert_eq!(r.endpoint(1), Some("tcp://127.0.0.1:5601"));
        assert_eq!(r.epoch(), 2);
        assert!(matches!(r.reload(ADD_NS), Ok(Reload::Unchanged)));
        r.add_link(1);
        links.push(1);
        assert_eq!(check_routes(&r, &e2, &links), BTreeSet::from([0, 1, 2]));

        let set = ProcessorSet::parse(&text, true).expect("valid");
        assert_eq!(r.advance(REMOVE_NS), [2]);
        assert_eq!(r.next_switch_ns(), 300_000_000_000);
        assert!(r.advance(300_000_000_000).is_empty());
        assert_eq!(r.epoch(), 4);
        assert_eq!(
            check_routes(&r, &table(&set, 4), &links),
            BTreeSet::from([0, 1, 3])
        );
        assert_eq!(r.by_id(&[1, 2, 3, 4]), [0, 4, 0, 1, 0, 2, 0, 3]);
    }

    #[test]
    fn an_announced_removal_and_return_switch_like_a_reload_and_relink_the_member() {
        let text = set_file(&[0, 1, 2], &[0, 1, 2], &[]);
        let (mut r, set, ids) = routing(&text);
        let announce = |changes: &[(Change, u64)], seq| SetHistory {
            seq,
            initial: vec![0, 1, 2],
            changes: changes.to_vec(),
        };
        let remove = (Change::Remove(1), ADD_NS);
        // The same history as in use: nothing new.
        assert!(matches!(
            r.apply_announced(&announce(&[], 1), 0),
            Ok(Reload::Unchanged)
        ));
        // Another epoch 1, or a change that cannot apply: refused, nothing changes.
        let other = SetHistory {
            initial: vec![0, 1],
            ..announce(&[remove], 1)
        };
        for bad in [other, announce(&[(Change::Remove(9), ADD_NS)], 1)] {
            let err = r.apply_announced(&bad, 0).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("announced")),
                "{err:?}"
            );
            assert_eq!(r.next_switch_ns(), u64::MAX);
        }
        // The removal: no new link; at its instant the member's link is ended.
        match r.apply_announced(&announce(&[remove], 2), ADD_NS - 1) {
            Ok(Reload::Extended { new_ids }) => assert!(new_ids.is_empty(), "{new_ids:?}"),
            _ => panic!("the removal was not taken"),
        }
        assert_eq!(r.late_switches(), 0);
        assert_eq!(r.next_switch_ns(), ADD_NS);
        assert!(r.is_declared_dead(1) && !r.is_declared_dead(0));
        assert_eq!(r.advance(ADD_NS), [1]);
        let e2 = ProcessorSet::replay(&[0, 1, 2], &[remove], Default::default())
            .expect("valid")
            .latest()
            .table
            .clone();
        assert_eq!(check_routes(&r, &e2, &ids), BTreeSet::from([0, 2]));
        // Back, announced after the capture passed its instant: a new link for 1 (its old one
        // ended), switched at once and counted late; routing goes to the new link.
        let back = (Change::Add(1), REMOVE_NS);
        match r.apply_announced(&announce(&[remove, back], 3), REMOVE_NS + 5) {
            Ok(Reload::Extended { new_ids }) => assert_eq!(new_ids, [1]),
            _ => panic!("the return was not taken"),
        }
        assert_eq!(r.late_switches(), 1);
        r.add_link(1);
        assert!(r.advance(REMOVE_NS + 5).is_empty());
        assert_eq!(r.epoch(), 3);
        let e3 = set
            .with_history(&[0, 1, 2], &[remove, back], true)
            .expect("valid")
            .latest()
            .table
            .clone();
        assert_eq!(
            check_routes(&r, &e3, &[0, 9, 2, 1]),
            BTreeSet::from([0, 2, 3]),
            "link 1 (ended) gets nothing; link 3 serves member 1"
        );
        // Both links of member 1 count under its id.
        assert_eq!(r.by_id(&[5, 7, 11, 13]), [5, 20, 11]);
    }

    #[test]
    fn a_member_without_a_link_leaves_its_slots_with_their_old_owners() {
        let set = ProcessorSet::parse(&base(), true).expect("valid");
        let (e1, e2) = (table(&set, 1), table(&set, 2));
        let mut r = SetRouting::new(PathBuf::from("set.toml"), set, vec![3, 7]);
        assert!(r.advance(ADD_NS).is_empty());
        assert_eq!(r.epoch(), 2);
        let mut kept = 0;
        for key in keys() {
            let owner = match e2.owner(&key) {
                5 => {
                    kept += 1;
                    e1.owner(&key)
                }
                id => id,
            };
            assert_eq!(r.link_of(&key), usize::from(owner == 7), "{key}");
        }
        assert!(kept > 0);
        r.add_link(5);
        assert_eq!(check_routes(&r, &e2, &[3, 7, 5]), BTreeSet::from([0, 1, 2]));
    }
}
