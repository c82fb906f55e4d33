//! Time on aarch64: the generic timer's physical counter (CNTPCT_EL0) for time stamps and the
//! EL1 physical timer, reprogrammed from its own compare value each tick so ticks never drift.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use aarch64_cpu::registers::{
    CNTFRQ_EL0, CNTP_CTL_EL0, CNTP_CVAL_EL0, CNTPCT_EL0, Readable, Writeable,
};
use kcore::time::TickScale;

use super::gic;
use crate::boot::TimerInfo;

/// Tick interrupts per second.
pub const TICK_HZ: u64 = 1000;
/// INTID of the non-secure EL1 physical timer when the device tree does not say: PPI 14.
const DEFAULT_TIMER_INTID: u32 = 30;
static TIMER_INTID: AtomicU32 = AtomicU32::new(DEFAULT_TIMER_INTID);

/// The INTID of the EL1 physical timer's interrupt.
pub fn timer_intid() -> u32 {
    TIMER_INTID.load(Ordering::Relaxed)
}

/// Takes the timer's INTID from the device tree's `arm,armv8-timer` node: its `interrupts`
/// are (type, number, flags) triples for the secure, non-secure EL1, virtual and hypervisor
/// timers; the second is the one the kernel uses, a PPI (type 1), INTID 16 + number.
pub fn set_timer_from_device_tree(interrupts: Option<(u32, u32)>) {
    if let Some((1, number)) = interrupts
        && number < 16
    {
        TIMER_INTID.store(16 + number, Ordering::Relaxed);
    }
}

static TICKS: AtomicU64 = AtomicU64::new(0);
static BOOT_COUNT: AtomicU64 = AtomicU64::new(0);
static PERIOD: AtomicU64 = AtomicU64::new(0);
/// Set once the scheduler programs deadlines itself; the tick then stops re-arming.
static ONE_SHOT: AtomicBool = AtomicBool::new(false);

/// Marks time zero. Called first thing at boot.
pub fn mark_boot() {
    BOOT_COUNT.store(CNTPCT_EL0.get(), Ordering::Relaxed);
    NS_MULT.store(TickScale::new(CNTFRQ_EL0.get()).mult(), Ordering::Relaxed);
}

/// The counter's tick-to-nanosecond multiplier, set at boot from CNTFRQ_EL0.
static NS_MULT: AtomicU64 = AtomicU64::new(0);

/// Starts the periodic tick. The counter's frequency is what firmware put in CNTFRQ_EL0;
/// unlike the PC's, it needs no calibration.
pub fn init() -> TimerInfo {
    let hz = CNTFRQ_EL0.get();
    let period = (hz / TICK_HZ).max(1);
    PERIOD.store(period, Ordering::Relaxed);
    CNTP_CVAL_EL0.set(CNTPCT_EL0.get() + period);
    CNTP_CTL_EL0.write(CNTP_CTL_EL0::ENABLE::SET + CNTP_CTL_EL0::IMASK::CLEAR);
    gic::enable(timer_intid());
    TimerInfo {
        counter: "CNTPCT",
        counter_hz: hz,
        calibrated_against: "CNTFRQ_EL0",
        tick_source: "the EL1 physical timer",
        tick_source_hz: hz,
        tick_hz: TICK_HZ,
    }
}

/// Called by the GIC dispatcher on the timer's interrupt.
pub fn on_tick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
    if ONE_SHOT.load(Ordering::Relaxed) {
        // The handler that follows programs the next deadline; until then keep the
        // level-triggered timer quiet.
        CNTP_CVAL_EL0.set(u64::MAX);
        return;
    }
    let next = CNTP_CVAL_EL0.get() + PERIOD.load(Ordering::Relaxed);
    CNTP_CVAL_EL0.set(next);
}

/// Replaces the periodic tick by one interrupt at `deadline_ns` (uptime), or as soon as
/// possible if that has passed; each call re-arms it.
pub fn set_deadline(deadline_ns: u64) {
    ONE_SHOT.store(true, Ordering::Relaxed);
    let hz = CNTFRQ_EL0.get();
    // Rounded up, so the interrupt never comes before `uptime_ns()` reaches the deadline: a
    // tick early, the scheduler would find its deadline still ahead and, as it is the one
    // already armed, not re-arm the timer, which `on_tick` has just silenced.
    let ticks = (deadline_ns as u128 * hz as u128).div_ceil(1_000_000_000);
    let at = BOOT_COUNT
        .load(Ordering::Relaxed)
        .saturating_add(u64::try_from(ticks).unwrap_or(u64::MAX));
    CNTP_CVAL_EL0.set(at);
}

/// Nanoseconds since boot.
pub fn uptime_ns() -> u64 {
    let elapsed = CNTPCT_EL0
        .get()
        .wrapping_sub(BOOT_COUNT.load(Ordering::Relaxed));
    TickScale::from_mult(NS_MULT.load(Ordering::Relaxed)).ns(elapsed)
}

/// Tick interrupts since the timer started.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}
