//! Bounded retry with jittered exponential backoff, for tokens whose store another process
//! holds for a moment (SoftHSM's file store while another process rewrites it, SQLite
//! "database is locked" in Kryoptic and tpm2-pkcs11).

use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// How long key creation and the first connection keep retrying a busy token.
pub(crate) const BUSY_BUDGET: Duration = Duration::from_secs(10);

/// First delay between attempts.
const FIRST_DELAY: Duration = Duration::from_millis(20);

/// Longest delay between attempts.
const MAX_DELAY: Duration = Duration::from_millis(800);

/// Retry pacing within a time budget.
#[derive(Debug)]
pub(crate) struct Backoff {
    start: Instant,
    budget: Duration,
    delay: Duration,
}

impl Backoff {
    /// Pacing that gives up after `budget`.
    pub(crate) fn new(budget: Duration) -> Backoff {
        Backoff {
            start: Instant::now(),
            budget,
            delay: FIRST_DELAY,
        }
    }

    /// Time since the first attempt.
    pub(crate) fn waited(&self) -> Duration {
        self.start.elapsed()
    }

    /// The next pause (jittered between half and the whole current delay, never past the
    /// budget), or `None` when the budget is spent.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        let left = self.budget.checked_sub(self.start.elapsed())?;
        if left.is_zero() {
            return None;
        }
        let mut byte = [0u8; 1];
        let jitter = if SystemRandom::new().fill(&mut byte).is_ok() {
            f64::from(byte[0]) / 255.0
        } else {
            0.5
        };
        let pause = self.delay.mul_f64(0.5 + 0.5 * jitter).min(left);
        self.delay = (self.delay * 2).min(MAX_DELAY);
        Some(pause)
    }

    /// Sleeps before the next attempt; false when the budget is spent.
    pub(crate) fn pause(&mut self) -> bool {
        match self.next_delay() {
            Some(d) => {
                std::thread::sleep(d);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_stop_at_the_budget() {
        let mut b = Backoff::new(Duration::from_secs(3600));
        let delays: Vec<Duration> = (0..10).filter_map(|_| b.next_delay()).collect();
        assert_eq!(delays.len(), 10);
        assert!(
            delays[0] >= FIRST_DELAY / 2 && delays[0] <= FIRST_DELAY,
            "{delays:?}"
        );
        assert!(delays.iter().all(|d| *d <= MAX_DELAY), "{delays:?}");
        assert!(delays[9] >= MAX_DELAY / 2, "{delays:?}");

        let mut spent = Backoff::new(Duration::ZERO);
        assert_eq!(spent.next_delay(), None);
        assert!(!spent.pause());

        let mut short = Backoff::new(Duration::from_millis(30));
        let mut total = Duration::ZERO;
        while let Some(d) = short.next_delay() {
            std::thread::sleep(d);
            total += d;
        }
        assert!(total <= Duration::from_millis(60), "{total:?}");
        assert!(short.waited() >= Duration::from_millis(30));
    }
}
