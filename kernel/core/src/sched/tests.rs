//! Host tests of the schedule, the scheduler and its accounting, driven by a simulated clock the
//! way the kernel drives them: dispatch, run the chosen thread until the next event, repeat.

use super::*;
use std::string::ToString;
use std::vec::Vec;

const MS: u64 = 1_000_000;
const US: u64 = 1_000;

const A: PartitionId = PartitionId(0);
const B: PartitionId = PartitionId(1);
const BG: PartitionId = PartitionId(2);
const C: PartitionId = PartitionId(3);

fn prio(p: u8) -> Priority {
    Priority::new(p).unwrap()
}

fn w(partition: PartitionId, offset_ms: u64, length_ms: u64) -> Window {
    Window {
        partition,
        offset_ns: offset_ms * MS,
        length_ns: length_ms * MS,
    }
}

/// A 10 ms frame: A 0..3, gap 3..4, B 4..6, A 6..8, gap 8..10; BG in the background set.
fn small_schedule(epoch: u64) -> Schedule {
    Schedule::new(10 * MS, &[w(A, 0, 3), w(B, 4, 2), w(A, 6, 2)], &[BG], epoch).unwrap()
}

/// Runs the kernel loop from `from` to `until`, dispatching exactly at every event, with every
/// thread spinning (never blocking by itself). Returns the dispatch decisions.
fn run_on_time<const N: usize>(
    s: &mut Scheduler<N>,
    from: u64,
    until: u64,
) -> Vec<(u64, Dispatch)> {
    let mut now = from;
    let mut log = Vec::new();
    // Bounded: every step advances time by at least one nanosecond.
    while now < until {
        let d = s.dispatch(now);
        assert!(d.next_event_ns >= now, "next event in the past");
        assert!(
            d.next_event_ns <= d.slot.end_ns,
            "next event beyond the boundary"
        );
        log.push((now, d));
        now = d.next_event_ns.max(now + 1).min(until);
    }
    s.dispatch(until);
    log
}

#[test]
fn schedule_validation() {
    let ok = [w(A, 0, 3), w(B, 3, 2)];
    assert!(Schedule::new(10 * MS, &ok, &[], 0).is_ok());
    assert_eq!(
        Schedule::new(0, &ok, &[], 0).unwrap_err(),
        ScheduleError::ZeroMajorFrame
    );
    assert_eq!(
        Schedule::new(10 * MS, &[w(A, 0, 3), w(B, 3, 0)], &[], 0).unwrap_err(),
        ScheduleError::ZeroLength { window: 1 }
    );
    assert_eq!(
        Schedule::new(10 * MS, &[w(A, 0, 3), w(B, 2, 2)], &[], 0).unwrap_err(),
        ScheduleError::Overlap { window: 1 }
    );
    assert_eq!(
        Schedule::new(10 * MS, &[w(B, 5, 1), w(A, 0, 3)], &[], 0).unwrap_err(),
        ScheduleError::Overlap { window: 1 },
        "unsorted windows are refused"
    );
    assert_eq!(
        Schedule::new(10 * MS, &[w(A, 8, 3)], &[], 0).unwrap_err(),
        ScheduleError::PastFrameEnd { window: 0 }
    );
    let huge = Window {
        partition: A,
        offset_ns: 5,
        length_ns: u64::MAX,
    };
    assert_eq!(
        Schedule::new(10, &[huge], &[], 0).unwrap_err(),
        ScheduleError::PastFrameEnd { window: 0 },
        "offset + length overflowing is caught"
    );
    assert_eq!(
        Schedule::new(10 * MS, &[w(PartitionId(64), 0, 1)], &[], 0).unwrap_err(),
        ScheduleError::PartitionOutOfRange {
            partition: PartitionId(64)
        }
    );
    assert_eq!(
        Schedule::new(10 * MS, &ok, &[PartitionId(200)], 0).unwrap_err(),
        ScheduleError::PartitionOutOfRange {
            partition: PartitionId(200)
        }
    );
    let many = [w(A, 0, 1); MAX_WINDOWS + 1];
    assert_eq!(
        Schedule::new(10 * MS, &many, &[], 0).unwrap_err(),
        ScheduleError::TooManyWindows
    );
    // A window may end exactly at the end of the frame.
    assert!(Schedule::new(10 * MS, &[w(A, 0, 10)], &[], 0).is_ok());
}

#[test]
fn position_in_windows_and_gaps() {
    let epoch = 1_000;
    let s = small_schedule(epoch);
    let at = |t| s.position(epoch + t);
    let before = s.position(0);
    assert_eq!((before.window, before.end_ns), (None, epoch));

    let p = at(0);
    assert_eq!(
        (p.frame, p.window, p.partition, p.start_ns, p.end_ns),
        (0, Some(0), Some(A), epoch, epoch + 3 * MS)
    );
    let p = at(3 * MS - 1);
    assert_eq!((p.window, p.end_ns), (Some(0), epoch + 3 * MS));
    let p = at(3 * MS);
    assert_eq!(
        (p.window, p.partition, p.start_ns, p.end_ns),
        (None, None, epoch + 3 * MS, epoch + 4 * MS)
    );
    let p = at(7 * MS);
    assert_eq!(
        (p.window, p.partition, p.end_ns),
        (Some(2), Some(A), epoch + 8 * MS)
    );
    let p = at(9 * MS);
    assert_eq!(
        (p.window, p.start_ns, p.end_ns),
        (None, epoch + 8 * MS, epoch + 10 * MS)
    );
    let p = at(25 * MS);
    assert_eq!(
        (p.frame, p.window, p.partition, p.end_ns),
        (2, Some(1), Some(B), epoch + 26 * MS)
    );
    // Far in the future nothing overflows.
    let p = s.position(u64::MAX);
    assert!(p.end_ns >= p.start_ns);
}

#[test]
fn leading_gap_is_its_own_slot() {
    let s = Schedule::new(10 * MS, &[w(A, 2, 3)], &[], 0).unwrap();
    let p = s.position(0);
    assert_eq!((p.window, p.start_ns, p.end_ns), (None, 0, 2 * MS));
    let p = s.position(6 * MS);
    assert_eq!((p.window, p.start_ns, p.end_ns), (None, 5 * MS, 10 * MS));
    let p = s.position(11 * MS);
    assert_eq!((p.frame, p.start_ns, p.end_ns), (1, 10 * MS, 12 * MS));
}

#[test]
fn priorities_are_bounded() {
    assert_eq!(Priority::new(63).map(Priority::get), Some(63));
    assert_eq!(Priority::new(64), None);
    assert!(Priority::new(1).unwrap() > Priority::new(0).unwrap());
}

#[test]
fn spinning_partitions_get_exactly_their_windows() {
    let epoch = 5 * MS;
    let mut s: Scheduler<8> = Scheduler::new(small_schedule(epoch), 10 * US);
    // Everyone spins; the background partition is the least urgent.
    s.add_thread(A, prio(10), true).unwrap();
    s.add_thread(A, prio(12), true).unwrap();
    s.add_thread(B, prio(30), true).unwrap();
    let bg = s.add_thread(BG, prio(1), true).unwrap();
    let frames = 7;
    let log = run_on_time(&mut s, 0, epoch + frames * 10 * MS);

    let a = s.stats(A);
    let b = s.stats(B);
    assert_eq!(a.used_ns, frames * 5 * MS);
    assert_eq!(a.window_ns, a.used_ns);
    assert_eq!((a.overrun_ns, a.overruns, a.background_ns), (0, 0, 0));
    // The final dispatch, at the start of frame 7, sees that frame's first window start.
    assert_eq!(a.windows, frames * 2 + 1);
    assert_eq!(b.used_ns, frames * 2 * MS);
    assert_eq!(b.windows, frames);
    assert_eq!((b.late_starts, b.max_start_latency_ns), (0, 0));
    // The background partition gets the gaps (3 ms per frame) and the time before the epoch.
    let g = s.stats(BG);
    assert_eq!(g.background_ns, epoch + frames * 3 * MS);
    assert_eq!(g.overrun_ns, 0);
    assert_eq!(s.idle_ns(), 0);
    // Nobody runs in someone else's window.
    for (now, d) in &log {
        let Some(t) = d.thread else { continue };
        let p = s.partition_of(t).unwrap();
        let slot = s.schedule().position(*now);
        assert!(
            slot.partition == Some(p) || p == BG,
            "{p:?} ran at {now} in {slot:?}"
        );
        if p == BG {
            assert_eq!(slot.window, None, "low-priority background ran in a window");
            assert_eq!(t, bg);
        }
    }
}

#[test]
fn a_spinning_partition_never_runs_outside_its_windows_even_alone() {
    // Only A has threads: the rest of the frame is idle, not given to A.
    let mut s: Scheduler<4> = Scheduler::new(small_schedule(0), 0);
    s.add_thread(A, prio(0), true).unwrap();
    run_on_time(&mut s, 0, 40 * MS);
    assert_eq!(s.stats(A).used_ns, 4 * 5 * MS);
    assert_eq!(s.stats(A).overrun_ns, 0);
    assert_eq!(s.idle_ns(), 4 * 5 * MS);
}

#[test]
fn urgent_background_preempts_window_owner() {
    let mut s: Scheduler<4> = Scheduler::new(small_schedule(0), 0);
    let a = s.add_thread(A, prio(10), true).unwrap();
    let g = s.add_thread(BG, prio(40), true).unwrap();
    assert_eq!(s.dispatch(0).thread, Some(g));
    s.block(g).unwrap();
    assert_eq!(s.dispatch(MS).thread, Some(a));
    s.make_ready(g).unwrap();
    assert_eq!(s.dispatch(2 * MS).thread, Some(g));
    s.dispatch(3 * MS);
    // The background time inside A's window counts as background, not as A's.
    assert_eq!(s.stats(BG).background_ns, 2 * MS);
    assert_eq!(s.stats(A).used_ns, MS);
}

#[test]
fn fixed_priority_preemption_within_a_window() {
    let mut s: Scheduler<4> = Scheduler::new(small_schedule(0), 0);
    let low = s.add_thread(A, prio(10), true).unwrap();
    let high = s.add_thread(A, prio(20), true).unwrap();
    assert_eq!(s.dispatch(0).thread, Some(high));
    s.block_until(high, MS + 500 * US).unwrap();
    let d = s.dispatch(100 * US);
    assert_eq!(d.thread, Some(low));
    assert_eq!(
        d.next_event_ns,
        MS + 500 * US,
        "the urgent sleeper's deadline"
    );
    let d = s.dispatch(d.next_event_ns);
    assert_eq!(d.thread, Some(high), "woken and preempting");
    assert_eq!(d.next_event_ns, 3 * MS, "the window's end");
    assert_eq!(s.state(high).unwrap(), ThreadState::Ready);
}

#[test]
fn equal_priorities_take_turns_on_yield() {
    let mut s: Scheduler<4> = Scheduler::new(small_schedule(0), 0);
    let t: Vec<ThreadId> = (0..3)
        .map(|_| s.add_thread(A, prio(5), true).unwrap())
        .collect();
    let mut order = Vec::new();
    for i in 0..6 {
        let d = s.dispatch(i * 10 * US);
        let running = d.thread.unwrap();
        order.push(running);
        s.yield_now(running).unwrap();
    }
    assert_eq!(order, [t[0], t[1], t[2], t[0], t[1], t[2]]);
    // Preemption does not cost a thread its turn: a woken thread queues at the back.
    s.block(t[0]).unwrap();
    s.make_ready(t[0]).unwrap();
    assert_eq!(s.pick(100 * US), Some(t[1]));
}

#[test]
fn sleepers_wake_at_their_deadlines() {
    let mut s: Scheduler<4> = Scheduler::new(small_schedule(0), 0);
    let a = s.add_thread(A, prio(10), true).unwrap();
    let b = s.add_thread(B, prio(10), true).unwrap();
    s.block_until(a, 2 * MS).unwrap();
    let d = s.dispatch(0);
    assert_eq!(d.thread, None);
    assert_eq!(d.next_event_ns, 2 * MS);
    assert_eq!(
        s.dispatch(2 * MS - 1).thread,
        None,
        "not before its deadline"
    );
    assert_eq!(s.dispatch(2 * MS).thread, Some(a));

    // A sleeper of a partition outside its window causes no interrupt in another's window: it
    // is woken at the boundary where its partition becomes eligible.
    s.block_until(b, 2 * MS + 100 * US).unwrap();
    let d = s.dispatch(2 * MS + 10 * US);
    assert_eq!(d.next_event_ns, 3 * MS);
    assert_eq!(
        s.state(b).unwrap(),
        ThreadState::Sleeping {
            until_ns: 2 * MS + 100 * US
        }
    );
    let d = s.dispatch(3 * MS);
    assert_eq!(s.state(b).unwrap(), ThreadState::Ready);
    assert_eq!(d.next_event_ns, 4 * MS);
    assert_eq!(s.dispatch(4 * MS).thread, Some(b));
    assert_eq!(s.wake_expired(u64::MAX), 0);
}

#[test]
fn stopped_partitions_never_run_and_restart_restores_them() {
    let mut s: Scheduler<4> = Scheduler::new(small_schedule(0), 0);
    let main = s.add_thread(A, prio(10), true).unwrap();
    let helper = s.add_thread(A, prio(20), false).unwrap();
    let g = s.add_thread(BG, prio(1), true).unwrap();
    s.make_ready(helper).unwrap();
    assert_eq!(s.dispatch(0).thread, Some(helper));
    s.stop_partition(A).unwrap();
    assert!(s.is_stopped(A));
    assert_eq!(
        s.dispatch(10 * US).thread,
        Some(g),
        "the window is not given away, but the background runs"
    );
    assert_eq!(s.make_ready(main), Err(SchedError::PartitionStopped));
    assert_eq!(s.block_until(main, 0), Err(SchedError::PartitionStopped));
    assert_eq!(s.yield_now(main), Err(SchedError::PartitionStopped));
    // Over many frames, a stopped partition gets nothing.
    let before = s.stats(A).used_ns;
    run_on_time(&mut s, 20 * US, 50 * MS);
    assert_eq!(s.stats(A).used_ns, before);
    s.restart_partition(A).unwrap();
    assert!(!s.is_stopped(A));
    assert_eq!(s.state(main).unwrap(), ThreadState::Ready);
    assert_eq!(
        s.state(helper).unwrap(),
        ThreadState::Blocked,
        "back to its start state"
    );
    assert_eq!(s.dispatch(60 * MS).thread, Some(main));
    // Threads added to a stopped partition are stopped too.
    s.stop_partition(C).unwrap();
    let late = s.add_thread(C, prio(1), true).unwrap();
    assert_eq!(s.state(late).unwrap(), ThreadState::Stopped);
}

#[test]
fn bad_arguments_are_errors() {
    let mut s: Scheduler<1> = Scheduler::new(small_schedule(0), 0);
    assert_eq!(
        s.add_thread(PartitionId(64), prio(1), true),
        Err(SchedError::PartitionOutOfRange)
    );
    s.add_thread(A, prio(1), true).unwrap();
    assert_eq!(
        s.add_thread(A, prio(1), true),
        Err(SchedError::TooManyThreads)
    );
    assert_eq!(s.make_ready(ThreadId(1)), Err(SchedError::NoSuchThread));
    assert_eq!(s.state(ThreadId(7)), Err(SchedError::NoSuchThread));
    assert_eq!(
        s.stop_partition(PartitionId(64)),
        Err(SchedError::PartitionOutOfRange)
    );
    assert_eq!(
        s.restart_partition(PartitionId(99)),
        Err(SchedError::PartitionOutOfRange)
    );
    assert_eq!(s.stats(PartitionId(255)), PartitionStats::default());
    assert_eq!(s.window_stats(3), None);
}

#[test]
fn accounting_matches_hand_computed_values_when_the_kernel_is_late() {
    // Tolerance 50 us. A spins; B spins. The kernel reacts to A's first window end 200 us
    // late and to B's window start (which is the same event) 200 us late as well.
    let mut s: Scheduler<4> = Scheduler::new(small_schedule(0), 50 * US);
    let a = s.add_thread(A, prio(1), true).unwrap();
    let b = s.add_thread(B, prio(1), true).unwrap();
    assert_eq!(s.dispatch(0).thread, Some(a));
    // Timer for 3 ms fires at 3.2 ms: A ran 200 us into the gap.
    assert_eq!(s.dispatch(3 * MS + 200 * US).thread, None);
    // B's window (4 ms) is noticed 30 us late: within tolerance.
    assert_eq!(s.dispatch(4 * MS + 30 * US).thread, Some(b));
    // B's end noticed 40 us late, A's second window (6 ms) started 40 us before that.
    assert_eq!(s.dispatch(6 * MS + 40 * US).thread, Some(a));
    // A's second window (ends 8 ms) noticed 2 ms late, together with nothing else.
    s.dispatch(10 * MS);
    // And the next frame's first window (10 ms) is seen at 10 ms exactly.

    let sa = s.stats(A);
    assert_eq!(
        sa.used_ns,
        3 * MS + 200 * US + (10 * MS - (6 * MS + 40 * US))
    );
    assert_eq!(sa.window_ns, 3 * MS + (2 * MS - 40 * US));
    assert_eq!(sa.overrun_ns, 200 * US + 2 * MS);
    assert_eq!(sa.overruns, 2);
    assert_eq!(sa.windows, 3);
    assert_eq!(sa.max_start_latency_ns, 40 * US);
    assert_eq!(sa.late_starts, 0);

    let sb = s.stats(B);
    assert_eq!(sb.used_ns, 2 * MS + 10 * US);
    assert_eq!(sb.window_ns, 2 * MS - 30 * US);
    assert_eq!(
        sb.overrun_ns,
        40 * US,
        "below tolerance: counted in time, not as an overrun"
    );
    assert_eq!(sb.overruns, 0);
    assert_eq!(
        (sb.windows, sb.max_start_latency_ns, sb.late_starts),
        (1, 30 * US, 0)
    );

    let w1 = s.window_stats(1).unwrap();
    assert_eq!(w1.activations, 1);
    assert_eq!(w1.used_ns, 2 * MS - 30 * US);
    assert_eq!(w1.last_used_ns, w1.used_ns);
    assert_eq!(w1.last_start_latency_ns, 30 * US);
    // Idle only between A's late stop (3.2 ms) and B's late start (4.03 ms).
    assert_eq!(s.idle_ns(), 830 * US);
}

#[test]
fn late_starts_and_missed_windows_are_counted() {
    let mut s: Scheduler<4> = Scheduler::new(small_schedule(0), 50 * US);
    let a = s.add_thread(A, prio(1), true).unwrap();
    s.add_thread(B, prio(1), true).unwrap();
    assert_eq!(s.dispatch(0).thread, Some(a));
    // The kernel does not schedule for 2.5 frames (timer lost), then at 25 ms.
    s.dispatch(25 * MS);
    let sa = s.stats(A);
    // A had windows at 0 (seen on time), 6, 10, 16, 20: four of them missed.
    assert_eq!(sa.windows, 5);
    assert_eq!(sa.late_starts, 4);
    assert_eq!(sa.max_start_latency_ns, 25 * MS - 6 * MS);
    // A spun all along: its window share of [0, 25 ms) is 5 + 5 + 3 = 13 ms.
    assert_eq!(sa.window_ns, 13 * MS);
    assert_eq!(sa.overrun_ns, 12 * MS);
    assert_eq!(sa.overruns, 1, "one run past the end");
    let sb = s.stats(B);
    // B's windows at 4, 14 were missed; 24 started 1 ms before the dispatch.
    assert_eq!(
        (sb.windows, sb.late_starts, sb.max_start_latency_ns),
        (3, 3, 21 * MS)
    );
    assert_eq!(s.window_stats(1).unwrap().last_start_latency_ns, MS);
    // Window 0 of A: instances 0 (3 ms), 10 (3 ms), 20 (3 ms, all inside [0, 25)).
    let w0 = s.window_stats(0).unwrap();
    assert_eq!(
        (w0.used_ns, w0.last_used_ns, w0.max_used_ns),
        (9 * MS, 3 * MS, 3 * MS)
    );
}

#[test]
fn per_window_use_is_tracked_per_instance() {
    let mut s: Scheduler<4> = Scheduler::new(small_schedule(0), 0);
    let a = s.add_thread(A, prio(1), true).unwrap();
    s.dispatch(0);
    s.block(a).unwrap();
    s.dispatch(MS); // 1 ms used in instance 0 of window 0
    s.make_ready(a).unwrap();
    s.dispatch(10 * MS);
    s.dispatch(10 * MS + 500 * US); // 0.5 ms in instance 1
    let w0 = s.window_stats(0).unwrap();
    assert_eq!(
        (w0.used_ns, w0.last_used_ns, w0.max_used_ns),
        (MS + 500 * US, 500 * US, MS)
    );
    assert_eq!(w0.activations, 2);
}

/// A deterministic pseudo-random sequence (xorshift), so failures are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_operations_keep_the_invariants() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let epoch = 2 * MS;
    let mut s: Scheduler<8> = Scheduler::new(small_schedule(epoch), 20 * US);
    let parts = [A, A, B, B, BG, C, A, BG];
    let threads: Vec<ThreadId> = parts
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            s.add_thread(p, prio((i as u8 * 7) % 64), i % 3 != 2)
                .unwrap()
        })
        .collect();
    let mut now = 0u64;
    let mut events = 0;
    while now < epoch + 200 * MS {
        let d = s.dispatch(now);
        assert!(d.next_event_ns >= now);
        assert!(d.next_event_ns <= d.slot.end_ns);
        assert_eq!(d.slot, s.schedule().position(now));
        if let Some(t) = d.thread {
            let p = s.partition_of(t).unwrap();
            assert!(
                s.schedule().admits(&d.slot, p),
                "{p:?} picked outside its windows"
            );
            assert!(!s.is_stopped(p));
            assert_eq!(s.state(t).unwrap(), ThreadState::Ready);
            // Nothing ready and eligible is more urgent.
            for &o in &threads {
                let op = s.partition_of(o).unwrap();
                if s.state(o).unwrap() == ThreadState::Ready && s.schedule().admits(&d.slot, op) {
                    assert!(s.priority_of(o).unwrap() <= s.priority_of(t).unwrap());
                }
            }
        }
        // The chosen thread (or an interrupt) does something.
        let victim = threads[(rng.next() % threads.len() as u64) as usize];
        match rng.next() % 8 {
            0 => {
                let _ = s.block_until(victim, now + rng.next() % (3 * MS));
            }
            1 => {
                let _ = s.block(victim);
            }
            2 | 3 => {
                let _ = s.make_ready(victim);
            }
            4 => {
                let _ = s.yield_now(victim);
            }
            5 if rng.next() % 10 == 0 => {
                let _ = s.stop_partition(s.partition_of(victim).unwrap());
            }
            6 if rng.next() % 5 == 0 => {
                let _ = s.restart_partition(s.partition_of(victim).unwrap());
            }
            _ => {}
        }
        s.assert_masks_consistent();
        // Usually the next event; sometimes an earlier syscall, sometimes a late timer.
        now = match rng.next() % 4 {
            0 => now + 1 + rng.next() % (d.next_event_ns - now + 1),
            1 => d.next_event_ns + rng.next() % (10 * US),
            _ => d.next_event_ns.max(now + 1),
        };
        events += 1;
    }
    assert!(events > 100);
    s.dispatch(now);
    let total: u64 = [A, B, BG, C].iter().map(|&p| s.stats(p).used_ns).sum();
    assert_eq!(
        total + s.idle_ns(),
        now,
        "every nanosecond is charged exactly once"
    );
    let frames = (now - epoch).div_ceil(10 * MS);
    for p in [A, B, C] {
        let st = s.stats(p);
        assert!(st.window_ns <= frames * s.schedule().window_time_per_frame(p));
        assert_eq!(st.used_ns, st.window_ns + st.overrun_ns + st.background_ns);
        assert_eq!(st.background_ns, 0);
    }
}

#[test]
fn report_lists_partitions_and_windows() {
    let mut s: Scheduler<4> = Scheduler::new(small_schedule(0), 0);
    s.add_thread(A, prio(1), true).unwrap();
    s.add_thread(B, prio(1), true).unwrap();
    run_on_time(&mut s, 0, 20 * MS);
    let text = s.report(&["alpha", "beta"]).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("partition"), "{text}");
    assert!(lines[1].starts_with("alpha"), "{text}");
    assert!(lines[1].contains("10.000 ms"), "{text}");
    assert!(lines[2].starts_with("beta"), "{text}");
    assert!(lines[2].contains("4.000 ms"), "{text}");
    assert!(
        lines[3].starts_with("#2"),
        "unnamed background partition: {text}"
    );
    assert!(lines[4].starts_with("(idle)"), "{text}");
    assert!(lines[4].contains("6.000 ms"), "{text}");
    assert!(lines[5].starts_with("window"), "{text}");
    assert!(lines[6].starts_with("0      alpha"), "{text}");
    assert_eq!(
        lines[9],
        "window starts 7: latency p50 <= 0 ns, p99 <= 0 ns, max 0 ns; tolerance 0 ns, late 0",
        "{text}"
    );
    assert_eq!(lines.len(), 10, "{text}");
}

#[test]
fn start_latency_distribution_and_its_summary_line() {
    let mut s: Scheduler<4> = Scheduler::new(small_schedule(0), 50_000);
    s.add_thread(A, prio(1), true).unwrap();
    s.add_thread(B, prio(1), true).unwrap();
    // Ten frames, each decision 1 us after the boundary, except B's window in frame 9,
    // noticed 300 us late.
    let mut now = 0;
    for _ in 0..200 {
        let d = s.dispatch(now);
        let mut next = d.next_event_ns;
        if next >= 10 * 10 * MS {
            break;
        }
        next += 1_000;
        if next == 9 * 10 * MS + 4 * MS + 1_000 {
            next += 299_000;
        }
        now = next;
    }
    let h = s.start_latencies();
    assert_eq!(h.total(), 30, "three windows in each of ten frames");
    // The first start is at the epoch, latency 0; 28 are 1 us late; one 300 us.
    assert!(h.quantile(500).unwrap() >= 1_000 && h.quantile(500).unwrap() < 1_125);
    assert!(h.quantile(990).unwrap() >= 300_000 && h.quantile(990).unwrap() < 337_500);
    assert_eq!(h.quantile(10), Some(0));
    let text = s.report(&["alpha", "beta"]).to_string();
    let summary = text.lines().last().unwrap();
    assert!(
        summary.starts_with("window starts 30: latency p50 <= 1.")
            && summary.ends_with("max 300.000 us; tolerance 50.000 us, late 1"),
        "{summary}"
    );
}

#[test]
fn latency_histogram_buckets_bound_their_values() {
    let mut h = LatencyHistogram::new();
    assert_eq!(h.quantile(990), None);
    for ns in [
        0u64,
        1,
        7,
        8,
        9,
        15,
        16,
        17,
        100,
        999,
        1_000,
        123_456,
        1 << 40,
        u64::MAX,
    ] {
        let mut one = LatencyHistogram::new();
        one.record(ns, 1);
        let bound = one.quantile(1000).unwrap();
        assert!(bound >= ns.min((1 << 36) - 1), "{ns}: {bound}");
        assert!(
            bound - ns.min(bound) <= ns / 8,
            "{ns}: {bound} is within 12.5 %"
        );
        h.record(ns, 1);
    }
    assert_eq!(h.total(), 14);
    h.record(5, 1_000);
    assert_eq!(h.quantile(500), Some(5));
}

#[test]
fn idle_halts_until_the_poll_margin_then_polls() {
    assert_eq!(
        idle_wait(0, 10 * MS, IDLE_POLL_NS),
        IdleWait {
            timer_ns: 10 * MS - IDLE_POLL_NS,
            poll: false
        }
    );
    // At the early wake-up: poll until the event itself.
    assert_eq!(
        idle_wait(10 * MS - IDLE_POLL_NS, 10 * MS, IDLE_POLL_NS),
        IdleWait {
            timer_ns: 10 * MS,
            poll: true
        }
    );
    assert_eq!(
        idle_wait(10 * MS - 1, 10 * MS, IDLE_POLL_NS),
        IdleWait {
            timer_ns: 10 * MS,
            poll: true
        }
    );
    // An event already due (or in the margin from boot) polls too; no margin halts throughout.
    assert!(idle_wait(20 * MS, 10 * MS, IDLE_POLL_NS).poll);
    assert!(idle_wait(0, 100, IDLE_POLL_NS).poll);
    assert_eq!(
        idle_wait(0, 10 * MS, 0),
        IdleWait {
            timer_ns: 10 * MS,
            poll: false
        }
    );
    const { assert!(WINDOW_TOLERANCE_NS < IDLE_POLL_NS) };
}

#[test]
fn nanos_display() {
    assert_eq!(Nanos(750).to_string(), "750 ns");
    assert_eq!(Nanos(12_500).to_string(), "12.500 us");
    assert_eq!(Nanos(4 * MS).to_string(), "4.000 ms");
    assert_eq!(Nanos(1_250_000_000).to_string(), "1.250 s");
    assert_eq!(Nanos(u64::MAX).to_string(), "18446744073.709 s");
}

#[test]
fn clock_going_backwards_is_harmless() {
    let mut s: Scheduler<2> = Scheduler::new(small_schedule(0), 0);
    let a = s.add_thread(A, prio(1), true).unwrap();
    s.dispatch(2 * MS);
    let d = s.dispatch(MS);
    assert_eq!(d.thread, Some(a));
    assert!(d.next_event_ns >= 2 * MS);
    assert_eq!(s.stats(A).used_ns, 0);
}

#[test]
fn demo_system_with_a_crash_looping_partition() {
    use crate::health::{Action, Fault, FaultKind, HealthMonitor, PartitionState, Policy};

    // systems/demo.toml: a 20 ms frame, logger in the background set.
    let (control, blk, storage, console, logger) = (
        PartitionId(0),
        PartitionId(1),
        PartitionId(2),
        PartitionId(3),
        PartitionId(4),
    );
    let schedule = Schedule::new(
        20 * MS,
        &[
            w(control, 0, 4),
            w(blk, 4, 3),
            w(storage, 7, 5),
            w(console, 12, 2),
            w(control, 14, 4),
        ],
        &[logger],
        0,
    )
    .unwrap();
    let mut s: Scheduler<8> = Scheduler::new(schedule, 10 * US);
    s.add_thread(control, prio(20), true).unwrap();
    let watchdog = s.add_thread(control, prio(30), true).unwrap();
    let crasher = s.add_thread(storage, prio(15), true).unwrap();
    s.add_thread(logger, prio(2), true).unwrap();
    s.add_thread(blk, prio(40), true).unwrap();
    s.add_thread(blk, prio(50), false).unwrap();
    s.add_thread(console, prio(35), true).unwrap();
    let mut health: HealthMonitor<5> = HealthMonitor::new();
    health
        .configure(
            storage,
            Policy::Restart {
                max_restarts: 5,
                period_ns: 10_000 * MS,
            },
        )
        .unwrap();

    // storage faults after 1.5 ms of running since its last (re)start; the watchdog runs
    // 10 us every 5 ms; every other thread spins.
    let mut crasher_ran = 0;
    let mut now = 0;
    let end = 1_000 * MS;
    while now < end {
        let d = s.dispatch(now);
        let mut until = d.next_event_ns.min(end);
        match d.thread {
            Some(t) if t == crasher => {
                let fault_at = now + (1_500 * US - crasher_ran);
                if fault_at <= until {
                    until = fault_at;
                    s.dispatch(until);
                    crasher_ran = 0;
                    let fault = Fault {
                        kind: FaultKind::PageFault {
                            access: crate::health::Access::Write,
                        },
                        pc: 0x40_0000,
                        address: Some(0),
                    };
                    match health.on_fault(storage, fault, until) {
                        Action::Restart { .. } => {
                            s.stop_partition(storage).unwrap();
                            s.restart_partition(storage).unwrap();
                            assert!(health.restarted(storage));
                        }
                        Action::Stop { .. } => s.stop_partition(storage).unwrap(),
                        Action::HaltSystem => panic!("storage does not halt the system"),
                    }
                } else {
                    crasher_ran += until - now;
                }
            }
            Some(t) if t == watchdog => {
                until = until.min(now + 10 * US);
                s.dispatch(until);
                s.block_until(watchdog, until + 5 * MS).unwrap();
            }
            _ => {}
        }
        now = until.max(now + 1);
    }
    s.dispatch(end);

    // storage restarted at 8.5, 10 and 11.5 ms, then at 28 and 29.5 ms; its fault at 31 ms
    // was the sixth within 10 s, so it was stopped.
    assert_eq!(health.generation(storage), Some(5));
    assert_eq!(health.state(storage), Some(PartitionState::Stopped));
    assert_eq!(health.counters(storage).unwrap().faults, 6);
    assert_eq!(s.stats(storage).used_ns, 5 * MS + 4 * MS);
    // Everyone else kept exactly its windows.
    let frames = 50;
    for (p, per_frame) in [(control, 8 * MS), (blk, 3 * MS), (console, 2 * MS)] {
        let st = s.stats(p);
        assert_eq!(st.used_ns, frames * per_frame, "{p:?}");
        assert_eq!((st.overrun_ns, st.late_starts), (0, 0), "{p:?}");
    }
    // The logger had the gaps and, once storage was stopped, storage's windows.
    assert_eq!(
        s.stats(logger).background_ns,
        frames * 2 * MS + MS + 48 * 5 * MS
    );
    assert_eq!(s.idle_ns(), 0);
}

/// `dispatch_fast` must decide exactly as `dispatch` would: two schedulers get the same random
/// operations at the same random times, one always dispatching in full, the other taking the
/// shortcut whenever it applies; every decision and all accounting must agree.
#[test]
fn dispatch_fast_decides_exactly_like_dispatch() {
    let epoch = 1_000 * MS;
    let mut full = Scheduler::<8>::new(small_schedule(epoch), 200_000);
    for (p, pr) in [(A, 10), (A, 20), (B, 10), (B, 30), (BG, 15), (BG, 5)] {
        full.add_thread(p, prio(pr), true).unwrap();
    }
    let mut fast = full.clone();
    let mut seed = 0x243f_6a88_85a3_08d3u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut now = epoch;
    let (mut shortcuts, mut fallbacks) = (0u32, 0u32);
    for _ in 0..50_000 {
        let r = next();
        let t = ThreadId((r % 6) as u16);
        let ((x, y), label) = match (r >> 8) % 8 {
            0 => ((full.block(t), fast.block(t)), "block"),
            1 | 2 => ((full.make_ready(t), fast.make_ready(t)), "make_ready"),
            3 => {
                let until = now + (r >> 16) % (4 * MS);
                (
                    (full.block_until(t, until), fast.block_until(t, until)),
                    "block_until",
                )
            }
            4 => ((full.yield_now(t), fast.yield_now(t)), "yield"),
            _ => ((Ok(()), Ok(())), "nothing"),
        };
        assert_eq!(x, y, "{label} answered differently");
        // Mostly short steps (IPC-like, between events), sometimes long ones across windows.
        now += if r >> 40 & 7 == 0 {
            (r >> 20) % (3 * MS)
        } else {
            (r >> 20) % 50_000
        };
        let a = full.dispatch(now);
        let b = match fast.dispatch_fast(now) {
            Some(d) => {
                shortcuts += 1;
                d
            }
            None => {
                fallbacks += 1;
                fast.dispatch(now)
            }
        };
        assert_eq!(a, b, "decisions differ at {now}");
    }
    for p in [A, B, BG] {
        assert_eq!(full.stats(p), fast.stats(p), "accounting of {p:?}");
    }
    for i in 0..3 {
        assert_eq!(
            full.window_stats(i),
            fast.window_stats(i),
            "accounting of window {i}"
        );
    }
    assert_eq!(full.idle_ns(), fast.idle_ns());
    assert!(
        shortcuts > 10_000 && fallbacks > 1_000,
        "both paths exercised: {shortcuts} shortcuts, {fallbacks} full"
    );
}

/// The IPC hand-off applies only when `dispatch` would run the thread handed to, and then
/// charges like it.
#[test]
fn hand_off_only_when_dispatch_would_pick_the_receiver() {
    let mut s: Scheduler<8> = Scheduler::new(small_schedule(0), 0);
    let client = s.add_thread(A, prio(10), true).unwrap();
    let server = s.add_thread(BG, prio(20), false).unwrap();
    let other = s.add_thread(B, prio(30), false).unwrap();
    assert_eq!(s.dispatch(0).thread, Some(client));
    // No dispatch has run `server` since it was made ready: the call hands over.
    s.block(client).unwrap();
    s.make_ready(server).unwrap();
    assert_eq!(s.can_hand_off(server, 100 * US), Some(3 * MS));
    assert_eq!(s.hand_off(server, 100 * US), Some(3 * MS));
    assert_eq!(s.current(), Some(server));
    // The reply hands back.
    s.block(server).unwrap();
    s.make_ready(client).unwrap();
    assert_eq!(s.hand_off(client, 150 * US), Some(3 * MS));
    assert_eq!(s.stats(A).window_ns, 100 * US);
    assert_eq!(s.stats(BG).background_ns, 50 * US);
    // A blocked or sleeping receiver, or one that is not eligible, is refused.
    assert_eq!(s.can_hand_off(server, 200 * US), None, "blocked");
    assert_eq!(s.can_hand_off(other, 200 * US), None, "blocked");
    s.make_ready(other).unwrap();
    assert_eq!(
        s.can_hand_off(other, 200 * US),
        None,
        "B's window is elsewhere"
    );
    // A more urgent ready thread, or an equal one whose turn comes first, wins.
    s.block(other).unwrap();
    let rival = s.add_thread(BG, prio(20), true).unwrap();
    s.make_ready(server).unwrap();
    assert_eq!(s.can_hand_off(server, 200 * US), None, "the rival's turn");
    assert_eq!(s.can_hand_off(rival, 200 * US), Some(3 * MS));
    s.block(rival).unwrap();
    assert_eq!(s.can_hand_off(server, 200 * US), Some(3 * MS));
    // At or past the next event (here the end of the window) the slot must be recomputed.
    assert_eq!(s.can_hand_off(server, 3 * MS), None, "a timer event is due");
    // A sleeper whose deadline has passed must be woken by a dispatch first.
    s.block_until(rival, 250 * US).unwrap();
    assert_eq!(s.can_hand_off(server, 260 * US), None, "an expired sleeper");
    // A more urgent eligible sleeper still asleep brings the next event forward.
    s.block_until(rival, 2 * MS).unwrap();
    let urgent = s.add_thread(BG, prio(40), false).unwrap();
    s.block_until(urgent, MS).unwrap();
    assert_eq!(s.can_hand_off(server, 260 * US), Some(MS));
    // Refusals change nothing: the last decision still stands.
    assert_eq!(s.current(), Some(client));
}

/// `hand_off` must decide exactly as `dispatch` would: two schedulers get the same random
/// IPC-like operations (the running thread blocks, another becomes ready) at the same random
/// times; one always dispatches in full, the other hands off whenever that applies. Every
/// decision and all accounting must agree.
#[test]
fn hand_off_decides_exactly_like_dispatch() {
    let epoch = 1_000 * MS;
    let mut full = Scheduler::<8>::new(small_schedule(epoch), 200_000);
    for (p, pr) in [
        (A, 10),
        (A, 20),
        (B, 10),
        (B, 30),
        (BG, 15),
        (BG, 5),
        (BG, 15),
    ] {
        full.add_thread(p, prio(pr), true).unwrap();
    }
    full.dispatch(epoch);
    let mut fast = full.clone();
    let mut seed = 0x1319_8a2e_0370_7344u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut now = epoch;
    let (mut handed, mut refused) = (0u32, 0u32);
    for _ in 0..50_000 {
        let r = next();
        let t = ThreadId((r % 7) as u16);
        let to = ThreadId(((r >> 3) % 7) as u16);
        let running = full.current();
        match (r >> 8) % 8 {
            // An IPC between the running thread and another: block one, wake the other.
            0..=3 => {
                if let Some(c) = running {
                    assert_eq!(full.block(c), fast.block(c));
                }
                assert_eq!(full.make_ready(to), fast.make_ready(to));
            }
            4 => assert_eq!(full.make_ready(t), fast.make_ready(t)),
            5 => {
                let until = now + (r >> 16) % (4 * MS);
                assert_eq!(full.block_until(t, until), fast.block_until(t, until));
            }
            6 => assert_eq!(full.yield_now(t), fast.yield_now(t)),
            // Now and then a partition stops (a fault, an exit) or restarts.
            7 if (r >> 50) % 16 == 0 => {
                let p = full.partition_of(t).unwrap();
                if full.is_stopped(p) {
                    assert_eq!(full.restart_partition(p), fast.restart_partition(p));
                } else {
                    assert_eq!(full.stop_partition(p), fast.stop_partition(p));
                }
            }
            _ => {}
        }
        fast.assert_masks_consistent();
        now += if r >> 40 & 7 == 0 {
            (r >> 20) % (3 * MS)
        } else {
            (r >> 20) % 50_000
        };
        let a = full.dispatch(now);
        match fast.hand_off(to, now) {
            Some(next_event) => {
                handed += 1;
                assert_eq!(
                    a.thread,
                    Some(to),
                    "handed to a thread dispatch did not pick"
                );
                assert_eq!(a.next_event_ns, next_event, "next event at {now}");
            }
            None => {
                refused += 1;
                let b = fast
                    .dispatch_fast(now)
                    .unwrap_or_else(|| fast.dispatch(now));
                assert_eq!(a, b, "decisions differ at {now}");
            }
        }
    }
    for p in [A, B, BG] {
        assert_eq!(full.stats(p), fast.stats(p), "accounting of {p:?}");
    }
    for i in 0..3 {
        assert_eq!(
            full.window_stats(i),
            fast.window_stats(i),
            "accounting of window {i}"
        );
    }
    assert_eq!(full.idle_ns(), fast.idle_ns());
    assert!(
        handed > 5_000 && refused > 5_000,
        "both paths exercised: {handed} hand-offs, {refused} refusals"
    );
}

/// The hand-off test uses thread masks that cover 64 threads: with more, it declines and the
/// kernel dispatches in full, which is always right.
#[test]
fn hand_off_declines_beyond_the_masked_threads() {
    let mut s: Scheduler<80> = Scheduler::new(small_schedule(0), 0);
    let client = s.add_thread(A, prio(10), true).unwrap();
    let server = s.add_thread(BG, prio(20), false).unwrap();
    assert_eq!(s.dispatch(0).thread, Some(client));
    s.block(client).unwrap();
    s.make_ready(server).unwrap();
    assert_eq!(s.can_hand_off(server, 100 * US), Some(3 * MS));
    for _ in 2..70 {
        s.add_thread(B, prio(1), false).unwrap();
    }
    s.assert_masks_consistent();
    assert_eq!(s.can_hand_off(server, 100 * US), None);
    assert_eq!(s.hand_off(server, 100 * US), None);
    assert_eq!(s.dispatch(100 * US).thread, Some(server));
}

/// `block_and_hand_off` is `block`, `make_ready` and `hand_off` in one call: same answers, same
/// state (accounting included), whatever the threads' states, stopped partitions too.
#[test]
fn block_and_hand_off_is_block_make_ready_and_hand_off() {
    let epoch = 1_000 * MS;
    let mut apart = Scheduler::<8>::new(small_schedule(epoch), 200_000);
    for (p, pr) in [(A, 10), (A, 20), (B, 10), (BG, 15), (BG, 15), (B, 30)] {
        apart.add_thread(p, prio(pr), true).unwrap();
    }
    apart.dispatch(epoch);
    let mut joined = apart.clone();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut now = epoch;
    let (mut handed, mut refused) = (0u32, 0u32);
    for _ in 0..20_000 {
        let r = next();
        let from = match apart.current() {
            Some(c) if r % 4 != 0 => c,
            _ => ThreadId(((r >> 2) % 6) as u16),
        };
        let to = ThreadId(((r >> 5) % 6) as u16);
        now += (r >> 20) % 300_000;
        match (r >> 10) % 8 {
            0 => {
                let until = now + (r >> 30) % (2 * MS);
                assert_eq!(apart.block_until(to, until), joined.block_until(to, until));
            }
            1 if (r >> 50) % 8 == 0 => {
                let p = apart.partition_of(to).unwrap();
                if apart.is_stopped(p) {
                    assert_eq!(apart.restart_partition(p), joined.restart_partition(p));
                } else {
                    assert_eq!(apart.stop_partition(p), joined.stop_partition(p));
                }
            }
            2 => assert_eq!(apart.dispatch(now), joined.dispatch(now)),
            _ => {
                let _ = apart.block(from);
                let _ = apart.make_ready(to);
                let a = apart.hand_off(to, now);
                let b = joined.block_and_hand_off(from, to, now);
                assert_eq!(a, b, "decisions differ at {now}");
                if a.is_some() {
                    handed += 1;
                } else {
                    refused += 1;
                    assert_eq!(apart.dispatch(now), joined.dispatch(now));
                }
            }
        }
        joined.assert_masks_consistent();
        assert_eq!(
            format!("{apart:?}"),
            format!("{joined:?}"),
            "state at {now}"
        );
    }
    assert!(
        handed > 1_000 && refused > 1_000,
        "both outcomes exercised: {handed} hand-offs, {refused} refusals"
    );
}
