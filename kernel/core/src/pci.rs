//! PCI configuration space: what a partition that owns a function may read and write.
//!
//! The kernel owns the parts of a function's configuration that decide where it decodes
//! addresses and where its interrupts go, because those are what let one partition reach
//! another's memory or interrupts: the BARs and expansion ROM base (address decoding), the
//! interrupt line (routing), and the MSI and MSI-X capabilities (message address and data).
//! A partition reads everything (the kernel's answers for those registers are the truth) and
//! writes only what a driver needs: the command register's decode, bus-master and INTx-disable
//! bits, the status register's write-one-to-clear bits, cache-line size and latency timer, and
//! vendor-specific capabilities (virtio's configuration-access capability lives there, PCI
//! 3.0 §6.7 / VirtIO 1.2 §4.1.4.9). Everything else is refused: a register this module does
//! not know is not a register a driver needs to write.
//!
//! Only the 256 bytes of conventional configuration space are reachable (the kernel uses the
//! port mechanism #1 on x86, which addresses no more).

/// Bytes of configuration space a partition may address.
pub const CONFIG_SPACE_SIZE: u16 = 256;

/// Command register and the bits a partition may set or clear.
pub const COMMAND: u16 = 0x04;
/// I/O space, memory space, bus master (PCI 3.0 §6.2.2).
pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Interrupt disable: masks INTx.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const COMMAND_WRITABLE: u16 =
    COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
/// Status register (write one to clear its error bits).
pub const STATUS: u16 = 0x06;
/// Status bits with write-one-to-clear semantics: 8 and 11..15.
const STATUS_W1C: u16 = 0xf900;
pub const CACHE_LINE_SIZE: u16 = 0x0c;
pub const LATENCY_TIMER: u16 = 0x0d;
pub const HEADER_TYPE: u16 = 0x0e;
/// First base address register; six follow (type 0 header).
pub const BAR0: u16 = 0x10;
pub const CAPABILITIES_POINTER: u16 = 0x34;
pub const INTERRUPT_LINE: u16 = 0x3c;
pub const INTERRUPT_PIN: u16 = 0x3d;

/// Capability ids (PCI 3.0 Appendix H).
pub const CAP_MSI: u8 = 0x05;
pub const CAP_VENDOR: u8 = 0x09;
pub const CAP_MSIX: u8 = 0x11;

/// Most capabilities the kernel records per function.
pub const MAX_CAPABILITIES: usize = 16;

/// A capability found in a function's list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capability {
    pub id: u8,
    pub offset: u8,
    /// Bytes the capability occupies (its structure's length as far as known; vendor
    /// capabilities carry theirs in byte 2).
    pub length: u8,
}

/// A function's capability list as read at boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub list: [Capability; MAX_CAPABILITIES],
    pub count: usize,
}

impl Capabilities {
    /// Walks the capability list with `read8` (a configuration-space byte reader). The walk is
    /// bounded (a looping list ends it) and ignores pointers into the header.
    pub fn read(mut read8: impl FnMut(u16) -> u8) -> Self {
        let mut caps = Capabilities::default();
        let status = u16::from(read8(STATUS)) | u16::from(read8(STATUS + 1)) << 8;
        if status & (1 << 4) == 0 {
            return caps;
        }
        let mut at = read8(CAPABILITIES_POINTER) & 0xfc;
        let mut steps = 0;
        while at >= 0x40 && steps < 48 && caps.count < MAX_CAPABILITIES {
            steps += 1;
            let id = read8(at.into());
            let length = match id {
                CAP_MSI => {
                    let control = u16::from(read8(u16::from(at) + 2))
                        | u16::from(read8(u16::from(at) + 3)) << 8;
                    // 64-bit address adds 4 bytes, per-vector masking 8 more (PCI 3.0 §6.8.1).
                    10 + if control & (1 << 7) != 0 { 4 } else { 0 }
                        + if control & (1 << 8) != 0 { 10 } else { 0 }
                }
                CAP_MSIX => 12,
                CAP_VENDOR => read8(u16::from(at) + 2).max(3),
                _ => 2,
            };
            caps.list[caps.count] = Capability {
                id,
                offset: at,
                length,
            };
            caps.count += 1;
            at = read8(u16::from(at) + 1) & 0xfc;
        }
        caps
    }

    /// The first capability with `id`.
    pub fn find(&self, id: u8) -> Option<Capability> {
        self.list[..self.count].iter().copied().find(|c| c.id == id)
    }

    fn containing(&self, offset: u16, width: u16) -> Option<Capability> {
        self.list[..self.count].iter().copied().find(|c| {
            let start = u16::from(c.offset);
            offset < start + u16::from(c.length) && start < offset + width
        })
    }
}

/// Why a configuration access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Width not 1, 2 or 4, offset not aligned to it, or past the 256 bytes.
    BadAccess,
    /// The register is the kernel's (BARs, ROM, interrupt routing, MSI/MSI-X, or unknown).
    KernelOwned,
}

/// The `width`-byte field at `offset` of the configuration dword `dword` read from
/// `offset & !3` (configuration mechanisms move whole dwords).
pub fn field_of(dword: u32, offset: u16, width: u16) -> u32 {
    let shift = 8 * u32::from(offset & 3);
    match width {
        1 => (dword >> shift) & 0xff,
        2 => (dword >> shift) & 0xffff,
        _ => dword,
    }
}

/// The dword to write at `offset & !3` so that the `width`-byte field at `offset` becomes
/// `value` and the rest of `dword` (the dword as read) stays.
pub fn merge_field(dword: u32, offset: u16, width: u16, value: u32) -> u32 {
    if width == 4 {
        return value;
    }
    let shift = 8 * u32::from(offset & 3);
    let mask = if width == 1 { 0xff } else { 0xffff } << shift;
    (dword & !mask) | ((value << shift) & mask)
}

/// Checks a read of `width` bytes at `offset`.
pub fn check_read(offset: u16, width: u16) -> Result<(), Refused> {
    check_shape(offset, width)
}

fn check_shape(offset: u16, width: u16) -> Result<(), Refused> {
    if !matches!(width, 1 | 2 | 4)
        || !offset.is_multiple_of(width)
        || offset + width > CONFIG_SPACE_SIZE
    {
        return Err(Refused::BadAccess);
    }
    Ok(())
}

/// What the kernel writes for a partition's permitted write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    pub offset: u16,
    pub width: u16,
    pub value: u32,
}

/// Checks a write of `value` (`width` bytes at `offset`) against the mediation rules; `current`
/// reads the function's current 16-bit command register, so that the bits a partition may not
/// change keep their value. Returns the write to perform.
pub fn check_write(
    caps: &Capabilities,
    offset: u16,
    width: u16,
    value: u32,
    current_command: impl FnOnce() -> u16,
) -> Result<Write, Refused> {
    check_shape(offset, width)?;
    let value = if width == 4 {
        value
    } else {
        value & ((1u32 << (8 * width)) - 1)
    };
    match (offset, width) {
        (COMMAND, 2) => {
            let keep = current_command() & !COMMAND_WRITABLE;
            let command = keep | (value as u16 & COMMAND_WRITABLE);
            Ok(Write {
                offset,
                width,
                value: command.into(),
            })
        }
        (COMMAND, 4) => {
            // Command and status together: mediate both halves.
            let keep = current_command() & !COMMAND_WRITABLE;
            let command = keep | (value as u16 & COMMAND_WRITABLE);
            let status = (value >> 16) as u16 & STATUS_W1C;
            Ok(Write {
                offset,
                width,
                value: u32::from(command) | u32::from(status) << 16,
            })
        }
        (STATUS, 2) => Ok(Write {
            offset,
            width,
            value: value & u32::from(STATUS_W1C),
        }),
        (CACHE_LINE_SIZE | LATENCY_TIMER, 1) => Ok(Write {
            offset,
            width,
            value,
        }),
        _ => match caps.containing(offset, width) {
            // Writes must stay inside the vendor capability, past its id/next/length header.
            Some(c)
                if c.id == CAP_VENDOR
                    && offset >= u16::from(c.offset) + 3
                    && offset + width <= u16::from(c.offset) + u16::from(c.length) =>
            {
                Ok(Write {
                    offset,
                    width,
                    value,
                })
            }
            _ => Err(Refused::KernelOwned),
        },
    }
}

/// A decoded base address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    /// Not implemented (size 0).
    None,
    /// I/O ports `base .. base + size`.
    Io { base: u16, size: u16 },
    /// Memory at `base .. base + size`; a 64-bit BAR also consumes the next register.
    Memory {
        base: u64,
        size: u64,
        is_64bit: bool,
        prefetchable: bool,
    },
}

/// Decodes BAR `low` (and `high`, the next register, for a 64-bit memory BAR) from its value
/// and the value read back after writing all ones (`low_mask`, `high_mask`) (PCI 3.0 §6.2.5.1).
pub fn decode_bar(low: u32, low_mask: u32, high: u32, high_mask: u32) -> Bar {
    if low & 1 == 1 {
        let mask = low_mask & 0xffff_fffc;
        if mask == 0 {
            return Bar::None;
        }
        let size = (!mask).wrapping_add(1) & 0xffff;
        return Bar::Io {
            base: (low & 0xfffc) as u16,
            size: if size == 0 { 0 } else { size as u16 },
        };
    }
    let is_64bit = (low >> 1) & 3 == 2;
    let prefetchable = low & 8 != 0;
    let (base, size) = if is_64bit {
        let mask = u64::from(high_mask) << 32 | u64::from(low_mask & 0xffff_fff0);
        (
            u64::from(high) << 32 | u64::from(low & 0xffff_fff0),
            (!mask).wrapping_add(1),
        )
    } else {
        let mask = low_mask & 0xffff_fff0;
        (
            u64::from(low & 0xffff_fff0),
            u64::from((!mask).wrapping_add(1)),
        )
    };
    if size == 0 || (!is_64bit && low_mask & 0xffff_fff0 == 0) {
        return Bar::None;
    }
    Bar::Memory {
        base,
        size,
        is_64bit,
        prefetchable,
    }
}

/// Where a function's MSI-X table and pending-bit array are: (BAR, offset, bytes) each
/// (PCI 3.0 §6.8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixLayout {
    pub table_size: u16,
    pub table: (u8, u32, u32),
    pub pba: (u8, u32, u32),
}

impl MsixLayout {
    /// Decodes the capability's message control, table and PBA registers.
    pub fn decode(control: u16, table: u32, pba: u32) -> Self {
        let table_size = (control & 0x7ff) + 1;
        MsixLayout {
            table_size,
            table: ((table & 7) as u8, table & !7, u32::from(table_size) * 16),
            pba: (
                (pba & 7) as u8,
                pba & !7,
                u32::from(table_size).div_ceil(64) * 8,
            ),
        }
    }

    /// Whether page `page_offset` (a 4 KiB-aligned offset into BAR `bar`) holds the table or
    /// the PBA: such a page is the kernel's.
    pub fn covers_page(&self, bar: u8, page_offset: u64) -> bool {
        [self.table, self.pba].iter().any(|&(b, off, len)| {
            let start = u64::from(off) & !0xfff;
            let end = (u64::from(off) + u64::from(len)).next_multiple_of(4096);
            b == bar && page_offset >= start && page_offset < end
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config space with a vendor capability at 0x40 (length 16), then MSI-X at 0x50.
    fn sample() -> [u8; 256] {
        let mut c = [0u8; 256];
        c[0..4].copy_from_slice(&[0xf4, 0x1a, 0x01, 0x10]);
        c[STATUS as usize] = 1 << 4;
        c[CAPABILITIES_POINTER as usize] = 0x40;
        c[0x40..0x43].copy_from_slice(&[CAP_VENDOR, 0x50, 16]);
        c[0x50..0x54].copy_from_slice(&[CAP_MSIX, 0x00, 0x01, 0x00]);
        c
    }

    fn caps(c: &[u8; 256]) -> Capabilities {
        Capabilities::read(|at| c[at as usize])
    }

    #[test]
    fn walks_the_capability_list() {
        let c = sample();
        let caps = caps(&c);
        assert_eq!(caps.count, 2);
        assert_eq!(
            caps.find(CAP_VENDOR),
            Some(Capability {
                id: CAP_VENDOR,
                offset: 0x40,
                length: 16
            })
        );
        assert_eq!(caps.find(CAP_MSIX).map(|c| c.offset), Some(0x50));
        assert_eq!(caps.find(CAP_MSI), None);
    }

    #[test]
    fn a_looping_capability_list_ends() {
        let mut c = sample();
        c[0x51] = 0x40; // MSI-X points back at the vendor capability
        let caps = caps(&c);
        assert_eq!(caps.count, MAX_CAPABILITIES);
    }

    #[test]
    fn reads_are_checked_for_shape_only() {
        assert_eq!(check_read(0x10, 4), Ok(()));
        assert_eq!(check_read(0xfc, 4), Ok(()));
        assert_eq!(check_read(0xfe, 4), Err(Refused::BadAccess));
        assert_eq!(check_read(0x11, 2), Err(Refused::BadAccess));
        assert_eq!(check_read(0x10, 3), Err(Refused::BadAccess));
        assert_eq!(check_read(0x100, 1), Err(Refused::BadAccess));
    }

    #[test]
    fn bars_rom_routing_and_msix_are_the_kernels() {
        let c = sample();
        let caps = caps(&c);
        let cmd = || 0u16;
        for bar in 0..6 {
            assert_eq!(
                check_write(&caps, BAR0 + 4 * bar, 4, 0xffff_ffff, cmd),
                Err(Refused::KernelOwned)
            );
        }
        assert_eq!(
            check_write(&caps, 0x30, 4, 0, cmd),
            Err(Refused::KernelOwned)
        );
        assert_eq!(
            check_write(&caps, INTERRUPT_LINE, 1, 5, cmd),
            Err(Refused::KernelOwned)
        );
        // MSI-X message control (enable / function mask).
        assert_eq!(
            check_write(&caps, 0x52, 2, 0x8000, cmd),
            Err(Refused::KernelOwned)
        );
        // The vendor capability's own header is not writable, its body is.
        assert_eq!(
            check_write(&caps, 0x40, 2, 0, cmd),
            Err(Refused::KernelOwned)
        );
        assert!(check_write(&caps, 0x44, 4, 7, cmd).is_ok());
        // A write straddling past the vendor capability's end is refused.
        assert_eq!(check_write(&caps, 0x4e, 4, 0, cmd), Err(Refused::BadAccess));
        assert_eq!(
            check_write(&caps, 0x4c, 4, 0, cmd),
            Ok(Write {
                offset: 0x4c,
                width: 4,
                value: 0
            })
        );
    }

    #[test]
    fn the_command_register_keeps_the_kernels_bits() {
        let caps = caps(&sample());
        // SERR# enable (bit 8) set by the kernel stays set; bus master requested is granted.
        let w = check_write(&caps, COMMAND, 2, 0xffff, || 1 << 8).unwrap();
        assert_eq!(w.value, u32::from(COMMAND_WRITABLE | 1 << 8));
        let w = check_write(&caps, COMMAND, 2, 0, || 1 << 8 | COMMAND_MEMORY).unwrap();
        assert_eq!(w.value, 1 << 8);
        // Status: only the write-one-to-clear bits pass.
        let w = check_write(&caps, STATUS, 2, 0xffff, || 0).unwrap();
        assert_eq!(w.value, u32::from(STATUS_W1C));
        let w = check_write(&caps, COMMAND, 4, 0xffff_ffff, || 0).unwrap();
        assert_eq!(
            w.value,
            u32::from(COMMAND_WRITABLE) | u32::from(STATUS_W1C) << 16
        );
    }

    #[test]
    fn fields_of_a_dword_are_read_and_merged() {
        let dword = 0x1001_1af4;
        assert_eq!(field_of(dword, 0, 2), 0x1af4);
        assert_eq!(field_of(dword, 2, 2), 0x1001);
        assert_eq!(field_of(dword, 3, 1), 0x10);
        assert_eq!(field_of(dword, 0, 4), dword);
        assert_eq!(merge_field(dword, 2, 2, 0xbeef), 0xbeef_1af4);
        assert_eq!(merge_field(dword, 1, 1, 0x1ab), 0x1001_abf4);
        assert_eq!(merge_field(dword, 0, 4, 7), 7);
    }

    #[test]
    fn decodes_bars() {
        assert_eq!(
            decode_bar(0xc041, 0xffff_ffc1, 0, 0),
            Bar::Io {
                base: 0xc040,
                size: 64
            }
        );
        assert_eq!(
            decode_bar(0xfebd_1000, 0xffff_f000, 0, 0),
            Bar::Memory {
                base: 0xfebd_1000,
                size: 4096,
                is_64bit: false,
                prefetchable: false
            }
        );
        assert_eq!(
            decode_bar(0xfe00_000c, 0xffff_c00c, 0x1, 0xffff_ffff),
            Bar::Memory {
                base: 0x1_fe00_0000,
                size: 0x4000,
                is_64bit: true,
                prefetchable: true
            }
        );
        assert_eq!(decode_bar(0, 0, 0, 0), Bar::None);
        assert_eq!(decode_bar(1, 1, 0, 0), Bar::None);
    }

    #[test]
    fn msix_pages_are_found() {
        // 2 vectors: table at BAR1+0, PBA at BAR1+0x800.
        let m = MsixLayout::decode(1, 0x0000_0001, 0x0000_0801);
        assert_eq!(m.table_size, 2);
        assert_eq!(m.table, (1, 0, 32));
        assert_eq!(m.pba, (1, 0x800, 8));
        assert!(m.covers_page(1, 0));
        assert!(!m.covers_page(1, 0x1000));
        assert!(!m.covers_page(4, 0));
    }
}
