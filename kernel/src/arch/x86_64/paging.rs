//! The kernel's own page tables, replacing the boot loader's.
//!
//! Why not keep the boot loader's: they map boot-time structures (boot info, the loader's own
//! data) that the kernel must not depend on, and they give no guarantee about global pages,
//! caching of MMIO or which lower-half addresses are in use. The kernel's tables hold exactly:
//! - the direct map of physical memory at [`PHYS_OFFSET`] (2 MiB pages, no-execute; RAM
//!   write-back, everything else below 4 GiB uncached, which covers the Local APIC and I/O APIC);
//! - each segment of the kernel image with the permissions its ELF header gives (W^X), minus
//!   the IST stacks' guard pages;
//! - the kernel stack, without its guard page.
//!   The lower half stays empty: it is for partitions.

use kcore::elf::{EM_X86_64, Elf};
use kcore::mem::{PAGE_SIZE, PhysRegion, RegionKind};
use x86_64::registers::control::{Cr0, Cr0Flags, Cr3, Cr4, Cr4Flags, Efer, EferFlags};
use x86_64::structures::paging::{
    FrameAllocator as X86FrameAllocator, Mapper, OffsetPageTable, Page, PageTable,
    PageTableFlags as Flags, PhysFrame, Size2MiB, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use core::sync::atomic::{AtomicU64, Ordering};

use super::gdt;

/// Where all physical memory is mapped; the boot loader is asked for the same offset, so
/// pointers into the direct map stay valid across the switch of page tables.
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;
const HUGE: u64 = 2 << 20;
/// Everything below 4 GiB is mapped even without RAM there: the PCI hole holds the APICs.
const DIRECT_MAP_MIN_END: u64 = 4 << 30;

/// Physical address of the kernel's level-4 table, which every address space shares the upper
/// half of.
static KERNEL_ROOT: AtomicU64 = AtomicU64::new(0);

/// The kernel's level-4 table (zero before `init`).
pub fn kernel_root() -> u64 {
    KERNEL_ROOT.load(Ordering::Relaxed)
}

/// A mapper for the level-4 table at `root`, for the address-space code.
///
/// # Safety
/// As for `mapper`.
pub unsafe fn mapper_for(root: u64) -> OffsetPageTable<'static> {
    // SAFETY: forwarded to the caller.
    unsafe { mapper(root) }
}

/// Allocates page-table frames for the address-space code.
pub fn table_frames() -> impl X86FrameAllocator<Size4KiB> {
    TableFrames
}

/// The virtual address of physical address `phys` in the direct map.
pub fn phys_to_virt(phys: u64) -> usize {
    (PHYS_OFFSET + phys) as usize
}

/// What the boot loader reported about the kernel's image and stack.
pub struct KernelImage {
    pub elf_phys: u64,
    pub elf_len: u64,
    pub load_offset: u64,
    pub stack_bottom: u64,
    pub stack_len: u64,
}

/// Page-table frames come from the kernel's frame allocator, zeroed.
struct TableFrames;

// SAFETY: every frame returned comes from the frame allocator, which hands out each usable
// frame at most once, so the frame is unused.
unsafe impl X86FrameAllocator<Size4KiB> for TableFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let frame = crate::arch::alloc_zeroed_frame()?;
        Some(PhysFrame::containing_address(PhysAddr::new(frame)))
    }
}

/// A mapper for the page table rooted at physical address `root`.
///
/// # Safety
/// `root` must be a level-4 table reachable through the direct map, and the caller must not
/// create a second mapper for it while this one lives.
unsafe fn mapper(root: u64) -> OffsetPageTable<'static> {
    // SAFETY: by the caller's promise the table is mapped at phys_to_virt(root) and not
    // otherwise borrowed.
    unsafe {
        let table = &mut *(phys_to_virt(root) as *mut PageTable);
        OffsetPageTable::new(table, VirtAddr::new(PHYS_OFFSET))
    }
}

/// Builds the kernel's page tables from the memory map and the kernel's ELF image, and
/// switches to them.
pub fn init(memory: &[PhysRegion], image: &KernelImage) {
    let (boot_root, _) = Cr3::read();
    // SAFETY: the boot loader's active table is reachable through its direct map at
    // PHYS_OFFSET (requested in the boot loader configuration); it is only read here.
    let boot_tables = unsafe { mapper(boot_root.start_address().as_u64()) };
    let root = crate::arch::alloc_zeroed_frame().expect("no frame for the PML4");
    // SAFETY: `root` is a zeroed frame just allocated, mapped through the direct map.
    let mut tables = unsafe { mapper(root) };

    map_physical_memory(&mut tables, memory);
    map_kernel_image(&mut tables, &boot_tables, image);
    map_by_translation(
        &mut tables,
        &boot_tables,
        image.stack_bottom,
        image.stack_len,
        Flags::WRITABLE | Flags::NO_EXECUTE,
    );

    // SAFETY: the new tables map everything the kernel touches from here on: its code, data
    // and stack at the same virtual addresses as before, and the direct map at the same offset
    // as the boot loader's. NXE is required by the NO_EXECUTE bits, WP makes read-only kernel
    // pages read-only for the kernel too, PGE enables the GLOBAL bits.
    unsafe {
        Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE));
        Cr0::update(|f| f.insert(Cr0Flags::WRITE_PROTECT));
        Cr4::update(|f| f.insert(Cr4Flags::PAGE_GLOBAL));
        let frame = PhysFrame::containing_address(PhysAddr::new(root));
        Cr3::write(frame, Cr3::read().1);
    }
    KERNEL_ROOT.store(root, Ordering::Relaxed);
}

fn is_ram(memory: &[PhysRegion], start: u64, end: u64) -> bool {
    memory
        .iter()
        .any(|r| r.kind != RegionKind::Reserved && r.start < end && start < r.end)
}

fn map_physical_memory(tables: &mut OffsetPageTable<'_>, memory: &[PhysRegion]) {
    // Reserved ranges above 4 GiB (QEMU reports a HyperTransport hole at 1 TiB) are not RAM
    // and need no mapping; mapping them would cost megabytes of page tables.
    let ram_top = memory
        .iter()
        .filter(|r| r.kind != RegionKind::Reserved)
        .map(|r| r.end)
        .max();
    let top = ram_top.unwrap_or(0).max(DIRECT_MAP_MIN_END);
    for phys in (0..top.next_multiple_of(HUGE)).step_by(HUGE as usize) {
        let mut flags = Flags::PRESENT | Flags::WRITABLE | Flags::NO_EXECUTE | Flags::GLOBAL;
        if !is_ram(memory, phys, phys + HUGE) {
            flags |= Flags::NO_CACHE | Flags::WRITE_THROUGH;
        }
        let page = Page::<Size2MiB>::containing_address(VirtAddr::new(PHYS_OFFSET + phys));
        let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(phys));
        // SAFETY: the new tables are not active yet; mapping a physical frame into the direct
        // map creates no alias that Rust code could use unsoundly by itself.
        unsafe { tables.map_to(page, frame, flags, &mut TableFrames) }
            .expect("direct map: page tables exhausted frames")
            .ignore();
    }
}

fn map_kernel_image(
    tables: &mut OffsetPageTable<'_>,
    boot: &OffsetPageTable<'_>,
    image: &KernelImage,
) {
    // SAFETY: the boot loader reports the kernel's ELF file at elf_phys..+elf_len; it stays in
    // memory (a Loaded region) and is only read.
    let elf_bytes = unsafe {
        core::slice::from_raw_parts(
            phys_to_virt(image.elf_phys) as *const u8,
            image.elf_len as usize,
        )
    };
    let elf = Elf::parse(elf_bytes, EM_X86_64).expect("the kernel's own ELF image is malformed");
    for segment in elf.load_segments() {
        let segment = segment.expect("the kernel's own ELF segment is malformed");
        let mut flags = Flags::empty();
        if segment.flags.writable() {
            flags |= Flags::WRITABLE;
        }
        if !segment.flags.executable() {
            flags |= Flags::NO_EXECUTE;
        }
        map_by_translation(
            tables,
            boot,
            image.load_offset + segment.vaddr,
            segment.mem_size,
            flags,
        );
    }
}

/// Maps `[start, start+len)` in `tables` to the frames `boot` maps it to, with `flags`; pages
/// `boot` leaves unmapped (guard pages) and the IST guard pages stay unmapped.
fn map_by_translation(
    tables: &mut OffsetPageTable<'_>,
    boot: &OffsetPageTable<'_>,
    start: u64,
    len: u64,
    flags: Flags,
) {
    let first = start & !(PAGE_SIZE - 1);
    let end = (start + len).next_multiple_of(PAGE_SIZE);
    for va in (first..end).step_by(PAGE_SIZE as usize) {
        if gdt::guard_pages().contains(&va) {
            continue;
        }
        let Some(phys) = boot.translate_addr(VirtAddr::new(va)) else {
            continue;
        };
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(va));
        let frame = PhysFrame::<Size4KiB>::containing_address(phys);
        let all = flags | Flags::PRESENT | Flags::GLOBAL;
        // SAFETY: the new tables are not active yet; each page is mapped to the frame that
        // already backs it, so the kernel sees the same memory after the switch.
        match unsafe { tables.map_to(page, frame, all, &mut TableFrames) } {
            Ok(flush) => flush.ignore(),
            Err(e) => panic!("mapping kernel page {va:#x}: {e:?}"),
        }
    }
}
