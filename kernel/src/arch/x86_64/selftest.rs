//! Deliberate faults, so the test suite can check that each one is reported.

/// Reads from `address`, which the kernel never maps; the page-fault handler reports it.
pub fn read_unmapped(address: u64) -> ! {
    // SAFETY: this read is meant to fault. The address is canonical and unmapped, so the CPU
    // raises #PF before any memory is touched, and the handler stops the machine.
    let value = unsafe { core::ptr::read_volatile(address as *const u64) };
    panic!("read of unmapped address {address:#x} returned {value:#x} instead of faulting");
}

/// Executes `ud2`, the architecturally undefined instruction; the #UD handler reports it.
pub fn invalid_opcode() -> ! {
    // SAFETY: `ud2` only raises #UD; it touches no memory or register.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    panic!("ud2 did not raise #UD");
}
