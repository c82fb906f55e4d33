//! The partition runtime: the entry point, system calls, logging and the panic handler.
//!
//! A program uses it like this:
//! ```ignore
//! #![no_std]
//! #![no_main]
//! bulkhead_rt::entry!(main);
//! fn main() { bulkhead_rt::println!("hello"); }
//! ```
// On the host (its tests, and the image builder's check of what partitions read) only the
// portable parts are used (the settings reader); the entry point and the panic handler exist
// only in a partition.
#![cfg_attr(target_os = "none", no_std)]

pub mod config;
#[cfg(target_arch = "x86_64")]
pub mod port;
pub mod syscall;

use core::fmt::{self, Write};

pub use abi::{PartitionInfo, SysError};

/// Declares the program's main function; returning from it exits the partition with code 0.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        extern "Rust" fn __bulkhead_main() {
            let main: fn() = $main;
            main()
        }
    };
}

#[cfg(target_os = "none")]
unsafe extern "Rust" {
    safe fn __bulkhead_main();
}

/// Called by `_start` with an aligned stack.
#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn __bulkhead_start() -> ! {
    __bulkhead_main();
    syscall::exit(0)
}

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
core::arch::global_asm!(
    ".section .text._start, \"ax\"",
    ".global _start",
    "_start:",
    "    and rsp, -16",
    "    call __bulkhead_start",
    "    ud2",
);

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
core::arch::global_asm!(
    ".section .text._start, \"ax\"",
    ".global _start",
    "_start:",
    "    mov x0, sp",
    "    and x0, x0, #-16",
    "    mov sp, x0",
    "    bl __bulkhead_start",
    "    udf #0",
);

/// Formats into a fixed buffer and hands whole lines to the kernel log.
struct LineWriter {
    buf: [u8; 256],
    len: usize,
}

impl LineWriter {
    fn flush(&mut self) {
        if self.len > 0 {
            let _ = syscall::log_write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                self.flush();
                continue;
            }
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Writes one formatted record to the kernel log (used by `println!`).
pub fn print(args: fmt::Arguments<'_>) {
    let mut w = LineWriter {
        buf: [0; 256],
        len: 0,
    };
    let _ = w.write_fmt(args);
    w.flush();
}

/// Logs a line under the partition's name.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::print(format_args!($($arg)*)) };
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    print(format_args!("panic: {info}"));
    syscall::exit(101)
}
