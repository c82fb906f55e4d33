//! The interrupt controller: a GICv2 (distributor and memory-mapped CPU interface) or a GICv3
//! (distributor, this CPU's redistributor, and the system-register CPU interface ICC_*), as the
//! device tree says (`arm,cortex-a15-gic`/`arm,gic-400` or `arm,gic-v3`). Only private
//! interrupts (the timer's PPI) are used so far; every one is group 1, non-secure.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use super::{phys_to_virt, time};

const GICD_CTLR: usize = 0x000;
const GICD_ISENABLER: usize = 0x100;
const GICD_IPRIORITYR: usize = 0x400;
const GICC_CTLR: usize = 0x000;
const GICC_PMR: usize = 0x004;
const GICC_IAR: usize = 0x00c;
const GICC_EOIR: usize = 0x010;
/// Interrupt IDs from 1020 up are special; 1023 means no interrupt was pending.
const SPECIAL_INTID: u32 = 1020;

/// GICv3: GICD_CTLR bits: register write pending, affinity routing (ARE_NS), group 1
/// non-secure enable (EnableGrp1A in the two-security-state view, EnableGrp1 with DS=1) and
/// group 1 (or group 0 with DS=1) enable, as Linux writes them.
const GICD_CTLR_RWP: u32 = 1 << 31;
const GICD_CTLR_V3_ENABLE: u32 = (1 << 4) | (1 << 1) | (1 << 0);
/// Redistributor frames: RD_base, then SGI_base 64 KiB above it; 128 KiB per CPU (256 KiB
/// with GICv4's VLPI frames, which GICR_TYPER.VLPIS announces).
const GICR_TYPER: usize = 0x008;
const GICR_WAKER: usize = 0x014;
const GICR_SGI: usize = 0x1_0000;
const GICR_IGROUPR0: usize = GICR_SGI + 0x080;
const GICR_ISENABLER0: usize = GICR_SGI + 0x100;
const GICR_IPRIORITYR: usize = GICR_SGI + 0x400;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

static VERSION: AtomicU8 = AtomicU8::new(0);
static DISTRIBUTOR: AtomicUsize = AtomicUsize::new(0);
/// GICv2: the CPU interface; GICv3: this CPU's redistributor (RD_base).
static CPU_INTERFACE: AtomicUsize = AtomicUsize::new(0);

fn write(base: &AtomicUsize, reg: usize, value: u32) {
    // SAFETY: the base is a GIC register block in the linear map (device memory), as
    // `init_v2`/`init_v3`'s callers promise; the registers used are 32-bit and word aligned.
    unsafe { core::ptr::write_volatile((base.load(Ordering::Relaxed) + reg) as *mut u32, value) }
}

fn read(base: &AtomicUsize, reg: usize) -> u32 {
    // SAFETY: as for `write`.
    unsafe { core::ptr::read_volatile((base.load(Ordering::Relaxed) + reg) as *const u32) }
}

fn spin_while(mut busy: impl FnMut() -> bool) -> bool {
    for _ in 0..1_000_000 {
        if !busy() {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// GICv2: enables the distributor and this CPU's interface, all priorities unmasked.
///
/// # Safety
/// `distributor_phys` and `cpu_interface_phys` must be the register blocks (4 KiB each) of
/// this machine's GICv2 distributor and CPU interface, mapped as device memory by the linear
/// map, and nothing else may drive them: every later access of this module goes there.
pub unsafe fn init_v2(distributor_phys: u64, cpu_interface_phys: u64) {
    VERSION.store(2, Ordering::Relaxed);
    DISTRIBUTOR.store(phys_to_virt(distributor_phys), Ordering::Relaxed);
    CPU_INTERFACE.store(phys_to_virt(cpu_interface_phys), Ordering::Relaxed);
    write(&DISTRIBUTOR, GICD_CTLR, 1);
    write(&CPU_INTERFACE, GICC_PMR, 0xff);
    write(&CPU_INTERFACE, GICC_CTLR, 1);
}

/// GICv3: enables the distributor with affinity routing, finds and wakes this CPU's
/// redistributor in the region at `redistributors_phys` (`len` bytes), and enables the
/// system-register CPU interface for group 1. Returns the redistributor's address, or why not.
///
/// # Safety
/// `distributor_phys` must be the register block (64 KiB) of this machine's GICv3
/// distributor and `redistributors_phys .. + len` its redistributor region, all mapped as
/// device memory by the linear map, and nothing else may drive them: every later access of
/// this module goes there.
pub unsafe fn init_v3(
    distributor_phys: u64,
    redistributors_phys: u64,
    len: u64,
) -> Result<u64, &'static str> {
    VERSION.store(3, Ordering::Relaxed);
    DISTRIBUTOR.store(phys_to_virt(distributor_phys), Ordering::Relaxed);
    write(&DISTRIBUTOR, GICD_CTLR, GICD_CTLR_V3_ENABLE);
    if !spin_while(|| read(&DISTRIBUTOR, GICD_CTLR) & GICD_CTLR_RWP != 0) {
        return Err("the distributor did not finish enabling");
    }

    // This CPU's redistributor: the one whose GICR_TYPER affinity matches MPIDR_EL1.
    let mpidr: u64;
    // SAFETY: reading MPIDR_EL1 has no side effect.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    let affinity = (mpidr & 0xff_ffff) | ((mpidr >> 32) & 0xff) << 24;
    let mut frame = redistributors_phys;
    let found = loop {
        if frame + 0x2_0000 > redistributors_phys + len {
            break None;
        }
        CPU_INTERFACE.store(phys_to_virt(frame), Ordering::Relaxed);
        let typer = read(&CPU_INTERFACE, GICR_TYPER) as u64
            | (read(&CPU_INTERFACE, GICR_TYPER + 4) as u64) << 32;
        if typer >> 32 == affinity {
            break Some(frame);
        }
        if typer & (1 << 4) != 0 {
            break None; // GICR_TYPER.Last
        }
        frame += if typer & (1 << 1) != 0 {
            0x4_0000
        } else {
            0x2_0000
        };
    };
    let Some(frame) = found else {
        return Err("no redistributor matches this CPU's affinity");
    };
    let waker = read(&CPU_INTERFACE, GICR_WAKER);
    write(&CPU_INTERFACE, GICR_WAKER, waker & !WAKER_PROCESSOR_SLEEP);
    if !spin_while(|| read(&CPU_INTERFACE, GICR_WAKER) & WAKER_CHILDREN_ASLEEP != 0) {
        return Err("the redistributor did not wake up");
    }
    // Every SGI and PPI in group 1 (non-secure), as the kernel runs non-secure EL1.
    write(&CPU_INTERFACE, GICR_IGROUPR0, u32::MAX);

    // SAFETY: these write the CPU interface's own system registers (present: the device tree
    // names a GICv3, and QEMU and firmware leave ICC_SRE_EL2.Enable set for EL1). SRE selects
    // the system-register interface, PMR unmasks every priority, BPR1 0 uses every priority bit
    // for preemption, IGRPEN1 enables group 1 interrupts; the ISBs make each take effect.
    unsafe {
        core::arch::asm!(
            "mrs {t}, icc_sre_el1",
            "orr {t}, {t}, #1",
            "msr icc_sre_el1, {t}",
            "isb",
            "msr icc_pmr_el1, {pmr}",
            "msr icc_bpr1_el1, xzr",
            "msr icc_igrpen1_el1, {one}",
            "isb",
            t = out(reg) _,
            pmr = in(reg) 0xffu64,
            one = in(reg) 1u64,
            options(nostack)
        )
    };
    Ok(frame)
}

/// Enables private interrupt `intid` (a PPI or SGI) at a middle priority.
pub fn enable(intid: u32) {
    let (base, priorities, enable) = if VERSION.load(Ordering::Relaxed) == 3 {
        (&CPU_INTERFACE, GICR_IPRIORITYR, GICR_ISENABLER0)
    } else {
        (&DISTRIBUTOR, GICD_IPRIORITYR, GICD_ISENABLER)
    };
    let byte = priorities + intid as usize;
    let word = byte & !3;
    let shift = (byte & 3) * 8;
    let value = read(base, word) & !(0xff << shift);
    write(base, word, value | (0x80 << shift));
    write(base, enable + (intid as usize / 32) * 4, 1 << (intid % 32));
}

const GICD_IGROUPR: usize = 0x080;
const GICD_ICENABLER: usize = 0x180;
const GICD_ITARGETSR: usize = 0x800;
const GICD_ICFGR: usize = 0xc00;
const GICD_IROUTER: usize = 0x6000;
/// First shared peripheral interrupt id; SPIs end below 1020.
pub const FIRST_SPI: u32 = 32;

/// Sets one byte of a byte-per-interrupt distributor register array (read-modify-write of the
/// containing word, which both GIC versions allow).
fn set_byte(array: usize, intid: u32, value: u8) {
    let byte = array + intid as usize;
    let word = byte & !3;
    let shift = (byte & 3) * 8;
    let old = read(&DISTRIBUTOR, word) & !(0xff << shift);
    write(&DISTRIBUTOR, word, old | (u32::from(value) << shift));
}

/// Configures shared interrupt `intid` (32..1020) for this CPU, disabled: middle priority,
/// group 1, edge- or level-triggered, routed to CPU 0 (GICv2 target mask / GICv3 affinity 0).
pub fn configure_spi(intid: u32, edge: bool) {
    set_spi_enabled(intid, false);
    set_byte(GICD_IPRIORITYR, intid, 0x80);
    let group = GICD_IGROUPR + (intid as usize / 32) * 4;
    if VERSION.load(Ordering::Relaxed) == 3 {
        write(
            &DISTRIBUTOR,
            group,
            read(&DISTRIBUTOR, group) | 1 << (intid % 32),
        );
        let route = GICD_IROUTER + intid as usize * 8;
        write(&DISTRIBUTOR, route, 0);
        write(&DISTRIBUTOR, route + 4, 0);
    } else {
        set_byte(GICD_ITARGETSR, intid, 1);
    }
    let config = GICD_ICFGR + (intid as usize / 16) * 4;
    let bit = 1 << ((intid % 16) * 2 + 1);
    let old = read(&DISTRIBUTOR, config);
    write(
        &DISTRIBUTOR,
        config,
        if edge { old | bit } else { old & !bit },
    );
}

/// Enables or disables (masks) shared interrupt `intid`. A disabled interrupt stays pending
/// and is delivered once enabled again.
pub fn set_spi_enabled(intid: u32, enabled: bool) {
    let reg = if enabled {
        GICD_ISENABLER
    } else {
        GICD_ICENABLER
    };
    write(
        &DISTRIBUTOR,
        reg + (intid as usize / 32) * 4,
        1 << (intid % 32),
    );
}

/// Acknowledges, dispatches and ends the pending IRQ; returns its INTID (none if spurious).
pub fn handle_irq() -> Option<u32> {
    let v3 = VERSION.load(Ordering::Relaxed) == 3;
    let iar = if v3 {
        let iar: u64;
        // SAFETY: reading ICC_IAR1_EL1 acknowledges the highest-priority pending group 1
        // interrupt, which this handler then ends; it touches no memory.
        unsafe { core::arch::asm!("mrs {}, icc_iar1_el1", out(reg) iar, options(nomem, nostack)) };
        iar as u32
    } else {
        read(&CPU_INTERFACE, GICC_IAR)
    };
    let intid = if v3 { iar & 0xff_ffff } else { iar & 0x3ff };
    if (SPECIAL_INTID..1024).contains(&intid) {
        return None;
    }
    if intid == time::timer_intid() {
        time::on_tick();
    }
    if v3 {
        // SAFETY: ends the interrupt just acknowledged (EOImode 0: also deactivates it).
        unsafe {
            core::arch::asm!("msr icc_eoir1_el1, {}", "isb", in(reg) iar as u64, options(nostack))
        };
    } else {
        write(&CPU_INTERFACE, GICC_EOIR, iar);
    }
    Some(intid)
}
