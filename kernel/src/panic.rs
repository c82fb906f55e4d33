//! What happens when the kernel itself is wrong: report, then stop the machine.

use core::panic::PanicInfo;

use crate::arch::{self, ExitStatus};

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    arch::cpu::disable_interrupts();
    crate::klog::emergency(format_args!("KERNEL PANIC: {info}"));
    arch::power_off(ExitStatus::Failure)
}
