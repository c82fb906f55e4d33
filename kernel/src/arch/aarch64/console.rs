//! The serial console on a PL011 UART (QEMU virt's is at 0x0900_0000; the device tree's
//! `arm,pl011` node confirms or moves it).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::Mutex;

use super::phys_to_virt;

const QEMU_VIRT_PL011: u64 = 0x0900_0000;
const REG_DR: usize = 0x00;
const REG_FR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;

static BASE: AtomicUsize = AtomicUsize::new(0);
static LOCK: Mutex<()> = Mutex::new(());

/// A writer to the PL011 at the current base.
pub struct Pl011;

impl Pl011 {
    fn put(&mut self, byte: u8) {
        let base = BASE.load(Ordering::Relaxed);
        if base == 0 {
            return;
        }
        // SAFETY: `base` is the PL011's register block in the linear map (device memory, set by
        // `init` from QEMU's fixed layout or by `set_base`, whose caller promises it); FR and
        // DR are 32-bit registers of that block, owned by the kernel alone.
        unsafe {
            while core::ptr::read_volatile((base + REG_FR) as *const u32) & FR_TXFF != 0 {
                core::hint::spin_loop();
            }
            core::ptr::write_volatile((base + REG_DR) as *mut u32, byte as u32);
        }
    }
}

impl Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

/// Starts the console at QEMU virt's PL011; firmware has already configured its baud rate.
pub fn init() {
    BASE.store(phys_to_virt(QEMU_VIRT_PL011), Ordering::Relaxed);
}

/// Moves the console to the PL011 the device tree names.
///
/// # Safety
/// `phys` must be the register block of a PL011 UART mapped as device memory by the linear
/// map, which nothing else drives: every later console write goes there.
pub unsafe fn set_base(phys: u64) {
    BASE.store(phys_to_virt(phys), Ordering::Relaxed);
}

/// Runs `f` with exclusive use of the console and interrupts masked.
pub fn with_locked(f: impl FnOnce(&mut dyn Write)) {
    let masked = super::cpu::interrupts_masked();
    super::cpu::disable_interrupts();
    {
        let _guard = LOCK.lock();
        f(&mut Pl011);
    }
    if !masked {
        super::cpu::enable_interrupts();
    }
}

/// A writer for fault and panic paths that does not take the console lock.
pub fn emergency_writer() -> impl Write {
    Pl011
}
