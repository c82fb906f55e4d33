//! Kernel logging to the serial console, with levels.
//!
//! Records go straight to the UART under a lock with interrupts masked, so a record is never
//! torn by another. Fault and panic paths use [`emergency`], which does not take the lock: the
//! interrupted code may hold it, and a report that is possibly interleaved beats a deadlock.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, Ordering};

use kcore::log::{Level, write_prefix};

use crate::arch;

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most verbose level that is printed.
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether records of `level` are printed.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Prints one record with its time stamp, level and module.
pub fn record(level: Level, module: &str, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    arch::console::with_locked(|out| {
        let _ = write_prefix(out, arch::time::uptime_ns(), level, module);
        let _ = out.write_fmt(args);
        let _ = out.write_str("\n");
    });
}

/// Prints text as is, without a prefix (the banner, console-style output).
pub fn raw(args: fmt::Arguments<'_>) {
    arch::console::with_locked(|out| {
        let _ = out.write_fmt(args);
    });
}

/// Prints from a fault or panic path without taking the console lock.
pub fn emergency(args: fmt::Arguments<'_>) {
    let mut out = arch::console::emergency_writer();
    let _ = out.write_fmt(args);
    let _ = out.write_str("\n");
}

macro_rules! kprintln {
    () => { $crate::klog::raw(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::klog::raw(format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        $crate::klog::record($level, module_path!(), format_args!($($arg)*))
    };
}
macro_rules! error { ($($arg:tt)*) => { log_at!(kcore::log::Level::Error, $($arg)*) }; }
#[allow(unused_macros)]
macro_rules! warn { ($($arg:tt)*) => { log_at!(kcore::log::Level::Warn, $($arg)*) }; }
macro_rules! info { ($($arg:tt)*) => { log_at!(kcore::log::Level::Info, $($arg)*) }; }
macro_rules! debug { ($($arg:tt)*) => { log_at!(kcore::log::Level::Debug, $($arg)*) }; }
