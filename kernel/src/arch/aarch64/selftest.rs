//! Deliberate faults, so the test suite can check that each one is reported.

/// Reads from `address` in the lower half, where the kernel disabled translation (TCR_EL1.EPD0),
/// so the CPU raises a translation-fault data abort that the handler reports.
pub fn read_unmapped(address: u64) -> ! {
    // SAFETY: this read is meant to fault before touching memory; the handler stops the machine.
    let value = unsafe { core::ptr::read_volatile(address as *const u64) };
    panic!("read of unmapped address {address:#x} returned {value:#x} instead of faulting");
}

/// Executes `udf #0`, a permanently undefined instruction.
pub fn invalid_opcode() -> ! {
    // SAFETY: `udf` only raises an undefined-instruction exception.
    unsafe { core::arch::asm!("udf #0", options(nomem, nostack)) };
    panic!("udf did not raise an exception");
}
