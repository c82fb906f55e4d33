//! Partitions at run time: loading them from the system image, their threads' saved
//! contexts, system calls, faults and the health policy, and the window schedule.
//!
//! Every function here runs in a kernel entry (a trap, IRQs masked) or before the first
//! partition starts, so the state behind [`EXEC`] is never contended; the lock only makes that
//! visible to the compiler. Each entry ends by leaving some context in the trap frame: the
//! interrupted thread's, another thread's, or the idle loop's.

use abi::{PartitionInfo, SysError, Sysno, USER_BASE, USER_STACK_TOP};
use kcore::cmdline::CommandLine;
use kcore::elf::{EM_AARCH64, EM_X86_64, Elf};
use kcore::image::{HealthPolicy, SystemImage};
use kcore::log::Level;
use kcore::mem::PAGE_SIZE;
use spin::Mutex;

use crate::arch::mm::{AddressSpace, MapError};
use crate::arch::{self, ExitStatus, TrapFrame};
use crate::uaccess::{UserSlice, copy_in, copy_out};

/// Most partitions a system may have.
pub const MAX_PARTITIONS: usize = 16;
/// Most windows in a major frame.
pub const MAX_WINDOWS: usize = 64;
/// Longest log record a partition may write in one call.
const MAX_LOG_RECORD: usize = 256;
/// Restart times remembered per partition, bounding `max-restarts`.
const RESTART_HISTORY: usize = 16;

/// Page permissions of a user mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub write: bool,
    pub exec: bool,
}

/// What a partition did wrong.
#[allow(dead_code, reason = "each architecture raises a subset of these")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    PageFault,
    GeneralProtection,
    InvalidOpcode,
    DivideError,
    Breakpoint,
    Alignment,
    /// The partition exited with a non-zero code.
    Exit(u64),
    /// Another exception, by vector or class.
    Other(u64),
}

/// A fault of a partition, as the architecture layer reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub pc: u64,
    /// The faulting data address, where the CPU reports one.
    pub address: Option<u64>,
}

impl core::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FaultKind::PageFault => f.write_str("page fault"),
            FaultKind::GeneralProtection => f.write_str("general protection fault"),
            FaultKind::InvalidOpcode => f.write_str("invalid opcode"),
            FaultKind::DivideError => f.write_str("divide error"),
            FaultKind::Breakpoint => f.write_str("breakpoint"),
            FaultKind::Alignment => f.write_str("alignment fault"),
            FaultKind::Exit(code) => write!(f, "exit with code {code}"),
            FaultKind::Other(v) => write!(f, "exception {v}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ready,
    Sleeping {
        until_ns: u64,
    },
    /// Ended by its health policy or by exiting with code 0.
    Stopped,
}

struct Partition {
    name: &'static str,
    elf: Elf<'static>,
    memory_bytes: u64,
    stack_bytes: u64,
    priority: u8,
    policy: HealthPolicy,
    background: bool,
    space: AddressSpace,
    state: State,
    generation: u32,
    context: TrapFrame,
    restarts: [u64; RESTART_HISTORY],
    restart_count: usize,
    /// Time charged to the partition, ns.
    used_ns: u64,
    /// Windows of this partition that began while it was ready.
    windows_started: u64,
    /// Longest delay from a window's start to the partition running in it, ns.
    max_start_latency_ns: u64,
}

#[derive(Clone, Copy, Default)]
struct Window {
    partition: usize,
    offset_ns: u64,
    length_ns: u64,
}

struct Exec {
    partitions: [Option<Partition>; MAX_PARTITIONS],
    count: usize,
    windows: [Window; MAX_WINDOWS],
    window_count: usize,
    major_frame_ns: u64,
    epoch_ns: u64,
    /// The partition whose context is in the trap frame, or `None` for the idle loop.
    current: Option<usize>,
    /// When `current` last started running.
    since_ns: u64,
    /// Power off (success) once this much time has passed, for bounded test runs.
    run_until_ns: Option<u64>,
    /// Power off when every partition has stopped.
    exit_when_done: bool,
    /// The window instance (major frame number * windows + index) whose start was accounted.
    last_window_instance: Option<u64>,
}

static EXEC: Mutex<Option<Exec>> = Mutex::new(None);

/// Why a partition could not be loaded.
enum LoadError {
    Elf(kcore::elf::ElfError),
    /// A segment outside the user range, or writable and executable at once (W^X).
    BadSegment(usize),
    /// Two segments with different permissions share a page.
    SharedPage(u64),
    OverBudget {
        needed: u64,
        budget: u64,
    },
    OutOfMemory,
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::Elf(e) => write!(f, "malformed ELF: {e:?}"),
            LoadError::BadSegment(i) => write!(
                f,
                "segment {i} is outside the user range or writable and executable"
            ),
            LoadError::SharedPage(page) => write!(
                f,
                "segments with different permissions share page {page:#x}"
            ),
            LoadError::OverBudget { needed, budget } => {
                write!(
                    f,
                    "needs more than its memory budget ({needed} of {budget} bytes)"
                )
            }
            LoadError::OutOfMemory => f.write_str("out of physical memory"),
        }
    }
}

fn elf_machine() -> u16 {
    if cfg!(target_arch = "aarch64") {
        EM_AARCH64
    } else {
        EM_X86_64
    }
}

/// Maps and fills the partition's segments and stack; on restart, `reload` rewrites the same
/// frames instead of mapping new ones. Returns the bytes of memory used.
fn load(p: &mut Partition, reload: bool) -> Result<u64, LoadError> {
    let mut used = 0u64;
    let mut last_page: Option<(u64, Perm)> = None;
    for (index, seg) in p.elf.load_segments().enumerate() {
        let seg = seg.map_err(LoadError::Elf)?;
        let perm = Perm {
            write: seg.flags.writable(),
            exec: seg.flags.executable(),
        };
        let end = seg.vaddr + seg.mem_size;
        if seg.vaddr < USER_BASE
            || end > USER_STACK_TOP - p.stack_bytes - PAGE_SIZE
            || (perm.write && perm.exec)
        {
            return Err(LoadError::BadSegment(index));
        }
        let data = p.elf.segment_data(&seg);
        let first = seg.vaddr & !(PAGE_SIZE - 1);
        for page in (first..end.next_multiple_of(PAGE_SIZE)).step_by(PAGE_SIZE as usize) {
            if let Some((shared, shared_perm)) = last_page
                && shared == page
            {
                if shared_perm != perm {
                    return Err(LoadError::SharedPage(page));
                }
            } else {
                used += PAGE_SIZE;
                if used > p.memory_bytes {
                    return Err(LoadError::OverBudget {
                        needed: used,
                        budget: p.memory_bytes,
                    });
                }
                map_fresh_page(p, page, perm, reload)?;
            }
            last_page = Some((page, perm));
            // Copy the part of the segment's file bytes that falls in this page.
            let lo = page.max(seg.vaddr);
            let hi = (page + PAGE_SIZE).min(seg.vaddr + data.len() as u64);
            if lo < hi {
                let (phys, _) = p.space.translate(lo).ok_or(LoadError::OutOfMemory)?;
                let from = (lo - seg.vaddr) as usize;
                arch::write_phys(phys, &data[from..from + (hi - lo) as usize]);
            }
        }
    }
    // The stack, with an unmapped guard page below it.
    for page in (USER_STACK_TOP - p.stack_bytes..USER_STACK_TOP).step_by(PAGE_SIZE as usize) {
        used += PAGE_SIZE;
        if used > p.memory_bytes {
            return Err(LoadError::OverBudget {
                needed: used,
                budget: p.memory_bytes,
            });
        }
        map_fresh_page(
            p,
            page,
            Perm {
                write: true,
                exec: false,
            },
            reload,
        )?;
    }
    Ok(used)
}

/// Maps a zeroed frame at `page`, or on reload zeroes the frame already there.
fn map_fresh_page(p: &mut Partition, page: u64, perm: Perm, reload: bool) -> Result<(), LoadError> {
    if reload {
        let (phys, _) = p.space.translate(page).ok_or(LoadError::OutOfMemory)?;
        arch::zero_phys_page(phys);
        return Ok(());
    }
    let frame = arch::alloc_zeroed_frame(arch::phys_to_virt).ok_or(LoadError::OutOfMemory)?;
    p.space.map(page, frame, perm).map_err(|e| match e {
        MapError::OutOfMemory => LoadError::OutOfMemory,
        MapError::BadAddress => LoadError::BadSegment(usize::MAX),
    })
}

/// Creates every partition of `image` and runs them; never returns.
pub fn start(image: SystemImage<'static>, cmdline: &CommandLine<'_>) -> ! {
    const NONE: Option<Partition> = None;
    // Ticks would take the EXEC lock; none may arrive until it is set and this code is done.
    arch::cpu::disable_interrupts();
    let now = arch::time::uptime_ns();
    let mut exec = Exec {
        partitions: [NONE; MAX_PARTITIONS],
        count: 0,
        windows: [Window::default(); MAX_WINDOWS],
        window_count: 0,
        major_frame_ns: image.major_frame_ns().max(1),
        epoch_ns: now,
        current: None,
        since_ns: now,
        run_until_ns: cmdline
            .value("run_ms")
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| now + ms * 1_000_000),
        exit_when_done: cmdline.flag("exit"),
        last_window_instance: None,
    };
    for i in 0..image.partition_count().min(MAX_PARTITIONS) {
        let Ok(record) = image.partition(i) else {
            continue;
        };
        let elf = match Elf::parse(record.elf, elf_machine()) {
            Ok(elf) => elf,
            Err(e) => {
                error!("partition {}: bad program: {e:?}; not started", record.name);
                continue;
            }
        };
        let Some(space) = AddressSpace::new() else {
            error!(
                "partition {}: no address space can be made on this architecture yet",
                record.name
            );
            continue;
        };
        let stack_bytes = (record.stack_bytes as u64)
            .next_multiple_of(PAGE_SIZE)
            .max(PAGE_SIZE);
        let mut p = Partition {
            name: record.name,
            elf,
            memory_bytes: record.memory_bytes,
            stack_bytes,
            priority: record.priority,
            policy: record.policy,
            background: record.background,
            space,
            state: State::Ready,
            generation: 0,
            context: TrapFrame::user(elf.entry(), USER_STACK_TOP),
            restarts: [0; RESTART_HISTORY],
            restart_count: 0,
            used_ns: 0,
            windows_started: 0,
            max_start_latency_ns: 0,
        };
        match load(&mut p, false) {
            Ok(used) => info!(
                "partition {}: loaded, {} KiB of {} KiB, entry {:#x}, priority {}{}",
                p.name,
                used / 1024,
                p.memory_bytes / 1024,
                elf.entry(),
                p.priority,
                if p.background { ", background" } else { "" }
            ),
            Err(e) => {
                error!("partition {}: cannot load: {e}; not started", p.name);
                continue;
            }
        }
        exec.partitions[i] = Some(p);
        exec.count = exec.count.max(i + 1);
    }
    for i in 0..image.window_count().min(MAX_WINDOWS) {
        if let Ok(w) = image.window(i) {
            exec.windows[i] = Window {
                partition: w.partition as usize,
                offset_ns: w.offset_ns,
                length_ns: w.length_ns,
            };
            exec.window_count = i + 1;
        }
    }
    // Time zero of the schedule is now, after loading, so loading time is no window's lateness.
    exec.epoch_ns = arch::time::uptime_ns();
    exec.since_ns = exec.epoch_ns;
    exec.run_until_ns = exec.run_until_ns.map(|t| t + (exec.epoch_ns - now));
    info!(
        "schedule: major frame {} us, {} windows; partitions start now",
        exec.major_frame_ns / 1000,
        exec.window_count
    );
    *EXEC.lock() = Some(exec);
    // From here on the kernel runs only in traps: the next tick picks the first partition.
    // (wait_for_interrupt enables interrupts atomically with sleeping.)
    loop {
        arch::cpu::wait_for_interrupt();
    }
}

impl Exec {
    /// The window active at `now`: (index, start time), if any.
    fn active_window(&self, now: u64) -> Option<(usize, u64)> {
        let since_epoch = now.saturating_sub(self.epoch_ns);
        let frame_start = now - since_epoch % self.major_frame_ns;
        let t = since_epoch % self.major_frame_ns;
        self.windows[..self.window_count]
            .iter()
            .position(|w| t >= w.offset_ns && t < w.offset_ns + w.length_ns)
            .map(|i| (i, frame_start + self.windows[i].offset_ns))
    }

    /// The partition owning the window active at `now`, if any.
    fn window_owner(&self, now: u64) -> Option<usize> {
        self.active_window(now)
            .map(|(i, _)| self.windows[i].partition)
    }

    /// Records when the owner of a newly begun window first runs in it.
    fn account_window_start(&mut self, now: u64) {
        let Some((index, start)) = self.active_window(now) else {
            return;
        };
        let frame = now.saturating_sub(self.epoch_ns) / self.major_frame_ns;
        let instance = frame * MAX_WINDOWS as u64 + index as u64;
        if self.last_window_instance == Some(instance) {
            return;
        }
        let owner = self.windows[index].partition;
        if self.current != Some(owner) {
            return;
        }
        self.last_window_instance = Some(instance);
        if let Some(p) = self.partitions[owner].as_mut() {
            p.windows_started += 1;
            p.max_start_latency_ns = p.max_start_latency_ns.max(now - start);
        }
    }

    /// The highest-priority ready partition allowed to run at `now`: the window's owner or a
    /// background partition; among equals, the one after `current` (round robin).
    fn pick(&self, now: u64) -> Option<usize> {
        let owner = self.window_owner(now);
        let start = self.current.map_or(0, |c| c + 1);
        let mut best: Option<(u8, usize)> = None;
        for k in 0..self.count {
            let i = (start + k) % self.count.max(1);
            let Some(p) = &self.partitions[i] else {
                continue;
            };
            if p.state != State::Ready || !(Some(i) == owner || p.background) {
                continue;
            }
            if best.is_none_or(|(prio, _)| p.priority > prio) {
                best = Some((p.priority, i));
            }
        }
        best.map(|(_, i)| i)
    }

    fn wake_sleepers(&mut self, now: u64) {
        for p in self.partitions[..self.count].iter_mut().flatten() {
            if let State::Sleeping { until_ns } = p.state
                && until_ns <= now
            {
                p.state = State::Ready;
                p.context.set_return(0);
            }
        }
    }

    /// Saves the trap frame into the current partition, picks who runs next and loads its
    /// context (or the idle loop's) into the frame.
    fn switch(&mut self, frame: &mut TrapFrame, now: u64) {
        if let Some(c) = self.current
            && let Some(p) = &mut self.partitions[c]
        {
            p.used_ns += now.saturating_sub(self.since_ns);
            if p.state == State::Ready || matches!(p.state, State::Sleeping { .. }) {
                p.context = *frame;
            }
        }
        self.wake_sleepers(now);
        self.since_ns = now;
        self.current = self.pick(now);
        self.account_window_start(now);
        match self.current.and_then(|c| self.partitions[c].as_ref()) {
            Some(p) => {
                p.space.activate();
                *frame = p.context;
            }
            None => *frame = TrapFrame::idle(),
        }
    }

    /// Charges the current partition for its time and forgets the trap frame's contents, which
    /// must not be saved (the partition faulted: its context was reset or it is stopped).
    fn discard_current(&mut self, now: u64) {
        if let Some(c) = self.current.take()
            && let Some(p) = &mut self.partitions[c]
        {
            p.used_ns += now.saturating_sub(self.since_ns);
        }
        self.since_ns = now;
    }

    fn all_stopped(&self) -> bool {
        self.partitions[..self.count]
            .iter()
            .flatten()
            .all(|p| p.state == State::Stopped)
    }
}

fn with_exec(f: impl FnOnce(&mut Exec)) {
    if let Some(exec) = EXEC.lock().as_mut() {
        f(exec);
    }
}

/// The timer tick: wake sleepers, enforce windows, maybe switch.
pub fn on_tick(frame: &mut TrapFrame) {
    with_exec(|exec| {
        let now = arch::time::uptime_ns();
        if exec.run_until_ns.is_some_and(|t| now >= t) {
            report(exec);
            info!(
                "run time elapsed after {} us; powering off",
                (now - exec.epoch_ns) / 1000
            );
            arch::power_off(ExitStatus::Success);
        }
        exec.switch(frame, now);
    });
}

/// Prints each partition's state, generation and time used.
fn report(exec: &Exec) {
    for p in exec.partitions[..exec.count].iter().flatten() {
        info!(
            "partition {}: {:?}, generation {}, {} us used, {} windows started, max start latency {} us",
            p.name,
            p.state,
            p.generation,
            p.used_ns / 1000,
            p.windows_started,
            p.max_start_latency_ns / 1000
        );
    }
}

/// A system call from the current partition.
pub fn on_syscall(frame: &mut TrapFrame) {
    with_exec(|exec| {
        let Some(current) = exec.current else { return };
        let (number, args) = frame.syscall();
        let now = arch::time::uptime_ns();
        let mut reschedule = false;
        let p = exec.partitions[current]
            .as_mut()
            .expect("the current partition exists");
        let result: Result<usize, SysError> = match Sysno::from_usize(number) {
            None => Err(SysError::UnknownSyscall),
            Some(Sysno::LogWrite) => {
                let mut buf = [0u8; MAX_LOG_RECORD];
                copy_in(&p.space, UserSlice::new(args[0], args[1]), &mut buf)
                    .inspect(|&n| log_partition(p.name, &buf[..n]))
            }
            Some(Sysno::Yield) => {
                reschedule = true;
                Ok(0)
            }
            Some(Sysno::TimeNow) => Ok(now as usize),
            Some(Sysno::SleepUntil) => {
                if args[0] as u64 > now {
                    p.state = State::Sleeping {
                        until_ns: args[0] as u64,
                    };
                    reschedule = true;
                }
                Ok(0)
            }
            Some(Sysno::PartitionInfo) => {
                let info = PartitionInfo {
                    id: current as u32,
                    generation: p.generation,
                    memory_bytes: p.memory_bytes,
                };
                copy_out(&p.space, UserSlice::new(args[0], args[1]), &info.to_bytes())
                    .map(|()| PartitionInfo::SIZE)
            }
            Some(Sysno::Exit) => {
                let code = args[0] as u64;
                if code == 0 {
                    info!("partition {}: exited", p.name);
                    p.state = State::Stopped;
                    reschedule = true;
                    Ok(0)
                } else {
                    frame.set_return(0);
                    let fault = Fault {
                        kind: FaultKind::Exit(code),
                        pc: frame.pc(),
                        address: None,
                    };
                    handle_fault(exec, current, fault, now);
                    exec.discard_current(now);
                    exec.switch(frame, now);
                    return;
                }
            }
        };
        frame.set_return(result.unwrap_or_else(SysError::encode));
        if reschedule {
            exec.switch(frame, now);
        }
        if exec.exit_when_done && exec.all_stopped() {
            report(exec);
            info!("every partition has ended; powering off");
            arch::power_off(ExitStatus::Success);
        }
    });
}

fn log_partition(name: &str, bytes: &[u8]) {
    struct Lossy<'a>(&'a [u8]);
    impl core::fmt::Display for Lossy<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            for chunk in self.0.utf8_chunks() {
                f.write_str(chunk.valid())?;
                if !chunk.invalid().is_empty() {
                    f.write_str("\u{fffd}")?;
                }
            }
            Ok(())
        }
    }
    crate::klog::record(Level::Info, name, format_args!("{}", Lossy(bytes)));
}

/// A fault of the current partition: apply its health policy and run someone else.
pub fn on_user_fault(frame: &mut TrapFrame, fault: Fault) {
    with_exec(|exec| {
        let now = arch::time::uptime_ns();
        if let Some(current) = exec.current {
            handle_fault(exec, current, fault, now);
        }
        exec.discard_current(now);
        exec.switch(frame, now);
    });
}

fn handle_fault(exec: &mut Exec, index: usize, fault: Fault, now: u64) {
    let Some(p) = exec.partitions[index].as_mut() else {
        return;
    };
    match fault.address {
        Some(addr) => error!(
            "health: partition {}: {} at address {addr:#x} (pc {:#x})",
            p.name, fault.kind, fault.pc
        ),
        None => error!(
            "health: partition {}: {} (pc {:#x})",
            p.name, fault.kind, fault.pc
        ),
    }
    match p.policy {
        HealthPolicy::Halt => {
            error!(
                "health: partition {}'s policy is halt: stopping the system",
                p.name
            );
            arch::power_off(ExitStatus::Failure);
        }
        HealthPolicy::Stop => {
            p.state = State::Stopped;
            warn!("health: partition {} stopped (policy stop)", p.name);
        }
        HealthPolicy::Restart {
            max_restarts,
            period_ns,
        } => {
            let recent = p.restarts[..p.restart_count.min(RESTART_HISTORY)]
                .iter()
                .filter(|&&t| now.saturating_sub(t) < period_ns)
                .count();
            if recent >= (max_restarts as usize).min(RESTART_HISTORY) {
                p.state = State::Stopped;
                warn!(
                    "health: partition {} stopped: {} restarts within {} ms is its limit",
                    p.name,
                    recent,
                    period_ns / 1_000_000
                );
                return;
            }
            p.restarts[p.restart_count % RESTART_HISTORY] = now;
            p.restart_count += 1;
            p.generation += 1;
            match load(p, true) {
                Ok(_) => {
                    p.context = TrapFrame::user(p.elf.entry(), USER_STACK_TOP);
                    p.state = State::Ready;
                    info!(
                        "health: partition {} restarted (generation {})",
                        p.name, p.generation
                    );
                }
                Err(e) => {
                    p.state = State::Stopped;
                    error!(
                        "health: partition {} could not be reloaded ({e}); stopped",
                        p.name
                    );
                }
            }
        }
    }
}
