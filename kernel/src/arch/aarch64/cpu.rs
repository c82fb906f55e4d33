//! Interrupt masking and idling.

use aarch64_cpu::registers::{DAIF, Readable};

/// Lets IRQs in.
pub fn enable_interrupts() {
    // SAFETY: clearing DAIF.I only unmasks IRQs; the vector table is installed before kmain.
    unsafe { core::arch::asm!("msr daifclr, #2", options(nomem, nostack)) };
}

/// Masks IRQs.
pub fn disable_interrupts() {
    // SAFETY: setting DAIF.I only masks IRQs.
    unsafe { core::arch::asm!("msr daifset, #2", options(nomem, nostack)) };
}

/// Whether IRQs are masked.
pub fn interrupts_masked() -> bool {
    DAIF.is_set(DAIF::I)
}

/// Sleeps until an interrupt arrives, with IRQs enabled. `wfi` wakes on a pending interrupt
/// even while masked, so no wake-up is lost between the caller's check and the sleep.
pub fn wait_for_interrupt() {
    aarch64_cpu::asm::wfi();
    enable_interrupts();
}
