//! PCI configuration space on aarch64 through the ECAM window of the generic host bridge the
//! device tree describes (QEMU virt's PCIe host). Without firmware nobody assigns BARs, so the
//! kernel assigns the BARs of the functions it grants from the bridge's 32-bit memory window.
//! There is no port I/O on aarch64: I/O BARs are left unassigned and not granted.

use kcore::pcihost::EcamHost;
use spin::{Mutex, Once};

use super::phys_to_virt;

/// A function's location: `bus << 8 | device << 3 | function`.
pub type Bdf = u16;

/// Whether I/O BARs can be granted (port I/O exists): not on aarch64.
pub const PORT_IO: bool = false;

static HOST: Once<EcamHost> = Once::new();
/// The next free CPU address of the 32-bit memory window, and its end.
static MEM32: Mutex<(u64, u64)> = Mutex::new((0, 0));

/// Records the host bridge. A bridge whose memory window translates addresses (PCI address
/// != CPU address) is not used.
///
/// # Safety
/// `host.ecam` must be the host bridge's configuration window, already mapped as device
/// memory in the kernel's tables, and its 32-bit memory window must be bus addresses no RAM
/// answers to: every later configuration access goes to the first, BARs are put in the second.
pub unsafe fn init(host: EcamHost) {
    let Some((pci, cpu, size)) = host.mem32 else {
        warn!("PCIe host bridge without a 32-bit memory window: PCI devices not granted");
        return;
    };
    if pci != cpu {
        warn!("PCIe host bridge translates its memory window: PCI devices not granted");
        return;
    }
    *MEM32.lock() = (cpu, cpu + size);
    HOST.call_once(|| host);
    info!(
        "PCIe host bridge: ECAM {:#x} ({} buses), memory window {cpu:#x}..{:#x}",
        host.ecam.0,
        u32::from(host.bus_end) - u32::from(host.bus_start) + 1,
        cpu + size
    );
}

/// Whether configuration space can be reached on this machine.
pub fn available() -> bool {
    HOST.get().is_some()
}

/// The linear-map address of `offset` in `bdf`'s configuration space.
fn address(bdf: Bdf, offset: u16) -> Option<usize> {
    let host = HOST.get()?;
    let at = host.config_offset(bdf)?;
    Some(phys_to_virt(host.ecam.0 + at + u64::from(offset & 0xffc)))
}

/// Reads `width` (1, 2, 4) bytes at `offset` (< 4096, aligned to `width`); all ones for a
/// function the bridge does not have.
pub fn read(bdf: Bdf, offset: u16, width: u16) -> u32 {
    let Some(at) = address(bdf, offset) else {
        return u32::MAX;
    };
    // SAFETY: `at` is a 32-bit aligned register in the ECAM window, which the kernel's tables
    // map as device memory (`init`'s caller's promise); configuration reads have no side
    // effects.
    let dword = unsafe { core::ptr::read_volatile(at as *const u32) };
    kcore::pci::field_of(dword, offset, width)
}

/// Writes `width` (1, 2, 4) bytes at `offset`; narrower writes merge into the dword.
pub fn write(bdf: Bdf, offset: u16, width: u16, value: u32) {
    let Some(at) = address(bdf, offset) else {
        return;
    };
    let merged = if width == 4 {
        value
    } else {
        kcore::pci::merge_field(read(bdf, offset & !3, 4), offset, width, value)
    };
    // SAFETY: as in `read`: a register of the ECAM window, which only this module touches.
    // What the value makes the function do is policy, not memory safety: the kernel's own
    // set-up, or a partition's write that kcore::pci mediated.
    unsafe { core::ptr::write_volatile(at as *mut u32, merged) };
}

/// Gives each memory BAR of `bdf` an address in the bridge's window (naturally aligned, below
/// 4 GiB also for 64-bit BARs); I/O BARs stay unassigned.
pub fn assign_bars(bdf: Bdf) {
    let mut bar = 0;
    while bar < 6 {
        let at = 0x10 + 4 * bar as u16;
        let original = read(bdf, at, 4);
        write(bdf, at, 4, u32::MAX);
        let mask = read(bdf, at, 4);
        let is_io = original & 1 == 1;
        let is_64 = !is_io && (original >> 1) & 3 == 2;
        let size = u64::from((!(mask & 0xffff_fff0)).wrapping_add(1));
        if is_io || mask & 0xffff_fff0 == 0 || size == 0 {
            write(bdf, at, 4, if is_io { 0 } else { original });
            bar += if is_64 { 2 } else { 1 };
            continue;
        }
        let mut window = MEM32.lock();
        let base = window.0.next_multiple_of(size.max(4096));
        if base + size > window.1 {
            warn!("PCI {bdf:#06x}: BAR {bar} ({size:#x} bytes) does not fit the memory window");
            write(bdf, at, 4, original);
        } else {
            window.0 = base + size;
            write(bdf, at, 4, base as u32 | (original & 0xf));
            if is_64 {
                write(bdf, at + 4, 4, 0);
            }
        }
        bar += if is_64 { 2 } else { 1 };
    }
}

/// The GIC interrupt id of `bdf`'s INTx pin, through the bridge's interrupt map.
pub fn intx_irq(bdf: Bdf) -> Option<u32> {
    let pin = read(bdf, 0x3d, 1) as u8;
    if pin == 0 || pin > 4 {
        return None;
    }
    HOST.get()?.intx_intid(bdf, pin)
}
