//! Per-partition and per-window accounting: where the time went, how late windows started,
//! how far partitions ran past their windows. See docs/scheduling-and-health.md for the
//! definitions; the kernel prints [`Report`] on request.

use core::fmt;

use super::schedule::{Schedule, Slot};
use super::timing::LatencyHistogram;
use super::{MAX_PARTITIONS, PartitionId};

/// Counters of one partition. All times are nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Instances of the partition's windows that have started.
    pub windows: u64,
    /// Time its threads ran, wherever that was.
    pub used_ns: u64,
    /// Of that, time inside its own windows.
    pub window_ns: u64,
    /// Of that, time outside its own windows while it was in the background set.
    pub background_ns: u64,
    /// Of that, time outside its own windows while it was not in the background set: the
    /// kernel reacted late to the end of a window. Zero when every boundary is on time.
    pub overrun_ns: u64,
    /// Runs that went past the end of eligibility by more than the tolerance.
    pub overruns: u64,
    /// Largest delay between the start of one of its windows and the kernel's first
    /// scheduling decision in that window.
    pub max_start_latency_ns: u64,
    /// Window starts whose latency exceeded the tolerance.
    pub late_starts: u64,
}

/// Counters of one window of the schedule (all its instances). All times are nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Instances that have started.
    pub activations: u64,
    /// Time the owner's threads ran in this window, over all instances.
    pub used_ns: u64,
    /// Time the owner's threads ran in the most recent instance they ran in.
    pub last_used_ns: u64,
    /// Largest time used in any single instance (exact when the kernel schedules at least once
    /// per window, which following [`next_event`](super::Scheduler::next_event) guarantees).
    pub max_used_ns: u64,
    /// Frame number of the instance `last_used_ns` belongs to.
    pub(super) last_frame: Option<u64>,
    /// Latency of the most recent start.
    pub last_start_latency_ns: u64,
    /// Largest start latency.
    pub max_start_latency_ns: u64,
    /// Starts whose latency exceeded the tolerance.
    pub late_starts: u64,
}

/// All counters, kept by the scheduler.
#[derive(Clone, Debug)]
pub(super) struct Accounting {
    pub(super) partitions: [PartitionStats; MAX_PARTITIONS],
    pub(super) windows: [WindowStats; super::schedule::MAX_WINDOWS],
    /// Time no thread ran.
    pub(super) idle_ns: u64,
    /// Window starts in `[epoch, starts_seen_until)` have been counted.
    pub(super) starts_seen_until: u64,
    pub(super) tolerance_ns: u64,
    /// Every window start's latency.
    pub(super) start_latencies: LatencyHistogram,
}

impl Accounting {
    pub(super) fn new(epoch_ns: u64, tolerance_ns: u64) -> Self {
        Self {
            partitions: [PartitionStats::default(); MAX_PARTITIONS],
            windows: [WindowStats::default(); super::schedule::MAX_WINDOWS],
            idle_ns: 0,
            starts_seen_until: epoch_ns,
            tolerance_ns,
            start_latencies: LatencyHistogram::new(),
        }
    }

    /// Charges `[from, to)` to `partition` (a thread of it ran), splitting it into time inside
    /// its windows, background time and overrun.
    pub(super) fn charge(
        &mut self,
        schedule: &Schedule,
        partition: PartitionId,
        from: u64,
        to: u64,
    ) {
        if to <= from || !partition.in_range() {
            return;
        }
        let total = to - from;
        let mut in_windows = 0u64;
        for (index, w) in schedule.windows().iter().enumerate() {
            if w.partition != partition {
                continue;
            }
            let overlap = schedule.window_time_between(index, from, to);
            if overlap == 0 {
                continue;
            }
            in_windows += overlap;
            let stats = &mut self.windows[index];
            stats.used_ns = stats.used_ns.saturating_add(overlap);
            // The share of the latest instance touched; earlier ones (only when the kernel
            // missed whole windows) were covered from their start or from `from`.
            if let Some((frame, start, end)) = schedule.window_instance_before(index, to) {
                let latest = to.min(end).saturating_sub(from.max(start));
                if stats.last_frame == Some(frame) {
                    stats.last_used_ns = stats.last_used_ns.saturating_add(latest);
                } else {
                    stats.last_frame = Some(frame);
                    stats.last_used_ns = latest;
                }
                let earlier = (overlap - latest.min(overlap)).min(w.length_ns);
                stats.max_used_ns = stats.max_used_ns.max(stats.last_used_ns).max(earlier);
            }
        }
        let stats = &mut self.partitions[partition.index()];
        stats.used_ns = stats.used_ns.saturating_add(total);
        stats.window_ns = stats.window_ns.saturating_add(in_windows);
        let outside = total - in_windows;
        if schedule.is_background(partition) {
            stats.background_ns = stats.background_ns.saturating_add(outside);
        } else {
            stats.overrun_ns = stats.overrun_ns.saturating_add(outside);
            if outside > self.tolerance_ns {
                stats.overruns += 1;
            }
        }
    }

    /// [`charge`](Self::charge) for an interval inside one slot of the schedule (`slot.start_ns
    /// <= from` and `to <= slot.end_ns`), in constant time: the whole interval is in the slot's
    /// window, or in no window of the partition at all. This is the case between two timer
    /// events, where the IPC paths charge; the result is exactly `charge`'s.
    #[inline]
    pub(super) fn charge_in_slot(
        &mut self,
        schedule: &Schedule,
        slot: &Slot,
        partition: PartitionId,
        from: u64,
        to: u64,
    ) {
        if to <= from || !partition.in_range() {
            return;
        }
        let total = to - from;
        let stats = &mut self.partitions[partition.index()];
        stats.used_ns = stats.used_ns.saturating_add(total);
        match slot.window {
            Some(index) if slot.partition == Some(partition) => {
                stats.window_ns = stats.window_ns.saturating_add(total);
                let w = &mut self.windows[index];
                w.used_ns = w.used_ns.saturating_add(total);
                if w.last_frame == Some(slot.frame) {
                    w.last_used_ns = w.last_used_ns.saturating_add(total);
                } else {
                    w.last_frame = Some(slot.frame);
                    w.last_used_ns = total;
                }
                w.max_used_ns = w.max_used_ns.max(w.last_used_ns);
            }
            _ if schedule.is_background(partition) => {
                stats.background_ns = stats.background_ns.saturating_add(total);
            }
            _ => {
                stats.overrun_ns = stats.overrun_ns.saturating_add(total);
                if total > self.tolerance_ns {
                    stats.overruns += 1;
                }
            }
        }
    }

    /// Counts the window starts in `[starts_seen_until, now]`; `now` is the kernel's first
    /// scheduling decision after each of them, so their latency is `now - start`.
    pub(super) fn note_window_starts(&mut self, schedule: &Schedule, now: u64) {
        let from = self.starts_seen_until;
        let to = now.saturating_add(1);
        if to <= from {
            return;
        }
        // Starts before this instant are late by more than the tolerance.
        let late_before = now.saturating_sub(self.tolerance_ns);
        for (index, w) in schedule.windows().iter().enumerate() {
            let started = schedule.window_starts_between(index, from, to);
            if started == 0 {
                continue;
            }
            let earliest = schedule.window_start_at_or_after(index, from);
            let latest = schedule
                .window_instance_before(index, to)
                .map_or(earliest, |(_, start, _)| start);
            let late = schedule.window_starts_between(index, from, late_before);
            // The latest start's latency is exact; starts missed before it (several boundaries
            // crossed between two decisions) are counted at the earliest one's, the worst.
            self.start_latencies.record(now.saturating_sub(latest), 1);
            self.start_latencies
                .record(now.saturating_sub(earliest), started - 1);
            let stats = &mut self.windows[index];
            stats.activations = stats.activations.saturating_add(started);
            stats.last_start_latency_ns = now.saturating_sub(latest);
            stats.max_start_latency_ns =
                stats.max_start_latency_ns.max(now.saturating_sub(earliest));
            stats.late_starts = stats.late_starts.saturating_add(late);
            let p = &mut self.partitions[w.partition.index()];
            p.windows = p.windows.saturating_add(started);
            p.max_start_latency_ns = p.max_start_latency_ns.max(stats.max_start_latency_ns);
            p.late_starts = p.late_starts.saturating_add(late);
        }
        self.starts_seen_until = to;
    }
}

/// A duration printed with a readable unit: `750 ns`, `12.500 us`, `4.000 ms`, `1.250 s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nanos(pub u64);

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        let (unit, scale) = match ns {
            1_000_000_000.. => ("s", 1_000_000_000),
            1_000_000.. => ("ms", 1_000_000),
            1_000.. => ("us", 1_000),
            _ => return write!(f, "{ns} ns"),
        };
        write!(
            f,
            "{}.{:03} {unit}",
            ns / scale,
            (ns % scale) / (scale / 1000)
        )
    }
}

/// The accounting table the kernel prints: one line per partition that owns a window, is in
/// the background set or has threads, then one line per window.
pub struct Report<'a> {
    pub(super) schedule: &'a Schedule,
    pub(super) accounting: &'a Accounting,
    /// Partitions to list, as a bit mask.
    pub(super) partitions: u64,
    /// Partition names indexed by partition number; missing names print as `#N`.
    pub(super) names: &'a [&'a str],
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report").finish_non_exhaustive()
    }
}

/// A partition's name, or `#N` when the caller gave none.
struct Name<'a>(&'a [&'a str], PartitionId);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.get(self.1.index()) {
            Some(name) => f.pad(name),
            None => padded(format_args!("#{}", self.1.0)).fmt(f),
        }
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:>8} {:>14} {:>14} {:>14} {:>14} {:>8} {:>14} {:>6}",
            "partition",
            "windows",
            "used",
            "in windows",
            "background",
            "overrun",
            "overruns",
            "max latency",
            "late"
        )?;
        for p in 0..MAX_PARTITIONS as u8 {
            let id = PartitionId(p);
            if self.partitions & id.bit() == 0 {
                continue;
            }
            let s = &self.accounting.partitions[id.index()];
            writeln!(
                f,
                "{:<16} {:>8} {:>14} {:>14} {:>14} {:>14} {:>8} {:>14} {:>6}",
                Name(self.names, id),
                s.windows,
                Nanos(s.used_ns).to_padded(),
                Nanos(s.window_ns).to_padded(),
                Nanos(s.background_ns).to_padded(),
                Nanos(s.overrun_ns).to_padded(),
                s.overruns,
                Nanos(s.max_start_latency_ns).to_padded(),
                s.late_starts
            )?;
        }
        writeln!(
            f,
            "{:<16} {:>8} {:>14}",
            "(idle)",
            "",
            Nanos(self.accounting.idle_ns).to_padded()
        )?;
        writeln!(
            f,
            "{:<6} {:<16} {:>12} {:>12} {:>8} {:>14} {:>14} {:>14} {:>6}",
            "window",
            "partition",
            "offset",
            "length",
            "starts",
            "last used",
            "max used",
            "max latency",
            "late"
        )?;
        for (index, w) in self.schedule.windows().iter().enumerate() {
            let s = &self.accounting.windows[index];
            writeln!(
                f,
                "{:<6} {:<16} {:>12} {:>12} {:>8} {:>14} {:>14} {:>14} {:>6}",
                index,
                Name(self.names, w.partition),
                Nanos(w.offset_ns).to_padded(),
                Nanos(w.length_ns).to_padded(),
                s.activations,
                Nanos(s.last_used_ns).to_padded(),
                Nanos(s.max_used_ns).to_padded(),
                Nanos(s.max_start_latency_ns).to_padded(),
                s.late_starts
            )?;
        }
        let h = &self.accounting.start_latencies;
        let windows = &self.accounting.windows[..self.schedule.windows().len()];
        let late: u64 = windows.iter().map(|w| w.late_starts).sum();
        let max = windows
            .iter()
            .map(|w| w.max_start_latency_ns)
            .max()
            .unwrap_or(0);
        // A bucket's bound may exceed the exact maximum, which no quantile does.
        if let (Some(p50), Some(p99)) = (h.quantile(500), h.quantile(990)) {
            let (p50, p99) = (p50.min(max), p99.min(max));
            writeln!(
                f,
                "window starts {}: latency p50 <= {}, p99 <= {}, max {}; tolerance {}, late {}",
                h.total(),
                Nanos(p50),
                Nanos(p99),
                Nanos(max),
                Nanos(self.accounting.tolerance_ns),
                late
            )?;
        }
        Ok(())
    }
}

/// Renders a duration into a fixed buffer so that table columns can be padded (`Display`
/// implementations that use `write!` ignore width).
struct Padded {
    buf: [u8; 32],
    len: usize,
}

/// Renders `args` into a [`Padded`]. 32 bytes hold the longest duration ("18446744073.709
/// s"); longer text is cut, never a panic.
fn padded(args: fmt::Arguments<'_>) -> Padded {
    let mut p = Padded {
        buf: [0; 32],
        len: 0,
    };
    let _ = fmt::write(&mut p, args);
    p
}

impl Nanos {
    fn to_padded(self) -> Padded {
        padded(format_args!("{self}"))
    }
}

impl fmt::Write for Padded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        if s.len() > room {
            return Err(fmt::Error);
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

impl fmt::Display for Padded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?"))
    }
}
