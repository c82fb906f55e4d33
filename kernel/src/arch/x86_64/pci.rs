//! PCI configuration space through configuration mechanism #1 (ports 0xcf8/0xcfc), which
//! every PC chipset QEMU emulates provides. It reaches the 256 bytes of conventional space.

use spin::Mutex;
use x86_64::instructions::port::Port;

const ADDRESS_PORT: u16 = 0xcf8;
const DATA_PORT: u16 = 0xcfc;

/// The address/data pair is one shared register set: an access is the two port operations
/// together, never interleaved with another.
static LOCK: Mutex<()> = Mutex::new(());

/// A function's location: `bus << 8 | device << 3 | function`.
pub type Bdf = u16;

fn address(bdf: Bdf, offset: u16) -> u32 {
    0x8000_0000 | u32::from(bdf) << 8 | u32::from(offset & 0xfc)
}

/// Reads `width` (1, 2, 4) bytes at `offset` (< 256, aligned to `width`).
pub fn read(bdf: Bdf, offset: u16, width: u16) -> u32 {
    let _guard = LOCK.lock();
    // SAFETY: 0xcf8/0xcfc are the chipset's configuration ports, used by nothing else in the
    // kernel and never granted to a partition (the I/O bitmap denies them); an access to an
    // absent function reads all ones and has no effect.
    let dword = unsafe {
        Port::<u32>::new(ADDRESS_PORT).write(address(bdf, offset));
        Port::<u32>::new(DATA_PORT).read()
    };
    kcore::pci::field_of(dword, offset, width)
}

/// Writes `width` (1, 2, 4) bytes at `offset` (< 256, aligned to `width`); narrower writes
/// read, merge and write back the containing dword.
pub fn write(bdf: Bdf, offset: u16, width: u16, value: u32) {
    let merged = if width == 4 {
        value
    } else {
        kcore::pci::merge_field(read(bdf, offset & 0xfc, 4), offset, width, value)
    };
    let _guard = LOCK.lock();
    // SAFETY: as in `read`: the configuration ports, which only this module touches. What the
    // value makes the function do is policy, not memory safety: the kernel's own set-up, or a
    // partition's write that kcore::pci mediated.
    unsafe {
        Port::<u32>::new(ADDRESS_PORT).write(address(bdf, offset));
        Port::<u32>::new(DATA_PORT).write(merged);
    }
}

/// Whether configuration space can be reached on this machine (mechanism #1: always on a PC).
pub fn available() -> bool {
    true
}

/// Whether I/O BARs can be granted (port I/O exists).
pub const PORT_IO: bool = true;

/// The firmware (BIOS or UEFI) has assigned every BAR already.
pub fn assign_bars(_bdf: Bdf) {}

/// The I/O APIC input of `bdf`'s INTx pin, as the firmware routed it (the interrupt-line
/// register; PC firmware maps PCI interrupt links to ISA IRQs, which are GSIs 1:1 here).
pub fn intx_irq(bdf: Bdf) -> Option<u32> {
    let pin = read(bdf, 0x3d, 1);
    let line = read(bdf, 0x3c, 1);
    (pin != 0 && line != 0 && line != 0xff).then_some(line)
}
