//! The kernel's timing bounds: how late a window may start (the tolerance the accounting and
//! the tests judge lateness by) and how the idle CPU waits for the next timer event so that
//! it is awake, not halted, when a window starts. See docs/scheduling-and-health.md, "Window
//! boundaries and the timer".

/// How late a window may start, and how far a partition may run past the end of its
/// eligibility, before the accounting counts a late start or an overrun. It bounds the
/// kernel's own path from the boundary's timer deadline to its scheduling decision (interrupt
/// entry, a kernel entry already under way with interrupts masked, the decision): a few
/// hundred instructions measured, tens of microseconds at worst on the slowest path (a system
/// call copying a log record). The single definition: the kernel builds its scheduler with
/// it and the QEMU tests judge its tables by it.
pub const WINDOW_TOLERANCE_NS: u64 = 50_000;

/// How long before its next timer event the idle CPU stops halting (`hlt`, `wfi`) and polls
/// with interrupts enabled instead. Waking from a halt takes time the kernel does not
/// control: a deep C-state's exit on hardware, and under QEMU the host's wake-up of the
/// halted virtual CPU, during which guest time follows the host's clock (with `-icount
/// sleep=on` as without `-icount`): 0.1 ms typically and several ms when the host is busy,
/// all of it added to the start of the window that follows. Halting only until this long
/// before the event, then polling, puts the event's interrupt on a running CPU. It must
/// exceed the halt's usual wake-up delay; each idle boundary costs this much polling.
pub const IDLE_POLL_NS: u64 = 500_000;

/// How the idle CPU waits for the next timer event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleWait {
    /// When to program the timer.
    pub timer_ns: u64,
    /// Poll with interrupts enabled (the event is near) rather than halt until the timer.
    pub poll: bool,
}

/// The idle wait at `now` for the next timer event `next_event_ns`: halt until `poll_ns`
/// before it (the timer set for then; the kernel decides again at that interrupt), or, once
/// that close, poll until the event itself.
pub fn idle_wait(now: u64, next_event_ns: u64, poll_ns: u64) -> IdleWait {
    let wake = next_event_ns.saturating_sub(poll_ns);
    if wake <= now {
        IdleWait {
            timer_ns: next_event_ns,
            poll: true,
        }
    } else {
        IdleWait {
            timer_ns: wake,
            poll: false,
        }
    }
}

/// Sub-buckets per power of two in [`LatencyHistogram`]: values are kept to 1/8 (12.5 %).
const SUB: u32 = 8;
/// Latencies at or above 2^MAX_EXP ns (about 69 s) share the last bucket.
const MAX_EXP: u32 = 36;
const BUCKETS: usize = ((MAX_EXP - 2) * SUB) as usize;

/// The distribution of window start latencies, in log-linear buckets (exact below 8 ns, then
/// eight buckets per power of two), so that percentiles can be reported with fixed storage.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    counts: [u32; BUCKETS],
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self {
            counts: [0; BUCKETS],
            total: 0,
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < u64::from(SUB) {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros();
        if exp >= MAX_EXP {
            return BUCKETS - 1;
        }
        ((exp - 2) * SUB) as usize + ((ns >> (exp - 3)) & u64::from(SUB - 1)) as usize
    }

    /// The largest value that falls in bucket `index`.
    fn upper(index: usize) -> u64 {
        let sub = u64::from(SUB);
        let index = index as u64;
        if index < sub {
            return index;
        }
        let exp = index / sub + 2;
        let low = (1u64 << exp) + (index % sub) * (1u64 << (exp - 3));
        low + (1u64 << (exp - 3)) - 1
    }

    /// Records `count` starts of latency `ns`.
    pub fn record(&mut self, ns: u64, count: u64) {
        let c = &mut self.counts[Self::bucket(ns)];
        *c = c.saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
        self.total = self.total.saturating_add(count);
    }

    /// Starts recorded.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// An upper bound, within 12.5 %, of the latency that `per_mille`/1000 of the starts
    /// did not exceed (`None` before any start): `quantile(990)` is the 99th percentile.
    pub fn quantile(&self, per_mille: u64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        // The rank of the start at the quantile, counted from 1.
        let rank = (self.total.saturating_mul(per_mille.min(1000)))
            .div_ceil(1000)
            .max(1);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(Self::upper(i));
            }
        }
        Some(Self::upper(BUCKETS - 1))
    }
}
