//! The GDT and TSS: kernel and user segments, and IST stacks so that a double fault (for
//! example a kernel stack overflow) or an NMI always runs on a known-good stack and is
//! reported instead of escalating to a silent triple fault.

use core::cell::UnsafeCell;

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slot (0-based, as the IDT's `set_stack_index` takes it) of the double-fault stack.
pub const DOUBLE_FAULT_IST: u16 = 0;
/// IST slot of the NMI stack.
pub const NMI_IST: u16 = 1;

const PAGE: usize = 4096;

/// A stack of `SIZE` bytes preceded by one guard page, which the kernel's page tables leave
/// unmapped so that an overflow faults instead of corrupting what lies below.
#[repr(C, align(4096))]
pub struct GuardedStack<const SIZE: usize>(UnsafeCell<([u8; PAGE], [u8; SIZE])>);

// SAFETY: the CPU (pushing frames) and code running on the stack are its only users; other
// Rust code only takes its address.
unsafe impl<const SIZE: usize> Sync for GuardedStack<SIZE> {}

impl<const SIZE: usize> GuardedStack<SIZE> {
    pub const fn new() -> Self {
        Self(UnsafeCell::new(([0; PAGE], [0; SIZE])))
    }
    /// The address of the unmapped page below the stack.
    pub fn guard_page(&self) -> u64 {
        self.0.get() as u64
    }
    /// The initial stack pointer: one past the highest byte.
    pub fn top(&self) -> VirtAddr {
        VirtAddr::new(self.0.get() as u64 + (PAGE + SIZE) as u64)
    }
}

static DOUBLE_FAULT_STACK: GuardedStack<{ 4 * PAGE }> = GuardedStack::new();
static NMI_STACK: GuardedStack<{ 4 * PAGE }> = GuardedStack::new();

/// Virtual addresses of pages the page tables must leave unmapped.
pub fn guard_pages() -> [u64; 4] {
    let (trap, idle) = super::trap::guard_pages();
    [
        DOUBLE_FAULT_STACK.guard_page(),
        NMI_STACK.guard_page(),
        trap,
        idle,
    ]
}

/// Segment selectors, in the order SYSCALL/SYSRET need (user data right before user code).
#[derive(Debug)]
pub struct Selectors {
    pub kernel_code: SegmentSelector,
    pub kernel_data: SegmentSelector,
    pub user_data: SegmentSelector,
    pub user_code: SegmentSelector,
    pub tss: SegmentSelector,
}

/// Bytes of the I/O permission bitmap: one bit per port, 0 = the running partition may use it.
const IOMAP_BYTES: usize = 65536 / 8;

/// The TSS followed by its I/O permission bitmap (Intel SDM vol. 1 §19.5.2), plus the all-ones
/// byte the CPU requires after the bitmap.
#[repr(C, align(4096))]
struct TssWithIoMap {
    tss: TaskStateSegment,
    iomap: [u8; IOMAP_BYTES + 1],
}

struct TssCell(UnsafeCell<TssWithIoMap>);

// SAFETY: the TSS is written once in `init` (interrupts masked, before it is loaded) and its
// bitmap only by `set_io_ports`, which runs in the kernel with interrupts masked on the one CPU;
// the CPU reads both.
unsafe impl Sync for TssCell {}

static TSS: TssCell = TssCell(UnsafeCell::new(TssWithIoMap {
    tss: TaskStateSegment::new(),
    iomap: [0xff; IOMAP_BYTES + 1],
}));

/// Ports the kernel keeps for itself and never grants: the PICs, the PIT, the keyboard
/// controller/port 0x61, QEMU's debug exit, the primary serial port (the kernel log), ACPI PM,
/// and PCI configuration mechanism #1.
const RESERVED_PORTS: [(u16, u16); 8] = [
    (0x20, 2),
    (0x40, 4),
    (0x60, 5),
    (0xa0, 2),
    (0xf4, 1),
    (0x3f8, 8),
    (0x600, 0x40),
    (0xcf8, 8),
];

/// Whether ports `base .. base + count` are free for a partition (none is the kernel's).
pub fn ports_grantable(base: u16, count: u16) -> bool {
    let end = u32::from(base) + u32::from(count);
    count > 0
        && end <= 0x1_0000
        && RESERVED_PORTS
            .iter()
            .all(|&(b, c)| end <= u32::from(b) || u32::from(b) + u32::from(c) <= u32::from(base))
}

/// Closes the ports of `close` and opens those of `open` in the I/O permission bitmap, so that
/// `in`/`out` at CPL 3 reach exactly `open`.
pub fn set_io_ports(close: &[(u16, u16)], open: &[(u16, u16)]) {
    let set = |ranges: &[(u16, u16)], allowed: bool| {
        for &(base, count) in ranges {
            for port in u32::from(base)..u32::from(base) + u32::from(count) {
                let (byte, bit) = ((port / 8) as usize, port % 8);
                // SAFETY: see TssCell: the one CPU, in the kernel, interrupts masked; `byte`
                // is below 8192 because `port` is below 65536.
                unsafe {
                    let map = &mut (*TSS.0.get()).iomap;
                    if allowed {
                        map[byte] &= !(1 << bit);
                    } else {
                        map[byte] |= 1 << bit;
                    }
                }
            }
        }
    };
    set(close, false);
    set(open, true);
}
/// The stack the CPU switches to when an interrupt or exception arrives in user mode; set by
/// `set_kernel_stack` before the TSS is built.
static KERNEL_STACK: Once<VirtAddr> = Once::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

/// Records the stack for entries from user mode (TSS.RSP0); must precede [`init`].
pub fn set_kernel_stack(top: VirtAddr) {
    KERNEL_STACK.call_once(|| top);
}

/// Sets the TSS's `rsp0`, the stack an interrupt or exception from user mode saves its frame
/// on: the end of the context of the partition that runs next (see `arch::context`).
pub fn set_rsp0(top: u64) {
    // SAFETY: see TssCell: the one CPU, in the kernel, interrupts masked; no reference to the
    // TSS is alive (`init` keeps none), and the CPU reads the field only on an entry.
    // `top` is a kernel address (canonical), stored as the raw u64 that `VirtAddr` wraps.
    unsafe {
        core::ptr::addr_of_mut!((*TSS.0.get()).tss.privilege_stack_table[0])
            .cast::<u64>()
            .write(top)
    };
}

/// The segment selectors, once [`init`] has run.
pub fn selectors() -> &'static Selectors {
    &GDT.get().expect("GDT initialised at boot").1
}

/// Loads the GDT and TSS and reloads every segment register. Called once, early at boot.
pub fn init() {
    // SAFETY: `init` runs once at boot before the TSS is loaded, so nothing else reads or
    // writes it now. The shared references made for the descriptor are only used to compute
    // addresses and the limit, not kept: the bitmap is later changed through the UnsafeCell.
    let (tss, iomap) = unsafe {
        let cell = &mut *TSS.0.get();
        cell.tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = DOUBLE_FAULT_STACK.top();
        cell.tss.interrupt_stack_table[NMI_IST as usize] = NMI_STACK.top();
        cell.tss.privilege_stack_table[0] =
            *KERNEL_STACK.get().expect("kernel stack set before the GDT");
        cell.tss.iomap_base = core::mem::size_of::<TaskStateSegment>() as u16;
        let cell = &*TSS.0.get();
        (&cell.tss, &cell.iomap[..])
    };
    let (gdt, sel) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let sel = Selectors {
            kernel_code: gdt.append(Descriptor::kernel_code_segment()),
            kernel_data: gdt.append(Descriptor::kernel_data_segment()),
            user_data: gdt.append(Descriptor::user_data_segment()),
            user_code: gdt.append(Descriptor::user_code_segment()),
            tss: gdt.append(
                Descriptor::tss_segment_with_iomap(tss, iomap)
                    .expect("the I/O bitmap directly follows the TSS and ends in 0xff"),
            ),
        };
        (gdt, sel)
    });
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, whose descriptors are valid 64-bit
    // kernel code and data segments and an available TSS that lives for 'static.
    unsafe {
        CS::set_reg(sel.kernel_code);
        DS::set_reg(sel.kernel_data);
        ES::set_reg(sel.kernel_data);
        SS::set_reg(sel.kernel_data);
        load_tss(sel.tss);
    }
}
