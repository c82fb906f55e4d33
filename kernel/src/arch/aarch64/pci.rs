//! PCI configuration space on aarch64: not reached yet (the virt machine's ECAM window is not
//! mapped), so no PCI function can be granted on this architecture for now; the kernel says so
//! at boot for each PCI device of the image.

/// A function's location: `bus << 8 | device << 3 | function`.
pub type Bdf = u16;

/// Whether configuration space can be reached on this machine.
pub fn available() -> bool {
    false
}

/// Reads as an absent function (all ones).
pub fn read(_bdf: Bdf, _offset: u16, _width: u16) -> u32 {
    u32::MAX
}

/// Has no effect.
pub fn write(_bdf: Bdf, _offset: u16, _width: u16, _value: u32) {}
