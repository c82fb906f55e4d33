//! The Local APIC: enabled in xAPIC mode, its timer calibrated against the PIT and run
//! periodically to provide the kernel tick.

use x86_64::registers::model_specific::Msr;

use super::idt::{SPURIOUS_VECTOR, TIMER_VECTOR};
use super::paging::phys_to_virt;

const IA32_APIC_BASE: u32 = 0x1b;
const REG_EOI: usize = 0xb0;
const REG_SPURIOUS: usize = 0xf0;
const REG_LVT_TIMER: usize = 0x320;
const REG_TIMER_INITIAL: usize = 0x380;
const REG_TIMER_CURRENT: usize = 0x390;
const REG_TIMER_DIVIDE: usize = 0x3e0;
/// Divide configuration 0b0011: the timer counts at the bus clock / 16.
const DIVIDE_BY_16: u32 = 0b0011;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;

fn base() -> usize {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; reading it has no side effect.
    let msr = unsafe { Msr::new(IA32_APIC_BASE).read() };
    phys_to_virt(msr & 0x000f_ffff_ffff_f000)
}

fn write(reg: usize, value: u32) {
    // SAFETY: the register lies in the 4 KiB xAPIC page, which the kernel's direct map covers
    // with caching disabled; xAPIC registers are 32-bit and 16-byte aligned.
    unsafe { core::ptr::write_volatile((base() + reg) as *mut u32, value) }
}

fn read(reg: usize) -> u32 {
    // SAFETY: as for `write`.
    unsafe { core::ptr::read_volatile((base() + reg) as *const u32) }
}

/// Enables the Local APIC with its spurious vector, timer masked.
pub fn init() {
    write(REG_SPURIOUS, 0x100 | SPURIOUS_VECTOR as u32);
    write(REG_LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
}

/// Starts the timer counting down from its maximum (masked), for calibration.
pub fn start_count() {
    write(REG_TIMER_INITIAL, u32::MAX);
}

/// Timer units elapsed since [`start_count`].
pub fn elapsed_count() -> u32 {
    u32::MAX - read(REG_TIMER_CURRENT)
}

/// Starts the periodic tick: an interrupt every `period` timer units.
pub fn start_periodic(period: u32) {
    write(REG_LVT_TIMER, LVT_PERIODIC | TIMER_VECTOR as u32);
    write(REG_TIMER_INITIAL, period.max(1));
}

/// Arms the timer once: one interrupt after `count` timer units, then silence.
pub fn start_one_shot(count: u32) {
    write(REG_LVT_TIMER, TIMER_VECTOR as u32);
    write(REG_TIMER_INITIAL, count.max(1));
}

/// Signals the end of the interrupt being handled.
pub fn end_of_interrupt() {
    write(REG_EOI, 0);
}
