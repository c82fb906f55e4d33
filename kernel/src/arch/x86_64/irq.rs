//! Device interrupts: I/O APIC lines and MSI/MSI-X messages, each on a vector of its own, so
//! the vector alone says which source fired. The kernel programs all of it; partitions only
//! ever see notification bits.

use super::{apic, ioapic};
use crate::arch::DeviceMemory;

/// GSI `g` arrives on vector `LINE_VECTOR_BASE + g`.
pub const LINE_VECTOR_BASE: u8 = 0x40;
/// Lines the vector layout has room for (QEMU's I/O APIC has 24).
pub const MAX_LINES: u32 = 0x20;
/// MSI slot `s` arrives on vector `MSI_VECTOR_BASE + s`.
pub const MSI_VECTOR_BASE: u8 = 0x60;
/// MSI/MSI-X vectors the kernel can hand out.
pub const MAX_MSI: u16 = 0x80;
/// One past the last device vector.
pub const DEVICE_VECTOR_END: u8 = MSI_VECTOR_BASE + MAX_MSI as u8;

/// What raised a device interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqSource {
    /// An interrupt line (x86: a GSI of the I/O APIC).
    Line(u32),
    /// An MSI/MSI-X message slot.
    Msi(u16),
}

/// Masks every line; devices are routed one by one as the system image grants them.
pub fn init() {
    ioapic::mask_all();
}

/// The source behind device vector `vector`.
pub fn source_of(vector: u8) -> Option<IrqSource> {
    match vector {
        v if (LINE_VECTOR_BASE..MSI_VECTOR_BASE).contains(&v) => {
            Some(IrqSource::Line(u32::from(v - LINE_VECTOR_BASE)))
        }
        v if (MSI_VECTOR_BASE..DEVICE_VECTOR_END).contains(&v) => {
            Some(IrqSource::Msi(u16::from(v - MSI_VECTOR_BASE)))
        }
        _ => None,
    }
}

/// Routes line `irq` to its vector, masked; `level` for PCI INTx (level, active-low), else
/// edge/active-high. False if the line does not exist.
pub fn route_line(irq: u32, level: bool) -> bool {
    if irq >= MAX_LINES.min(ioapic::inputs()) {
        return false;
    }
    ioapic::route(irq, LINE_VECTOR_BASE + irq as u8, level);
    true
}

/// Masks or unmasks line `irq` (routed before).
pub fn set_line_masked(irq: u32, masked: bool) {
    if irq < MAX_LINES.min(ioapic::inputs()) {
        ioapic::set_masked(irq, masked);
    }
}

/// Whether a line must be masked from delivery until its owner acknowledges it: level-
/// triggered lines would fire again at once; edge-triggered ones are not latched while masked
/// on the I/O APIC, so those stay open.
pub fn line_needs_mask(level: bool) -> bool {
    level
}

/// The message address and data that make a device raise MSI slot `slot` on this CPU (Intel
/// SDM vol. 3 §11.11: fixed delivery, physical destination APIC id 0, edge).
pub fn msi_message(slot: u16) -> Option<(u64, u32)> {
    (slot < MAX_MSI).then(|| (0xfee0_0000, u32::from(MSI_VECTOR_BASE) + u32::from(slot)))
}

/// Ends the interrupt at the Local APIC.
pub fn end_of_interrupt() {
    apic::end_of_interrupt();
}

/// Programs MSI-X table entry `index` of the table `offset` bytes into `bar` (the memory BAR
/// that holds it) so the function raises `slot`, unmasked. False if the entry is not inside
/// the BAR, is misaligned, lies where the kernel does not map device memory (above 4 GiB), or
/// `slot` has no message.
///
/// The checked wrapper of [`program_msix_entry`]: `bar` being a [`DeviceMemory`] is what makes
/// the write land on device registers and never on RAM. That the table's pages are not also
/// mapped into the owner (so that only the kernel writes them) is the caller's policy
/// (`exec::devices` skips them), a matter of isolation rather than of the kernel's memory.
pub fn program_msix(bar: &DeviceMemory, offset: u64, index: u16, slot: u16) -> bool {
    let Some(entry) = offset
        .checked_add(16 * u64::from(index))
        .and_then(|at| bar.at(at, 16))
    else {
        return false;
    };
    if !entry.is_multiple_of(16) || entry + 16 > 1 << 32 || msi_message(slot).is_none() {
        return false;
    }
    // SAFETY: `entry` is 16-byte aligned, below 4 GiB and inside `bar`, which is device
    // memory (no RAM the kernel knows of: `DeviceMemory::new`), so the write reaches the
    // function's table (or nothing) and no memory the kernel uses.
    unsafe { program_msix_entry(entry, slot) }
}

/// Writes the MSI-X table entry at physical `entry` (16 bytes: address low, high, data,
/// vector control) so the function raises `slot`, unmasked. False if `slot` has no message.
///
/// # Safety
/// `entry` must be a 16-byte aligned MSI-X table entry in a memory BAR of a PCI function,
/// below 4 GiB (where the direct map covers device memory uncached); the 16 bytes must be
/// device registers, not RAM.
unsafe fn program_msix_entry(entry: u64, slot: u16) -> bool {
    let Some((address, data)) = msi_message(slot) else {
        return false;
    };
    let base = super::phys_to_virt(entry);
    // SAFETY: `entry` is an aligned MSI-X table entry in device memory below 4 GiB (the
    // caller's promise), which the direct map covers uncached (PCI 3.0 §6.8.2 requires dword
    // accesses, which these are); no Rust reference points at device registers.
    unsafe {
        core::ptr::write_volatile(base as *mut u32, address as u32);
        core::ptr::write_volatile((base + 4) as *mut u32, (address >> 32) as u32);
        core::ptr::write_volatile((base + 8) as *mut u32, data);
        core::ptr::write_volatile((base + 12) as *mut u32, 0);
    }
    true
}

/// Lines on a PC that are not PCI (ISA devices: the serial ports) are edge-triggered.
pub const PLATFORM_LINES_LEVEL: bool = false;
