//! The scenario's work on open connections: publishing, echo sends
//! (closed- or open-loop), churn, and recording what comes back.

use std::cmp::Reverse;
use std::sync::atomic::Ordering::Relaxed;

use super::Shard;
use crate::load::client;
use crate::load::client::Phase;
use crate::load::config::Work;
use crate::load::pacing::Schedule;
use crate::load::payload::{self, now_ns};

impl Shard {
    pub(super) fn start_work(&mut self, now: u64) {
        self.working = true;
        match self.job.scenario.work {
            Work::Broadcast { count, rate } => {
                if self.job.id == 0 {
                    self.publish = Some((Schedule::new(now, rate, 0.0), count));
                }
            }
            Work::Churn { rate } => {
                let per_shard = rate / self.job.shards as f64;
                let phase = self.job.id as f64 / self.job.shards as f64;
                self.churn = Some(Schedule::new(now, per_shard, phase));
            }
            Work::Hold | Work::Echo { .. } => {}
        }
        let keys: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.start_client_work(key, now);
        }
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
        if let Some((schedule, count)) = self.publish {
            self.publish_due(schedule, count, now);
        }
        if let Work::Echo {
            open_loop_rate: Some(rate),
            ..
        } = self.job.scenario.work
        {
            self.echo_sends_due(rate, now);
        }
        if let Some(schedule) = self.churn {
            while (self.started as u64) < schedule.due_by(now) {
                self.started += 1;
                self.open_one(now);
            }
        }
    }

    pub(super) fn publish_due(&mut self, schedule: Schedule, count: u64, now: u64) {
        let control = &self.job.control;
        let sent = control.published.load(Relaxed);
        let Some(publisher) = self.publisher.filter(|&key| self.clients.contains(key)) else {
            control.publisher_done.store(true, Relaxed);
            self.publish = None;
            return;
        };
        let due = schedule.due_by(now).min(count);
        for seq in sent..due {
            let message = payload::encode(seq, now_ns(), self.job.scenario.size);
            let mask = self.next_mask();
            let proto = self.job.target.proto;
            if self.clients[publisher]
                .send_message(proto, &message, mask)
                .is_err()
            {
                break;
            }
            self.job.control.published.store(seq + 1, Relaxed);
        }
        if self.job.control.published.load(Relaxed) >= count {
            self.job.control.publisher_done.store(true, Relaxed);
            self.publish = None;
        }
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
        let mask = self.next_mask();
        let proto = self.job.target.proto;
        let size = self.job.scenario.size;
        let client = &mut self.clients[key];
        let message = payload::encode(client.sent, stamp_ns, size);
        client.sent += 1;
        if let Err(e) = client.send_message(proto, &message, mask) {
            self.fail_client(key, &client::failure_cause(&e));
        }
    }

    pub(super) fn on_message(&mut self, key: usize, message: &[u8], now: u64) {
        let Some((seq, sent_ns)) = payload::decode(message) else {
            return;
        };
        let latency = now.saturating_sub(sent_ns);
        match self.job.scenario.work {
            Work::Broadcast { .. } => {
                let client = &mut self.clients[key];
                if client.deliveries.receive(seq, &mut self.result.tally) {
                    self.result.deliveries.record_ns(latency);
                    if let Some(h) = self.result.per_message.get_mut(seq as usize) {
                        h.record_ns(latency);
                    }
                    self.job.control.shards[self.job.id]
                        .delivered
                        .fetch_add(1, Relaxed);
                }
            }
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
                let client = self.clients.remove(key);
                self.result.churn_total.record_ns(now - client.started_ns);
                self.progress().churned.fetch_add(1, Relaxed);
                self.progress().alive.fetch_sub(1, Relaxed);
                client.abort();
            }
            Work::Hold => {}
        }
    }
}
