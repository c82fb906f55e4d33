//! Partitions at run time: loading them from the system image, their threads' saved
//! contexts, system calls, faults and the health policy, and the window schedule.
//!
//! Every function here runs in a kernel entry (a trap, IRQs masked) or before the first
//! partition starts, so the state behind [`EXEC`] is never contended; the lock only makes that
//! visible to the compiler. Each entry ends by leaving some context in the trap frame: the
//! interrupted thread's, another thread's, or the idle loop's.

use abi::{ObjectKind, PartitionInfo, RecvResult, SysError, Sysno, USER_BASE, USER_STACK_TOP};
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
use crate::uaccess::{UserSlice, check, copy_between, copy_in, copy_out};

/// Most partitions a system may have.
pub const MAX_PARTITIONS: usize = 16;
/// Most windows in a major frame.
pub const MAX_WINDOWS: usize = 64;
/// Most channels a system may have.
pub const MAX_CHANNELS: usize = 32;
/// Most notifications a system may have.
pub const MAX_NOTIFICATIONS: usize = 64;
/// Most shared regions a system may have.
pub const MAX_REGIONS: usize = 16;
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
    /// What its thread is blocked in, if anything.
    blocked: Blocked,
    /// Its notification word: bits raised and not yet taken by `wait` or `poll`.
    notifications: u64,
}

/// What a partition's thread waits for in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blocked {
    Nothing,
    /// In `call` on this channel; the reply goes to `reply`.
    Call {
        channel: usize,
        reply: UserSlice,
    },
    /// In `recv`; the message goes to `buf`.
    Recv {
        buf: UserSlice,
    },
    /// In `wait` for any bit of `mask`.
    Wait {
        mask: u64,
    },
}

/// Where a channel's current call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallState {
    Idle,
    /// The client called; the server has not received it yet. The message is still in the
    /// client's memory (it is blocked, so it cannot change it).
    Pending {
        message: UserSlice,
    },
    /// The server received the call and owes a reply.
    Serving,
    /// The client restarted or stopped while its call was served; the reply has nowhere to go.
    ClientGone(SysError),
}

struct Channel {
    name: &'static str,
    client: usize,
    server: usize,
    message_size: usize,
    state: CallState,
    /// The server's generation when the client last talked to it: a difference means the
    /// server restarted since, which the client's next call reports once.
    server_generation_seen: u32,
}

/// A shared region: frames allocated at boot, mapped at `address` in each partition of
/// `mappings` with its access.
struct Region {
    name: &'static str,
    address: u64,
    size: u64,
    mappings: [(u16, bool); kcore::image::MAX_REGION_MAPPINGS],
    mapping_count: usize,
}

impl Region {
    /// Whether `partition` maps the region, and if so whether writably.
    fn access(&self, partition: usize) -> Option<bool> {
        self.mappings[..self.mapping_count]
            .iter()
            .find(|m| m.0 as usize == partition)
            .map(|m| m.1)
    }
}

/// A DMA region: physically contiguous frames allocated at boot, mapped in its owner only.
struct Dma {
    name: &'static str,
    owner: usize,
    address: u64,
    phys: u64,
    size: u64,
}

struct Notification {
    name: &'static str,
    receiver: usize,
    bit: u8,
    senders: u64,
}

struct Exec {
    partitions: [Option<Partition>; MAX_PARTITIONS],
    channels: [Option<Channel>; MAX_CHANNELS],
    notifications: [Option<Notification>; MAX_NOTIFICATIONS],
    regions: [Option<Region>; MAX_REGIONS],
    dma: [Option<Dma>; MAX_REGIONS],
    names: [&'static str; MAX_PARTITIONS],
    count: usize,
    /// One thread per partition for now: thread `i` belongs to partition `i`. Set once the
    /// partitions are loaded; until then no trap does anything.
    sched: Option<Scheduler<MAX_PARTITIONS>>,
    health: HealthMonitor<MAX_PARTITIONS>,
    /// The partition whose context is in the trap frame, or `None` for the idle loop.
    current: Option<usize>,
    /// Power off (success) once this time has passed, for bounded test runs.
    run_until_ns: Option<u64>,
    /// Power off when every partition has stopped.
    exit_when_done: bool,
    /// Power off when this partition has stopped (`exit_after=NAME`).
    exit_after: Option<usize>,
    /// The timer deadline last programmed.
    armed_deadline_ns: u64,
    epoch_ns: u64,
}

/// The partitions and everything they share, in static memory from the start: building it as
/// a value would put tens of KiB on the boot stack. `start` fills it in place.
static EXEC: Mutex<Exec> = Mutex::new(Exec::EMPTY);

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
    // Ticks would take the EXEC lock; none may arrive until this code is done with it.
    arch::cpu::disable_interrupts();
    let mut guard = EXEC.lock();
    let exec = &mut *guard;
    let mut threads = [None; MAX_PARTITIONS];
    let mut background = [PartitionId(0); MAX_PARTITIONS];
    let mut background_count = 0;
    let count = image.partition_count().min(MAX_PARTITIONS);
    for i in 0..count {
        let Ok(record) = image.partition(i) else {
            continue;
        };
        exec.names[i] = record.name;
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
            blocked: Blocked::Nothing,
            notifications: 0,
        };
        let used = match load(&mut p, false) {
            Ok(used) => used,
            Err(e) => {
                error!("partition {}: cannot load: {e}; not started", p.name);
                continue;
            }
        };
        if let Err(e) = exec
            .health
            .configure(PartitionId(i as u8), policy(record.policy))
        {
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
        exec.partitions[i] = Some(p);
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
                    error!(
                        "partition {}: the scheduler refused its thread",
                        exec.names[i]
                    );
                    arch::power_off(ExitStatus::Failure);
                }
            }
        } else {
            // Keep ids aligned with partition numbers: a placeholder that never runs.
            let _ = sched.add_thread(PartitionId(i as u8), Priority::MAX, false);
            let _ = sched.stop_partition(PartitionId(i as u8));
        }
    }
    for (i, slot) in exec
        .channels
        .iter_mut()
        .enumerate()
        .take(image.channel_count())
    {
        if let Ok(c) = image.channel(i) {
            *slot = Some(Channel {
                name: c.name,
                client: c.client as usize,
                server: c.server as usize,
                message_size: c.message_size as usize,
                state: CallState::Idle,
                server_generation_seen: 0,
            });
        }
    }
    for (i, slot) in exec
        .notifications
        .iter_mut()
        .enumerate()
        .take(image.notification_count())
    {
        if let Ok(n) = image.notification(i) {
            *slot = Some(Notification {
                name: n.name,
                receiver: n.receiver as usize,
                bit: n.bit,
                senders: n.senders,
            });
        }
    }
    exec.regions = map_regions(&image, &mut exec.partitions);
    exec.dma = map_dma(&image, &mut exec.partitions);
    exec.count = count;
    exec.sched = Some(sched);
    exec.current = None;
    exec.run_until_ns = cmdline
        .value("run_ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| epoch_ns + ms * 1_000_000);
    exec.exit_when_done = cmdline.flag("exit");
    exec.exit_after = cmdline
        .value("exit_after")
        .and_then(|name| exec.names[..count].iter().position(|n| *n == name));
    exec.epoch_ns = epoch_ns;
    drop(guard);
    // From here on the kernel runs only in traps: the first deadline (now) picks the first
    // partition, and every kernel entry programs the next one.
    arch::time::set_deadline(epoch_ns);
    // (wait_for_interrupt enables interrupts atomically with sleeping.)
    loop {
        arch::cpu::wait_for_interrupt();
    }
}

impl Exec {
    /// No partitions yet: what the kernel has until `start` has loaded them.
    const EMPTY: Exec = {
        const NO_PARTITION: Option<Partition> = None;
        const NO_CHANNEL: Option<Channel> = None;
        const NO_NOTIFICATION: Option<Notification> = None;
        const NO_REGION: Option<Region> = None;
        const NO_DMA: Option<Dma> = None;
        Exec {
            partitions: [NO_PARTITION; MAX_PARTITIONS],
            channels: [NO_CHANNEL; MAX_CHANNELS],
            notifications: [NO_NOTIFICATION; MAX_NOTIFICATIONS],
            regions: [NO_REGION; MAX_REGIONS],
            dma: [NO_DMA; MAX_REGIONS],
            names: [""; MAX_PARTITIONS],
            count: 0,
            sched: None,
            health: HealthMonitor::new(),
            current: None,
            run_until_ns: None,
            exit_when_done: false,
            exit_after: None,
            armed_deadline_ns: 0,
            epoch_ns: 0,
        }
    };

    /// The scheduler; traps only reach here once `start` has set it.
    fn sched(&self) -> &Scheduler<MAX_PARTITIONS> {
        self.sched
            .as_ref()
            .expect("traps reach the scheduler only after start")
    }

    /// The scheduler, mutably.
    fn sched_mut(&mut self) -> &mut Scheduler<MAX_PARTITIONS> {
        self.sched
            .as_mut()
            .expect("traps reach the scheduler only after start")
    }

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
        let dispatch = self.sched_mut().dispatch(now);
        let deadline = self
            .run_until_ns
            .map_or(dispatch.next_event_ns, |t| t.min(dispatch.next_event_ns));
        // Reprogramming the timer costs a division and a device write; skip it when the
        // deadline is the one already armed and still ahead.
        if deadline != self.armed_deadline_ns || deadline <= now {
            arch::time::set_deadline(deadline);
            self.armed_deadline_ns = deadline;
        }
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
        (0..self.count).all(|i| self.sched().is_stopped(PartitionId(i as u8)))
    }
}

fn with_exec(f: impl FnOnce(&mut Exec)) {
    let mut exec = EXEC.lock();
    if exec.sched.is_some() {
        f(&mut exec);
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
        // The armed deadline has fired, so the timer is idle now; it may have fired a hair
        // before `now` reached it (rounding between the timer's and the clock's units), and
        // `switch` must then re-arm it even though the deadline is unchanged and still ahead.
        exec.armed_deadline_ns = 0;
        exec.switch(frame, now, true);
    });
}

/// Prints the scheduler's accounting table and each partition's health.
fn report(exec: &Exec) {
    let table = exec.sched().report(&exec.names[..exec.count]);
    crate::klog::raw(format_args!("{table}"));
    for i in 0..exec.count {
        let id = PartitionId(i as u8);
        if let (Some(state), Some(generation)) = (exec.health.state(id), exec.health.generation(id))
        {
            // A partition that exited is stopped as far as the scheduler is concerned, while the
            // health monitor, which only sees faults, still calls it running.
            let state = if exec.sched().is_stopped(id) {
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
                let _ = exec.sched_mut().yield_now(thread);
                reschedule = true;
                Ok(0)
            }
            Some(Sysno::TimeNow) => Ok(now as usize),
            Some(Sysno::SleepUntil) => {
                if args[0] as u64 > now {
                    let _ = exec.sched_mut().block_until(thread, args[0] as u64);
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
            Some(
                call @ (Sysno::Call
                | Sysno::Recv
                | Sysno::Reply
                | Sysno::ReplyRecv
                | Sysno::Notify
                | Sysno::Wait
                | Sysno::Poll
                | Sysno::Lookup
                | Sysno::RegionInfo
                | Sysno::DmaInfo),
            ) => match ipc(exec, current, call, args) {
                Ipc::Done(result) => result,
                Ipc::Blocked => {
                    exec.switch(frame, now, true);
                    return;
                }
                Ipc::DoneSwitch(result) => {
                    frame.set_return(result.unwrap_or_else(SysError::encode));
                    exec.switch(frame, now, true);
                    return;
                }
            },
            Some(Sysno::Exit) => {
                let code = args[0] as u64;
                if code == 0 {
                    info!("partition {}: exited", p.name);
                    let _ = exec.sched_mut().stop_partition(id);
                    release_peers(exec, current, SysError::PeerStopped);
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
        && exec.sched().is_stopped(PartitionId(p as u8))
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
            let _ = exec.sched_mut().stop_partition(id);
            release_peers(exec, index, SysError::PeerStopped);
        }
        Action::Restart { generation } => {
            let _ = exec.sched_mut().stop_partition(id);
            release_peers(exec, index, SysError::PeerRestarted);
            let Some(p) = exec.partitions[index].as_mut() else {
                return;
            };
            match load(p, true) {
                Ok(_) => {
                    p.context = TrapFrame::user(p.elf.entry(), USER_STACK_TOP);
                    p.blocked = Blocked::Nothing;
                    p.notifications = 0;
                    let _ = exec.sched_mut().restart_partition(id);
                    exec.health.restarted(id);
                    info!("health: partition {name} restarted (generation {generation})");
                }
                Err(e) => error!("health: partition {name} could not be reloaded ({e}); stopped"),
            }
        }
    }
}

/// What an IPC system call did.
enum Ipc {
    /// Finished; the caller continues with this result.
    Done(Result<usize, SysError>),
    /// Finished, and another thread became ready: pick again.
    DoneSwitch(Result<usize, SysError>),
    /// The caller blocked; its result is set when it wakes.
    Blocked,
}

/// The partitions `a` and `b` (distinct, both loaded), for copying between them.
fn pair(exec: &Exec, a: usize, b: usize) -> Option<(&Partition, &Partition)> {
    Some((exec.partitions[a].as_ref()?, exec.partitions[b].as_ref()?))
}

/// Wakes partition `index`'s thread with `result` as its syscall's return value.
fn wake(exec: &mut Exec, index: usize, result: Result<usize, SysError>) {
    if let Some(p) = exec.partitions[index].as_mut() {
        p.context
            .set_return(result.unwrap_or_else(SysError::encode));
        p.blocked = Blocked::Nothing;
    }
    let _ = exec.sched_mut().make_ready(ThreadId(index as u16));
}

/// Delivers the pending call on `channel` into the server's `buf`; returns the recv result.
fn deliver(exec: &mut Exec, channel: usize, buf: UserSlice) -> Result<usize, SysError> {
    let c = exec.channels[channel]
        .as_ref()
        .ok_or(SysError::BadArgument)?;
    let CallState::Pending { message } = c.state else {
        return Err(SysError::BadArgument);
    };
    let (client, server) = pair(exec, c.client, c.server).ok_or(SysError::PeerStopped)?;
    // The client's message was checked when it called; the server's buffer when it received.
    let len = copy_between(&client.space, message, &server.space, buf)?;
    if let Some(c) = exec.channels[channel].as_mut() {
        c.state = CallState::Serving;
    }
    Ok(RecvResult {
        channel: channel as u32,
        len: len as u32,
    }
    .encode())
}

/// A pending call on one of `server`'s channels, lowest channel first.
fn pending_for(exec: &Exec, server: usize) -> Option<usize> {
    exec.channels.iter().position(|c| {
        c.as_ref()
            .is_some_and(|c| c.server == server && matches!(c.state, CallState::Pending { .. }))
    })
}

fn recv(exec: &mut Exec, caller: usize, buf: UserSlice) -> Ipc {
    if !exec.channels.iter().flatten().any(|c| c.server == caller) {
        return Ipc::Done(Err(SysError::NotGranted));
    }
    let p = exec.partitions[caller].as_mut().expect("the caller exists");
    if let Err(e) = check(&p.space, buf, true) {
        return Ipc::Done(Err(e));
    }
    if let Some(channel) = pending_for(exec, caller) {
        return Ipc::Done(deliver(exec, channel, buf));
    }
    let p = exec.partitions[caller].as_mut().expect("the caller exists");
    p.blocked = Blocked::Recv { buf };
    let _ = exec.sched_mut().block(ThreadId(caller as u16));
    Ipc::Blocked
}

fn reply(
    exec: &mut Exec,
    caller: usize,
    channel: usize,
    message: UserSlice,
) -> Result<usize, SysError> {
    let c = exec
        .channels
        .get(channel)
        .and_then(Option::as_ref)
        .ok_or(SysError::BadArgument)?;
    if c.server != caller {
        return Err(SysError::NotGranted);
    }
    if message.len > c.message_size {
        return Err(SysError::BadArgument);
    }
    let client = c.client;
    match c.state {
        CallState::Serving => {}
        CallState::ClientGone(e) => {
            exec.channels[channel]
                .as_mut()
                .expect("checked above")
                .state = CallState::Idle;
            return Err(e);
        }
        _ => return Err(SysError::BadArgument), // no call to answer
    }
    let server_space = &exec.partitions[caller]
        .as_ref()
        .expect("the caller exists")
        .space;
    check(server_space, message, false)?;
    let Some(Blocked::Call { reply, .. }) = exec.partitions[client].as_ref().map(|p| p.blocked)
    else {
        return Err(SysError::PeerStopped);
    };
    let (server, client_p) = pair(exec, caller, client).ok_or(SysError::PeerStopped)?;
    let copied = copy_between(&server.space, message, &client_p.space, reply);
    exec.channels[channel]
        .as_mut()
        .expect("checked above")
        .state = CallState::Idle;
    wake(exec, client, copied);
    Ok(0)
}

/// The IPC system calls: call/recv/reply on channels, notify/wait/poll, lookup.
fn ipc(exec: &mut Exec, caller: usize, call: Sysno, a: [usize; 5]) -> Ipc {
    match call {
        Sysno::Call => {
            let (channel, message, reply) =
                (a[0], UserSlice::new(a[1], a[2]), UserSlice::new(a[3], a[4]));
            let Some(c) = exec.channels.get(channel).and_then(Option::as_ref) else {
                return Ipc::Done(Err(SysError::BadArgument));
            };
            if c.client != caller {
                return Ipc::Done(Err(SysError::NotGranted));
            }
            if message.len > c.message_size {
                return Ipc::Done(Err(SysError::BadArgument));
            }
            let (server, seen) = (c.server, c.server_generation_seen);
            let server_id = PartitionId(server as u8);
            if exec.sched().is_stopped(server_id) || exec.partitions[server].is_none() {
                return Ipc::Done(Err(SysError::PeerStopped));
            }
            let generation = exec.health.generation(server_id).unwrap_or(0);
            if generation != seen {
                exec.channels[channel]
                    .as_mut()
                    .expect("checked above")
                    .server_generation_seen = generation;
                return Ipc::Done(Err(SysError::PeerRestarted));
            }
            let p = exec.partitions[caller].as_ref().expect("the caller exists");
            let reply = UserSlice {
                len: reply.len.min(c.message_size),
                ..reply
            };
            if let Err(e) =
                check(&p.space, message, false).and_then(|()| check(&p.space, reply, true))
            {
                return Ipc::Done(Err(e));
            }
            exec.channels[channel]
                .as_mut()
                .expect("checked above")
                .state = CallState::Pending { message };
            exec.partitions[caller]
                .as_mut()
                .expect("the caller exists")
                .blocked = Blocked::Call { channel, reply };
            let _ = exec.sched_mut().block(ThreadId(caller as u16));
            if let Some(Blocked::Recv { buf }) = exec.partitions[server].as_ref().map(|p| p.blocked)
            {
                let result = deliver(exec, channel, buf);
                wake(exec, server, result);
            }
            Ipc::Blocked
        }
        Sysno::Recv => recv(exec, caller, UserSlice::new(a[0], a[1])),
        Sysno::Reply => match reply(exec, caller, a[0], UserSlice::new(a[1], a[2])) {
            Ok(v) => Ipc::DoneSwitch(Ok(v)),
            Err(e) => Ipc::Done(Err(e)),
        },
        Sysno::ReplyRecv => match reply(exec, caller, a[0], UserSlice::new(a[1], a[2])) {
            // The reply woke the client, which may outrank the server: decide again.
            Ok(_) => match recv(exec, caller, UserSlice::new(a[3], a[4])) {
                Ipc::Done(result) => Ipc::DoneSwitch(result),
                other => other,
            },
            Err(e) => Ipc::Done(Err(e)),
        },
        Sysno::Notify => {
            let Some(n) = exec.notifications.get(a[0]).and_then(Option::as_ref) else {
                return Ipc::Done(Err(SysError::BadArgument));
            };
            if n.senders & (1 << caller) == 0 {
                return Ipc::Done(Err(SysError::NotGranted));
            }
            let (receiver, bit) = (n.receiver, 1u64 << n.bit);
            let Some(r) = exec.partitions[receiver].as_mut() else {
                return Ipc::Done(Err(SysError::PeerStopped));
            };
            r.notifications |= bit;
            if let Blocked::Wait { mask } = r.blocked
                && r.notifications & mask != 0
            {
                let bits = r.notifications & mask;
                r.notifications &= !bits;
                wake(exec, receiver, Ok(bits as usize));
                return Ipc::DoneSwitch(Ok(0));
            }
            Ipc::Done(Ok(0))
        }
        Sysno::Wait | Sysno::Poll => {
            let mask = a[0] as u64;
            let receivable = exec
                .notifications
                .iter()
                .flatten()
                .filter(|n| n.receiver == caller)
                .fold(0u64, |m, n| m | 1 << n.bit);
            if mask & receivable == 0 {
                // Waiting for bits nobody can ever raise would block forever.
                return Ipc::Done(Err(SysError::BadArgument));
            }
            let p = exec.partitions[caller].as_mut().expect("the caller exists");
            let bits = p.notifications & mask;
            if bits != 0 || call == Sysno::Poll {
                p.notifications &= !bits;
                return Ipc::Done(Ok(bits as usize));
            }
            p.blocked = Blocked::Wait { mask };
            let _ = exec.sched_mut().block(ThreadId(caller as u16));
            Ipc::Blocked
        }
        Sysno::Lookup => Ipc::Done(lookup(exec, caller, a[0], UserSlice::new(a[1], a[2]))),
        Sysno::DmaInfo => {
            let Some(d) = exec.dma.get(a[0]).and_then(Option::as_ref) else {
                return Ipc::Done(Err(SysError::BadArgument));
            };
            if d.owner != caller {
                return Ipc::Done(Err(SysError::NotGranted));
            }
            let info = abi::DmaInfo {
                address: d.address,
                phys: d.phys,
                size: d.size,
            };
            let space = &exec.partitions[caller]
                .as_ref()
                .expect("the caller exists")
                .space;
            Ipc::Done(
                copy_out(space, UserSlice::new(a[1], a[2]), &info.to_bytes())
                    .map(|()| abi::DmaInfo::SIZE),
            )
        }
        Sysno::RegionInfo => {
            let Some(r) = exec.regions.get(a[0]).and_then(Option::as_ref) else {
                return Ipc::Done(Err(SysError::BadArgument));
            };
            let Some(writable) = r.access(caller) else {
                return Ipc::Done(Err(SysError::NotGranted));
            };
            let info = abi::RegionInfo {
                address: r.address,
                size: r.size,
                writable,
            };
            let space = &exec.partitions[caller]
                .as_ref()
                .expect("the caller exists")
                .space;
            Ipc::Done(
                copy_out(space, UserSlice::new(a[1], a[2]), &info.to_bytes())
                    .map(|()| abi::RegionInfo::SIZE),
            )
        }
        _ => Ipc::Done(Err(SysError::UnknownSyscall)),
    }
}

/// The index of a channel or notification by name, if the caller takes part in it.
fn lookup(exec: &Exec, caller: usize, kind: usize, name: UserSlice) -> Result<usize, SysError> {
    let mut buf = [0u8; kcore::image::NAME_LEN];
    if name.len > buf.len() {
        return Err(SysError::BadArgument);
    }
    let space = &exec.partitions[caller]
        .as_ref()
        .expect("the caller exists")
        .space;
    let n = copy_in(space, name, &mut buf)?;
    let name = core::str::from_utf8(&buf[..n]).map_err(|_| SysError::BadArgument)?;
    let (index, granted) = if kind == ObjectKind::Channel as usize {
        let i = exec
            .channels
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.name == name))
            .ok_or(SysError::BadArgument)?;
        let c = exec.channels[i].as_ref().expect("found above");
        (i, c.client == caller || c.server == caller)
    } else if kind == ObjectKind::Notification as usize {
        let i = exec
            .notifications
            .iter()
            .position(|x| x.as_ref().is_some_and(|x| x.name == name))
            .ok_or(SysError::BadArgument)?;
        let x = exec.notifications[i].as_ref().expect("found above");
        (i, x.receiver == caller || x.senders & (1 << caller) != 0)
    } else if kind == ObjectKind::DmaRegion as usize {
        let i = exec
            .dma
            .iter()
            .position(|d| d.as_ref().is_some_and(|d| d.name == name))
            .ok_or(SysError::BadArgument)?;
        (
            i,
            exec.dma[i].as_ref().expect("found above").owner == caller,
        )
    } else if kind == ObjectKind::SharedRegion as usize {
        let i = exec
            .regions
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.name == name))
            .ok_or(SysError::BadArgument)?;
        (
            i,
            exec.regions[i]
                .as_ref()
                .expect("found above")
                .access(caller)
                .is_some(),
        )
    } else {
        return Err(SysError::BadArgument);
    };
    if granted {
        Ok(index)
    } else {
        Err(SysError::NotGranted)
    }
}

/// Partition `index` restarted or stopped: every call it was part of ends. Its clients blocked
/// in a call are released with `error`; calls it made are abandoned, so its servers' replies
/// report `error`; its own blocked state and notification word are gone.
fn release_peers(exec: &mut Exec, index: usize, error: SysError) {
    for channel in 0..MAX_CHANNELS {
        let Some(c) = exec.channels[channel].as_mut() else {
            continue;
        };
        let busy = !matches!(c.state, CallState::Idle);
        if c.server == index && busy && !matches!(c.state, CallState::ClientGone(_)) {
            let client = c.client;
            c.state = CallState::Idle;
            if error == SysError::PeerRestarted {
                c.server_generation_seen = c.server_generation_seen.wrapping_add(1);
            }
            wake(exec, client, Err(error));
        } else if c.client == index && busy {
            c.state = match c.state {
                CallState::Serving => CallState::ClientGone(error),
                _ => CallState::Idle,
            };
        }
    }
    if let Some(p) = exec.partitions[index].as_mut() {
        p.blocked = Blocked::Nothing;
        p.notifications = 0;
    }
}

/// Allocates each shared region's frames (zeroed, physically contiguous) and maps them into
/// every partition that takes part, at the region's fixed address, never executable. A region
/// that cannot be made is left out, and the partitions that map it are told so at boot.
fn map_regions(
    image: &SystemImage<'static>,
    partitions: &mut [Option<Partition>; MAX_PARTITIONS],
) -> [Option<Region>; MAX_REGIONS] {
    const NONE: Option<Region> = None;
    let mut regions = [NONE; MAX_REGIONS];
    let mut address = abi::SHARED_BASE;
    for (i, slot) in regions.iter_mut().enumerate().take(image.region_count()) {
        let Ok(r) = image.region(i) else { continue };
        let pages = r.size / PAGE_SIZE;
        let Some(phys) = arch::alloc_contiguous_frames(pages) else {
            error!(
                "shared region {}: no {} KiB of contiguous memory; not mapped",
                r.name,
                r.size / 1024
            );
            continue;
        };
        for page in 0..pages {
            arch::zero_phys_page(phys + page * PAGE_SIZE);
        }
        for &(partition, writable) in &r.mappings[..r.mapping_count] {
            let Some(p) = partitions
                .get_mut(partition as usize)
                .and_then(Option::as_mut)
            else {
                continue;
            };
            for page in 0..pages {
                let perm = Perm {
                    write: writable,
                    exec: false,
                };
                if p.space
                    .map(address + page * PAGE_SIZE, phys + page * PAGE_SIZE, perm)
                    .is_err()
                {
                    error!(
                        "shared region {}: cannot map it into partition {}",
                        r.name, p.name
                    );
                    break;
                }
            }
        }
        info!(
            "shared region {}: {} KiB at {address:#x} in {} partitions",
            r.name,
            r.size / 1024,
            r.mapping_count
        );
        *slot = Some(Region {
            name: r.name,
            address,
            size: r.size,
            mappings: r.mappings,
            mapping_count: r.mapping_count,
        });
        // The next region starts after an unmapped guard page.
        address += r.size + PAGE_SIZE;
    }
    regions
}

/// Allocates each DMA region (physically contiguous, zeroed) and maps it read-write, never
/// executable, into its owner only, from `DMA_BASE` with a guard page after each region.
/// Cache attributes: DMA on x86_64 and on QEMU's virt is cache-coherent, so the mapping is
/// write-back like any RAM.
fn map_dma(
    image: &SystemImage<'static>,
    partitions: &mut [Option<Partition>; MAX_PARTITIONS],
) -> [Option<Dma>; MAX_REGIONS] {
    const NONE: Option<Dma> = None;
    let mut regions = [NONE; MAX_REGIONS];
    let mut address = abi::DMA_BASE;
    for (i, slot) in regions.iter_mut().enumerate().take(image.dma_count()) {
        let Ok(d) = image.dma(i) else { continue };
        let Some(p) = partitions
            .get_mut(d.owner as usize)
            .and_then(Option::as_mut)
        else {
            continue;
        };
        let pages = d.size / PAGE_SIZE;
        let Some(phys) = arch::alloc_contiguous_frames(pages) else {
            error!(
                "DMA region {}: no {} KiB of contiguous memory; not mapped",
                d.name,
                d.size / 1024
            );
            continue;
        };
        let mut mapped = true;
        for page in 0..pages {
            arch::zero_phys_page(phys + page * PAGE_SIZE);
            let perm = Perm {
                write: true,
                exec: false,
            };
            mapped &= p
                .space
                .map(address + page * PAGE_SIZE, phys + page * PAGE_SIZE, perm)
                .is_ok();
        }
        if !mapped {
            error!(
                "DMA region {}: cannot map it into partition {}",
                d.name, p.name
            );
            continue;
        }
        info!(
            "DMA region {}: {} KiB for partition {} at {address:#x}",
            d.name,
            d.size / 1024,
            p.name
        );
        *slot = Some(Dma {
            name: d.name,
            owner: d.owner as usize,
            address,
            phys,
            size: d.size,
        });
        address += d.size + PAGE_SIZE;
    }
    regions
}
