//! The global pace of rollouts (`--max-rollouts-per-minute`): at most that many
//! in any 60-second window, over every Consumer. A burst of recommendations (a
//! lagging fleet after an incident) restarts instances a few at a time instead of
//! all at once.

use std::collections::VecDeque;

use jiff::{SignedDuration, Timestamp};

const WINDOW: SignedDuration = SignedDuration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Pace {
    per_minute: usize,
    recent: VecDeque<Timestamp>,
}

impl Pace {
    pub fn new(per_minute: u32) -> Self {
        Pace {
            per_minute: per_minute.max(1) as usize,
            recent: VecDeque::new(),
        }
    }

    fn forget_old(&mut self, now: Timestamp) {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.recent.pop_front();
        }
    }

    /// Takes a slot for a rollout at `now`, if one is free.
    pub fn try_take(&mut self, now: Timestamp) -> bool {
        self.forget_old(now);
        if self.recent.len() >= self.per_minute {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// Gives back the slot taken at `at` (the write failed: it rolled nothing).
    pub fn give_back(&mut self, at: Timestamp) {
        if let Some(i) = self.recent.iter().rposition(|t| *t == at) {
            self.recent.remove(i);
        }
    }

    /// When the next slot frees up (`None`: one is free now).
    pub fn next_free(&mut self, now: Timestamp) -> Option<Timestamp> {
        self.forget_old(now);
        if self.recent.len() < self.per_minute {
            return None;
        }
        self.recent.front().map(|t| *t + WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn at_most_n_per_sliding_minute() {
        let mut p = Pace::new(2);
        assert!(p.try_take(at(0)));
        assert!(p.try_take(at(10)));
        assert!(!p.try_take(at(20)));
        assert_eq!(p.next_free(at(20)), Some(at(60)));
        assert!(!p.try_take(at(59)));
        assert!(p.try_take(at(60)), "the first slot is free again");
        assert!(!p.try_take(at(61)));
        assert!(p.try_take(at(70)));
    }

    #[test]
    fn a_failed_write_gives_its_slot_back() {
        let mut p = Pace::new(1);
        assert!(p.try_take(at(0)));
        p.give_back(at(0));
        assert!(p.try_take(at(1)));
    }
}
