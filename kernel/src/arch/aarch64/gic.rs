//! The GICv2 interrupt controller: distributor and CPU interface. GICv3 arrives with aarch64
//! parity; a device tree naming one is refused at boot with a clear message.

use core::sync::atomic::{AtomicUsize, Ordering};

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

static DISTRIBUTOR: AtomicUsize = AtomicUsize::new(0);
static CPU_INTERFACE: AtomicUsize = AtomicUsize::new(0);

fn write(base: &AtomicUsize, reg: usize, value: u32) {
    // SAFETY: the base is a GIC register block in the linear map (device memory) taken from the
    // device tree by `init`; the registers used are 32-bit and word aligned.
    unsafe { core::ptr::write_volatile((base.load(Ordering::Relaxed) + reg) as *mut u32, value) }
}

fn read(base: &AtomicUsize, reg: usize) -> u32 {
    // SAFETY: as for `write`.
    unsafe { core::ptr::read_volatile((base.load(Ordering::Relaxed) + reg) as *const u32) }
}

/// Enables the distributor and this CPU's interface, all priorities unmasked.
pub fn init(distributor_phys: u64, cpu_interface_phys: u64) {
    DISTRIBUTOR.store(phys_to_virt(distributor_phys), Ordering::Relaxed);
    CPU_INTERFACE.store(phys_to_virt(cpu_interface_phys), Ordering::Relaxed);
    write(&DISTRIBUTOR, GICD_CTLR, 1);
    write(&CPU_INTERFACE, GICC_PMR, 0xff);
    write(&CPU_INTERFACE, GICC_CTLR, 1);
}

/// Enables interrupt `intid` at a middle priority.
pub fn enable(intid: u32) {
    let byte = GICD_IPRIORITYR + intid as usize;
    let word = byte & !3;
    let shift = (byte & 3) * 8;
    let priorities = read(&DISTRIBUTOR, word) & !(0xff << shift);
    write(&DISTRIBUTOR, word, priorities | (0x80 << shift));
    write(
        &DISTRIBUTOR,
        GICD_ISENABLER + (intid as usize / 32) * 4,
        1 << (intid % 32),
    );
}

/// Acknowledges, dispatches and ends the pending IRQ; returns its INTID (none if spurious).
pub fn handle_irq() -> Option<u32> {
    let iar = read(&CPU_INTERFACE, GICC_IAR);
    let intid = iar & 0x3ff;
    if intid >= SPECIAL_INTID {
        return None;
    }
    if intid == time::TIMER_INTID {
        time::on_tick();
    }
    write(&CPU_INTERFACE, GICC_EOIR, iar);
    Some(intid)
}
