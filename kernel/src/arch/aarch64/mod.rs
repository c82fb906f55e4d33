//! aarch64 on QEMU `virt` (and, later, boards): a boot stub with a Linux Image header, the
//! linear map in TTBR1, exception vectors, PL011 console, GICv2, the EL1 physical timer, and
//! PSCI or semihosting for power-off. Devices are found in the device tree.

pub mod console;
pub mod cpu;
pub mod dt;
mod entry;
mod exceptions;
mod gic;
pub mod irq;
pub mod mm;
mod paging;
pub mod pci;
mod pt;
pub mod selftest;
pub mod time;

pub use exceptions::TrapFrame;

/// Nothing to set: an exception from EL0 saves the registers at SP_EL1, which every return to
/// EL0 leaves at the end of the context it restored, the current partition's (see
/// `exceptions`).
pub fn set_entry_stack(_top: u64) {}

use core::sync::atomic::{AtomicU8, Ordering};

use super::ExitStatus;

core::arch::global_asm!(include_str!("boot.s"));

/// Where the boot stub maps physical memory (the first 4 GiB) in the upper half.
pub const PHYS_OFFSET: u64 = 0xffff_0000_0000_0000;
/// Physical memory the linear map covers.
pub const LINEAR_MAP_END: u64 = 4 << 30;

/// The virtual address of physical address `phys` in the linear map.
pub fn phys_to_virt(phys: u64) -> usize {
    (PHYS_OFFSET + phys) as usize
}

/// How to power off: chosen at boot from the device tree and command line.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum PowerMethod {
    /// PSCI through `hvc` (QEMU's default without EL2).
    PsciHvc = 0,
    /// PSCI through `smc`.
    PsciSmc = 1,
    /// Semihosting `SYS_EXIT`, which can report an exit status (enabled with `semihosting`).
    Semihosting = 2,
}

static POWER_METHOD: AtomicU8 = AtomicU8::new(PowerMethod::PsciHvc as u8);

const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
const SEMIHOSTING_SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// Stops the machine. With semihosting QEMU exits with status 0 or 1; with PSCI it exits 0
/// whatever happened, so tests rely on semihosting.
pub fn power_off(status: ExitStatus) -> ! {
    cpu::disable_interrupts();
    let code: u64 = match status {
        ExitStatus::Success => 0,
        ExitStatus::Failure => 1,
    };
    match POWER_METHOD.load(Ordering::Relaxed) {
        2 => {
            let block = [ADP_STOPPED_APPLICATION_EXIT, code];
            // SAFETY: semihosting was enabled on the command line, which xtask only does when
            // it starts QEMU with semihosting on; SYS_EXIT reads the two-word block x1 points
            // to (valid for the duration of the call) and does not return.
            unsafe {
                core::arch::asm!("hlt #0xf000", in("x0") SEMIHOSTING_SYS_EXIT, in("x1") block.as_ptr(), options(nostack));
            }
        }
        // SAFETY: PSCI SYSTEM_OFF through the conduit the device tree names; it takes no
        // memory arguments and does not return when PSCI is present.
        1 => unsafe { core::arch::asm!("smc #0", in("x0") PSCI_SYSTEM_OFF, options(nostack)) },
        // SAFETY: as above, through hvc.
        _ => unsafe { core::arch::asm!("hvc #0", in("x0") PSCI_SYSTEM_OFF, options(nostack)) },
    }
    loop {
        aarch64_cpu::asm::wfe();
    }
}
