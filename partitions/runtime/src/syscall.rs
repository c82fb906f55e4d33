//! System call stubs (see bulkhead-abi for the numbers and the calling convention).

use abi::{ObjectKind, PartitionInfo, RecvResult, SysError, Sysno};

#[cfg(target_arch = "x86_64")]
fn raw5(n: usize, a: [usize; 5]) -> usize {
    let ret: usize;
    // SAFETY: `syscall` enters the kernel, which preserves every register but rax (result),
    // rcx and r11, and touches this partition's memory only within the pointer arguments
    // given, after checking them against the partition's own page tables.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") n => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
fn raw5(n: usize, a: [usize; 5]) -> usize {
    let ret: usize;
    // SAFETY: `svc #0` enters the kernel, which preserves every register but x0 and touches
    // this partition's memory only within the pointer arguments given, after checking them.
    unsafe {
        core::arch::asm!(
            "svc #0",
            in("x8") n,
            inlateout("x0") a[0] => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            in("x4") a[4],
            options(nostack),
        );
    }
    ret
}

fn raw(n: usize, a0: usize, a1: usize) -> usize {
    raw5(n, [a0, a1, 0, 0, 0])
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

/// Issues a system call by number with five arguments, for fuzzing.
pub fn raw_syscall5(number: usize, args: [usize; 5]) -> usize {
    raw5(number, args)
}

/// The index of the channel or notification called `name`, if it is granted to this partition.
pub fn lookup(kind: ObjectKind, name: &str) -> Result<usize, SysError> {
    SysError::decode(raw5(
        Sysno::Lookup as usize,
        [kind as usize, name.as_ptr() as usize, name.len(), 0, 0],
    ))
}

/// Sends `message` on `channel` and waits for the reply, which is written into `reply`;
/// returns the reply's length.
pub fn call(channel: usize, message: &[u8], reply: &mut [u8]) -> Result<usize, SysError> {
    let args = [
        channel,
        message.as_ptr() as usize,
        message.len(),
        reply.as_mut_ptr() as usize,
        reply.len(),
    ];
    SysError::decode(raw5(Sysno::Call as usize, args))
}

/// Waits for a call on one of this partition's server channels; the message lands in `buf`.
pub fn recv(buf: &mut [u8]) -> Result<RecvResult, SysError> {
    SysError::decode(raw(
        Sysno::Recv as usize,
        buf.as_mut_ptr() as usize,
        buf.len(),
    ))
    .map(RecvResult::decode)
}

/// Answers the call being served on `channel`.
pub fn reply(channel: usize, message: &[u8]) -> Result<(), SysError> {
    SysError::decode(raw5(
        Sysno::Reply as usize,
        [channel, message.as_ptr() as usize, message.len(), 0, 0],
    ))
    .map(|_| ())
}

/// Answers the call on `channel`, then waits for the next call, in one kernel entry.
pub fn reply_recv(channel: usize, message: &[u8], buf: &mut [u8]) -> Result<RecvResult, SysError> {
    let args = [
        channel,
        message.as_ptr() as usize,
        message.len(),
        buf.as_mut_ptr() as usize,
        buf.len(),
    ];
    SysError::decode(raw5(Sysno::ReplyRecv as usize, args)).map(RecvResult::decode)
}

/// Raises `notification` at its receiver.
pub fn notify(notification: usize) -> Result<(), SysError> {
    SysError::decode(raw(Sysno::Notify as usize, notification, 0)).map(|_| ())
}

/// Waits until a notification bit in `mask` is set; returns (and clears) the bits set.
pub fn wait(mask: u64) -> Result<u64, SysError> {
    SysError::decode(raw(Sysno::Wait as usize, mask as usize, 0)).map(|b| b as u64)
}

/// Returns (and clears) the notification bits in `mask` that are set, without waiting.
pub fn poll(mask: u64) -> Result<u64, SysError> {
    SysError::decode(raw(Sysno::Poll as usize, mask as usize, 0)).map(|b| b as u64)
}

/// Where shared region `region` is mapped in this partition, its size, whether it is writable
/// and, for the region's DMA owner only, its physical address.
pub fn region_info(region: usize) -> Result<abi::RegionInfo, SysError> {
    let mut buf = [0u8; abi::RegionInfo::SIZE];
    SysError::decode(raw5(
        Sysno::RegionInfo as usize,
        [region, buf.as_mut_ptr() as usize, buf.len(), 0, 0],
    ))?;
    Ok(abi::RegionInfo::from_bytes(&buf))
}

/// The address, physical address and size of a DMA region this partition owns.
pub fn dma_info(region: usize) -> Result<abi::DmaInfo, SysError> {
    let mut buf = [0u8; abi::DmaInfo::SIZE];
    SysError::decode(raw5(
        Sysno::DmaInfo as usize,
        [region, buf.as_mut_ptr() as usize, buf.len(), 0, 0],
    ))?;
    Ok(abi::DmaInfo::from_bytes(&buf))
}

/// Where a granted device's registers are mapped, and which notification bits its interrupts
/// raise.
pub fn device_info(device: usize) -> Result<abi::DeviceInfo, SysError> {
    let mut buf = [0u8; abi::DeviceInfo::SIZE];
    SysError::decode(raw5(
        Sysno::DeviceInfo as usize,
        [device, buf.as_mut_ptr() as usize, buf.len(), 0, 0],
    ))?;
    Ok(abi::DeviceInfo::from_bytes(&buf))
}

/// Reads `width` (1, 2 or 4) bytes at `offset` of a granted PCI function's configuration space.
pub fn pci_config_read(device: usize, offset: u16, width: u8) -> Result<u32, SysError> {
    SysError::decode(raw5(
        Sysno::PciConfigRead as usize,
        [device, offset as usize, width as usize, 0, 0],
    ))
    .map(|v| v as u32)
}

/// Writes `width` (1, 2 or 4) bytes at `offset` of a granted PCI function's configuration
/// space, where the kernel's mediation allows it.
pub fn pci_config_write(device: usize, offset: u16, width: u8, value: u32) -> Result<(), SysError> {
    SysError::decode(raw5(
        Sysno::PciConfigWrite as usize,
        [device, offset as usize, width as usize, value as usize, 0],
    ))
    .map(|_| ())
}

/// Tells the kernel the interrupts behind notification `bits` of `device` are handled, so it
/// unmasks their lines.
pub fn irq_ack(device: usize, bits: u64) -> Result<(), SysError> {
    SysError::decode(raw(Sysno::IrqAck as usize, device, bits as usize)).map(|_| ())
}

/// Copies this partition's settings (typed records, see [`crate::config`]) into `buf`; returns
/// their full length, which may exceed `buf.len()` (then only a prefix was copied).
pub fn partition_config(buf: &mut [u8]) -> Result<usize, SysError> {
    SysError::decode(raw(
        Sysno::PartitionConfig as usize,
        buf.as_mut_ptr() as usize,
        buf.len(),
    ))
}
