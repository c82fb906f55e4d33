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

static TSS: Once<TaskStateSegment> = Once::new();
/// The stack the CPU switches to when an interrupt or exception arrives in user mode; set by
/// `set_kernel_stack` before the TSS is built.
static KERNEL_STACK: Once<VirtAddr> = Once::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

/// Records the stack for entries from user mode (TSS.RSP0); must precede [`init`].
pub fn set_kernel_stack(top: VirtAddr) {
    KERNEL_STACK.call_once(|| top);
}

/// The segment selectors, once [`init`] has run.
pub fn selectors() -> &'static Selectors {
    &GDT.get().expect("GDT initialised at boot").1
}

/// Loads the GDT and TSS and reloads every segment register. Called once, early at boot.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = DOUBLE_FAULT_STACK.top();
        tss.interrupt_stack_table[NMI_IST as usize] = NMI_STACK.top();
        tss.privilege_stack_table[0] =
            *KERNEL_STACK.get().expect("kernel stack set before the GDT");
        tss
    });
    let (gdt, sel) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let sel = Selectors {
            kernel_code: gdt.append(Descriptor::kernel_code_segment()),
            kernel_data: gdt.append(Descriptor::kernel_data_segment()),
            user_data: gdt.append(Descriptor::user_data_segment()),
            user_code: gdt.append(Descriptor::user_code_segment()),
            tss: gdt.append(Descriptor::tss_segment(tss)),
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
