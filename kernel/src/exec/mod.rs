//! Partitions at run time: loading them from the system image (their threads' saved contexts
//! are in `arch::context`), system calls, faults and the health policy, and the window schedule.
//!
//! Every function here runs in a kernel entry (a trap, IRQs masked) or before the first
//! partition starts, so the state behind [`EXEC`] is never contended; the lock only makes that
//! visible to the compiler. Each entry ends by choosing the context the exit restores: the
//! interrupted thread's (the trap frame), another thread's, or the idle loop's.

use abi::{PartitionInfo, SysError, Sysno, USER_STACK_TOP};
use kcore::cmdline::CommandLine;
use kcore::elf::Elf;
use kcore::health::{Action, HealthMonitor, Policy};
pub use kcore::health::{Fault, FaultKind};
use kcore::image::{HealthPolicy, SystemImage};
use kcore::log::Level;
use kcore::mem::PAGE_SIZE;
use kcore::sched::{
    IDLE_POLL_NS, PartitionId, Priority, Schedule, Scheduler, ThreadId, WINDOW_TOLERANCE_NS,
    Window, idle_wait,
};
use spin::Mutex;

use crate::arch::mm::AddressSpace;
use crate::arch::{self, ExitStatus, TrapFrame};
use crate::uaccess::{UserSlice, copy_in};

mod devices;
mod ipc;
mod loader;

use devices::{Device, MAX_DEVICES};

use ipc::{Fast, Ipc, ipc, release_peers, write_out};
use loader::{elf_machine, load, map_dma, map_regions};

/// Most partitions a system may have.
pub const MAX_PARTITIONS: usize = 16;
/// Most windows in a major frame.
pub const MAX_WINDOWS: usize = 64;
/// Most channels a system may have (sets of channels are 32-bit masks).
pub const MAX_CHANNELS: usize = 32;
const _: () = assert!(MAX_CHANNELS <= u32::BITS as usize);
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

struct Partition {
    name: &'static str,
    elf: Elf<'static>,
    memory_bytes: u64,
    stack_bytes: u64,
    space: AddressSpace,
    /// What its thread is blocked in, if anything.
    blocked: Blocked,
    /// Its notification word: bits raised and not yet taken by `wait` or `poll`.
    notifications: u64,
    /// Its configuration bytes (typed settings records), as `partition_config` returns them.
    config: &'static [u8],
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
    /// Physical address of the first byte (the frames are contiguous); see `Region::phys_for`.
    phys: u64,
    /// The partition that may learn `phys` (the description's `dma-owner`).
    dma_owner: Option<usize>,
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
    devices: [Option<Device>; MAX_DEVICES],
    names: [&'static str; MAX_PARTITIONS],
    count: usize,
    /// Bit `c`: channel `c` has a pending call (its state is `CallState::Pending`).
    pending: u32,
    /// Bit `c` of entry `p`: partition `p` serves channel `c`.
    serves: [u32; MAX_PARTITIONS],
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
            blocked: Blocked::Nothing,
            notifications: 0,
            config: record.config,
        };
        arch::context::set(i, TrapFrame::user(elf.entry(), USER_STACK_TOP));
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
    let mut sched = Scheduler::<MAX_PARTITIONS>::new(schedule, WINDOW_TOLERANCE_NS);
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
            if let Some(mask) = exec.serves.get_mut(c.server as usize) {
                *mask |= 1 << i;
            }
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
    exec.devices = devices::set_up(&image, &mut exec.partitions);
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
        const NO_DEVICE: Option<Device> = None;
        Exec {
            partitions: [NO_PARTITION; MAX_PARTITIONS],
            channels: [NO_CHANNEL; MAX_CHANNELS],
            notifications: [NO_NOTIFICATION; MAX_NOTIFICATIONS],
            regions: [NO_REGION; MAX_REGIONS],
            dma: [NO_DMA; MAX_REGIONS],
            devices: [NO_DEVICE; MAX_DEVICES],
            names: [""; MAX_PARTITIONS],
            count: 0,
            pending: 0,
            serves: [0; MAX_PARTITIONS],
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

    /// Saves the trap frame into the current partition (`None`: it faulted or exited and its
    /// context was dealt with), asks the scheduler who runs next and resumes that context, or
    /// the idle loop's.
    fn switch(&mut self, frame: Option<&TrapFrame>, now: u64) {
        if let Some(frame) = frame {
            self.save(frame);
        }
        // Between timer events (a system call, an IPC hand-off) the slot cannot have changed,
        // and the scheduler can decide without recomputing it; at an event it must.
        let sched = self.sched_mut();
        let dispatch = match sched.dispatch_fast(now) {
            Some(decision) => decision,
            None => sched.dispatch(now),
        };
        let next = dispatch.thread.map(|t| t.0 as usize);
        self.resume(now, next, dispatch.next_event_ns);
    }

    /// The IPC fast path: the current partition blocked and partition `to` became ready. If
    /// the scheduler would run `to` now ([`Scheduler::hand_off`]), the CPU goes straight to
    /// it; otherwise this is [`switch`](Self::switch).
    fn hand_off(&mut self, frame: &TrapFrame, now: u64, to: usize) {
        match self.sched_mut().hand_off(ThreadId(to as u16), now) {
            Some(next_event_ns) => {
                self.save(frame);
                self.resume(now, Some(to), next_event_ns);
            }
            None => self.switch(Some(frame), now),
        }
    }

    /// Saves the trap frame into the current partition's context.
    fn save(&mut self, frame: &TrapFrame) {
        if let Some(c) = self.current
            && self.partitions[c].is_some()
        {
            arch::context::save(c, frame);
        }
    }

    /// Arms the timer for the scheduler's next event and resumes partition `next`'s context,
    /// or the idle loop's.
    fn resume(&mut self, now: u64, next: Option<usize>, next_event_ns: u64) {
        self.current = next;
        match next.filter(|&c| self.partitions[c].is_some()) {
            Some(c) => {
                self.arm(now, next_event_ns);
                if let Some(p) = &self.partitions[c] {
                    p.space.activate();
                }
                // Restored in place by the trap path: no copy into the trap frame.
                arch::context::resume(c);
            }
            None => {
                // Halting through a window boundary would start the window when the CPU has
                // woken up, not at the boundary (docs/scheduling-and-health.md): halt until
                // shortly before the event, and poll from there.
                let wait = idle_wait(now, self.event(next_event_ns), IDLE_POLL_NS);
                self.arm(now, wait.timer_ns);
                arch::context::resume_idle(wait.poll);
            }
        }
    }

    /// The next time the kernel must act: the scheduler's next event or the end of the run.
    fn event(&self, next_event_ns: u64) -> u64 {
        self.run_until_ns
            .map_or(next_event_ns, |t| t.min(next_event_ns))
    }

    /// Arms the timer for the scheduler's next event (or the end of the run, if sooner).
    fn arm(&mut self, now: u64, next_event_ns: u64) {
        let deadline = self.event(next_event_ns);
        // Reprogramming the timer costs a division and a device write; skip it when the
        // deadline is the one already armed and still ahead.
        if deadline != self.armed_deadline_ns || deadline <= now {
            arch::time::set_deadline(deadline);
            self.armed_deadline_ns = deadline;
        }
    }

    /// [`resume`](Self::resume) for the IPC fast paths: partition `next` (loaded) runs; the
    /// current partition's context is saved already.
    fn enter(&mut self, now: u64, next: usize, next_event_ns: u64) {
        self.arm(now, next_event_ns);
        self.current = Some(next);
        if let Some(p) = &self.partitions[next] {
            p.space.activate();
            // Restored in place by the trap path: no copy into the trap frame.
            arch::context::resume(next);
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
        exec.switch(Some(frame), now);
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
            let state = match (exec.sched().is_stopped(id), state) {
                (true, _) => "Stopped",
                (false, kcore::health::PartitionState::Running) => "Running",
                (false, _) => "Restarting",
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
        // The IPC round trip's two halves first, on paths that look each table up once.
        let fast = if number == Sysno::Call as usize {
            ipc::fast_call(exec, frame, current, args, now)
        } else if number == Sysno::ReplyRecv as usize {
            ipc::fast_reply_recv(exec, frame, current, args, now)
        } else {
            Fast::NotTaken
        };
        match fast {
            Fast::NotTaken => {}
            Fast::Done => return,
            Fast::Dispatch => {
                exec.switch(Some(frame), now);
                return;
            }
        }
        let mut reschedule = false;
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
                    generation: exec.health.generation(id).unwrap_or(0),
                    memory_bytes: p.memory_bytes,
                };
                write_out(exec, current, args[0], args[1], &info.to_bytes())
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
                    exec.switch(Some(frame), now);
                    return;
                }
                Ipc::HandOff(to) => {
                    exec.hand_off(frame, now, to);
                    return;
                }
                Ipc::DoneSwitch(result) => {
                    frame.set_return(result.unwrap_or_else(SysError::encode));
                    exec.switch(Some(frame), now);
                    return;
                }
            },
            Some(
                call @ (Sysno::DeviceInfo
                | Sysno::PciConfigRead
                | Sysno::PciConfigWrite
                | Sysno::IrqAck
                | Sysno::PartitionConfig),
            ) => devices::syscall(exec, current, call, args),
            Some(Sysno::Exit) => {
                let code = args[0] as u64;
                if code == 0 {
                    info!("partition {}: exited", p.name);
                    let _ = exec.sched_mut().stop_partition(id);
                    release_peers(exec, current, SysError::PeerStopped);
                } else {
                    info!("partition {}: exited with code {code}", p.name);
                    let fault = Fault {
                        kind: FaultKind::Other(code as u32),
                        pc: frame.pc(),
                        address: None,
                    };
                    handle_fault(exec, frame, current, fault, now);
                }
                exec.switch(None, now);
                check_all_stopped(exec);
                return;
            }
        };
        frame.set_return(result.unwrap_or_else(SysError::encode));
        if reschedule {
            exec.switch(Some(frame), now);
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

/// A device interrupt: its owner's notification bit is raised; if that woke the owner, the
/// scheduler decides who runs now.
pub fn on_device_irq(frame: &mut TrapFrame, source: arch::irq::IrqSource) {
    with_exec(|exec| {
        if devices::on_device_irq(exec, source) {
            let now = arch::time::uptime_ns();
            exec.switch(Some(frame), now);
        }
    });
}

/// A fault of the current partition: apply its health policy and run someone else.
pub fn on_user_fault(frame: &mut TrapFrame, fault: Fault) {
    with_exec(|exec| {
        let now = arch::time::uptime_ns();
        if let Some(current) = exec.current {
            handle_fault(exec, frame, current, fault, now);
        }
        exec.switch(None, now);
        check_all_stopped(exec);
    });
}

/// Applies the health monitor's decision about a fault of partition `index`.
/// `frame` is the trap frame of `index`, the current partition: a restart starts it afresh
/// there and saves it.
fn handle_fault(exec: &mut Exec, frame: &mut TrapFrame, index: usize, fault: Fault, now: u64) {
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
                    // release_peers has already cleared its blocked state and notifications.
                    *frame = TrapFrame::user(p.elf.entry(), USER_STACK_TOP);
                    arch::context::save(index, frame);
                    devices::on_restart(exec, index);
                    let _ = exec.sched_mut().restart_partition(id);
                    exec.health.restarted(id);
                    info!("health: partition {name} restarted (generation {generation})");
                }
                Err(e) => error!("health: partition {name} could not be reloaded ({e}); stopped"),
            }
        }
    }
}
