//! From the architecture's entry point to a running system.
//!
//! The architecture layer brings the CPU into a known state (descriptor tables or exception
//! vectors, the kernel's own page tables, the heap), gathers what the firmware reported into a
//! [`BootInfo`] and calls [`kmain`], which is the same on every architecture.

use alloc::vec::Vec;

use kcore::cmdline::CommandLine;
use kcore::image::SystemImage;
use kcore::log::Level;
use kcore::mem::{Bytes, PhysRegion, summarize};
use kcore::time::{Hz, ticks_to_ns};

use crate::arch::{self, ExitStatus};

/// What the architecture layer learnt while booting.
pub struct BootInfo<'a> {
    /// The architecture's name as printed in the banner.
    pub arch: &'static str,
    /// How the machine was booted (`BIOS`, `UEFI`, `device tree`).
    pub firmware: &'static str,
    /// The physical memory map, sorted by address.
    pub memory: &'a [PhysRegion],
    /// The boot command line.
    pub cmdline: CommandLine<'a>,
    /// The static system image, if the boot loader passed one.
    pub image: Option<SystemImage<'static>>,
    /// Free frames after the kernel's own page tables, heap and bitmap were allocated.
    pub free_frames: u64,
    /// The boot-time heap: (virtual address, bytes).
    pub heap: (usize, usize),
}

/// What the timer hardware turned out to be, reported in the boot log.
pub struct TimerInfo {
    /// The free-running counter used for time stamps (`TSC`, `CNTPCT`).
    pub counter: &'static str,
    pub counter_hz: u64,
    /// What the counter's frequency was measured against, or how it was learnt.
    pub calibrated_against: &'static str,
    /// The device raising the periodic tick interrupt.
    pub tick_source: &'static str,
    pub tick_source_hz: u64,
    /// Tick interrupts per second.
    pub tick_hz: u64,
}

/// A deliberate read from here exercises the page-fault report: canonical on x86_64, inside
/// the 48-bit range on aarch64, and never mapped by the kernel.
pub const SELFTEST_FAULT_ADDRESS: u64 = 0x0000_1234_dead_b000;

/// Number of tick reports the boot demonstration prints before it is done.
const TICK_REPORTS: u64 = 5;
/// Ticks between two reports.
const TICKS_PER_REPORT: u64 = 100;

/// The portable kernel entry: banner, memory, timer, then the boot demonstration or a
/// self-test scenario chosen on the command line (`test=...`).
pub fn kmain(boot: &BootInfo<'_>) -> ! {
    if let Some(level) = boot.cmdline.value("log").and_then(Level::parse) {
        crate::klog::set_max_level(level);
    }
    kprintln!();
    kprintln!(
        "{} {} ({}) - partitioned real-time kernel",
        kcore::NAME,
        kcore::VERSION,
        boot.arch
    );
    info!(
        "booted by {}; command line: \"{}\"",
        boot.firmware,
        boot.cmdline.as_str()
    );
    report_memory(boot);
    check_heap(boot);

    let timer = arch::time::init();
    info!(
        "timer: {} counter at {} (calibrated against {}); {} at {} gives a {} tick",
        timer.counter,
        Hz(timer.counter_hz),
        timer.calibrated_against,
        timer.tick_source,
        Hz(timer.tick_source_hz),
        Hz(timer.tick_hz)
    );
    arch::cpu::enable_interrupts();

    match boot.cmdline.value("test") {
        None | Some("ticks") => {}
        Some("page_fault") => {
            info!("selftest: reading unmapped address {SELFTEST_FAULT_ADDRESS:#x}");
            arch::selftest::read_unmapped(SELFTEST_FAULT_ADDRESS);
        }
        Some("invalid_opcode") => {
            info!("selftest: executing an undefined instruction");
            arch::selftest::invalid_opcode();
        }
        Some("stack_overflow") => {
            info!("selftest: overflowing the kernel stack");
            let depth = overflow_stack(0);
            panic!("the kernel stack did not overflow after {depth} frames");
        }
        Some("panic") => panic!("selftest: deliberate kernel panic"),
        Some(other) => {
            error!("unknown test scenario \"{other}\"");
            arch::power_off(ExitStatus::Failure);
        }
    }

    show_ticks(&timer);
    if let Some(image) = boot.image.filter(|i| i.partition_count() > 0) {
        crate::exec::start(image, &boot.cmdline);
    }
    info!("boot demo complete");
    if boot.cmdline.flag("exit") {
        arch::power_off(ExitStatus::Success);
    }
    heartbeat()
}

/// Recurses with a 4 KiB frame each level until the stack's guard page stops it. The frames
/// are made observable so the compiler cannot turn the recursion into a loop.
fn overflow_stack(depth: u64) -> u64 {
    let mut frame = [0u8; 4096];
    frame[(depth % 4096) as usize] = depth as u8;
    let frame = core::hint::black_box(frame);
    if depth > 1_000_000 {
        return depth;
    }
    overflow_stack(depth + 1) + frame[(depth % 4096) as usize] as u64
}

fn report_memory(boot: &BootInfo<'_>) {
    let s = summarize(boot.memory);
    info!(
        "memory: {} regions, {} usable in {} regions (largest {}), {} loaded, {} reserved, top {:#x}",
        s.regions,
        Bytes(s.usable_bytes),
        s.usable_regions,
        Bytes(s.largest_usable),
        Bytes(s.loaded_bytes),
        Bytes(s.reserved_bytes),
        s.highest_address
    );
    for r in boot.memory {
        debug!("  {:#014x}..{:#014x} {:?}", r.start, r.end, r.kind);
    }
    info!(
        "frames: {} free ({})",
        boot.free_frames,
        Bytes(boot.free_frames * kcore::mem::PAGE_SIZE)
    );
}

/// Allocates and checks a buffer, proving the heap works before anything relies on it.
fn check_heap(boot: &BootInfo<'_>) {
    let values: Vec<u64> = (0..4096u64).map(|i| i * i).collect();
    let sum: u64 = values.iter().sum();
    let expected = (0..4096u64).map(|i| i * i).fold(0, u64::wrapping_add);
    if sum != expected {
        panic!("heap self-check failed: sum {sum} != {expected}");
    }
    info!(
        "heap: {} at {:#x}, self-check ok",
        Bytes(boot.heap.1 as u64),
        boot.heap.0
    );
}

/// Shows that tick interrupts arrive and agree with the free-running counter; stops the
/// machine with a failure if they do not arrive.
fn show_ticks(timer: &TimerInfo) {
    let expected_ns = ticks_to_ns(TICKS_PER_REPORT, timer.tick_hz);
    let mut last_ns = arch::time::uptime_ns();
    for report in 1..=TICK_REPORTS {
        let target = report * TICKS_PER_REPORT;
        // Allow ten times the expected time: TCG on a loaded host is slow, but not that slow.
        let deadline = last_ns + 10 * expected_ns;
        while arch::time::ticks() < target {
            if arch::time::uptime_ns() > deadline {
                error!(
                    "timer: tick interrupts are not arriving (ticks stuck at {})",
                    arch::time::ticks()
                );
                arch::power_off(ExitStatus::Failure);
            }
            arch::cpu::wait_for_interrupt();
        }
        let now_ns = arch::time::uptime_ns();
        info!(
            "tick {} at uptime {}.{:03} ms ({} us since the previous report)",
            arch::time::ticks(),
            now_ns / 1_000_000,
            (now_ns / 1_000) % 1_000,
            (now_ns - last_ns) / 1_000
        );
        last_ns = now_ns;
    }
}

/// With nothing else to run yet, show once a second that the system is alive.
fn heartbeat() -> ! {
    let mut next = arch::time::ticks();
    loop {
        next += 1000 * TICKS_PER_REPORT / 100;
        while arch::time::ticks() < next {
            arch::cpu::wait_for_interrupt();
        }
        info!("alive: {} ticks", arch::time::ticks());
    }
}
