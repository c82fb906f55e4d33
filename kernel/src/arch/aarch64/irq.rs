//! Device interrupts: shared peripheral interrupts of the GIC, each the interrupt line of one
//! device. The kernel configures and masks them; partitions only see notification bits. MSIs
//! (GICv2m / ITS) are not supported yet.

use super::gic;
use crate::arch::DeviceMemory;

/// What raised a device interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqSource {
    /// An interrupt line: a GIC INTID (an SPI).
    Line(u32),
    /// An MSI message slot (never raised on aarch64 yet).
    #[expect(
        dead_code,
        reason = "the portable code matches on it; no MSI controller yet"
    )]
    Msi(u16),
}

/// Configures SPI `irq` (32..1020), disabled; false for an id that is not an SPI.
pub fn route_line(irq: u32, level: bool) -> bool {
    if !(gic::FIRST_SPI..1020).contains(&irq) {
        return false;
    }
    gic::configure_spi(irq, !level);
    true
}

/// Masks or unmasks SPI `irq` (configured before).
pub fn set_line_masked(irq: u32, masked: bool) {
    if (gic::FIRST_SPI..1020).contains(&irq) {
        gic::set_spi_enabled(irq, !masked);
    }
}

/// The GIC keeps an interrupt pending while it is disabled, so every line is masked from
/// delivery until its owner acknowledges it, without losing an edge.
pub fn line_needs_mask(_level: bool) -> bool {
    true
}

/// No MSI controller is driven yet.
pub fn msi_message(_slot: u16) -> Option<(u64, u32)> {
    None
}

/// No MSI controller is driven yet, so no MSI-X table entry is ever programmed (the same
/// checked signature as on x86_64, where the `DeviceMemory` proves the table is no RAM).
pub fn program_msix(_bar: &DeviceMemory, _offset: u64, _index: u16, _slot: u16) -> bool {
    false
}

/// Device lines on QEMU's virt (virtio-mmio, PL011, PL031) stay asserted until the device is
/// serviced: configured level-triggered.
pub const PLATFORM_LINES_LEVEL: bool = true;
