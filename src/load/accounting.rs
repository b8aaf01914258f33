//! Delivery accounting for the room: every member must receive every
//! broadcast exactly once. One publisher's messages arrive in order (the
//! server keeps per-sender order), so a member needs only the next sequence
//! number it expects: a jump is loss, a step back is a duplicate.

/// One member's view of the broadcast sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deliveries {
    next: u64,
}

/// Totals over members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub delivered: u64,
    pub missing: u64,
    pub duplicated: u64,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.delivered += other.delivered;
        self.missing += other.missing;
        self.duplicated += other.duplicated;
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

    /// At the end: everything from `next` up to `sent` never arrived.
    pub fn finish(&self, sent: u64, tally: &mut Tally) {
        tally.missing += sent.saturating_sub(self.next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(received: &[u64], sent: u64) -> Tally {
        let mut member = Deliveries::default();
        let mut tally = Tally::default();
        for &seq in received {
            member.receive(seq, &mut tally);
        }
        member.finish(sent, &mut tally);
        tally
    }

    #[test]
    fn complete_in_order_delivery_is_clean() {
        let tally = run(&[0, 1, 2, 3], 4);
        assert_eq!(
            tally,
            Tally {
                delivered: 4,
                missing: 0,
                duplicated: 0
            }
        );
    }

    #[test]
    fn injected_loss_is_counted_in_the_middle_and_at_the_end() {
        assert_eq!(run(&[0, 2, 3], 4).missing, 1);
        assert_eq!(run(&[0, 1], 4).missing, 2);
        assert_eq!(run(&[], 3).missing, 3);
        assert_eq!(run(&[3], 4).missing, 3);
    }

    #[test]
    fn injected_duplicates_are_counted() {
        let tally = run(&[0, 1, 1, 2, 0, 3], 4);
        assert_eq!(
            tally,
            Tally {
                delivered: 4,
                missing: 0,
                duplicated: 2
            }
        );
    }
}
