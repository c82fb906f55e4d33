//! The time-partitioning model: which thread runs now, until when, and where the time went.
//!
//! A [`Schedule`] is a cycle of windows within a major frame plus a background set. Inside a
//! window the highest-priority ready thread of the window's owner or of the background set
//! runs; in a gap only the background set runs; equal priorities take turns when a thread
//! yields. The kernel calls [`Scheduler::dispatch`] at every timer interrupt and every syscall or
//! fault that may change who runs; it answers with the thread to run and the instant of the next
//! timer interrupt, and charges the time since the previous call to whoever ran (see
//! [`PartitionStats`]). The full model, with definitions and an example, is in
//! docs/scheduling-and-health.md.

mod accounting;
mod schedule;
#[cfg(test)]
mod tests;
mod timing;

pub use accounting::{Nanos, PartitionStats, Report, WindowStats};
pub use schedule::{MAX_WINDOWS, Schedule, ScheduleError, Slot, Window};
pub use timing::{IDLE_POLL_NS, IdleWait, LatencyHistogram, WINDOW_TOLERANCE_NS, idle_wait};

use accounting::Accounting;

/// Partitions are numbered `0..MAX_PARTITIONS` so that sets of them fit in a `u64` mask.
pub const MAX_PARTITIONS: usize = 64;

/// A partition's number: its index in the system description's partition list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u8);

impl PartitionId {
    fn in_range(self) -> bool {
        usize::from(self.0) < MAX_PARTITIONS
    }

    fn bit(self) -> u64 {
        1u64.checked_shl(u32::from(self.0)).unwrap_or(0)
    }

    fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A thread's number: its index in the scheduler's thread table, system-wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ThreadId(pub u16);

/// A thread priority, `0..=63`; larger is more urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    /// The most urgent priority.
    pub const MAX: Priority = Priority(63);

    /// A priority, or `None` above [`Priority::MAX`].
    pub const fn new(value: u8) -> Option<Priority> {
        if value <= Self::MAX.0 {
            Some(Priority(value))
        } else {
            None
        }
    }

    /// The numeric value.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// What a thread is doing, as far as the scheduler cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// May run when its partition is eligible.
    Ready,
    /// Asleep until the given instant (absolute nanoseconds).
    Sleeping { until_ns: u64 },
    /// Waiting for an event that some other operation ends with [`Scheduler::make_ready`]
    /// (IPC, a notification, or not yet started).
    Blocked,
    /// Its partition is stopped (or being restarted); only a restart brings it back.
    Stopped,
}

/// Why a scheduler operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedError {
    /// The thread table is full.
    TooManyThreads,
    /// No thread with that number.
    NoSuchThread,
    /// The partition number is not below [`MAX_PARTITIONS`].
    PartitionOutOfRange,
    /// The thread's partition is stopped.
    PartitionStopped,
}

/// The scheduler's answer to [`Scheduler::dispatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// The thread to run, `None` to idle.
    pub thread: Option<ThreadId>,
    /// The window or gap `now` falls in.
    pub slot: Slot,
    /// When the kernel must be interrupted next (program the one-shot timer for it): never
    /// before `now`, never after `slot.end_ns`.
    pub next_event_ns: u64,
}

#[derive(Clone, Copy, Debug)]
struct Thread {
    partition: PartitionId,
    priority: Priority,
    state: ThreadState,
    /// Whether a (re)started partition begins with this thread ready.
    starts_ready: bool,
    /// Place in the round-robin order among equal priorities: the smallest runs first.
    turn: u64,
}

/// Fixed-priority, time-partitioned scheduler for up to `THREADS` threads.
#[derive(Clone, Debug)]
pub struct Scheduler<const THREADS: usize> {
    schedule: Schedule,
    threads: [Thread; THREADS],
    thread_count: usize,
    /// Bit `p`: partition `p` is stopped.
    stopped: u64,
    /// Bit `p`: partition `p` has threads.
    populated: u64,
    /// Bit `i`: thread `i` is ready (threads `0..64`; see [`MASKED_THREADS`]).
    ready: u64,
    /// Bit `i`: thread `i` is sleeping (threads `0..64`).
    sleeping: u64,
    /// Bit `i` of entry `p`: thread `i` belongs to partition `p` (threads `0..64`).
    threads_of: [u64; MAX_PARTITIONS],
    /// Bit `i`: thread `i` belongs to a partition of the background set (threads `0..64`).
    background_threads: u64,
    /// Next value of [`Thread::turn`]; 2^64 turns is centuries of scheduling.
    next_turn: u64,
    /// The thread the last dispatch chose, and when.
    current: Option<ThreadId>,
    /// Its partition (kept with `current`: the hand-off charges it without a table lookup).
    current_partition: Option<PartitionId>,
    running_since: u64,
    /// The latest time seen; time never goes backwards for the scheduler.
    last_now: u64,
    /// What the last dispatch decided, for [`dispatch_fast`](Self::dispatch_fast).
    last_dispatch: Option<Dispatch>,
    /// The threads eligible in the last dispatch's slot (the window owner's and the background
    /// set's), kept with `last_dispatch` so that the hand-off test needs no table lookup.
    slot_threads: u64,
    accounting: Accounting,
}

impl<const THREADS: usize> Scheduler<THREADS> {
    /// A scheduler with no threads. `tolerance_ns` is how late a window may start, and how far a
    /// partition may run past its window, before it counts as a late start or an overrun (timer
    /// and interrupt latency).
    pub fn new(schedule: Schedule, tolerance_ns: u64) -> Self {
        let epoch = schedule.epoch_ns();
        Self {
            threads: [Thread {
                partition: PartitionId(0),
                priority: Priority(0),
                state: ThreadState::Stopped,
                starts_ready: false,
                turn: 0,
            }; THREADS],
            thread_count: 0,
            stopped: 0,
            populated: 0,
            ready: 0,
            sleeping: 0,
            threads_of: [0; MAX_PARTITIONS],
            background_threads: 0,
            next_turn: 0,
            current: None,
            current_partition: None,
            running_since: epoch,
            last_now: 0,
            last_dispatch: None,
            slot_threads: 0,
            accounting: Accounting::new(epoch, tolerance_ns),
            schedule,
        }
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Adds a thread of `partition` (at boot). It is ready at once if `starts_ready`, otherwise
    /// blocked until [`make_ready`](Self::make_ready); a restart of the partition returns it to
    /// the same state.
    pub fn add_thread(
        &mut self,
        partition: PartitionId,
        priority: Priority,
        starts_ready: bool,
    ) -> Result<ThreadId, SchedError> {
        if !partition.in_range() {
            return Err(SchedError::PartitionOutOfRange);
        }
        if self.thread_count >= THREADS || self.thread_count > usize::from(u16::MAX) {
            return Err(SchedError::TooManyThreads);
        }
        let index = self.thread_count;
        let id = ThreadId(index as u16);
        let stopped = self.stopped & partition.bit() != 0;
        self.threads[index] = Thread {
            partition,
            priority,
            state: ThreadState::Stopped,
            starts_ready,
            turn: self.take_turn(),
        };
        self.set_state(index, initial_state(starts_ready, stopped));
        self.thread_count += 1;
        self.populated |= partition.bit();
        let bit = thread_bit(index);
        self.threads_of[partition.index()] |= bit;
        if self.schedule.is_background(partition) {
            self.background_threads |= bit;
        }
        if let Some(last) = self.last_dispatch {
            self.slot_threads = self.threads_in(&last.slot);
        }
        Ok(id)
    }

    /// Sets thread `index`'s state, keeping the ready and sleeping masks in step: every state
    /// change goes through here.
    fn set_state(&mut self, index: usize, state: ThreadState) {
        self.threads[index].state = state;
        let bit = thread_bit(index);
        self.ready &= !bit;
        self.sleeping &= !bit;
        match state {
            ThreadState::Ready => self.ready |= bit,
            ThreadState::Sleeping { .. } => self.sleeping |= bit,
            ThreadState::Blocked | ThreadState::Stopped => {}
        }
    }

    /// The index of thread `id`, if it exists.
    fn index(&self, id: ThreadId) -> Result<usize, SchedError> {
        let index = usize::from(id.0);
        if index < self.thread_count {
            Ok(index)
        } else {
            Err(SchedError::NoSuchThread)
        }
    }

    fn thread(&self, id: ThreadId) -> Result<&Thread, SchedError> {
        self.threads[..self.thread_count]
            .get(usize::from(id.0))
            .ok_or(SchedError::NoSuchThread)
    }

    fn thread_mut(&mut self, id: ThreadId) -> Result<&mut Thread, SchedError> {
        self.threads[..self.thread_count]
            .get_mut(usize::from(id.0))
            .ok_or(SchedError::NoSuchThread)
    }

    /// The threads eligible in `slot`: the window owner's and the background set's.
    fn threads_in(&self, slot: &Slot) -> u64 {
        self.background_threads
            | slot
                .partition
                .map_or(0, |p| self.threads_of.get(p.index()).copied().unwrap_or(0))
    }

    /// Records a decision for the next [`dispatch_fast`](Self::dispatch_fast) and hand-off.
    fn set_last_dispatch(&mut self, dispatch: Dispatch) {
        self.slot_threads = self.threads_in(&dispatch.slot);
        self.last_dispatch = Some(dispatch);
    }

    /// Records the thread that runs now, and its partition.
    fn set_current(&mut self, thread: Option<ThreadId>) {
        self.current = thread;
        self.current_partition = thread
            .and_then(|id| self.thread(id).ok())
            .map(|t| t.partition);
    }

    fn take_turn(&mut self) -> u64 {
        let turn = self.next_turn;
        self.next_turn = self.next_turn.saturating_add(1);
        turn
    }

    /// A thread's state.
    pub fn state(&self, id: ThreadId) -> Result<ThreadState, SchedError> {
        self.thread(id).map(|t| t.state)
    }

    /// A thread's partition.
    pub fn partition_of(&self, id: ThreadId) -> Result<PartitionId, SchedError> {
        self.thread(id).map(|t| t.partition)
    }

    /// A thread's priority.
    pub fn priority_of(&self, id: ThreadId) -> Result<Priority, SchedError> {
        self.thread(id).map(|t| t.priority)
    }

    /// The thread the last [`dispatch`](Self::dispatch) chose.
    pub fn current(&self) -> Option<ThreadId> {
        self.current
    }

    /// Whether `partition` is stopped.
    pub fn is_stopped(&self, partition: PartitionId) -> bool {
        self.stopped & partition.bit() != 0
    }

    /// Makes a blocked or sleeping thread ready; it queues behind ready threads of its
    /// priority. A ready thread stays where it is.
    #[inline]
    pub fn make_ready(&mut self, id: ThreadId) -> Result<(), SchedError> {
        let index = self.index(id)?;
        match self.threads[index].state {
            ThreadState::Stopped => return Err(SchedError::PartitionStopped),
            ThreadState::Ready => return Ok(()),
            ThreadState::Sleeping { .. } | ThreadState::Blocked => {
                self.threads[index].turn = self.take_turn();
                self.set_state(index, ThreadState::Ready);
            }
        }
        Ok(())
    }

    /// Blocks a thread until [`make_ready`](Self::make_ready) (IPC, notifications).
    #[inline]
    pub fn block(&mut self, id: ThreadId) -> Result<(), SchedError> {
        let index = self.index(id)?;
        if self.threads[index].state == ThreadState::Stopped {
            return Err(SchedError::PartitionStopped);
        }
        self.set_state(index, ThreadState::Blocked);
        Ok(())
    }

    /// Puts a thread to sleep until `deadline_ns`; [`wake_expired`](Self::wake_expired) (or
    /// [`dispatch`](Self::dispatch)) at or after the deadline makes it ready. A deadline in the
    /// past wakes it at the next dispatch.
    pub fn block_until(&mut self, id: ThreadId, deadline_ns: u64) -> Result<(), SchedError> {
        let index = self.index(id)?;
        if self.threads[index].state == ThreadState::Stopped {
            return Err(SchedError::PartitionStopped);
        }
        self.set_state(
            index,
            ThreadState::Sleeping {
                until_ns: deadline_ns,
            },
        );
        Ok(())
    }

    /// Makes every sleeper whose deadline is at or before `now` ready, in thread order;
    /// returns how many woke.
    pub fn wake_expired(&mut self, now: u64) -> usize {
        let mut woken = 0;
        for i in 0..self.thread_count {
            if let ThreadState::Sleeping { until_ns } = self.threads[i].state
                && until_ns <= now
            {
                self.threads[i].turn = self.take_turn();
                self.set_state(i, ThreadState::Ready);
                woken += 1;
            }
        }
        woken
    }

    /// Sends a ready thread to the back of its priority's round-robin order: the next equal-
    /// priority ready thread runs first.
    pub fn yield_now(&mut self, id: ThreadId) -> Result<(), SchedError> {
        let turn = self.next_turn;
        let t = self.thread_mut(id)?;
        if t.state == ThreadState::Stopped {
            return Err(SchedError::PartitionStopped);
        }
        t.turn = turn;
        self.take_turn();
        Ok(())
    }

    /// Stops every thread of `partition`; none runs again until
    /// [`restart_partition`](Self::restart_partition). Its windows stay reserved (and idle).
    pub fn stop_partition(&mut self, partition: PartitionId) -> Result<(), SchedError> {
        if !partition.in_range() {
            return Err(SchedError::PartitionOutOfRange);
        }
        self.stopped |= partition.bit();
        for i in 0..self.thread_count {
            if self.threads[i].partition == partition {
                self.set_state(i, ThreadState::Stopped);
            }
        }
        Ok(())
    }

    /// Returns every thread of `partition` to the state it was added in (ready or blocked), in
    /// thread order; the kernel has re-initialised the partition's memory and registers.
    pub fn restart_partition(&mut self, partition: PartitionId) -> Result<(), SchedError> {
        if !partition.in_range() {
            return Err(SchedError::PartitionOutOfRange);
        }
        self.stopped &= !partition.bit();
        for i in 0..self.thread_count {
            if self.threads[i].partition == partition {
                self.threads[i].turn = self.take_turn();
                let state = initial_state(self.threads[i].starts_ready, false);
                self.set_state(i, state);
            }
        }
        Ok(())
    }

    /// The thread that should run at `now`: the highest-priority ready thread whose partition
    /// owns the active window or is in the background set; among equal priorities the one
    /// waiting longest for its turn. Does not change anything.
    pub fn pick(&self, now: u64) -> Option<ThreadId> {
        let slot = self.schedule.position(now);
        self.pick_in(&slot).map(|(id, _)| id)
    }

    fn pick_in(&self, slot: &Slot) -> Option<(ThreadId, Priority)> {
        let mut best: Option<(usize, &Thread)> = None;
        for (i, t) in self.threads[..self.thread_count].iter().enumerate() {
            if t.state != ThreadState::Ready || !self.schedule.admits(slot, t.partition) {
                continue;
            }
            let better = match best {
                None => true,
                Some((_, b)) => {
                    (t.priority, core::cmp::Reverse(t.turn))
                        > (b.priority, core::cmp::Reverse(b.turn))
                }
            };
            if better {
                best = Some((i, t));
            }
        }
        best.map(|(i, t)| (ThreadId(i as u16), t.priority))
    }

    /// When the kernel must next be interrupted, seen from `now`: the end of the current window
    /// or gap, or earlier the deadline of a sleeper that could preempt the thread
    /// [`pick`](Self::pick) chooses (eligible now and more urgent). Sleepers of partitions that
    /// are not eligible never cause an interrupt in someone else's window: they are woken at
    /// the next boundary. Never before `now`.
    pub fn next_event(&self, now: u64) -> u64 {
        let slot = self.schedule.position(now);
        let running = self.pick_in(&slot).map(|(_, p)| p);
        self.next_event_in(&slot, running, now)
    }

    /// [`next_event`](Self::next_event) for a known slot and running priority.
    fn next_event_in(&self, slot: &Slot, running: Option<Priority>, now: u64) -> u64 {
        let mut next = slot.end_ns.max(now);
        for t in &self.threads[..self.thread_count] {
            let ThreadState::Sleeping { until_ns } = t.state else {
                continue;
            };
            if !self.schedule.admits(slot, t.partition) {
                continue;
            }
            if running.is_some_and(|p| t.priority <= p) {
                continue;
            }
            next = next.min(until_ns.max(now));
        }
        next
    }

    /// The scheduling decision at `now`, made at every timer interrupt and after every syscall
    /// or fault that changed a thread's state. In order: charges `[previous dispatch, now)` to
    /// the thread chosen then (or to idle), counts the window starts since the previous
    /// dispatch, wakes expired sleepers, picks the thread to run and computes when to be
    /// interrupted next. An earlier `now` than last time is taken as the last time.
    pub fn dispatch(&mut self, now: u64) -> Dispatch {
        let now = now.max(self.last_now);
        self.last_now = now;
        let since = self.running_since.min(now);
        match self.current.and_then(|id| self.thread(id).ok()) {
            Some(t) => {
                let partition = t.partition;
                self.accounting
                    .charge(&self.schedule, partition, since, now);
            }
            None => {
                self.accounting.idle_ns = self.accounting.idle_ns.saturating_add(now - since);
            }
        }
        self.accounting.note_window_starts(&self.schedule, now);
        self.wake_expired(now);
        let slot = self.schedule.position(now);
        let thread = self.pick_in(&slot).map(|(id, _)| id);
        self.set_current(thread);
        self.running_since = now;
        let dispatch = Dispatch {
            thread,
            slot,
            next_event_ns: self.next_event(now),
        };
        self.set_last_dispatch(dispatch);
        dispatch
    }

    /// The same decision as [`dispatch`](Self::dispatch), taken without recomputing where in
    /// the schedule `now` is, when that cannot have changed: `now` is before the last
    /// dispatch's `next_event_ns`, which is never after its slot's end, so no window began or
    /// ended since. This is the case for a kernel entry between timer events, such as an IPC
    /// call handing the CPU to its server. Returns `None` when it does not apply; the caller
    /// then calls `dispatch`.
    pub fn dispatch_fast(&mut self, now: u64) -> Option<Dispatch> {
        let last = self.last_dispatch?;
        let now = now.max(self.last_now);
        if now >= last.next_event_ns {
            return None;
        }
        self.last_now = now;
        self.charge_in_slot(&last.slot, now);
        // No window started in (last dispatch, now]: the window-start count has nothing to add.
        self.wake_expired(now);
        let picked = self.pick_in(&last.slot);
        let thread = picked.map(|(id, _)| id);
        self.set_current(thread);
        self.running_since = now;
        let dispatch = Dispatch {
            thread,
            slot: last.slot,
            next_event_ns: self.next_event_in(&last.slot, picked.map(|(_, p)| p), now),
        };
        // The same slot: `slot_threads` still holds.
        self.last_dispatch = Some(dispatch);
        Some(dispatch)
    }

    /// Charges `[running_since, now)` to the current thread's partition (or to idle) when
    /// that interval lies in `slot`, the slot of the last dispatch: `now` is before its next
    /// event, so no boundary lies between.
    fn charge_in_slot(&mut self, slot: &Slot, now: u64) {
        let since = self.running_since.min(now);
        match self.current.and_then(|id| self.thread(id).ok()) {
            Some(t) => {
                let partition = t.partition;
                self.accounting
                    .charge_in_slot(&self.schedule, slot, partition, since, now);
            }
            None => self.accounting.idle_ns = self.accounting.idle_ns.saturating_add(now - since),
        }
    }

    /// Whether [`dispatch`](Self::dispatch) at `now` would run `to`, and decide nothing else
    /// on the way: the test of [`hand_off`](Self::hand_off), side-effect free. If so, returns
    /// the next event `dispatch` would compute. It holds when no timer event is due (`now` is
    /// before the last dispatch's next event, so the slot is the same), no sleeper's deadline
    /// has passed (`dispatch` would wake it), `to` is ready and eligible in the slot, and no
    /// other ready, eligible thread comes before it (a higher priority, or the same priority
    /// and an earlier turn).
    #[inline]
    pub fn can_hand_off(&self, to: ThreadId, now: u64) -> Option<u64> {
        let last = self.last_dispatch.as_ref()?;
        let now = now.max(self.last_now);
        if now >= last.next_event_ns || self.thread_count > MASKED_THREADS {
            return None;
        }
        let index = usize::from(to.0);
        let bit = thread_bit(index);
        let slot = &last.slot;
        // The threads eligible in the slot: the window owner's and the background set's.
        let eligible = self.slot_threads;
        // `to` is ready (so it exists) and eligible.
        if self.ready & eligible & bit == 0 {
            return None;
        }
        let target = &self.threads[index];
        let key = (target.priority, core::cmp::Reverse(target.turn));
        // Every other ready, eligible thread must come after it; usually there is none.
        let mut rivals = self.ready & eligible & !bit;
        while rivals != 0 {
            let i = rivals.trailing_zeros() as usize;
            rivals &= rivals - 1;
            let t = &self.threads[i];
            let other = (t.priority, core::cmp::Reverse(t.turn));
            // `pick` keeps the first of equal keys, as it scans in thread order.
            if other > key || (other == key && i < index) {
                return None;
            }
        }
        let mut next = slot.end_ns.max(now);
        let mut sleepers = self.sleeping;
        while sleepers != 0 {
            let i = sleepers.trailing_zeros() as usize;
            sleepers &= sleepers - 1;
            let t = &self.threads[i];
            if let ThreadState::Sleeping { until_ns } = t.state {
                if until_ns <= now {
                    // `dispatch` would wake it first.
                    return None;
                }
                if t.priority > target.priority && eligible & thread_bit(i) != 0 {
                    next = next.min(until_ns);
                }
            }
        }
        Some(next)
    }

    /// The IPC fast path's scheduling decision: a kernel entry between timer events blocked
    /// the running thread and made `to` ready (a call handed to its waiting server, a reply to
    /// its waiting client). When [`can_hand_off`](Self::can_hand_off) holds, makes exactly the
    /// decision [`dispatch`](Self::dispatch) would (charging the time since the last decision,
    /// running `to`) without recomputing the slot or picking, and returns the next event;
    /// otherwise changes nothing and returns `None`, and the caller dispatches.
    #[inline]
    pub fn hand_off(&mut self, to: ThreadId, now: u64) -> Option<u64> {
        let next = self.can_hand_off(to, now)?;
        let now = now.max(self.last_now);
        self.last_now = now;
        // Charged as `charge_in_slot` does, without copying the slot out of the decision.
        let since = self.running_since.min(now);
        let from = self.current_partition;
        let last = self.last_dispatch.as_mut()?;
        last.thread = Some(to);
        last.next_event_ns = next;
        match from {
            Some(partition) => {
                self.accounting
                    .charge_in_slot(&self.schedule, &last.slot, partition, since, now)
            }
            None => self.accounting.idle_ns = self.accounting.idle_ns.saturating_add(now - since),
        }
        // `can_hand_off` found `to` ready, so it exists.
        self.current = Some(to);
        self.current_partition = Some(self.threads[usize::from(to.0)].partition);
        self.running_since = now;
        Some(next)
    }

    /// The IPC fast paths' scheduling in one step: `from` (the running thread) blocks, `to`
    /// becomes ready, and [`hand_off`](Self::hand_off) decides whether `to` runs now. Exactly
    /// [`block`](Self::block)`(from)`, [`make_ready`](Self::make_ready)`(to)` and
    /// `hand_off(to, now)` in that order (their refusals ignored, as the kernel ignores them),
    /// in one call instead of three.
    pub fn block_and_hand_off(&mut self, from: ThreadId, to: ThreadId, now: u64) -> Option<u64> {
        let _ = self.block(from);
        let _ = self.make_ready(to);
        self.hand_off(to, now)
    }

    /// Checks that the masks say what the thread table says (tests).
    #[cfg(test)]
    fn assert_masks_consistent(&self) {
        let (mut ready, mut sleeping, mut background) = (0u64, 0u64, 0u64);
        let mut of = [0u64; MAX_PARTITIONS];
        for (i, t) in self.threads[..self.thread_count].iter().enumerate() {
            let bit = thread_bit(i);
            match t.state {
                ThreadState::Ready => ready |= bit,
                ThreadState::Sleeping { .. } => sleeping |= bit,
                _ => {}
            }
            of[t.partition.index()] |= bit;
            if self.schedule.is_background(t.partition) {
                background |= bit;
            }
        }
        assert_eq!(
            self.current_partition,
            self.current
                .map(|id| self.threads[usize::from(id.0)].partition),
            "the current thread's partition"
        );
        assert_eq!(self.ready, ready, "ready mask");
        assert_eq!(self.sleeping, sleeping, "sleeping mask");
        assert_eq!(self.threads_of, of, "threads of each partition");
        assert_eq!(self.background_threads, background, "background threads");
        if let Some(last) = self.last_dispatch {
            let slot_threads = background | last.slot.partition.map_or(0, |p| of[p.index()]);
            assert_eq!(
                self.slot_threads, slot_threads,
                "threads eligible in the slot"
            );
        }
    }

    /// Accounting of `partition` (all zero for an unknown one).
    pub fn stats(&self, partition: PartitionId) -> PartitionStats {
        self.accounting
            .partitions
            .get(partition.index())
            .copied()
            .unwrap_or_default()
    }

    /// Accounting of window `index` of the schedule, `None` if there is no such window.
    pub fn window_stats(&self, index: usize) -> Option<WindowStats> {
        self.schedule
            .windows()
            .get(index)
            .map(|_| self.accounting.windows[index])
    }

    /// The distribution of every window start's latency.
    pub fn start_latencies(&self) -> &LatencyHistogram {
        &self.accounting.start_latencies
    }

    /// Time no thread ran, since the epoch.
    pub fn idle_ns(&self) -> u64 {
        self.accounting.idle_ns
    }

    /// The accounting table for printing; `names[p]` is partition `p`'s name.
    pub fn report<'a>(&'a self, names: &'a [&'a str]) -> Report<'a> {
        let mut partitions = self.populated | self.schedule.background_mask();
        for w in self.schedule.windows() {
            partitions |= w.partition.bit();
        }
        Report {
            schedule: &self.schedule,
            accounting: &self.accounting,
            partitions,
            names,
        }
    }
}

/// Threads the ready and sleeping masks cover: the first 64. With more threads the IPC
/// hand-off declines and the kernel dispatches in full.
const MASKED_THREADS: usize = u64::BITS as usize;

/// Thread `index`'s bit in the masks, 0 for threads past [`MASKED_THREADS`].
fn thread_bit(index: usize) -> u64 {
    1u64.checked_shl(index as u32).unwrap_or(0)
}

fn initial_state(starts_ready: bool, stopped: bool) -> ThreadState {
    match (stopped, starts_ready) {
        (true, _) => ThreadState::Stopped,
        (false, true) => ThreadState::Ready,
        (false, false) => ThreadState::Blocked,
    }
}
