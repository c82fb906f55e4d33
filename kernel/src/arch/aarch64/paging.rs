//! The kernel's own TTBR1 tables, replacing the boot stub's 1 GiB blocks (which are readable,
//! writable and executable) once the memory map is known:
//! - the linear map at [`PHYS_OFFSET`] of RAM (Normal write-back, never executable) and of the
//!   device window below RAM (Device-nGnRnE, never executable), in 2 MiB blocks where aligned;
//! - the kernel image, which lies inside the linear map (it runs at its physical address plus
//!   `PHYS_OFFSET`), in 4 KiB pages per section: text read-only and executable, rodata
//!   read-only, data, bss and the boot stack writable and never executable (W^X), and the
//!   guard pages of the boot stack and of the fault stack unmapped.
//!
//! No page is both writable and executable at EL1, and none of these entries is accessible
//! from EL0 (AP[1] clear) or executable there (UXN). TTBR0 is left to partitions: after the
//! switch it holds an empty table (ASID 0) until the first partition's address space is
//! activated, so a stray lower-half access by the kernel is a translation fault.

use aarch64_cpu::registers::{ReadWriteable, SCTLR_EL1, TCR_EL1, TTBR0_EL1, Writeable};
use kcore::mem::{PhysRegion, RegionKind};

use super::PHYS_OFFSET;
use super::pt::{self, AP_RO, ATTR_DEVICE, ATTR_NORMAL, PXN, SH_INNER, UXN};

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __stack_guard: u8;
    static __stack_bottom: u8;
    static __stack_top: u8;
    static __fault_stack_bottom: u8;
    static __fault_stack_top: u8;
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// Physical address of a linker symbol in the kernel image (only its address is taken).
fn sym_phys(sym: *const u8) -> u64 {
    sym as u64 - PHYS_OFFSET
}

/// The kernel image's sections: (physical start, physical end, attributes).
fn sections() -> [(u64, u64, u64); 5] {
    let rw = ATTR_NORMAL | SH_INNER | PXN | UXN;
    [
        (
            sym_phys(&raw const __text_start),
            sym_phys(&raw const __text_end),
            ATTR_NORMAL | SH_INNER | AP_RO | UXN,
        ),
        (
            sym_phys(&raw const __rodata_start),
            sym_phys(&raw const __rodata_end),
            ATTR_NORMAL | SH_INNER | AP_RO | PXN | UXN,
        ),
        (
            sym_phys(&raw const __data_start),
            sym_phys(&raw const __stack_guard),
            rw,
        ),
        // __stack_guard..__stack_bottom: one page left unmapped.
        (
            sym_phys(&raw const __stack_bottom),
            sym_phys(&raw const __stack_top),
            rw,
        ),
        // __stack_top..__fault_stack_bottom: the fault stack's guard page, unmapped.
        (
            sym_phys(&raw const __fault_stack_bottom),
            sym_phys(&raw const __fault_stack_top),
            rw,
        ),
    ]
}

/// The guard page below the boot stack (virtual addresses), for fault reports.
pub fn stack_guard() -> core::ops::Range<u64> {
    &raw const __stack_guard as u64..&raw const __stack_bottom as u64
}

/// Builds the kernel's tables from the memory map (RAM is every region that is not Reserved)
/// and switches TTBR1 to them; TTBR0 gets an empty table and its walks are enabled.
/// `high_devices` are device ranges above RAM to map too (the PCIe ECAM window), 2 MiB
/// aligned.
pub fn init(memory: &[PhysRegion], high_devices: &[(u64, u64)]) {
    let alloc = || crate::arch::alloc_zeroed_frame().expect("no frame for tables");
    let root = alloc();
    let empty = alloc();
    let ram_attrs = ATTR_NORMAL | SH_INNER | PXN | UXN;
    let device_attrs = ATTR_DEVICE | PXN | UXN;
    let kernel = (
        sym_phys(&raw const __kernel_start),
        sym_phys(&raw const __kernel_end),
    );
    let map = |start: u64, end: u64, attrs: u64| {
        // SAFETY: `root` is a fresh table that is not live yet; each range is mapped once
        // (RAM ranges are disjoint, the kernel image is cut out of them below, and the device
        // window ends where RAM begins).
        unsafe { pt::map_range(root, PHYS_OFFSET, start, end, attrs) }
            .unwrap_or_else(|e| panic!("kernel tables: mapping {start:#x}..{end:#x}: {e:?}"));
    };

    // RAM: merge adjacent non-reserved regions, then map each extent minus the kernel image.
    let mut ram_start = u64::MAX;
    let mut i = 0;
    while i < memory.len() {
        if memory[i].kind == RegionKind::Reserved {
            i += 1;
            continue;
        }
        let start = memory[i].start;
        let mut end = memory[i].end;
        i += 1;
        while i < memory.len() && memory[i].kind != RegionKind::Reserved && memory[i].start == end {
            end = memory[i].end;
            i += 1;
        }
        ram_start = ram_start.min(start);
        if kernel.0 < end && start < kernel.1 {
            map(start, kernel.0.max(start), ram_attrs);
            map(kernel.1.min(end), end, ram_attrs);
        } else {
            map(start, end, ram_attrs);
        }
    }
    // Devices: everything below RAM (QEMU virt: the GIC, the PL011, virtio-mmio, PCIe PIO).
    if ram_start != u64::MAX {
        map(0, ram_start & !(pt::BLOCK_2M - 1), device_attrs);
    }
    for &(start, end) in high_devices {
        map(start, end, device_attrs);
    }
    for (start, end, attrs) in sections() {
        map(start, end, attrs);
    }

    // SAFETY: the new tables map everything the kernel uses from here on at the same virtual
    // addresses as the boot stub's: its code, data and stack (per section), RAM and devices in
    // the linear map. See `replace_ttbr1` for why the switch runs from the identity map.
    unsafe { replace_ttbr1(root, empty) };
    TTBR0_EL1.set(empty);
    TCR_EL1.modify(TCR_EL1::EPD0::EnableTTBR0Walks);
    // Writable implies never executable, at EL1 and EL0 alike: no page is mapped both ways
    // anyway, so this only backs the tables up. Only now, since the boot stub's blocks (still
    // in the TLB until the flush below, which WXN's caching in TLB entries also requires)
    // are writable and executable.
    SCTLR_EL1.modify(SCTLR_EL1::WXN::Enable);
    // The boot stub's identity map was global and may still be in the TLB for lower-half
    // addresses, which from now on belong to partitions: drop every entry.
    // SAFETY: TLB invalidation and barriers have no effect on memory.
    unsafe {
        core::arch::asm!(
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// Switches TTBR1_EL1 to `root` with break-before-make (Arm ARM DDI 0487, section "Using
/// break-before-make when updating translation table entries"): the new tables map the same
/// addresses with different block sizes and permissions, so the old entries must be gone from
/// the TLB before any new one can be used. The code doing it runs at its physical address
/// through the boot stub's identity map in TTBR0 (walks briefly enabled) and touches no TTBR1
/// address meanwhile, not even the stack: TTBR1 first points at an empty table, the TLB is
/// invalidated, and only then does TTBR1 get the new tables. (Linux's `cpu_replace_ttbr1`.)
///
/// # Safety
/// `root` must map the kernel exactly as the boot tables do, at the same addresses;
/// `empty` must be a zeroed level-0 table.
unsafe fn replace_ttbr1(root: u64, empty: u64) {
    TCR_EL1.modify(TCR_EL1::EPD0::EnableTTBR0Walks);
    // SAFETY: TTBR0 still holds the boot stub's identity map of the first 4 GiB (normal memory
    // from 1 GiB, where the kernel is loaded), so the physical alias of the code below is
    // mapped and executable. Between the two `br`s only registers are used. After the switch
    // the kernel's virtual addresses map the same memory (the caller's promise).
    unsafe {
        core::arch::asm!(
            "isb",
            "adr {tmp}, 2f",
            "sub {tmp}, {tmp}, {offset}",
            "br {tmp}",
            "2:",
            "msr ttbr1_el1, {empty}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "msr ttbr1_el1, {root}",
            "isb",
            "adr {tmp}, 3f",
            "add {tmp}, {tmp}, {offset}",
            "br {tmp}",
            "3:",
            tmp = out(reg) _,
            offset = in(reg) PHYS_OFFSET,
            empty = in(reg) empty,
            root = in(reg) root,
            options(nostack)
        );
    }
}
