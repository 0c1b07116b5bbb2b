//! The provisioning batch window: closes `idle` after the last new pod, or `max` after the
//! first, whichever comes first.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::clock::add;

/// A batch window over an injected time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batcher {
    idle: Duration,
    max: Duration,
    window: Option<(Timestamp, Timestamp)>,
}

// === impl Batcher ===

impl Batcher {
    /// A closed batcher with the two windows (Karpenter's defaults are 1 s and 10 s).
    pub fn new(idle: Duration, max: Duration) -> Self {
        Self {
            idle,
            max,
            window: None,
        }
    }

    /// A new pod arrived at `now`: opens the window, or extends its idle part.
    pub fn add(&mut self, now: Timestamp) {
        match &mut self.window {
            Some((_, last)) => *last = now,
            None => self.window = Some((now, now)),
        }
    }

    /// Whether a batch is open.
    pub fn is_open(&self) -> bool {
        self.window.is_some()
    }

    /// When the open batch closes.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.window
            .map(|(first, last)| add(last, self.idle).min(add(first, self.max)))
    }

    /// Whether the open batch has closed at `now`.
    pub fn is_ready(&self, now: Timestamp) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }

    /// Closes the batch (the round takes it).
    pub fn take(&mut self) {
        self.window = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    fn at(s: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_millis(s)
    }

    #[test]
    fn closes_one_second_after_the_last_pod() {
        let mut b = Batcher::new(Duration::from_secs(1), Duration::from_secs(10));
        assert!(!b.is_ready(at(0)));
        b.add(at(0));
        b.add(at(500));
        assert!(!b.is_ready(at(1400)));
        assert!(b.is_ready(at(1500)));
        b.take();
        assert!(!b.is_open());
    }

    #[test]
    fn closes_after_ten_seconds_however_busy() {
        let mut b = Batcher::new(Duration::from_secs(1), Duration::from_secs(10));
        for ms in (0..=9_800).step_by(200) {
            b.add(at(ms));
            assert!(!b.is_ready(at(ms)), "at {ms} ms");
        }
        assert_eq!(b.deadline(), Some(at(10_000)));
        assert!(b.is_ready(at(10_000)));
    }
}
