//! System call stubs (see bulkhead-abi for the numbers and the calling convention).

use abi::{PartitionInfo, SysError, Sysno};

#[cfg(target_arch = "x86_64")]
fn raw(n: usize, a0: usize, a1: usize) -> usize {
    let ret: usize;
    // SAFETY: `syscall` enters the kernel, which preserves every register but rax (result),
    // rdx (second result), rcx and r11, and never touches this partition's memory except where
    // a pointer argument tells it to, within the lengths given.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") n => ret,
            in("rdi") a0,
            in("rsi") a1,
            lateout("rdx") _,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
fn raw(n: usize, a0: usize, a1: usize) -> usize {
    let ret: usize;
    // SAFETY: `svc #0` enters the kernel, which preserves every register but x0 and x1 and
    // touches this partition's memory only within the pointer arguments given.
    unsafe {
        core::arch::asm!(
            "svc #0",
            in("x8") n,
            inlateout("x0") a0 => ret,
            inlateout("x1") a1 => _,
            options(nostack),
        );
    }
    ret
}

/// Writes `bytes` to the kernel log as one record.
pub fn log_write(bytes: &[u8]) -> Result<usize, SysError> {
    SysError::decode(raw(
        Sysno::LogWrite as usize,
        bytes.as_ptr() as usize,
        bytes.len(),
    ))
}

/// Gives up the rest of this turn.
pub fn yield_now() {
    raw(Sysno::Yield as usize, 0, 0);
}

/// Nanoseconds since boot.
pub fn time_now_ns() -> u64 {
    raw(Sysno::TimeNow as usize, 0, 0) as u64
}

/// Blocks until the clock reaches `deadline_ns`.
pub fn sleep_until(deadline_ns: u64) {
    raw(Sysno::SleepUntil as usize, deadline_ns as usize, 0);
}

/// This partition's identity and generation.
pub fn partition_info() -> Result<PartitionInfo, SysError> {
    let mut buf = [0u8; PartitionInfo::SIZE];
    SysError::decode(raw(
        Sysno::PartitionInfo as usize,
        buf.as_mut_ptr() as usize,
        buf.len(),
    ))?;
    Ok(PartitionInfo::from_bytes(&buf))
}

/// Ends the partition; its health policy decides what follows.
pub fn exit(code: usize) -> ! {
    raw(Sysno::Exit as usize, code, 0);
    // The kernel never returns from exit; if it did, fault rather than run on.
    loop {
        core::hint::spin_loop();
    }
}

/// Issues a system call by number, for tests that probe the kernel with malformed arguments.
pub fn raw_syscall(number: usize, a0: usize, a1: usize) -> usize {
    raw(number, a0, a1)
}
