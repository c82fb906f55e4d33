//! The serial console on COM1 (I/O port 0x3f8), through the 16550 UART driver crate.

use core::fmt::Write;

use spin::Mutex;
use uart_16550::SerialPort;

const COM1: u16 = 0x3f8;

// SAFETY: COM1's eight I/O ports belong to the kernel alone: no partition is ever granted them.
static SERIAL: Mutex<SerialPort> = Mutex::new(unsafe { SerialPort::new(COM1) });

/// Programs the UART (baud rate, 8N1, FIFOs). Called once, first thing at boot.
pub fn init() {
    SERIAL.lock().init();
}

/// Runs `f` with exclusive use of the console and interrupts masked, so records never tear.
pub fn with_locked(f: impl FnOnce(&mut dyn Write)) {
    x86_64::instructions::interrupts::without_interrupts(|| f(&mut *SERIAL.lock()));
}

/// A writer for fault and panic paths that does not take the console lock.
pub fn emergency_writer() -> impl Write {
    // SAFETY: a second handle to COM1 is used only when the kernel is about to stop, after a
    // fault or panic that may have interrupted a holder of the lock; interleaved bytes are the
    // worst outcome, and the UART registers stay consistent because each access is one byte.
    unsafe { SerialPort::new(COM1) }
}
