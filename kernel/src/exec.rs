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
use kcore::health::{Action, HealthMonitor, Policy};
pub use kcore::health::{Fault, FaultKind};
use kcore::image::{HealthPolicy, SystemImage};
use kcore::log::Level;
use kcore::mem::PAGE_SIZE;
use kcore::sched::{PartitionId, Priority, Schedule, Scheduler, ThreadId, Window};
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

/// Page permissions of a user mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub write: bool,
    pub exec: bool,
}

/// Window boundaries and starts later than this count as late. The timer is programmed for
/// each boundary; this allows for the interrupt's and the kernel's own path under emulation.
const TOLERANCE_NS: u64 = 200_000;

struct Partition {
    name: &'static str,
    elf: Elf<'static>,
    memory_bytes: u64,
    stack_bytes: u64,
    space: AddressSpace,
    /// The saved context of its (single) thread.
    context: TrapFrame,
}

struct Exec {
    partitions: [Option<Partition>; MAX_PARTITIONS],
    names: [&'static str; MAX_PARTITIONS],
    count: usize,
    /// One thread per partition for now: thread `i` belongs to partition `i`.
    sched: Scheduler<MAX_PARTITIONS>,
    health: HealthMonitor<MAX_PARTITIONS>,
    /// The partition whose context is in the trap frame, or `None` for the idle loop.
    current: Option<usize>,
    /// Power off (success) once this time has passed, for bounded test runs.
    run_until_ns: Option<u64>,
    /// Power off when every partition has stopped.
    exit_when_done: bool,
    /// Power off when this partition has stopped (`exit_after=NAME`).
    exit_after: Option<usize>,
    epoch_ns: u64,
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

/// The partition's stored policy, in the health monitor's terms.
fn policy(p: HealthPolicy) -> Policy {
    match p {
        HealthPolicy::Stop => Policy::Stop,
        HealthPolicy::Halt => Policy::Halt,
        HealthPolicy::Restart {
            max_restarts,
            period_ns,
        } => Policy::Restart {
            max_restarts,
            period_ns,
        },
    }
}

/// Creates every partition of `image` and runs them; never returns.
pub fn start(image: SystemImage<'static>, cmdline: &CommandLine<'_>) -> ! {
    const NONE: Option<Partition> = None;
    // Ticks would take the EXEC lock; none may arrive until it is set and this code is done.
    arch::cpu::disable_interrupts();
    let mut partitions = [NONE; MAX_PARTITIONS];
    let mut names = [""; MAX_PARTITIONS];
    let mut health = HealthMonitor::<MAX_PARTITIONS>::new();
    let mut threads = [None; MAX_PARTITIONS];
    let mut background = [PartitionId(0); MAX_PARTITIONS];
    let mut background_count = 0;
    let count = image.partition_count().min(MAX_PARTITIONS);
    for i in 0..count {
        let Ok(record) = image.partition(i) else {
            continue;
        };
        names[i] = record.name;
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
            space,
            context: TrapFrame::user(elf.entry(), USER_STACK_TOP),
        };
        let used = match load(&mut p, false) {
            Ok(used) => used,
            Err(e) => {
                error!("partition {}: cannot load: {e}; not started", p.name);
                continue;
            }
        };
        if let Err(e) = health.configure(PartitionId(i as u8), policy(record.policy)) {
            error!(
                "partition {}: health policy refused ({e:?}); not started",
                p.name
            );
            continue;
        }
        info!(
            "partition {}: loaded, {} KiB of {} KiB, entry {:#x}, priority {}{}",
            p.name,
            used / 1024,
            p.memory_bytes / 1024,
            elf.entry(),
            record.priority,
            if record.background {
                ", background"
            } else {
                ""
            }
        );
        if record.background {
            background[background_count] = PartitionId(i as u8);
            background_count += 1;
        }
        threads[i] =
            Some(Priority::new(record.priority.min(Priority::MAX.get())).unwrap_or(Priority::MAX));
        partitions[i] = Some(p);
    }
    let mut windows = [Window {
        partition: PartitionId(0),
        offset_ns: 0,
        length_ns: 0,
    }; MAX_WINDOWS];
    let window_count = image.window_count().min(MAX_WINDOWS);
    for (i, slot) in windows.iter_mut().enumerate().take(window_count) {
        if let Ok(w) = image.window(i) {
            *slot = Window {
                partition: PartitionId(w.partition as u8),
                offset_ns: w.offset_ns,
                length_ns: w.length_ns,
            };
        }
    }
    info!(
        "schedule: major frame {} us, {} windows; partitions start now",
        image.major_frame_ns() / 1000,
        window_count
    );
    // Time zero of the schedule is a little after now: loading and the setup below are no
    // window's lateness, and the first window starts on a timer deadline like every other.
    const SETUP_MARGIN_NS: u64 = 2_000_000;
    let epoch_ns = arch::time::uptime_ns() + SETUP_MARGIN_NS;
    let schedule = match Schedule::new(
        image.major_frame_ns(),
        &windows[..window_count],
        &background[..background_count],
        epoch_ns,
    ) {
        Ok(schedule) => schedule,
        Err(e) => {
            error!("the system image's schedule is invalid: {e:?}");
            arch::power_off(ExitStatus::Failure);
        }
    };
    let mut sched = Scheduler::<MAX_PARTITIONS>::new(schedule, TOLERANCE_NS);
    for (i, priority) in threads.iter().enumerate().take(count) {
        if let Some(priority) = priority {
            // Thread ids are handed out in order, so thread `i` is partition `i`'s.
            match sched.add_thread(PartitionId(i as u8), *priority, true) {
                Ok(id) if id == ThreadId(i as u16) => {}
                _ => {
                    error!("partition {}: the scheduler refused its thread", names[i]);
                    arch::power_off(ExitStatus::Failure);
                }
            }
        } else {
            // Keep ids aligned with partition numbers: a placeholder that never runs.
            let _ = sched.add_thread(PartitionId(i as u8), Priority::MAX, false);
            let _ = sched.stop_partition(PartitionId(i as u8));
        }
    }
    let exec = Exec {
        partitions,
        names,
        count,
        sched,
        health,
        current: None,
        run_until_ns: cmdline
            .value("run_ms")
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| epoch_ns + ms * 1_000_000),
        exit_when_done: cmdline.flag("exit"),
        exit_after: cmdline
            .value("exit_after")
            .and_then(|name| names[..count].iter().position(|n| *n == name)),
        epoch_ns,
    };
    *EXEC.lock() = Some(exec);
    // From here on the kernel runs only in traps: the first deadline (now) picks the first
    // partition, and every kernel entry programs the next one.
    arch::time::set_deadline(epoch_ns);
    // (wait_for_interrupt enables interrupts atomically with sleeping.)
    loop {
        arch::cpu::wait_for_interrupt();
    }
}

impl Exec {
    /// Saves the trap frame into the current partition (unless `keep_current` is false: it
    /// faulted and its context was reset), asks the scheduler who runs next and loads that
    /// context, or the idle loop's, into the frame.
    fn switch(&mut self, frame: &mut TrapFrame, now: u64, keep_current: bool) {
        if let Some(c) = self.current
            && keep_current
            && let Some(p) = &mut self.partitions[c]
        {
            p.context = *frame;
        }
        let dispatch = self.sched.dispatch(now);
        let deadline = self
            .run_until_ns
            .map_or(dispatch.next_event_ns, |t| t.min(dispatch.next_event_ns));
        arch::time::set_deadline(deadline);
        self.current = dispatch.thread.map(|t| t.0 as usize);
        match self.current.and_then(|c| self.partitions[c].as_ref()) {
            Some(p) => {
                p.space.activate();
                *frame = p.context;
            }
            None => *frame = TrapFrame::idle(),
        }
    }

    fn all_stopped(&self) -> bool {
        (0..self.count).all(|i| self.sched.is_stopped(PartitionId(i as u8)))
    }
}

fn with_exec(f: impl FnOnce(&mut Exec)) {
    if let Some(exec) = EXEC.lock().as_mut() {
        f(exec);
    }
}

/// The timer tick: the scheduler wakes sleepers, enforces windows and may switch.
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
        exec.switch(frame, now, true);
    });
}

/// Prints the scheduler's accounting table and each partition's health.
fn report(exec: &Exec) {
    let table = exec.sched.report(&exec.names[..exec.count]);
    crate::klog::raw(format_args!("{table}"));
    for i in 0..exec.count {
        let id = PartitionId(i as u8);
        if let (Some(state), Some(generation)) = (exec.health.state(id), exec.health.generation(id))
        {
            // A partition that exited is stopped as far as the scheduler is concerned, while the
            // health monitor, which only sees faults, still calls it running.
            let state = if exec.sched.is_stopped(id) {
                "Stopped"
            } else {
                if state == kcore::health::PartitionState::Running {
                    "Running"
                } else {
                    "Restarting"
                }
            };
            info!(
                "partition {}: {state}, generation {generation}",
                exec.names[i]
            );
        }
    }
}

/// A system call from the current partition.
pub fn on_syscall(frame: &mut TrapFrame) {
    with_exec(|exec| {
        let Some(current) = exec.current else { return };
        let (number, args) = frame.syscall();
        let now = arch::time::uptime_ns();
        let id = PartitionId(current as u8);
        let thread = ThreadId(current as u16);
        let mut reschedule = false;
        let generation = exec.health.generation(id).unwrap_or(0);
        let p = exec.partitions[current]
            .as_mut()
            .expect("the current partition exists");
        let result: Result<usize, SysError> = match Sysno::from_usize(number) {
            None => Err(SysError::UnknownSyscall),
            Some(Sysno::LogWrite) => {
                let mut buf = [0u8; MAX_LOG_RECORD];
                copy_in(&p.space, UserSlice::new(args[0], args[1]), &mut buf).inspect(|&n| {
                    if n > 0 {
                        log_partition(p.name, &buf[..n]);
                    }
                })
            }
            Some(Sysno::Yield) => {
                let _ = exec.sched.yield_now(thread);
                reschedule = true;
                Ok(0)
            }
            Some(Sysno::TimeNow) => Ok(now as usize),
            Some(Sysno::SleepUntil) => {
                if args[0] as u64 > now {
                    let _ = exec.sched.block_until(thread, args[0] as u64);
                    reschedule = true;
                }
                Ok(0)
            }
            Some(Sysno::PartitionInfo) => {
                let info = PartitionInfo {
                    id: current as u32,
                    generation,
                    memory_bytes: p.memory_bytes,
                };
                copy_out(&p.space, UserSlice::new(args[0], args[1]), &info.to_bytes())
                    .map(|()| PartitionInfo::SIZE)
            }
            Some(Sysno::Exit) => {
                let code = args[0] as u64;
                if code == 0 {
                    info!("partition {}: exited", p.name);
                    let _ = exec.sched.stop_partition(id);
                    exec.switch(frame, now, false);
                } else {
                    info!("partition {}: exited with code {code}", p.name);
                    let fault = Fault {
                        kind: FaultKind::Other(code as u32),
                        pc: frame.pc(),
                        address: None,
                    };
                    handle_fault(exec, current, fault, now);
                    exec.switch(frame, now, false);
                }
                check_all_stopped(exec);
                return;
            }
        };
        frame.set_return(result.unwrap_or_else(SysError::encode));
        if reschedule {
            exec.switch(frame, now, true);
        }
    });
}

/// With `exit` on the command line, powers off once no partition is left; with
/// `exit_after=NAME`, once that partition has ended.
fn check_all_stopped(exec: &Exec) {
    if exec.exit_when_done && exec.all_stopped() {
        report(exec);
        info!("every partition has ended; powering off");
        arch::power_off(ExitStatus::Success);
    }
    if let Some(p) = exec.exit_after
        && exec.sched.is_stopped(PartitionId(p as u8))
    {
        report(exec);
        info!("partition {} has ended; powering off", exec.names[p]);
        arch::power_off(ExitStatus::Success);
    }
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
        exec.switch(frame, now, false);
        check_all_stopped(exec);
    });
}

/// Applies the health monitor's decision about a fault of partition `index`.
fn handle_fault(exec: &mut Exec, index: usize, fault: Fault, now: u64) {
    let id = PartitionId(index as u8);
    let action = exec.health.on_fault(id, fault, now);
    let name = exec.names[index];
    error!("{}", exec.health.log_line(name, id, fault, action));
    match action {
        Action::HaltSystem => {
            error!("health: partition {name}'s policy is halt: stopping the system");
            report(exec);
            arch::power_off(ExitStatus::Failure);
        }
        Action::Stop { .. } => {
            let _ = exec.sched.stop_partition(id);
        }
        Action::Restart { generation } => {
            let _ = exec.sched.stop_partition(id);
            let Some(p) = exec.partitions[index].as_mut() else {
                return;
            };
            match load(p, true) {
                Ok(_) => {
                    p.context = TrapFrame::user(p.elf.entry(), USER_STACK_TOP);
                    let _ = exec.sched.restart_partition(id);
                    exec.health.restarted(id);
                    info!("health: partition {name} restarted (generation {generation})");
                }
                Err(e) => error!("health: partition {name} could not be reloaded ({e}); stopped"),
            }
        }
    }
}
