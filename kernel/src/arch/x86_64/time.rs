//! Time on x86_64: the TSC for time stamps, the Local APIC timer for the periodic tick, both
//! calibrated against the PIT at boot.

use core::sync::atomic::{AtomicU64, Ordering};

use kcore::time::{TickScale, calibrate, ns_to_ticks};

use super::{apic, pit};
use crate::boot::TimerInfo;

/// Tick interrupts per second.
pub const TICK_HZ: u64 = 1000;
/// Calibration interval: 50 ms of PIT ticks, long enough to average out TCG's jitter.
const CALIBRATION_PIT_TICKS: u16 = (pit::PIT_HZ / 20) as u16;

/// Tick interrupts since the timer started; incremented by the timer handler.
pub static TICKS: AtomicU64 = AtomicU64::new(0);
static APIC_HZ: AtomicU64 = AtomicU64::new(0);
/// The TSC's tick-to-nanosecond multiplier (zero until calibrated, so uptime reads zero).
static TSC_NS_MULT: AtomicU64 = AtomicU64::new(0);
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads the TSC into edx:eax; it touches no memory and CR4.TSD is clear in
    // ring 0.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    ((hi as u64) << 32) | lo as u64
}

/// Marks time zero. Called first thing at boot.
pub fn mark_boot() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
}

/// Calibrates the TSC and the APIC timer against the PIT and starts the periodic tick.
pub fn init() -> TimerInfo {
    apic::init();
    let (mut tsc0, mut tsc1, mut apic_units) = (0, 0, 0);
    super::cpu::disable_interrupts();
    pit::measure(
        CALIBRATION_PIT_TICKS,
        || {
            apic::start_count();
            tsc0 = rdtsc();
        },
        || {
            tsc1 = rdtsc();
            apic_units = apic::elapsed_count();
        },
    );
    let tsc_hz = calibrate(tsc1 - tsc0, CALIBRATION_PIT_TICKS as u64, pit::PIT_HZ)
        .expect("TSC did not advance during calibration");
    let apic_hz = calibrate(apic_units as u64, CALIBRATION_PIT_TICKS as u64, pit::PIT_HZ)
        .expect("APIC timer did not count during calibration");
    TSC_NS_MULT.store(TickScale::new(tsc_hz).mult(), Ordering::Relaxed);
    APIC_HZ.store(apic_hz, Ordering::Relaxed);
    apic::start_periodic(u32::try_from(apic_hz / TICK_HZ).unwrap_or(u32::MAX));
    TimerInfo {
        counter: "TSC",
        counter_hz: tsc_hz,
        calibrated_against: "the PIT",
        tick_source: "the Local APIC timer",
        tick_source_hz: apic_hz,
        tick_hz: TICK_HZ,
    }
}

/// Replaces the periodic tick by one interrupt at `deadline_ns` (uptime), or as soon as
/// possible if that has passed; each call re-arms it. The scheduler calls this with its next
/// event, so window boundaries are met to the timer's resolution instead of the next tick.
pub fn set_deadline(deadline_ns: u64) {
    let delta = deadline_ns.saturating_sub(uptime_ns());
    // Round up: a timer that fires before its deadline finds nothing due, and the scheduler
    // would have to notice that to re-arm it.
    let units = ns_to_ticks(delta, APIC_HZ.load(Ordering::Relaxed)).saturating_add(1);
    apic::start_one_shot(u32::try_from(units).unwrap_or(u32::MAX));
}

/// Nanoseconds since boot; zero until the TSC is calibrated.
pub fn uptime_ns() -> u64 {
    let elapsed = rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed));
    TickScale::from_mult(TSC_NS_MULT.load(Ordering::Relaxed)).ns(elapsed)
}

/// Tick interrupts since the timer started.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}
