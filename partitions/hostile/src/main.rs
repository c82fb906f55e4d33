//! Calls every system call with arguments a well-behaved partition never passes: unknown
//! numbers, pointers into the kernel and into unmapped memory, misaligned and huge lengths,
//! ranges that wrap. Each call must return the documented error; none may fault the kernel.
#![no_std]
#![no_main]

use abi::{ERROR_BASE, SysError, Sysno};
use rt::println;
use rt::syscall::raw_syscall;

rt::entry!(main);

/// Pointers no partition may name: kernel half, null page, unmapped, just below the user top,
/// the canonical hole, and the top of the address space.
const BAD_POINTERS: [usize; 7] = [
    0xffff_ffff_8000_0000,
    0xffff_8000_0000_0000,
    0,
    0x0000_6000_0000_0000,
    abi::USER_TOP as usize - 8,
    0x0000_8000_0000_0000,
    usize::MAX - 7,
];

fn expect_error(what: &str, result: usize, wanted: SysError, failures: &mut u32) {
    if SysError::decode(result) != Err(wanted) {
        println!("FAIL: {what} returned {result:#x}, expected {wanted:?}");
        *failures += 1;
    }
}

fn main() {
    let mut failures = 0;
    let mut calls = 0u32;
    for number in [
        abi::SYSCALL_COUNT,
        abi::SYSCALL_COUNT + 1,
        100,
        0xffff,
        ERROR_BASE,
        usize::MAX,
    ] {
        calls += 1;
        expect_error(
            "an unknown syscall",
            raw_syscall(number, 0, 0),
            SysError::UnknownSyscall,
            &mut failures,
        );
    }
    for &ptr in &BAD_POINTERS {
        for len in [1usize, 8, 4096, 1 << 40, usize::MAX] {
            calls += 2;
            expect_error(
                "log_write of a bad pointer",
                raw_syscall(Sysno::LogWrite as usize, ptr, len),
                SysError::BadPointer,
                &mut failures,
            );
            calls += 1;
            expect_error(
                "partition_config into a bad pointer",
                raw_syscall(Sysno::PartitionConfig as usize, ptr, len),
                SysError::BadPointer,
                &mut failures,
            );
            expect_error(
                "partition_info into a bad pointer",
                raw_syscall(
                    Sysno::PartitionInfo as usize,
                    ptr,
                    len.max(abi::PartitionInfo::SIZE),
                ),
                SysError::BadPointer,
                &mut failures,
            );
        }
    }
    // A range that starts in the partition's own memory and runs past the user range or wraps.
    let own = &failures as *const u32 as usize;
    for len in [
        abi::USER_TOP as usize - own + 8,
        usize::MAX - own + 1,
        usize::MAX,
    ] {
        calls += 1;
        expect_error(
            "log_write running off its memory",
            raw_syscall(Sysno::LogWrite as usize, own, len),
            SysError::BadPointer,
            &mut failures,
        );
    }
    // Its own read-only code is not writable: partition_info must refuse to write there.
    calls += 1;
    expect_error(
        "partition_info into code",
        raw_syscall(
            Sysno::PartitionInfo as usize,
            main as *const () as usize,
            16,
        ),
        SysError::BadPointer,
        &mut failures,
    );
    // Too small a buffer is a bad argument, not a partial write.
    let mut small = [0u8; 8];
    calls += 1;
    expect_error(
        "partition_info into 8 bytes",
        raw_syscall(
            Sysno::PartitionInfo as usize,
            small.as_mut_ptr() as usize,
            8,
        ),
        SysError::BadArgument,
        &mut failures,
    );
    // A misaligned but valid buffer works: alignment is not the kernel's business.
    let mut buf = [0u8; 32];
    calls += 1;
    let r = raw_syscall(
        Sysno::PartitionInfo as usize,
        buf.as_mut_ptr() as usize + 3,
        16,
    );
    if SysError::decode(r) != Ok(abi::PartitionInfo::SIZE) {
        println!("FAIL: partition_info into a misaligned buffer returned {r:#x}");
        failures += 1;
    }
    // IPC objects this partition was not granted, and malformed IPC arguments.
    let (mut reply, mut buf) = ([0u8; 16], [0u8; 16]);
    let r = rt::syscall::call(0, b"x", &mut reply);
    calls += 1;
    if r != Err(SysError::BadArgument) && r != Err(SysError::NotGranted) {
        println!("FAIL: call on a channel it is not a client of returned {r:?}");
        failures += 1;
    }
    calls += 4;
    expect_error(
        "recv without a served channel",
        raw_syscall(Sysno::Recv as usize, buf.as_mut_ptr() as usize, buf.len()),
        SysError::NotGranted,
        &mut failures,
    );
    expect_error(
        "wait for bits nobody sends",
        raw_syscall(Sysno::Wait as usize, usize::MAX, 0),
        SysError::BadArgument,
        &mut failures,
    );
    expect_error(
        "notify of an unknown notification",
        raw_syscall(Sysno::Notify as usize, 1000, 0),
        SysError::BadArgument,
        &mut failures,
    );
    expect_error(
        "lookup with a kernel pointer",
        rt::syscall::raw_syscall5(Sysno::Lookup as usize, [0, 0xffff_ffff_8000_0000, 8, 0, 0]),
        SysError::BadPointer,
        &mut failures,
    );
    // Devices: none is granted to this partition, so every index is unknown, whatever else.
    for device in [0usize, 1, 15, 16, usize::MAX] {
        calls += 4;
        expect_error(
            "device_info of a device not granted",
            rt::syscall::raw_syscall5(
                Sysno::DeviceInfo as usize,
                [device, buf.as_mut_ptr() as usize, buf.len(), 0, 0],
            ),
            SysError::BadArgument,
            &mut failures,
        );
        expect_error(
            "pci_config_read of a device not granted",
            rt::syscall::raw_syscall5(Sysno::PciConfigRead as usize, [device, 0, 4, 0, 0]),
            SysError::BadArgument,
            &mut failures,
        );
        expect_error(
            "pci_config_write of a device not granted",
            rt::syscall::raw_syscall5(
                Sysno::PciConfigWrite as usize,
                [device, 0x10, 4, usize::MAX, 0],
            ),
            SysError::BadArgument,
            &mut failures,
        );
        expect_error(
            "irq_ack of a device not granted",
            raw_syscall(Sysno::IrqAck as usize, device, usize::MAX),
            SysError::BadArgument,
            &mut failures,
        );
    }
    calls += 1;
    expect_error(
        "lookup of a device kind with a kernel pointer",
        rt::syscall::raw_syscall5(Sysno::Lookup as usize, [4, 0xffff_ffff_8000_0000, 8, 0, 0]),
        SysError::BadPointer,
        &mut failures,
    );
    let _ = &mut buf;
    if failures == 0 {
        println!("all {calls} malformed calls returned their errors");
    } else {
        println!("{failures} of {calls} malformed calls misbehaved");
    }
}
