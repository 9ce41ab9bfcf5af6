//! Admission of submissions by how far behind the manager is (the idea of CoDel: a queue is
//! judged by the least time anything spent in it over an interval, not by its length).
//!
//! Each submission the manager accepted is timed at the edge, from its arrival to the manager's
//! answer. When even the quickest of them over an interval took longer than the target, the
//! manager has a standing backlog: until an interval shows otherwise, new submissions get 429 at
//! once instead of joining it. Bursts pass (a burst leaves some quick answers in its interval);
//! sustained overload is refused early, so accepted submissions keep a bounded latency and
//! refusals cost next to nothing. Stops are never refused here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The quickest accepted submission of an interval may take this long before the manager is
/// judged behind. A submission normally takes a few milliseconds (one durable commit).
pub const TARGET: Duration = Duration::from_millis(50);

/// How long an interval lasts.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// The admission state of one manager's edge, shared by its HTTP workers.
#[derive(Debug)]
pub struct Admission {
    target: Duration,
    interval: Duration,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// When the current interval began.
    began: Instant,
    /// The quickest submission answered in the current interval.
    least: Option<Duration>,
    /// The quickest of the last complete interval, when it was over the target.
    behind: Option<Duration>,
}

impl Window {
    /// Closes the current interval if it is over at `now`.
    fn roll(&mut self, now: Instant, interval: Duration, target: Duration) {
        if now.saturating_duration_since(self.began) >= interval {
            self.behind = self.least.take().filter(|least| *least > target);
            self.began = now;
        }
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(TARGET, INTERVAL)
    }
}

impl Admission {
    /// Admission with these `target` and `interval`.
    pub fn new(target: Duration, interval: Duration) -> Self {
        Admission {
            target,
            interval,
            window: Mutex::new(Window {
                began: Instant::now(),
                least: None,
                behind: None,
            }),
        }
    }

    /// An accepted submission was answered at `now`, `took` after it arrived.
    pub fn answered(&self, now: Instant, took: Duration) {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        window.roll(now, self.interval, self.target);
        window.least = Some(window.least.map_or(took, |least| least.min(took)));
    }

    /// None if a submission arriving at `now` may go to the manager; otherwise how long the
    /// quickest submission of the last interval took.
    pub fn behind(&self, now: Instant) -> Option<Duration> {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        window.roll(now, self.interval, self.target);
        window.behind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quick_answers_keep_submissions_coming() {
        let admission = Admission::new(ms(50), ms(100));
        let start = Instant::now();
        for i in 0..50 {
            admission.answered(start + ms(i * 10), ms(3 + i % 40));
        }
        assert_eq!(admission.behind(start + ms(600)), None);
    }

    #[test]
    fn an_interval_whose_quickest_answer_was_slow_refuses_the_next() {
        let admission = Admission::new(ms(50), ms(100));
        let start = Instant::now();
        admission.answered(start + ms(10), ms(80));
        admission.answered(start + ms(60), ms(120));
        // Still in the first interval: nothing is judged yet.
        assert_eq!(admission.behind(start + ms(90)), None);
        // The next interval refuses: the quickest of the last one took 80 ms.
        assert_eq!(admission.behind(start + ms(110)), Some(ms(80)));
        assert_eq!(admission.behind(start + ms(150)), Some(ms(80)));
    }

    #[test]
    fn one_quick_answer_in_an_interval_is_enough_to_admit_again() {
        let admission = Admission::new(ms(50), ms(100));
        let start = Instant::now();
        admission.answered(start + ms(10), ms(300));
        assert_eq!(admission.behind(start + ms(100)), Some(ms(300)));
        // The backlog drains: slow answers, then one quick one.
        admission.answered(start + ms(120), ms(200));
        admission.answered(start + ms(150), ms(20));
        assert_eq!(admission.behind(start + ms(200)), None);
    }

    #[test]
    fn an_interval_without_answers_admits() {
        // Everything was refused and nothing is in flight: try again.
        let admission = Admission::new(ms(50), ms(100));
        let start = Instant::now();
        admission.answered(start + ms(10), ms(300));
        assert!(admission.behind(start + ms(100)).is_some());
        assert_eq!(admission.behind(start + ms(200)), None);
    }
}
