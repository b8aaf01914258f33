//! The room's memory budget (`--max-backlog-total`): when the bytes queued
//! for room members pass it, the members furthest behind are closed with
//! 1013 (try again later) until what is left fits. Without it a broadcast
//! that outruns its members grows the server's memory by every member's
//! backlog at once (`--max-backlog` bounds each, not their sum).
//! Decided here once for the shard core and the task backends.

/// Which members to shed: the furthest behind first, until the rest fit in
/// `budget`. `behind` holds (bytes queued, member) for members with bytes
/// queued; `total` is the bytes queued for every member.
pub fn members_to_shed<K: Copy>(
    mut behind: Vec<(usize, K)>,
    total: usize,
    budget: usize,
) -> Vec<K> {
    behind.sort_unstable_by_key(|&(queued, _)| std::cmp::Reverse(queued));
    let mut left = total;
    behind
        .into_iter()
        .take_while(|&(queued, _)| {
            let over = left > budget;
            left = left.saturating_sub(queued);
            over
        })
        .map(|(_, member)| member)
        .collect()
}

/// The close a shed member gets.
pub const SHED_REASON: &str = "server overloaded: try again later";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_furthest_behind_go_first_until_the_rest_fit() {
        let behind = vec![(10, 'a'), (50, 'b'), (30, 'c'), (5, 'd')];
        assert_eq!(members_to_shed(behind.clone(), 95, 100), Vec::<char>::new());
        assert_eq!(members_to_shed(behind.clone(), 95, 60), vec!['b']);
        assert_eq!(members_to_shed(behind.clone(), 95, 40), vec!['b', 'c']);
        assert_eq!(
            members_to_shed(behind.clone(), 95, 0),
            vec!['b', 'c', 'a', 'd']
        );
        // Equal backlogs (everyone equally slow): only as many as needed.
        let equal: Vec<(usize, u32)> = (0..10).map(|k| (100, k)).collect();
        assert_eq!(members_to_shed(equal, 1000, 750).len(), 3);
    }
}
