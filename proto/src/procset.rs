//! The processor set: which processors exist, and which owns each flow at any packet time.
//!
//! One TOML file, the same on every collector, processor and the aggregator, holds the set's
//! whole history: the initial members (epoch 1) and an append-only list of changes, each adding
//! or removing one processor at an announced packet-time instant. Every host replays that history
//! with [`SlotTable::with_added`] / [`SlotTable::with_removed`], so all of them derive the same
//! table for every epoch, and a collector started (or restarted) late still shards every packet
//! by the epoch in force at its timestamp. Operators append a change and send SIGHUP; a reload
//! is accepted only when it extends the history it replaces (see [`ProcessorSet::extends`]).
//!
//! ```toml
//! initial = [0, 1]                  # epoch 1
//! [processors]                      # every id that ever appears, with its endpoint
//! 0 = "tcp://10.0.0.5:5601"
//! 1 = "tcp://10.0.0.6:5601"
//! 2 = "tcp://10.0.0.7:5601"
//! [[change]]                        # epoch 2
//! add = 2
//! switch_at = 1763874010.0          # packet time, Unix seconds (Zeek's `ts`)
//! [[change]]                        # epoch 3
//! remove = 1
//! switch_at = 1763874070.0
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::slots::{SlotTable, TableError};

/// One epoch: its table and the packet time it starts at (0 for epoch 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epoch {
    pub table: SlotTable,
    pub starts_ns: u64,
    /// What made this epoch (`None` for epoch 1).
    pub change: Option<Change>,
}

/// A change of the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Add(u16),
    Remove(u16),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SetError {
    #[error("not a processor set file: {0}")]
    Syntax(String),
    #[error("change {index} (epoch {epoch}) must have exactly one of `add` and `remove`")]
    AddOrRemove { index: usize, epoch: u32 },
    #[error("change {index} (epoch {epoch}): switch_at {switch_at} is not after the previous change's ({previous})")]
    NotAscending {
        index: usize,
        epoch: u32,
        switch_at: f64,
        previous: f64,
    },
    #[error("change {index} (epoch {epoch}): switch_at {switch_at} is not a packet time in Unix seconds")]
    BadTime {
        index: usize,
        epoch: u32,
        switch_at: f64,
    },
    #[error("epoch {epoch}: {source}")]
    Table { epoch: u32, source: TableError },
    #[error("processor {0} is a member but has no endpoint under [processors]")]
    NoEndpoint(u16),
    #[error("[processors] key {0:?} is not a processor id (0-65535)")]
    BadId(String),
    #[error("the announced history starts from members {announced:?}, this one from {ours:?}")]
    OtherInitial { announced: Vec<u16>, ours: Vec<u16> },
    #[error("announced change {index} (epoch {epoch}) switches at {switch_at_ns} ns, not after the one before")]
    AnnouncedNotAscending {
        index: usize,
        epoch: u32,
        switch_at_ns: u64,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFile {
    initial: Vec<u16>,
    #[serde(default)]
    processors: BTreeMap<String, String>,
    #[serde(default)]
    change: Vec<ChangeFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeFile {
    add: Option<u16>,
    remove: Option<u16>,
    switch_at: f64,
}

/// Every epoch of a processor set, and each member's endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessorSet {
    epochs: Vec<Epoch>,
    endpoints: BTreeMap<u16, String>,
}

impl ProcessorSet {
    /// Parses and replays a set file. Endpoints are required for every member of any epoch
    /// (`need_endpoints`: collectors connect to them; processors and the aggregator need only
    /// the tables).
    pub fn parse(text: &str, need_endpoints: bool) -> Result<ProcessorSet, SetError> {
        let file: SetFile = toml::from_str(text).map_err(|e| SetError::Syntax(e.to_string()))?;
        let mut endpoints = BTreeMap::new();
        for (k, v) in file.processors {
            let id = k.parse::<u16>().map_err(|_| SetError::BadId(k.clone()))?;
            endpoints.insert(id, v);
        }
        let mut changes = Vec::with_capacity(file.change.len());
        for (index, c) in file.change.iter().enumerate() {
            let epoch = index as u32 + 2;
            let change = match (c.add, c.remove) {
                (Some(id), None) => Change::Add(id),
                (None, Some(id)) => Change::Remove(id),
                _ => return Err(SetError::AddOrRemove { index, epoch }),
            };
            if !(c.switch_at.is_finite() && c.switch_at > 0.0 && c.switch_at < 1.8e10) {
                return Err(SetError::BadTime {
                    index,
                    epoch,
                    switch_at: c.switch_at,
                });
            }
            if index > 0 && c.switch_at <= file.change[index - 1].switch_at {
                return Err(SetError::NotAscending {
                    index,
                    epoch,
                    switch_at: c.switch_at,
                    previous: file.change[index - 1].switch_at,
                });
            }
            changes.push((change, (c.switch_at * 1e9).round() as u64));
        }
        let set = ProcessorSet::replay(&file.initial, &changes, endpoints)?;
        if need_endpoints {
            set.check_endpoints()?;
        }
        Ok(set)
    }

    /// The same set with the history `changes` from epoch 1's members `initial` (announced by
    /// the aggregator, `proto::control`), endpoints as in this one: an error when it starts from
    /// other members, switch instants do not ascend, a change cannot apply, or (`need_endpoints`)
    /// a member has no endpoint. Whether it extends this one is the caller's check, as for a
    /// reloaded file.
    pub fn with_history(
        &self,
        initial: &[u16],
        changes: &[(Change, u64)],
        need_endpoints: bool,
    ) -> Result<ProcessorSet, SetError> {
        let ours = self.epochs[0].table.members();
        if initial != ours {
            return Err(SetError::OtherInitial {
                announced: initial.to_vec(),
                ours: ours.to_vec(),
            });
        }
        for (index, pair) in changes.windows(2).enumerate() {
            if pair[1].1 <= pair[0].1 {
                return Err(SetError::AnnouncedNotAscending {
                    index: index + 1,
                    epoch: index as u32 + 3,
                    switch_at_ns: pair[1].1,
                });
            }
        }
        let set = ProcessorSet::replay(initial, changes, self.endpoints.clone())?;
        if need_endpoints {
            set.check_endpoints()?;
        }
        Ok(set)
    }

    /// Epoch 1's members and every change with its switch instant: what
    /// [`ProcessorSet::with_history`] takes.
    pub fn history(&self) -> (Vec<u16>, Vec<(Change, u64)>) {
        let changes = self.epochs[1..]
            .iter()
            .filter_map(|e| e.change.map(|c| (c, e.starts_ns)))
            .collect();
        (self.epochs[0].table.members().to_vec(), changes)
    }

    /// Every member of every epoch has an endpoint.
    fn check_endpoints(&self) -> Result<(), SetError> {
        for e in &self.epochs {
            if let Some(id) = e
                .table
                .members()
                .iter()
                .find(|id| !self.endpoints.contains_key(id))
            {
                return Err(SetError::NoEndpoint(*id));
            }
        }
        Ok(())
    }

    /// The set from its initial members and `(change, switch_at_ns)` in order.
    pub fn replay(
        initial: &[u16],
        changes: &[(Change, u64)],
        endpoints: BTreeMap<u16, String>,
    ) -> Result<ProcessorSet, SetError> {
        let first = SlotTable::initial(1, initial)
            .map_err(|source| SetError::Table { epoch: 1, source })?;
        let mut epochs = vec![Epoch {
            table: first,
            starts_ns: 0,
            change: None,
        }];
        for &(change, starts_ns) in changes {
            let prev = &epochs[epochs.len() - 1].table;
            let epoch = prev.epoch() + 1;
            let table = match change {
                Change::Add(id) => prev.with_added(epoch, id),
                Change::Remove(id) => prev.with_removed(epoch, id),
            }
            .map_err(|source| SetError::Table { epoch, source })?;
            epochs.push(Epoch {
                table,
                starts_ns,
                change: Some(change),
            });
        }
        Ok(ProcessorSet { epochs, endpoints })
    }

    /// Every epoch, oldest first (epoch `k` at index `k - 1`).
    pub fn epochs(&self) -> &[Epoch] {
        &self.epochs
    }

    /// The epoch numbered `epoch`, if the history has it.
    pub fn epoch(&self, epoch: u32) -> Option<&Epoch> {
        self.epochs.get((epoch as usize).checked_sub(1)?)
    }

    /// The epoch in force at packet time `ts_ns`.
    pub fn epoch_at(&self, ts_ns: u64) -> &Epoch {
        let i = self.epochs.partition_point(|e| e.starts_ns <= ts_ns);
        &self.epochs[i.saturating_sub(1)]
    }

    pub fn latest(&self) -> &Epoch {
        &self.epochs[self.epochs.len() - 1]
    }

    pub fn endpoint(&self, id: u16) -> Option<&str> {
        self.endpoints.get(&id).map(String::as_str)
    }

    /// Every id that is a member of some epoch, ascending.
    pub fn all_members(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self
            .epochs
            .iter()
            .flat_map(|e| e.table.members().iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Whether this set keeps every epoch of `older` as it was (same tables, same switch times)
    /// and only appends: the only reload that cannot contradict packets already routed.
    pub fn extends(&self, older: &ProcessorSet) -> bool {
        self.epochs.len() >= older.epochs.len()
            && self.epochs[..older.epochs.len()] == older.epochs[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::SLOTS;

    const FILE: &str = "initial = [0, 1]\n[processors]\n0 = 'tcp://a:1'\n1 = 'tcp://b:1'\n\
                        2 = 'tcp://c:1'\n[[change]]\nadd = 2\nswitch_at = 100.5\n\
                        [[change]]\nremove = 1\nswitch_at = 200\n";

    #[test]
    fn replays_the_history_into_epochs() {
        let set = ProcessorSet::parse(FILE, true).expect("valid");
        let e = set.epochs();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].table.members(), &[0, 1]);
        assert_eq!(e[1].table.members(), &[0, 1, 2]);
        assert_eq!(e[1].starts_ns, 100_500_000_000);
        assert_eq!(e[2].table.members(), &[0, 2]);
        assert_eq!(e[2].change, Some(Change::Remove(1)));
        assert_eq!(set.epoch_at(0).table.epoch(), 1);
        assert_eq!(set.epoch_at(100_499_999_999).table.epoch(), 1);
        assert_eq!(set.epoch_at(100_500_000_000).table.epoch(), 2);
        assert_eq!(set.epoch_at(u64::MAX).table.epoch(), 3);
        assert_eq!(set.epoch(3).map(|e| e.starts_ns), Some(200_000_000_000));
        assert!(set.epoch(0).is_none() && set.epoch(4).is_none());
        assert_eq!(set.all_members(), vec![0, 1, 2]);
        assert_eq!(set.endpoint(2), Some("tcp://c:1"));
        // Adding moved a third of the slots, removing moved only the leaver's.
        let moved = e[0].table.moved(&e[1].table).len();
        assert_eq!(moved, SLOTS / 3);
        assert_eq!(e[1].table.moved(&e[2].table).len(), e[1].table.load(1));
    }

    #[test]
    fn a_reload_must_extend_the_history() {
        let old = ProcessorSet::parse("initial = [0, 1]\n", false).expect("valid");
        let new = ProcessorSet::parse(FILE, false).expect("valid");
        assert!(new.extends(&old));
        assert!(!old.extends(&new));
        let other = ProcessorSet::parse("initial = [0, 2]\n", false).expect("valid");
        assert!(!other.extends(&old));
    }

    #[test]
    fn an_announced_history_replays_like_the_file() {
        let set = ProcessorSet::parse(FILE, true).expect("valid");
        let (initial, changes) = set.history();
        assert_eq!(initial, [0, 1]);
        assert_eq!(
            changes,
            [
                (Change::Add(2), 100_500_000_000),
                (Change::Remove(1), 200_000_000_000)
            ]
        );
        let base = ProcessorSet::parse(
            "initial = [0, 1]\n[processors]\n0 = 'a'\n1 = 'b'\n2 = 'c'\n",
            true,
        )
        .expect("valid");
        let same = base
            .with_history(&initial, &changes, true)
            .expect("applies");
        assert_eq!(same.epochs(), set.epochs());
        assert!(same.extends(&base));
        // Re-adding a member that left is a new epoch of its own.
        let mut back = changes.clone();
        back.push((Change::Add(1), 300_000_000_000));
        let again = base.with_history(&initial, &back, true).expect("applies");
        assert_eq!(again.latest().table.members(), &[0, 1, 2]);
        assert!(again.extends(&same));
        assert!(matches!(
            base.with_history(&[0, 2], &changes, true),
            Err(SetError::OtherInitial { .. })
        ));
        let unordered = [(Change::Add(2), 5), (Change::Remove(1), 5)];
        assert!(matches!(
            base.with_history(&initial, &unordered, true),
            Err(SetError::AnnouncedNotAscending { index: 1, .. })
        ));
        assert_eq!(
            base.with_history(&initial, &[(Change::Add(9), 5)], true),
            Err(SetError::NoEndpoint(9))
        );
        assert!(matches!(
            base.with_history(&initial, &[(Change::Remove(7), 5)], true),
            Err(SetError::Table { epoch: 2, .. })
        ));
    }

    #[test]
    fn bad_files_are_typed_errors() {
        let err = |t: &str| ProcessorSet::parse(t, true).expect_err(t);
        assert!(matches!(err("initial = 3"), SetError::Syntax(_)));
        assert!(matches!(
            err("initial = []"),
            SetError::Table { epoch: 1, .. }
        ));
        assert!(matches!(
            err("initial = [0]\nbogus = 1"),
            SetError::Syntax(_)
        ));
        assert_eq!(err("initial = [0]"), SetError::NoEndpoint(0));
        assert!(matches!(
            err("initial = [0]\n[processors]\nx = 'a'"),
            SetError::BadId(_)
        ));
        let base = "initial = [0]\n[processors]\n0 = 'a'\n1 = 'b'\n";
        assert!(matches!(
            err(&format!("{base}[[change]]\nswitch_at = 5")),
            SetError::AddOrRemove { index: 0, epoch: 2 }
        ));
        assert!(matches!(
            err(&format!(
                "{base}[[change]]\nadd = 1\nremove = 0\nswitch_at = 5"
            )),
            SetError::AddOrRemove { .. }
        ));
        assert!(matches!(
            err(&format!("{base}[[change]]\nremove = 0\nswitch_at = 5")),
            SetError::Table { epoch: 2, .. }
        ));
        assert!(matches!(
            err(&format!("{base}[[change]]\nadd = 1\nswitch_at = -1")),
            SetError::BadTime { .. }
        ));
        assert!(matches!(
            err(&format!(
                "{base}[[change]]\nadd = 1\nswitch_at = 9\n[[change]]\nremove = 1\nswitch_at = 9"
            )),
            SetError::NotAscending { index: 1, .. }
        ));
    }
}
