//! Every link of one collector, and what starting one more needs (a processor set's new
//! member, on reload).

use std::sync::Arc;

use crossbeam_channel::Sender;
use tapflow_proto::PacketSummary;
use tracing::error;

use super::{Delivery, Link, LinkError, LinkSettings, Shared};
use crate::RUN_TARGET;

pub struct LinkSet {
    links: Vec<Link>,
    ctx: zmq::Context,
    settings: LinkSettings,
    queue_batches: usize,
    shared: Arc<Shared>,
    /// Where emptied batch vectors go back to the capture thread.
    pool: Sender<Vec<PacketSummary>>,
}

impl LinkSet {
    /// One link per endpoint, claiming the id beside it (shard index or member id), on
    /// sockets of `ctx`. The caller keeps its own handle of `ctx`: the context ends (and
    /// waits out the sockets' linger, flushing what they still hold) when the last handle
    /// drops, which the collector does at the very end of its run, after its last report.
    pub fn start(
        ctx: &zmq::Context,
        endpoints: &[String],
        ids: &[u16],
        settings: LinkSettings,
        queue_batches: usize,
        shared: Arc<Shared>,
        pool: Sender<Vec<PacketSummary>>,
    ) -> Result<LinkSet, LinkError> {
        let mut set = LinkSet {
            links: Vec::with_capacity(endpoints.len()),
            ctx: ctx.clone(),
            settings,
            queue_batches,
            shared,
            pool,
        };
        for (endpoint, &id) in endpoints.iter().zip(ids) {
            let link = set.start_one(endpoint, id, &set.settings)?;
            set.links.push(link);
        }
        Ok(set)
    }

    /// Starts a link to `endpoint` for member `id`, claiming `epoch`, at the next index, its
    /// sequence numbers from `first_seq` (what earlier links of the same member sent: a member
    /// added again after it left continues its one sequence).
    pub fn add(
        &mut self,
        endpoint: &str,
        id: u16,
        epoch: u32,
        first_seq: u64,
    ) -> Result<(), LinkError> {
        let mut settings = self.settings.clone();
        settings.epoch = epoch;
        let link = self.start_one(endpoint, id, &settings)?;
        if first_seq > 0 {
            // The queue is new and empty: this is the worker's first command.
            let _ = link.try_send(super::LinkCmd::ContinueFrom(first_seq));
        }
        self.links.push(link);
        Ok(())
    }

    /// The ZeroMQ context the links' sockets live in (the control subscription's too).
    pub fn context(&self) -> &zmq::Context {
        &self.ctx
    }

    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// What the capture thread shares with the link threads.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn settings(&self) -> &LinkSettings {
        &self.settings
    }

    /// Closes every queue and waits until each link has handed what it holds to ZeroMQ (see
    /// [`Link::close`]).
    pub fn close(&mut self) {
        for link in &mut self.links {
            link.close();
        }
    }

    /// Closes every queue and waits for the links to end, their verdicts unread.
    #[cfg(test)]
    pub fn join(self) {
        for link in self.links {
            let _ = link.join();
        }
    }

    /// Waits for every link's verdict on its end-of-stream (at most the linger, as the links
    /// wait side by side) and logs an ERROR for each not delivered, skipping the links whose
    /// index `skip` marks (those retired mid-run, logged when they were); returns the endpoints
    /// of those not delivered.
    pub fn confirm(self, skip: &[bool]) -> Vec<String> {
        let mut undelivered = Vec::new();
        for (i, link) in self.links.into_iter().enumerate() {
            let endpoint = link.endpoint.clone();
            let Delivery::Undelivered(why) = link.join() else {
                continue;
            };
            if skip.get(i).copied().unwrap_or(false) {
                continue;
            }
            error!(target: RUN_TARGET, %endpoint, "end-of-stream not delivered to {endpoint}: {why}");
            undelivered.push(endpoint);
        }
        undelivered
    }

    fn start_one(
        &self,
        endpoint: &str,
        id: u16,
        settings: &LinkSettings,
    ) -> Result<Link, LinkError> {
        Link::start(
            &self.ctx,
            endpoint,
            id,
            settings,
            self.queue_batches,
            self.shared.clone(),
            self.pool.clone(),
        )
    }
}
