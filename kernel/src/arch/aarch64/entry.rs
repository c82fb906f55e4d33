//! The Rust entry point the boot stub calls in the upper half, and the device-tree reading
//! that turns QEMU's (or a board's) description into the kernel's boot information.

use core::sync::atomic::Ordering;

use aarch64_cpu::registers::{CNTKCTL_EL1, CPACR_EL1, ReadWriteable, TCR_EL1, Writeable};
use kcore::cmdline::CommandLine;
use kcore::fdt::{self, Fdt};
use kcore::image::SystemImage;
use kcore::mem::{PhysRegion, RegionKind, carve};
use spin::Once;

use super::{
    LINEAR_MAP_END, POWER_METHOD, PowerMethod, console, exceptions, gic, paging, phys_to_virt, time,
};
use crate::arch::{ExitStatus, power_off};
use crate::boot::{BootInfo, kmain};

/// Where QEMU puts the device tree of an ELF kernel: the start of RAM on `virt`.
const QEMU_VIRT_DTB: u64 = 0x4000_0000;
const MAX_REGIONS: usize = 32;

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

static REGIONS: Once<([PhysRegion; MAX_REGIONS], usize)> = Once::new();

fn fail(what: core::fmt::Arguments<'_>) -> ! {
    crate::klog::emergency(format_args!("boot: {what}"));
    power_off(ExitStatus::Failure)
}

/// Finds and validates the device tree, at the address firmware passed or where QEMU puts it;
/// returns it with its physical address.
fn device_tree(passed: u64) -> (Fdt<'static>, u64) {
    for phys in [passed, QEMU_VIRT_DTB] {
        if phys == 0 || phys >= LINEAR_MAP_END || phys % 8 != 0 {
            continue;
        }
        // SAFETY: `phys` is below 4 GiB and so inside the linear map; a device-tree header is
        // 40 bytes and reading it has no side effect (RAM or, at worst, device memory that
        // returns junk, which the magic check rejects).
        let header = unsafe { core::slice::from_raw_parts(phys_to_virt(phys) as *const u8, 40) };
        let Some(size) = fdt::total_size(header) else {
            continue;
        };
        if phys + size as u64 > LINEAR_MAP_END {
            continue;
        }
        // SAFETY: the header claims `size` bytes, all inside the linear map; the tree stays in
        // place for good (it is marked Loaded, so no frame of it is handed out).
        let bytes = unsafe { core::slice::from_raw_parts(phys_to_virt(phys) as *const u8, size) };
        match Fdt::new(bytes) {
            Ok(tree) => return (tree, phys),
            Err(e) => fail(format_args!(
                "the device tree at {phys:#x} is malformed: {e:?}"
            )),
        }
    }
    fail(format_args!("no device tree found (x0 was {passed:#x})"))
}

/// Called by the boot stub with the MMU on, on the boot stack, with IRQs masked.
#[unsafe(no_mangle)]
extern "C" fn aarch64_entry(dtb_phys: u64) -> ! {
    time::mark_boot();
    console::init();
    exceptions::init();
    // FP/SIMD stays trapped at EL0 and EL1: the kernel is soft-float and saves no FP state, so
    // partitions (built soft-float too) must not use it; one that does faults.
    CPACR_EL1.write(CPACR_EL1::FPEN::TrapEl0El1);
    // EL0 may read neither the counters nor the timers (CNTKCTL_EL1 all clear, whatever reset
    // left): partitions learn the time from the kernel (time_now), which keeps the kernel the
    // one source of time and denies them a fine timer for measuring their neighbours.
    CNTKCTL_EL1.set(0);
    // The identity map was only needed to turn the MMU on; from now on the lower half faults.
    TCR_EL1.modify(TCR_EL1::EPD0::DisableTTBR0Walks);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);

    let (tree, tree_phys) = device_tree(dtb_phys);
    if let Some((base, _)) = tree.find_compatible("arm,pl011").and_then(|n| n.reg(0)) {
        // SAFETY: the device tree is the firmware's description of the machine, which the
        // kernel trusts as it trusts its RAM ranges: the node is the PL011, and the linear map
        // covers the device window below RAM, where QEMU virt and boards put it.
        unsafe { console::set_base(base) };
    }
    let chosen = tree.find_path("/chosen");
    let initrd = chosen.and_then(|c| {
        Some((
            c.property_u64("linux,initrd-start")?,
            c.property_u64("linux,initrd-end")?,
        ))
    });
    let (image, image_cmdline) = boot_payload(initrd);
    // Like x86_64, the system image carries the command line; the device tree's bootargs
    // (QEMU's -append) count when there is no image or its command line is empty.
    let cmdline = match image_cmdline {
        Some(line) if !line.is_empty() => line,
        _ => chosen
            .and_then(|n| n.property_str("bootargs"))
            .unwrap_or(""),
    };
    let cmdline = CommandLine::new(cmdline);

    let method = match tree
        .find_compatible("arm,psci-0.2")
        .and_then(|n| n.property_str("method"))
    {
        Some("smc") => PowerMethod::PsciSmc,
        _ => PowerMethod::PsciHvc,
    };
    let method = if cmdline.flag("semihosting") {
        PowerMethod::Semihosting
    } else {
        method
    };
    POWER_METHOD.store(method as u8, Ordering::Relaxed);

    init_gic(&tree);
    super::dt::record(&tree);
    time::set_timer_from_device_tree(
        tree.find_compatible("arm,armv8-timer")
            .and_then(|n| Some((n.cell("interrupts", 3)?, n.cell("interrupts", 4)?))),
    );

    let (regions, count) = REGIONS.call_once(|| memory_map(&tree, tree_phys, initrd));
    let memory = &regions[..*count];
    // SAFETY: the linear map covers physical memory below 4 GiB, writable, and memory_map
    // keeps only usable RAM below that, minus the kernel image and the device tree.
    unsafe { crate::arch::init_frames(memory, phys_to_virt) };
    // The PCIe host bridge's configuration window lies above RAM (QEMU virt: the high ECAM at
    // 256 GiB): the kernel's tables map it too, as device memory.
    // (Below RAM, as with `highmem=off`, the device part of the linear map covers it.)
    let pcie = kcore::pcihost::EcamHost::from_fdt(&tree);
    let below_ram = |h: &kcore::pcihost::EcamHost| h.ecam.0 + h.ecam.1 <= 1 << 30;
    let high = pcie.filter(|h| {
        !below_ram(h)
            && h.ecam.0 >= LINEAR_MAP_END
            && h.ecam.0.is_multiple_of(2 << 20)
            && h.ecam.1.is_multiple_of(2 << 20)
    });
    let ecam = high.map(|h| [(h.ecam.0, h.ecam.0 + h.ecam.1)]);
    paging::init(memory, ecam.as_ref().map_or(&[], |r| &r[..]));
    if let Some(host) = pcie.filter(|h| below_ram(h) || high.is_some()) {
        // SAFETY: the device tree describes the host bridge (trusted as for the console);
        // its ECAM window is mapped as device memory, by the linear map below RAM or by
        // `paging::init` just above (`high`).
        unsafe { super::pci::init(host) };
    }
    let heap = crate::arch::init_heap(phys_to_virt);

    kmain(&BootInfo {
        arch: "aarch64",
        firmware: "device tree",
        memory,
        cmdline,
        image,
        free_frames: crate::arch::free_frames(),
        heap,
    })
}

/// Starts the interrupt controller the device tree names: a GICv2 or a GICv3.
fn init_gic(tree: &Fdt<'_>) {
    if let Some(node) = tree
        .find_compatible("arm,cortex-a15-gic")
        .or_else(|| tree.find_compatible("arm,gic-400"))
    {
        let (Some((gicd, _)), Some((gicc, _))) = (node.reg(0), node.reg(1)) else {
            fail(format_args!(
                "the GICv2 node lacks distributor and CPU interface registers"
            ));
        };
        // SAFETY: the device tree's GICv2 node names these register blocks (trusted as for
        // the console), which lie in the device window of the linear map.
        unsafe { gic::init_v2(gicd, gicc) };
        info!("interrupt controller: GICv2 (distributor {gicd:#x}, CPU interface {gicc:#x})");
    } else if let Some(node) = tree.find_compatible("arm,gic-v3") {
        let (Some((gicd, _)), Some((gicr, gicr_len))) = (node.reg(0), node.reg(1)) else {
            fail(format_args!(
                "the GICv3 node lacks distributor and redistributor registers"
            ));
        };
        // SAFETY: the device tree's GICv3 node names these register blocks (trusted as for
        // the console), which lie in the device window of the linear map.
        match unsafe { gic::init_v3(gicd, gicr, gicr_len) } {
            Ok(frame) => info!(
                "interrupt controller: GICv3 (distributor {gicd:#x}, redistributor {frame:#x})"
            ),
            Err(why) => fail(format_args!("GICv3: {why}")),
        }
    } else {
        fail(format_args!(
            "the device tree names no GICv2 or GICv3 interrupt controller"
        ));
    }
}

/// The system image `cargo xtask` passes as the initrd (QEMU's `-initrd`; the device tree's
/// `/chosen` gives its physical range), read in place through the linear map. Returns the
/// image and its command line, or nothing when there is no initrd or it is not an image.
fn boot_payload(
    initrd: Option<(u64, u64)>,
) -> (Option<SystemImage<'static>>, Option<&'static str>) {
    let Some((start, end)) = initrd else {
        return (None, None);
    };
    if start >= end || end > LINEAR_MAP_END {
        warn!("the initrd at {start:#x}..{end:#x} is outside the linear map; ignoring it");
        return (None, None);
    }
    // SAFETY: the range is RAM below LINEAR_MAP_END, so inside the linear map; it is marked
    // Loaded in the memory map (memory_map), so no frame of it is ever handed out and the
    // bytes stay unchanged for good.
    let bytes = unsafe {
        core::slice::from_raw_parts(phys_to_virt(start) as *const u8, (end - start) as usize)
    };
    if !SystemImage::is_image(bytes) {
        warn!("the initrd is not a system image; booting without partitions");
        return (None, None);
    }
    match SystemImage::parse(bytes) {
        Ok(image) => (Some(image), Some(image.cmdline())),
        Err(e) => {
            warn!("the system image is malformed ({e:?}); booting without partitions");
            (None, None)
        }
    }
}

/// RAM from the device tree's memory nodes, with the kernel image, the tree itself and the
/// system image (if any) marked Loaded, clipped to what the linear map covers.
fn memory_map(
    tree: &Fdt<'_>,
    tree_phys: u64,
    image: Option<(u64, u64)>,
) -> ([PhysRegion; MAX_REGIONS], usize) {
    let mut ram = [(0u64, 0u64); 8];
    let mut ram_count = 0;
    for node in tree
        .nodes()
        .filter(|n| n.property_str("device_type") == Some("memory"))
    {
        for i in 0.. {
            let Some((base, size)) = node.reg(i) else {
                break;
            };
            if ram_count < ram.len() && base < LINEAR_MAP_END {
                ram[ram_count] = (base, (base + size).min(LINEAR_MAP_END));
                ram_count += 1;
            }
        }
    }
    // Only the addresses of the linker-defined symbols are taken, which needs no unsafe.
    let (start, end) = (
        core::ptr::addr_of!(__kernel_start) as u64,
        core::ptr::addr_of!(__kernel_end) as u64,
    );
    let kernel = (start - super::PHYS_OFFSET, end - super::PHYS_OFFSET);
    let tree_size = fdt::total_size(tree_header(tree_phys)).unwrap_or(0) as u64;
    let used = [
        kernel,
        (tree_phys, tree_phys + tree_size),
        image.unwrap_or_default(),
    ];
    let mut out = [PhysRegion {
        start: 0,
        end: 0,
        kind: RegionKind::Reserved,
    }; MAX_REGIONS];
    let n = carve(&ram[..ram_count], &used, &mut out);
    (out, n)
}

fn tree_header(phys: u64) -> &'static [u8] {
    // SAFETY: `phys` is where a device tree validated, inside the linear map; its header is
    // 40 bytes of RAM that stay in place.
    unsafe { core::slice::from_raw_parts(phys_to_virt(phys) as *const u8, 40) }
}
