/*!
Exponential backoff, the one helper behind every retry loop: broker
reconnects, publishes the broker nacked, resubscriptions, worker restarts and
task retries.

[`exponential`] is the pure rule (the flow state machine uses it with its own
jitter, so that its tests stay deterministic); [`Backoff`] carries the count
for loops that sleep.
*/

use std::time::Duration;

/// The delay before try `n + 1` after `n` failures (`n` from 1): `first`,
/// doubled each time, capped at `max`.
pub fn exponential(first: Duration, max: Duration, n: u32) -> Duration {
    first
        .saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(max)
}

/// A retry loop's backoff: call [`Backoff::failed`] after each failure and
/// wait the delay it returns.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    /// Multiply each delay by a random factor in [0.5, 1], so that many
    /// clients that failed together do not retry together.
    jitter: bool,
    failures: u32,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            jitter: false,
            failures: 0,
        }
    }

    pub fn with_jitter(mut self) -> Backoff {
        self.jitter = true;
        self
    }

    /// Counts a failure and returns how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = exponential(self.first, self.max, self.failures);
        if self.jitter {
            delay.mul_f64(rand::random_range(0.5..=1.0))
        } else {
            delay
        }
    }

    /// Failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether this failure is worth a log line: the first, then at powers
    /// of two, so that a long outage logs a few lines, not thousands.
    pub fn worth_logging(&self) -> bool {
        self.failures <= 1 || self.failures.is_power_of_two()
    }

    /// Counts a failure and sleeps its delay.
    pub async fn wait(&mut self) {
        let delay = self.failed();
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(exponential(s(1), s(5), 1), s(1));
        assert_eq!(exponential(s(1), s(5), 3), s(4));
        assert_eq!(exponential(s(1), s(5), 9), s(5));
        assert_eq!(exponential(s(1), s(5), u32::MAX), s(5));
        let mut b = Backoff::new(Duration::from_millis(100), s(1));
        let delays: Vec<u64> = (0..6).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.failures(), 6);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_delay() {
        let mut b =
            Backoff::new(Duration::from_millis(1000), Duration::from_millis(1000)).with_jitter();
        for _ in 0..100 {
            let d = b.failed().as_millis();
            assert!((500..=1000).contains(&d), "{d}");
        }
    }
}
