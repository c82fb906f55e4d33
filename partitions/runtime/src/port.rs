//! x86 port I/O, for I/O BARs and I/O port ranges the system description grants (the kernel
//! opens exactly those ports in the partition's I/O permission bitmap; any other port faults).
//! Not compiled on aarch64, which has no port space.

/// A window of granted I/O ports: `base .. base + len`. Accesses outside it are refused
/// (reads return all ones, writes are dropped), like a bus with nothing behind the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortWindow {
    base: u16,
    len: u16,
}

impl PortWindow {
    /// A window of `len` ports from `base`.
    ///
    /// # Safety
    /// The ports must belong to a device this partition owns (as `device_info` reports them):
    /// writing a device's registers can make it DMA into the partition's memory.
    pub unsafe fn new(base: u16, len: u16) -> Option<Self> {
        base.checked_add(len.checked_sub(1)?)?;
        Some(Self { base, len })
    }

    /// First port.
    pub fn base(&self) -> u16 {
        self.base
    }

    /// Number of ports.
    pub fn len(&self) -> u16 {
        self.len
    }

    /// Whether the window has no ports (never true for a constructed window).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn port(&self, offset: usize, width: usize) -> Option<u16> {
        let end = offset.checked_add(width)?;
        if end > usize::from(self.len) {
            return None;
        }
        Some(self.base + offset as u16)
    }

    /// Reads the byte at `offset`.
    pub fn read_u8(&self, offset: usize) -> u8 {
        match self.port(offset, 1) {
            // SAFETY: the port lies in the granted window (`new`'s contract); reading a port
            // has no effect on this partition's memory.
            Some(port) => unsafe { inb(port) },
            None => u8::MAX,
        }
    }

    /// Reads the 16-bit register at `offset`.
    pub fn read_u16(&self, offset: usize) -> u16 {
        match self.port(offset, 2) {
            // SAFETY: as in `read_u8`.
            Some(port) => unsafe { inw(port) },
            None => u16::MAX,
        }
    }

    /// Reads the 32-bit register at `offset`.
    pub fn read_u32(&self, offset: usize) -> u32 {
        match self.port(offset, 4) {
            // SAFETY: as in `read_u8`.
            Some(port) => unsafe { inl(port) },
            None => u32::MAX,
        }
    }

    /// Writes the byte at `offset`.
    pub fn write_u8(&self, offset: usize, value: u8) {
        if let Some(port) = self.port(offset, 1) {
            // SAFETY: the port lies in the granted window of a device this partition owns
            // (`new`'s contract).
            unsafe { outb(port, value) }
        }
    }

    /// Writes the 16-bit register at `offset`.
    pub fn write_u16(&self, offset: usize, value: u16) {
        if let Some(port) = self.port(offset, 2) {
            // SAFETY: as in `write_u8`.
            unsafe { outw(port, value) }
        }
    }

    /// Writes the 32-bit register at `offset`.
    pub fn write_u32(&self, offset: usize, value: u32) {
        if let Some(port) = self.port(offset, 4) {
            // SAFETY: as in `write_u8`.
            unsafe { outl(port, value) }
        }
    }
}

/// Reads a byte from `port`.
///
/// # Safety
/// `port` must be granted to this partition (otherwise the instruction faults) and reading it
/// must not have side effects the caller is not prepared for.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller vouches for the port. Not `nomem`: a register read (e.g. ISR status)
    // orders against the device's memory writes the caller reads next.
    unsafe {
        core::arch::asm!("in al, dx", out("al") value, in("dx") port, options(nostack, preserves_flags))
    };
    value
}

/// Reads 16 bits from `port`. Same contract as [`inb`].
///
/// # Safety
/// See [`inb`].
pub unsafe fn inw(port: u16) -> u16 {
    let value: u16;
    // SAFETY: as in `inb`.
    unsafe {
        core::arch::asm!("in ax, dx", out("ax") value, in("dx") port, options(nostack, preserves_flags))
    };
    value
}

/// Reads 32 bits from `port`. Same contract as [`inb`].
///
/// # Safety
/// See [`inb`].
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as in `inb`.
    unsafe {
        core::arch::asm!("in eax, dx", out("eax") value, in("dx") port, options(nostack, preserves_flags))
    };
    value
}

/// Writes a byte to `port`.
///
/// # Safety
/// `port` must belong to a device this partition owns: a device register write can start DMA
/// into memory.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port. Not `nomem`: the device may read or write memory
    // the compiler must consider touched (e.g. a virtqueue it was just told about).
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nostack, preserves_flags))
    };
}

/// Writes 16 bits to `port`. Same contract as [`outb`].
///
/// # Safety
/// See [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: as in `outb`.
    unsafe {
        core::arch::asm!("out dx, ax", in("dx") port, in("ax") value, options(nostack, preserves_flags))
    };
}

/// Writes 32 bits to `port`. Same contract as [`outb`].
///
/// # Safety
/// See [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: as in `outb`.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags))
    };
}
