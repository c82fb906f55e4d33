//! The entry point the boot loader jumps to, and the conversion of its boot information.

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::info::MemoryRegionKind;
use kcore::cmdline::CommandLine;
use kcore::image::SystemImage;
use kcore::mem::{PhysRegion, RegionKind};
use spin::Once;

use super::paging::{self, KernelImage, PHYS_OFFSET, phys_to_virt};
use super::{console, gdt, idt, pic, time, trap};
use crate::boot::{BootInfo, kmain};

/// Kernel image base: the top 2 GiB, the customary place for an x86_64 kernel.
const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;
/// Kernel stack (the boot loader leaves a guard page below it).
const KERNEL_STACK: u64 = 0xffff_ff00_0000_0000;
const KERNEL_STACK_SIZE: u64 = 128 * 1024;
/// Boot-time structures the loader places dynamically stay in the upper half, clear of the
/// direct map: the lower half belongs to partitions.
const DYNAMIC_START: u64 = 0xffff_c000_0000_0000;

const MAX_REGIONS: usize = 256;

/// The configuration the `bootloader` crate reads from the kernel's ELF file.
pub static BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::FixedAddress(PHYS_OFFSET));
    config.mappings.kernel_base = Mapping::FixedAddress(KERNEL_BASE);
    config.mappings.kernel_stack = Mapping::FixedAddress(KERNEL_STACK);
    config.mappings.dynamic_range_start = Some(DYNAMIC_START);
    config.kernel_stack_size = KERNEL_STACK_SIZE;
    config
};

bootloader_api::entry_point!(entry, config = &BOOTLOADER_CONFIG);

/// Copies of what the boot loader reported, which must outlive its mappings.
struct Boot {
    regions: [PhysRegion; MAX_REGIONS],
    region_count: usize,
    firmware: &'static str,
}

static BOOT: Once<Boot> = Once::new();

fn kind(kind: MemoryRegionKind) -> RegionKind {
    match kind {
        MemoryRegionKind::Usable => RegionKind::Usable,
        MemoryRegionKind::Bootloader => RegionKind::Loaded,
        _ => RegionKind::Reserved,
    }
}

fn entry(info: &'static mut bootloader_api::BootInfo) -> ! {
    time::mark_boot();
    console::init();
    trap::set_kernel_stack();
    gdt::init();
    idt::init();
    trap::init();
    pic::disable();

    let boot = BOOT.call_once(|| {
        let mut b = Boot {
            regions: [PhysRegion {
                start: 0,
                end: 0,
                kind: RegionKind::Reserved,
            }; MAX_REGIONS],
            region_count: 0,
            firmware: "BIOS",
        };
        for r in info.memory_regions.iter().take(MAX_REGIONS) {
            if matches!(r.kind, MemoryRegionKind::UnknownUefi(_)) {
                b.firmware = "UEFI";
            }
            b.regions[b.region_count] = PhysRegion {
                start: r.start,
                end: r.end,
                kind: kind(r.kind),
            };
            b.region_count += 1;
        }
        b.regions[..b.region_count].sort_unstable_by_key(|r| r.start);
        b
    });
    let memory = &boot.regions[..boot.region_count];

    // SAFETY: the boot loader's direct map at PHYS_OFFSET covers all physical memory and the
    // memory map's usable regions are unused, which is what init_frames requires.
    unsafe { crate::arch::init_frames(memory, phys_to_virt) };
    let payload = copy_ramdisk(info);
    paging::init(
        memory,
        &KernelImage {
            elf_phys: info.kernel_addr,
            elf_len: info.kernel_len,
            load_offset: info.kernel_image_offset,
            stack_bottom: info.kernel_stack_bottom,
            stack_len: info.kernel_stack_len,
        },
    );
    // `info` points into the boot loader's mappings, which are gone now.
    let heap = crate::arch::init_heap(phys_to_virt);
    // The I/O APIC is reached through the kernel's direct map: only now is it there.
    super::irq::init();

    let (image, cmdline) = boot_payload(payload);
    kmain(&BootInfo {
        arch: "x86_64",
        firmware: boot.firmware,
        memory,
        cmdline: CommandLine::new(cmdline),
        image,
        free_frames: crate::arch::free_frames(),
        heap,
    })
}

/// Copies the boot loader's ramdisk (the system image) into frames the kernel owns, while the
/// loader's mapping of it still exists; returns it through the direct map.
fn copy_ramdisk(info: &bootloader_api::BootInfo) -> &'static [u8] {
    let Some(addr) = info.ramdisk_addr.into_option() else {
        return &[];
    };
    let len = info.ramdisk_len as usize;
    let frames = (len as u64).div_ceil(kcore::mem::PAGE_SIZE);
    let Some(phys) = crate::arch::alloc_contiguous_frames(frames) else {
        panic!("no {len} contiguous bytes of RAM for the system image");
    };
    // SAFETY: the loader mapped the ramdisk at `addr` for `len` bytes and that mapping lives
    // until the page tables are switched, after this; the destination frames were just
    // allocated (so nothing else refers to them) and the direct map covers them; the two ranges
    // are distinct memory. The copy is never freed, so the slice lives for 'static.
    unsafe {
        let dst = phys_to_virt(phys) as *mut u8;
        core::ptr::copy_nonoverlapping(addr as *const u8, dst, len);
        core::slice::from_raw_parts(dst, len)
    }
}

/// The boot payload is a system image (built by `cargo xtask image`) carrying the command line,
/// or, for hand-made disks, plain command-line text.
fn boot_payload(payload: &'static [u8]) -> (Option<SystemImage<'static>>, &'static str) {
    if SystemImage::is_image(payload) {
        match SystemImage::parse(payload) {
            Ok(image) => return (Some(image), image.cmdline()),
            Err(e) => {
                warn!("the system image is malformed ({e:?}); booting without partitions");
                return (None, "");
            }
        }
    }
    let text = core::str::from_utf8(payload).unwrap_or_else(|e| {
        warn!("command line is not UTF-8 ({e}); ignoring it");
        ""
    });
    (None, text)
}
