//! Wall-clock time for the lifecycle loops, injectable so tests and the simulator never wait.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::cloud::provider::{self, SleepFuture};

/// The time the loops read (annotations, ages and TTLs are wall-clock times in Kubernetes).
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told. It is also a [`provider::Clock`], so a cloud provider's
/// unavailable-offerings cache follows the same virtual time.
#[derive(Debug)]
pub struct ManualClock {
    start_wall: Timestamp,
    start_mono: Instant,
    offset: Mutex<Duration>,
}

// === impl ManualClock ===

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Arc<Self> {
        Arc::new(Self {
            start_wall: start,
            start_mono: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        })
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        *self
            .offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += by;
    }

    /// Time since the clock's start.
    pub fn elapsed(&self) -> Duration {
        *self
            .offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let d = SignedDuration::try_from(self.elapsed()).unwrap_or(SignedDuration::MAX);
        self.start_wall.checked_add(d).unwrap_or(self.start_wall)
    }
}

impl provider::Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start_mono + self.elapsed()
    }

    fn sleep(&self, duration: Duration) -> SleepFuture<'_> {
        self.advance(duration);
        Box::pin(std::future::ready(()))
    }
}

/// `t + d`, saturating.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// RFC 3339 with second precision, as Kubernetes writes times.
pub fn format(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses a time written by [`format`] (or any RFC 3339 time).
pub fn parse(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}
