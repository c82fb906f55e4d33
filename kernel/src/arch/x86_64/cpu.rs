//! Interrupt masking and idling.

/// Lets interrupts in.
pub fn enable_interrupts() {
    x86_64::instructions::interrupts::enable();
}

/// Masks interrupts.
pub fn disable_interrupts() {
    x86_64::instructions::interrupts::disable();
}

/// Sleeps until the next interrupt, with no window in which a wake-up could be lost:
/// `sti; hlt` keeps interrupts masked until after `hlt` has begun.
pub fn wait_for_interrupt() {
    x86_64::instructions::interrupts::enable_and_hlt();
}
