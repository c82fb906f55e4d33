//! The I/O APIC: routes device interrupt lines (GSIs) to vectors on this CPU. Only the kernel
//! programs it; a partition learns of its device's interrupt as a notification.
//!
//! QEMU's `pc` machine has one I/O APIC at the standard address with 24 inputs and identity
//! mapping of ISA IRQs except the timer (ISA 0 on GSI 2), which the kernel does not use.

use spin::Mutex;

use super::paging::phys_to_virt;

/// Standard physical address of the first I/O APIC.
const BASE: u64 = 0xfec0_0000;
const REG_SELECT: usize = 0x00;
const REG_WINDOW: usize = 0x10;
const REG_VERSION: u32 = 0x01;
const REDIRECTION_BASE: u32 = 0x10;
const MASKED: u32 = 1 << 16;
const LEVEL: u32 = 1 << 15;
const ACTIVE_LOW: u32 = 1 << 13;

/// The select/window pair is shared state: one access at a time.
static LOCK: Mutex<()> = Mutex::new(());

fn read(reg: u32) -> u32 {
    let base = phys_to_virt(BASE);
    // SAFETY: the I/O APIC's registers lie below 4 GiB, which the direct map covers uncached;
    // the select register is written before the window is read, under LOCK.
    unsafe {
        core::ptr::write_volatile((base + REG_SELECT) as *mut u32, reg);
        core::ptr::read_volatile((base + REG_WINDOW) as *const u32)
    }
}

fn write(reg: u32, value: u32) {
    let base = phys_to_virt(BASE);
    // SAFETY: as in `read`.
    unsafe {
        core::ptr::write_volatile((base + REG_SELECT) as *mut u32, reg);
        core::ptr::write_volatile((base + REG_WINDOW) as *mut u32, value);
    }
}

/// Number of inputs (GSIs) the I/O APIC has.
pub fn inputs() -> u32 {
    let _guard = LOCK.lock();
    ((read(REG_VERSION) >> 16) & 0xff) + 1
}

/// Masks every input (boot: nothing routed until the kernel routes it).
pub fn mask_all() {
    for gsi in 0..inputs() {
        let _guard = LOCK.lock();
        write(REDIRECTION_BASE + 2 * gsi, MASKED);
        write(REDIRECTION_BASE + 2 * gsi + 1, 0);
    }
}

/// Routes `gsi` to `vector` on the boot CPU (APIC id 0), masked: level-triggered active-low
/// for PCI INTx, edge-triggered active-high for ISA devices.
pub fn route(gsi: u32, vector: u8, level: bool) {
    let _guard = LOCK.lock();
    let mut low = MASKED | u32::from(vector);
    if level {
        low |= LEVEL | ACTIVE_LOW;
    }
    write(REDIRECTION_BASE + 2 * gsi + 1, 0);
    write(REDIRECTION_BASE + 2 * gsi, low);
}

/// Masks or unmasks `gsi`.
pub fn set_masked(gsi: u32, masked: bool) {
    let _guard = LOCK.lock();
    let low = read(REDIRECTION_BASE + 2 * gsi);
    write(
        REDIRECTION_BASE + 2 * gsi,
        if masked { low | MASKED } else { low & !MASKED },
    );
}
