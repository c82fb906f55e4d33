//! x86_64: BIOS or UEFI boot through the `bootloader` crate, 16550 serial console, GDT/TSS with
//! IST stacks, IDT, the kernel's own 4-level page tables, Local APIC timer calibrated against
//! the PIT, and QEMU's isa-debug-exit for power-off.

mod apic;
pub mod console;
pub mod cpu;

/// Device-tree checks do not apply on a PC: its platform devices are not described by a
/// device tree (PCI functions are found by the kernel itself), so MMIO grants are taken as the
/// description gives them (still never in RAM, see `may_be_device_memory`).
pub mod dt {
    /// Always true here.
    pub fn mmio_described(_start: u64, _end: u64) -> bool {
        true
    }
}
mod entry;
mod gdt;
mod idt;
mod ioapic;
pub mod irq;
pub mod mm;
mod paging;
pub mod pci;
mod pic;
mod pit;
pub mod selftest;
pub mod time;
mod trap;

pub use paging::phys_to_virt;
pub use trap::{TrapFrame, set_entry_stack};
use x86_64::instructions::port::Port;

use super::ExitStatus;

/// I/O port of QEMU's `isa-debug-exit` device; writing `v` exits QEMU with status `2v+1`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Written to the debug-exit port for success: QEMU exits with 33.
pub const DEBUG_EXIT_SUCCESS: u8 = 0x10;
/// Written to the debug-exit port for failure: QEMU exits with 35.
pub const DEBUG_EXIT_FAILURE: u8 = 0x11;

/// Stops the machine. Under QEMU the exit status tells the harness how it went; on hardware
/// without the debug-exit device the CPU halts with interrupts off.
pub fn power_off(status: ExitStatus) -> ! {
    cpu::disable_interrupts();
    let code = match status {
        ExitStatus::Success => DEBUG_EXIT_SUCCESS,
        ExitStatus::Failure => DEBUG_EXIT_FAILURE,
    };
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit device when present, and unassigned on PC
    // hardware otherwise, where a write is ignored. Nothing else in the kernel uses it.
    unsafe { Port::<u8>::new(DEBUG_EXIT_PORT).write(code) };
    // SAFETY: 0x604 is the ACPI PM1a control port QEMU's firmware sets up; writing SLP_EN with
    // sleep type 5 powers the virtual machine off. On other machines the write is ignored.
    unsafe { Port::<u16>::new(0x604).write(0x2000) };
    loop {
        x86_64::instructions::hlt();
    }
}
