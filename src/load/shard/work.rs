//! The scenario's work on open connections: publishing, echo sends
//! (closed- or open-loop), churn, and recording what comes back.

use std::cmp::Reverse;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::Shard;
use crate::load::client;
use crate::load::client::Phase;
use crate::load::config::{Publish, Work};
use crate::load::pacing::Schedule;
use crate::load::payload::{self, now_ns};

impl Shard {
    pub(super) fn start_work(&mut self, now: u64) {
        self.working = true;
        self.job.control.working_shards.fetch_add(1, Release);
        match self.job.scenario.work {
            Work::Broadcast { publish, .. } => {
                self.result.members = self.open_keys().len() as u64;
                if self.job.id == 0 {
                    self.publishing = true;
                    if let Publish::Rate(rate) = publish {
                        self.publish_schedule = Some(Schedule::new(now, rate, 0.0));
                    }
                }
            }
            Work::Churn { rate, .. } => {
                let per_shard = rate / self.job.shards as f64;
                let phase = self.job.id as f64 / self.job.shards as f64;
                self.churn = Some(Schedule::new(now, per_shard, phase));
            }
            Work::Storm { .. } => self.start_storm(now),
            Work::Burst { size } => self.start_burst(size, now),
            Work::Hold | Work::Echo { .. } => {}
        }
        for key in self.open_keys() {
            self.start_client_work(key, now);
        }
    }

    pub(super) fn open_keys(&self) -> Vec<usize> {
        self.clients
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open)
            .map(|(k, _)| k)
            .collect()
    }

    pub(super) fn start_client_work(&mut self, key: usize, now: u64) {
        match self.job.scenario.work {
            Work::Echo {
                open_loop_rate: Some(rate),
                ..
            } => {
                let interval = (1e9 / rate) as u64;
                let phase = self.next_random() % interval.max(1);
                self.sends.push(Reverse((now + phase, key)));
            }
            Work::Echo {
                open_loop_rate: None,
                window,
            } => {
                for _ in 0..window {
                    self.send_payload(key, now);
                }
            }
            _ => {}
        }
    }

    pub(super) fn work_due(&mut self, now: u64) {
        if let Work::Broadcast { count, .. } = self.job.scenario.work {
            if self.publishing {
                self.publish_due(count, now);
            }
        }
        if let Work::Echo {
            open_loop_rate: Some(rate),
            ..
        } = self.job.scenario.work
        {
            self.echo_sends_due(rate, now);
        }
        if let (Some(schedule), Work::Churn { max_inflight, .. }) =
            (self.churn, self.job.scenario.work)
        {
            while (self.started as u64) < schedule.due_by(now) {
                self.started += 1;
                self.result.churn_arrivals += 1;
                if self.clients.len() >= max_inflight {
                    // Open loop, bounded: an arrival with no room is dropped.
                    self.result.churn_dropped += 1;
                    continue;
                }
                self.open_attempt(now, 0);
            }
        }
    }

    /// Publish what is due: by the schedule in sustained mode, else what the
    /// orchestrator has released (one message per completed broadcast).
    fn publish_due(&mut self, count: u64, now: u64) {
        let control = &self.job.control;
        if control.working_shards.load(Acquire) < self.job.shards {
            return; // not every shard has counted its members yet
        }
        let sent = control.published.load(Relaxed);
        let Some(publisher) = self.publisher.filter(|&key| self.clients.contains(key)) else {
            control.publisher_done.store(true, Release);
            self.publishing = false;
            return;
        };
        let due = match self.publish_schedule {
            Some(schedule) => schedule.due_by(now),
            None => control.release.load(Acquire),
        };
        for seq in sent..due.min(count) {
            let sent_ns = now_ns();
            let message =
                payload::encode(seq, sent_ns, self.job.scenario.size, self.job.scenario.fill);
            let bytes = self.message_frame(publisher, &message);
            if self.send_to(publisher, &bytes).is_err() {
                break;
            }
            if seq == 0 {
                self.job.control.first_publish_ns.store(sent_ns, Relaxed);
            }
            self.job.control.published.store(seq + 1, Release);
        }
        if self.job.control.published.load(Relaxed) >= count {
            self.job.control.publisher_done.store(true, Release);
            self.publishing = false;
        }
    }

    /// Broadcast: tell the orchestrator when every open member of this shard
    /// has the newest published message. A new publish is checked against
    /// every member once; after that each arrival or close counts down.
    pub(super) fn track_deliveries(&mut self) {
        if !matches!(self.job.scenario.work, Work::Broadcast { .. }) {
            return;
        }
        let published = self.job.control.published.load(Acquire);
        if published > self.tracked {
            self.tracked = published;
            self.behind = self
                .clients
                .iter()
                .filter(|(_, c)| c.phase == Phase::Open && c.deliveries.through() < published)
                .count();
        }
        if self.behind == 0 {
            self.progress().caught_up.store(self.tracked, Relaxed);
        }
    }

    /// A broadcast member is gone (closed by the server): what it missed is
    /// counted against it at the end, and it no longer holds up a broadcast.
    pub(super) fn member_closed(&mut self, client: &client::Client) {
        if !self.working || !matches!(self.job.scenario.work, Work::Broadcast { .. }) {
            return;
        }
        if client.deliveries.through() < self.tracked {
            self.behind = self.behind.saturating_sub(1);
        }
        self.closed_members.push(client.deliveries);
    }

    pub(super) fn echo_sends_due(&mut self, rate: f64, now: u64) {
        let interval = (1e9 / rate) as u64;
        while let Some(&Reverse((due, key))) = self.sends.peek() {
            if due > now {
                break;
            }
            self.sends.pop();
            if !self.clients.contains(key) {
                continue;
            }
            self.result.send_lag.record_ns(now.saturating_sub(due));
            // The payload carries the due time: latency counts from it.
            self.send_payload(key, due);
            self.sends.push(Reverse((due + interval, key)));
        }
    }

    /// Send the client's next echo payload, stamped with `stamp_ns` (the send
    /// time, or in open-loop mode the time it was due).
    pub(super) fn send_payload(&mut self, key: usize, stamp_ns: u64) {
        let (size, fill) = (self.job.scenario.size, self.job.scenario.fill);
        let client = &mut self.clients[key];
        let message = payload::encode(client.sent, stamp_ns, size, fill);
        client.sent += 1;
        let bytes = self.message_frame(key, &message);
        if let Err(e) = self.send_to(key, &bytes) {
            self.fail_client(key, &client::failure_cause(&e));
        }
    }

    /// One data message as client `key` sends it: compressed if it agreed
    /// on permessage-deflate.
    fn message_frame(&mut self, key: usize, message: &[u8]) -> Vec<u8> {
        let mask = self.next_mask();
        let window = self.clients[key].deflate_window;
        match self.deflate.as_mut() {
            Some(deflate) if window > 0 => deflate.frame(key, window, message, mask),
            _ => client::message_bytes(self.wire(), message, mask),
        }
    }

    pub(super) fn on_message(&mut self, key: usize, message: &[u8], now: u64) {
        let Some((seq, sent_ns)) = payload::decode(message) else {
            return;
        };
        let latency = now.saturating_sub(sent_ns);
        match self.job.scenario.work {
            Work::Broadcast { .. } => self.on_delivery(key, seq, latency, now),
            Work::Echo { open_loop_rate, .. } => {
                self.result.echo.record_ns(latency);
                self.result.echo_messages += 1;
                self.result.echo_bytes += message.len() as u64;
                self.progress().echoed.fetch_add(1, Relaxed);
                if open_loop_rate.is_none() && !self.job.control.stop.load(Relaxed) {
                    self.send_payload(key, now);
                }
            }
            Work::Churn { .. } => {
                let Some(client) = self.take_client(key) else {
                    return;
                };
                self.result.churn_total.record_ns(now - client.started_ns);
                self.progress().churned.fetch_add(1, Relaxed);
                self.progress().alive.fetch_sub(1, Relaxed);
                client.abort();
            }
            Work::Hold | Work::Storm { .. } | Work::Burst { .. } => {}
        }
    }

    fn on_delivery(&mut self, key: usize, seq: u64, latency: u64, now: u64) {
        let client = &mut self.clients[key];
        let before = client.deliveries.through();
        if !client.deliveries.receive(seq, &mut self.result.tally) {
            return;
        }
        if before < self.tracked && client.deliveries.through() >= self.tracked {
            self.behind -= 1;
        }
        self.result.deliveries.record_ns(latency);
        if let Some(h) = self.result.per_message.get_mut(seq as usize) {
            h.record_ns(latency);
        }
        if let Some(e) = self.result.per_message_extremes.get_mut(seq as usize) {
            e.record_ns(latency);
        }
        self.result.last_delivery_ns = self.result.last_delivery_ns.max(now);
        self.progress().delivered.fetch_add(1, Relaxed);
    }
}
