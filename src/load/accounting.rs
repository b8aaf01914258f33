//! Delivery accounting for the room: every member must receive every
//! broadcast exactly once. One publisher's messages arrive in order (the
//! server keeps per-sender order), so a member needs only the next sequence
//! number it expects: a jump is loss, a step back is a duplicate.
//!
//! What a member has not received when the run stops is not all loss. A
//! member still open whose last messages have not arrived yet has them in
//! flight (late, not lost); a member the server closed lost everything after
//! its close. Every published message is counted exactly once per member:
//! `delivered + missing + closed + in_flight = published × members`.

/// One member's view of the broadcast sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deliveries {
    next: u64,
}

/// Totals over members.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub struct Tally {
    /// Messages received, each counted once per member.
    pub delivered: u64,
    /// Lost: a member received a later message but never this one.
    pub missing: u64,
    /// Received again after it (or a later one) had arrived.
    pub duplicated: u64,
    /// Lost with their member: published, never received, by members the
    /// server closed.
    pub closed: u64,
    /// Late, not lost: the newest messages an open member had not read yet
    /// when the client stopped (no later message had arrived either).
    pub in_flight: u64,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.delivered += other.delivered;
        self.missing += other.missing;
        self.duplicated += other.duplicated;
        self.closed += other.closed;
        self.in_flight += other.in_flight;
    }

    /// Deliveries that will never happen: gaps and closed members.
    pub fn lost(&self) -> u64 {
        self.missing + self.closed
    }

    /// Every member-message pair, whatever became of it.
    pub fn accounted(&self) -> u64 {
        self.delivered + self.missing + self.closed + self.in_flight
    }
}

impl Deliveries {
    /// Record message `seq`; returns whether it is new (not a duplicate).
    pub fn receive(&mut self, seq: u64, tally: &mut Tally) -> bool {
        if seq < self.next {
            tally.duplicated += 1;
            return false;
        }
        tally.missing += seq - self.next;
        tally.delivered += 1;
        self.next = seq + 1;
        true
    }

    /// How many of the first messages this member has accounted for
    /// (received, or skipped past as missing).
    pub fn through(&self) -> u64 {
        self.next
    }

    /// At the end, for a member still open: what it has not read of the
    /// `published` messages is in flight.
    pub fn finish_open(&self, published: u64, tally: &mut Tally) {
        tally.in_flight += published.saturating_sub(self.next);
    }

    /// At the end, for a member the server closed: what it never received of
    /// the `published` messages was lost with it.
    pub fn finish_closed(&self, published: u64, tally: &mut Tally) {
        tally.closed += published.saturating_sub(self.next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_member(received: &[u64], published: u64) -> Tally {
        let mut member = Deliveries::default();
        let mut tally = Tally::default();
        for &seq in received {
            member.receive(seq, &mut tally);
        }
        member.finish_open(published, &mut tally);
        tally
    }

    #[test]
    fn complete_in_order_delivery_is_clean() {
        let tally = open_member(&[0, 1, 2, 3], 4);
        assert_eq!(
            tally,
            Tally {
                delivered: 4,
                ..Tally::default()
            }
        );
    }

    #[test]
    fn a_gap_is_loss_but_a_missing_tail_is_in_flight() {
        assert_eq!(open_member(&[0, 2, 3], 4).missing, 1);
        let tail = open_member(&[0, 1], 4);
        assert_eq!((tail.missing, tail.in_flight), (0, 2));
        let both = open_member(&[3], 6);
        assert_eq!((both.missing, both.in_flight, both.lost()), (3, 2, 3));
        assert_eq!(open_member(&[], 3).in_flight, 3);
    }

    #[test]
    fn injected_duplicates_are_counted() {
        let tally = open_member(&[0, 1, 1, 2, 0, 3], 4);
        assert_eq!((tally.delivered, tally.duplicated), (4, 2));
        assert_eq!(tally.lost() + tally.in_flight, 0);
    }

    #[test]
    fn a_closed_members_undelivered_messages_are_lost_with_it() {
        let mut member = Deliveries::default();
        let mut tally = Tally::default();
        member.receive(0, &mut tally);
        member.receive(1, &mut tally);
        // The server closed it; 5 messages were published in all.
        member.finish_closed(5, &mut tally);
        assert_eq!((tally.delivered, tally.closed, tally.in_flight), (2, 3, 0));
        assert_eq!(tally.lost(), 3);
    }

    #[test]
    fn every_member_message_pair_is_accounted_once() {
        let published = 7;
        let mut tally = Tally::default();
        for (received, closed) in [
            (&[0u64, 1, 2, 3, 4, 5, 6][..], false),
            (&[0, 2, 5], false),
            (&[0, 1], true),
            (&[], true),
            (&[1, 1, 6], false),
        ] {
            let mut member = Deliveries::default();
            for &seq in received {
                member.receive(seq, &mut tally);
            }
            if closed {
                member.finish_closed(published, &mut tally);
            } else {
                member.finish_open(published, &mut tally);
            }
        }
        assert_eq!(tally.accounted(), published * 5, "{tally:?}");
        assert_eq!(tally.duplicated, 1);
    }
}
