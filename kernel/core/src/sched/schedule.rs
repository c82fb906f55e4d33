//! The cyclic schedule: windows within a major frame, the background set, and where in the
//! cycle a given instant falls.
//!
//! Every question is answered with arithmetic on the frame number and the offset within the
//! frame, never by walking frame after frame, so the cost is bounded by the number of windows
//! however far apart two instants are.

use super::PartitionId;

/// At most this many windows per major frame; a kernel table, not a hardware limit.
pub const MAX_WINDOWS: usize = 64;

/// A time window owned by one partition, relative to the start of the major frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The partition whose threads may run in the window.
    pub partition: PartitionId,
    /// Start, in nanoseconds from the start of the major frame.
    pub offset_ns: u64,
    /// Length in nanoseconds (> 0).
    pub length_ns: u64,
}

impl Window {
    /// End (exclusive) in nanoseconds from the start of the major frame, saturating.
    pub fn end_ns(&self) -> u64 {
        self.offset_ns.saturating_add(self.length_ns)
    }
}

/// Why a schedule was refused. The system description is validated by `bulkhead-sysdesc`
/// already; the kernel checks again because a corrupt table must not become a wrong schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleError {
    /// The major frame is zero nanoseconds long.
    ZeroMajorFrame,
    /// More than [`MAX_WINDOWS`] windows.
    TooManyWindows,
    /// Window `window` (index in the given slice) has zero length.
    ZeroLength { window: usize },
    /// Window `window` ends after the end of the major frame.
    PastFrameEnd { window: usize },
    /// Window `window` starts before the end of the window listed before it (they overlap, or
    /// are not sorted by offset).
    Overlap { window: usize },
    /// A partition number is not below [`MAX_PARTITIONS`](super::MAX_PARTITIONS).
    PartitionOutOfRange { partition: PartitionId },
}

/// Where in the cycle an instant falls: a window or a gap, and the boundaries of that slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Number of the major frame since the epoch (0 before the epoch too).
    pub frame: u64,
    /// Index of the active window in [`Schedule::windows`], `None` in a gap.
    pub window: Option<usize>,
    /// Owner of the active window, `None` in a gap.
    pub partition: Option<PartitionId>,
    /// When this window or gap began (absolute nanoseconds).
    pub start_ns: u64,
    /// When this window or gap ends (absolute nanoseconds, exclusive): the next boundary, where
    /// the kernel must take a timer interrupt.
    pub end_ns: u64,
}

/// A validated cyclic schedule anchored at an epoch.
#[derive(Clone, Debug)]
pub struct Schedule {
    major_frame_ns: u64,
    epoch_ns: u64,
    windows: [Window; MAX_WINDOWS],
    window_count: usize,
    /// Bit `p` set: partition `p` is in the background set.
    background: u64,
}

impl Schedule {
    /// Builds a schedule whose first major frame starts at `epoch_ns` (monotonic nanoseconds
    /// since boot). `windows` must be sorted by offset, non-empty in length, non-overlapping and
    /// inside the frame. Repeated background entries are harmless and accepted.
    pub fn new(
        major_frame_ns: u64,
        windows: &[Window],
        background: &[PartitionId],
        epoch_ns: u64,
    ) -> Result<Self, ScheduleError> {
        if major_frame_ns == 0 {
            return Err(ScheduleError::ZeroMajorFrame);
        }
        if windows.len() > MAX_WINDOWS {
            return Err(ScheduleError::TooManyWindows);
        }
        let mut previous_end = 0;
        for (index, w) in windows.iter().enumerate() {
            if !w.partition.in_range() {
                return Err(ScheduleError::PartitionOutOfRange {
                    partition: w.partition,
                });
            }
            if w.length_ns == 0 {
                return Err(ScheduleError::ZeroLength { window: index });
            }
            if w.offset_ns < previous_end {
                return Err(ScheduleError::Overlap { window: index });
            }
            // `offset + length` may overflow; written this way it cannot.
            if w.offset_ns > major_frame_ns || w.length_ns > major_frame_ns - w.offset_ns {
                return Err(ScheduleError::PastFrameEnd { window: index });
            }
            previous_end = w.end_ns();
        }
        let mut mask = 0u64;
        for &p in background {
            if !p.in_range() {
                return Err(ScheduleError::PartitionOutOfRange { partition: p });
            }
            mask |= p.bit();
        }
        let mut table = [Window {
            partition: PartitionId(0),
            offset_ns: 0,
            length_ns: 0,
        }; MAX_WINDOWS];
        table[..windows.len()].copy_from_slice(windows);
        Ok(Self {
            major_frame_ns,
            epoch_ns,
            windows: table,
            window_count: windows.len(),
            background: mask,
        })
    }

    /// Length of the major frame.
    pub fn major_frame_ns(&self) -> u64 {
        self.major_frame_ns
    }

    /// When the first major frame starts.
    pub fn epoch_ns(&self) -> u64 {
        self.epoch_ns
    }

    /// The windows, sorted by offset.
    pub fn windows(&self) -> &[Window] {
        &self.windows[..self.window_count]
    }

    /// The background set as a bit mask (bit `p` for partition `p`).
    pub fn background_mask(&self) -> u64 {
        self.background
    }

    /// Whether `partition` is in the background set.
    pub fn is_background(&self, partition: PartitionId) -> bool {
        partition.in_range() && self.background & partition.bit() != 0
    }

    /// Total window time `partition` owns in one major frame.
    pub fn window_time_per_frame(&self, partition: PartitionId) -> u64 {
        self.windows()
            .iter()
            .filter(|w| w.partition == partition)
            .map(|w| w.length_ns)
            .sum()
    }

    /// Whether threads of `partition` may run in `slot`: it owns the window, or it is in the
    /// background set.
    pub fn admits(&self, slot: &Slot, partition: PartitionId) -> bool {
        slot.partition == Some(partition) || self.is_background(partition)
    }

    /// Frame number and offset within the frame of `t`, which must not be before the epoch.
    fn frame_and_offset(&self, t: u64) -> (u64, u64) {
        let rel = t - self.epoch_ns;
        (rel / self.major_frame_ns, rel % self.major_frame_ns)
    }

    /// Absolute start of major frame `frame`, saturating.
    fn frame_start(&self, frame: u64) -> u64 {
        self.epoch_ns
            .saturating_add(frame.saturating_mul(self.major_frame_ns))
    }

    /// The window or gap that contains `now`. Before the epoch the whole time is one gap that
    /// ends at the epoch.
    pub fn position(&self, now: u64) -> Slot {
        if now < self.epoch_ns {
            return Slot {
                frame: 0,
                window: None,
                partition: None,
                start_ns: 0,
                end_ns: self.epoch_ns,
            };
        }
        let (frame, offset) = self.frame_and_offset(now);
        let base = self.frame_start(frame);
        let mut gap_start = 0;
        for (index, w) in self.windows().iter().enumerate() {
            if offset < w.offset_ns {
                // In the gap before this window.
                return Slot {
                    frame,
                    window: None,
                    partition: None,
                    start_ns: base.saturating_add(gap_start),
                    end_ns: base.saturating_add(w.offset_ns),
                };
            }
            if offset < w.end_ns() {
                return Slot {
                    frame,
                    window: Some(index),
                    partition: Some(w.partition),
                    start_ns: base.saturating_add(w.offset_ns),
                    end_ns: base.saturating_add(w.end_ns()),
                };
            }
            gap_start = w.end_ns();
        }
        // In the gap after the last window; it ends with the frame (the next frame's leading
        // gap, if any, is a separate slot so that every frame starts with a boundary).
        Slot {
            frame,
            window: None,
            partition: None,
            start_ns: base.saturating_add(gap_start),
            end_ns: base.saturating_add(self.major_frame_ns),
        }
    }

    /// Time covered by instances of window `index` in `[epoch, t)`.
    pub(super) fn window_time_before(&self, index: usize, t: u64) -> u64 {
        let Some(w) = self.windows().get(index) else {
            return 0;
        };
        if t <= self.epoch_ns {
            return 0;
        }
        let (frame, offset) = self.frame_and_offset(t);
        // frame * length <= frame * major_frame <= t - epoch: no overflow.
        frame * w.length_ns + offset.saturating_sub(w.offset_ns).min(w.length_ns)
    }

    /// Time covered by instances of window `index` in `[from, to)`.
    pub(super) fn window_time_between(&self, index: usize, from: u64, to: u64) -> u64 {
        if to <= from {
            return 0;
        }
        self.window_time_before(index, to) - self.window_time_before(index, from)
    }

    /// Number of instances of window `index` that start in `[epoch, t)`.
    pub(super) fn window_starts_before(&self, index: usize, t: u64) -> u64 {
        let Some(w) = self.windows().get(index) else {
            return 0;
        };
        if t <= self.epoch_ns {
            return 0;
        }
        let (frame, offset) = self.frame_and_offset(t);
        frame + u64::from(w.offset_ns < offset)
    }

    /// Number of instances of window `index` that start in `[from, to)`.
    pub(super) fn window_starts_between(&self, index: usize, from: u64, to: u64) -> u64 {
        if to <= from {
            return 0;
        }
        self.window_starts_before(index, to) - self.window_starts_before(index, from)
    }

    /// Start of the first instance of window `index` at or after `t`, saturating.
    pub(super) fn window_start_at_or_after(&self, index: usize, t: u64) -> u64 {
        let Some(w) = self.windows().get(index) else {
            return u64::MAX;
        };
        let t = t.max(self.epoch_ns);
        let (frame, offset) = self.frame_and_offset(t);
        let frame = if w.offset_ns >= offset {
            frame
        } else {
            frame.saturating_add(1)
        };
        self.frame_start(frame).saturating_add(w.offset_ns)
    }

    /// The latest instance of window `index` that starts before `t`, as `(frame, start, end)`.
    pub(super) fn window_instance_before(&self, index: usize, t: u64) -> Option<(u64, u64, u64)> {
        let w = self.windows().get(index)?;
        let starts = self.window_starts_before(index, t);
        let frame = starts.checked_sub(1)?;
        let start = self.frame_start(frame).saturating_add(w.offset_ns);
        Some((frame, start, start.saturating_add(w.length_ns)))
    }
}
