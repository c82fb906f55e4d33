//! Per-client rate limits: a token bucket in bytes, driven by the caller's clock.
//!
//! A bucket holds at most `burst` bytes of credit and gains `rate` bytes per second; a client
//! may move as many bytes as it has credit for. Credit is kept in byte-nanoseconds (bytes ×
//! 10⁹), so rates that are not a divisor of a second lose nothing to rounding.

const NS_PER_S: u128 = 1_000_000_000;

/// A token bucket, or no limit at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Bytes per second; `None`: unlimited.
    rate: Option<u64>,
    /// Most bytes of credit.
    burst: u64,
    /// Credit in byte-nanoseconds.
    level: u128,
    /// When `level` was last brought up to date.
    last_ns: u64,
}

impl TokenBucket {
    /// No limit.
    pub const fn unlimited() -> Self {
        Self {
            rate: None,
            burst: u64::MAX,
            level: 0,
            last_ns: 0,
        }
    }

    /// `rate` bytes per second with up to `burst` bytes of credit (at least one byte), full at
    /// `now_ns`. A rate of 0 starts empty and stays so: that client gets nothing.
    pub fn new(rate: u64, burst: u64, now_ns: u64) -> Self {
        let burst = burst.max(1);
        Self {
            rate: Some(rate),
            burst,
            level: if rate == 0 {
                0
            } else {
                u128::from(burst) * NS_PER_S
            },
            last_ns: now_ns,
        }
    }

    /// From a channel's `rate` and `burst` values: absent `rate` is unlimited; `burst`
    /// defaults to one second's worth (at least 64 bytes, so short lines are not split).
    pub fn from_config(rate: Option<u64>, burst: Option<u64>, now_ns: u64) -> Self {
        match rate {
            None => Self::unlimited(),
            Some(rate) => Self::new(rate, burst.unwrap_or(rate.max(64)), now_ns),
        }
    }

    /// The configured rate (`None`: unlimited).
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// The configured burst.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn refill(&mut self, now_ns: u64) {
        let Some(rate) = self.rate else { return };
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let cap = u128::from(self.burst) * NS_PER_S;
        self.level = (self.level + u128::from(rate) * u128::from(elapsed)).min(cap);
    }

    /// Whole bytes of credit at `now_ns` (`u64::MAX` when unlimited).
    pub fn available(&mut self, now_ns: u64) -> u64 {
        if self.rate.is_none() {
            return u64::MAX;
        }
        self.refill(now_ns);
        (self.level / NS_PER_S) as u64
    }

    /// Spends `bytes` of credit (no more than there is).
    pub fn take(&mut self, bytes: u64) {
        if self.rate.is_some() {
            self.level = self.level.saturating_sub(u128::from(bytes) * NS_PER_S);
        }
    }

    /// When at least `bytes` (capped at the burst) of credit will be there, given none is
    /// spent meanwhile: `None` if unlimited, never (rate 0), or already there.
    pub fn ready_at(&self, bytes: u64) -> Option<u64> {
        let rate = u128::from(self.rate.filter(|&r| r > 0)?);
        let want = u128::from(bytes.min(self.burst)) * NS_PER_S;
        if self.level >= want {
            return None;
        }
        let wait = (want - self.level).div_ceil(rate);
        Some(
            self.last_ns
                .saturating_add(u64::try_from(wait).unwrap_or(u64::MAX)),
        )
    }
}

/// A client's rate limit as a serving pass uses it: its bucket, and whether it is waiting for
/// credit (a wait is counted once, however many passes it lasts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    bucket: TokenBucket,
    waiting: bool,
}

impl Throttle {
    /// A limit of `bucket`.
    pub fn new(bucket: TokenBucket) -> Self {
        Self {
            bucket,
            waiting: false,
        }
    }

    /// The configured rate (`None`: unlimited).
    pub fn rate(&self) -> Option<u64> {
        self.bucket.rate()
    }

    /// Credit for moving up to `want` bytes at `now_ns`: `Ok(bytes that may go now)`, or, with
    /// none, `Err(whether this starts a wait)` after asking `progress` to wake the server when
    /// a fiftieth of a second's worth (at most `want`) is back: few wake-ups, short waits.
    pub fn grant(
        &mut self,
        now_ns: u64,
        want: u64,
        progress: &mut crate::Progress,
    ) -> Result<u64, bool> {
        let credit = self.bucket.available(now_ns);
        if credit > 0 {
            self.waiting = false;
            return Ok(credit);
        }
        let step = self.bucket.rate().map_or(1, |r| (r / 50).max(1));
        if let Some(at) = self.bucket.ready_at(want.min(step)) {
            progress.wake_by(at);
        }
        Err(!core::mem::replace(&mut self.waiting, true))
    }

    /// Spends `bytes` of credit.
    pub fn take(&mut self, bytes: u64) {
        self.bucket.take(bytes);
    }

    /// The client's work in progress was dropped: it waits for nothing now.
    pub fn stop_waiting(&mut self) {
        self.waiting = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn unlimited_has_all_the_credit() {
        let mut b = TokenBucket::from_config(None, None, 0);
        assert_eq!(b.available(0), u64::MAX);
        b.take(1 << 40);
        assert_eq!(b.available(5), u64::MAX);
        assert_eq!(b.ready_at(100), None);
    }

    #[test]
    fn starts_full_then_refills_at_the_rate_up_to_the_burst() {
        let mut b = TokenBucket::new(1000, 500, 10 * S);
        assert_eq!(b.available(10 * S), 500);
        b.take(500);
        assert_eq!(b.available(10 * S), 0);
        // 1000 B/s: 100 ms gives 100 bytes, 1 ms one byte.
        assert_eq!(b.available(10 * S + S / 10), 100);
        assert_eq!(b.available(10 * S + S / 10 + S / 1000), 101);
        // Never more than the burst.
        assert_eq!(b.available(100 * S), 500);
    }

    #[test]
    fn fractional_rates_accumulate_without_rounding_loss() {
        // 3 B/s asked for in 1 ms steps: 3000 steps are one second, exactly 3 bytes.
        let mut b = TokenBucket::new(3, 3, 0);
        b.take(3);
        let mut got = 0;
        for ms in 1..=3000u64 {
            let n = b.available(ms * 1_000_000);
            b.take(n);
            got += n;
        }
        assert_eq!(got, 9);
    }

    #[test]
    fn a_client_over_its_rate_gets_no_more_than_rate_times_time_plus_burst() {
        let mut b = TokenBucket::new(1024, 1024, 0);
        let mut got = 0u64;
        // Greedy: takes everything it may, every 7 ms, for 10 s.
        let mut t = 0;
        while t <= 10 * S {
            let n = b.available(t).min(4096);
            b.take(n);
            got += n;
            t += 7_000_000;
        }
        assert!(got <= 1024 + 1024 * 10, "{got}");
        assert!(got >= 1024 * 10, "{got}");
    }

    #[test]
    fn ready_at_says_when_credit_will_be_there() {
        let mut b = TokenBucket::new(100, 100, 0);
        b.take(100);
        assert_eq!(b.ready_at(1), Some(10_000_000));
        assert_eq!(b.ready_at(50), Some(500_000_000));
        // Asking for more than the burst waits for the burst only.
        assert_eq!(b.ready_at(10_000), Some(S));
        assert_eq!(b.available(S), 100);
        assert_eq!(b.ready_at(100), None);
    }

    #[test]
    fn rate_zero_gives_nothing_ever() {
        let mut b = TokenBucket::new(0, 100, 0);
        assert_eq!(b.available(0), 0);
        assert_eq!(b.available(1000 * S), 0);
        assert_eq!(b.ready_at(1), None);
    }

    #[test]
    fn a_throttled_client_is_counted_once_per_wait_and_woken_for_a_fiftieth_of_a_second() {
        let mut t = Throttle::new(TokenBucket::new(1000, 100, 0));
        let mut progress = crate::Progress::default();
        assert_eq!(t.grant(0, 512, &mut progress), Ok(100));
        t.take(100);
        assert_eq!(t.grant(0, 512, &mut progress), Err(true), "a wait starts");
        // 20 bytes (a fiftieth of 1000/s) come back after 20 ms.
        assert_eq!(progress.wake_at, Some(20_000_000));
        assert_eq!(t.grant(1_000_000, 512, &mut progress), Ok(1));
        t.take(1);
        assert_eq!(t.grant(1_000_000, 512, &mut progress), Err(true));
        assert_eq!(
            t.grant(1_000_000, 512, &mut progress),
            Err(false),
            "the same wait"
        );
        let mut unlimited = Throttle::new(TokenBucket::unlimited());
        assert_eq!(unlimited.grant(0, 512, &mut progress), Ok(u64::MAX));
    }
}
