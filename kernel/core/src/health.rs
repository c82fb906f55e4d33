//! The health monitor: what happens to a partition that faults.
//!
//! Each partition declares a [`Policy`]: restart it (memory re-initialised from the image,
//! generation number bumped), stop it, or halt the whole system. Restarts are rate-limited: a
//! partition that would restart more than `max_restarts` times within `period_ns` is stopped
//! instead, because a crash loop must not turn into a partition that does nothing but
//! re-initialise (and, through its peers' "peer restarted" errors, keeps them busy too). The
//! monitor decides; the kernel acts (re-initialises memory, tells the scheduler) and logs the
//! [`FaultLog`] line. The full model is in docs/scheduling-and-health.md.

use core::fmt;

use crate::sched::{MAX_PARTITIONS, Nanos, PartitionId};

/// Restarts remembered per partition for rate limiting: `max_restarts` may not exceed it, so
/// that "at most `max_restarts` in any `period_ns`" is enforced exactly with fixed storage.
pub const MAX_TRACKED_RESTARTS: usize = 32;

/// A partition's declared reaction to faults (`health` in the system description).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Restart the partition, at most `max_restarts` times in any `period_ns`; beyond that it
    /// is stopped.
    Restart { max_restarts: u32, period_ns: u64 },
    /// Stop the partition; the rest of the system keeps running.
    Stop,
    /// Halt the whole system.
    Halt,
}

/// The kind of memory access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
    /// An instruction fetch.
    Execute,
}

/// What went wrong, independent of the architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// An access to memory that is unmapped, kernel-only or mapped without that permission.
    PageFault { access: Access },
    /// x86 general protection (a privileged instruction, a non-canonical address, …).
    GeneralProtection,
    /// An undefined or privileged-only instruction.
    InvalidOpcode,
    /// Integer division by zero (x86; aarch64 does not trap on it).
    DivideError,
    /// A breakpoint instruction with no debugger attached.
    Breakpoint,
    /// A misaligned access, program counter or stack pointer.
    Alignment,
    /// Anything else, with the architecture's code (x86 vector, aarch64 exception class).
    Other(u32),
}

impl FaultKind {
    /// Classifies an x86_64 exception taken from user mode: `vector` and, for page faults,
    /// the error code the CPU pushed.
    pub fn from_x86_64(vector: u8, error_code: u64) -> FaultKind {
        match vector {
            0 => FaultKind::DivideError,
            3 => FaultKind::Breakpoint,
            6 => FaultKind::InvalidOpcode,
            13 => FaultKind::GeneralProtection,
            14 => FaultKind::PageFault {
                // Bit 4: instruction fetch; bit 1: write.
                access: if error_code & (1 << 4) != 0 {
                    Access::Execute
                } else if error_code & (1 << 1) != 0 {
                    Access::Write
                } else {
                    Access::Read
                },
            },
            17 => FaultKind::Alignment,
            other => FaultKind::Other(u32::from(other)),
        }
    }

    /// Classifies an aarch64 synchronous exception from EL0 by its `ESR_EL1` value.
    pub fn from_aarch64_esr(esr: u64) -> FaultKind {
        let class = ((esr >> 26) & 0x3f) as u32;
        // ISS bit 6 (WnR) of a data abort: the access was a write.
        let write = esr & (1 << 6) != 0;
        match class {
            0x00 => FaultKind::InvalidOpcode, // unknown reason: undefined instruction
            0x20 | 0x21 => FaultKind::PageFault {
                access: Access::Execute,
            },
            0x24 | 0x25 => FaultKind::PageFault {
                access: if write { Access::Write } else { Access::Read },
            },
            0x22 | 0x26 => FaultKind::Alignment, // PC or SP alignment
            0x3c => FaultKind::Breakpoint,       // BRK
            other => FaultKind::Other(other),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::PageFault { access } => {
                let access = match access {
                    Access::Read => "read",
                    Access::Write => "write",
                    Access::Execute => "execute",
                };
                write!(f, "page fault ({access})")
            }
            FaultKind::GeneralProtection => f.write_str("general protection fault"),
            FaultKind::InvalidOpcode => f.write_str("invalid opcode"),
            FaultKind::DivideError => f.write_str("divide error"),
            FaultKind::Breakpoint => f.write_str("breakpoint"),
            FaultKind::Alignment => f.write_str("alignment fault"),
            FaultKind::Other(code) => write!(f, "fault {code:#x}"),
        }
    }
}

/// One fault of a partition, as the trap handler saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What went wrong.
    pub kind: FaultKind,
    /// The faulting instruction's address.
    pub pc: u64,
    /// The data address involved (CR2 / FAR), when the architecture reports one.
    pub address: Option<u64>,
}

/// Why a partition was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Its policy is `stop`.
    Policy,
    /// Its policy is `restart`, but it already restarted `max_restarts` times within
    /// `period_ns`.
    RateLimited,
    /// It was stopped already (a fault reported late, from the instant it was being stopped).
    AlreadyStopped,
}

/// What the kernel must do about a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Re-initialise the partition from the image and start it again; its new generation
    /// number is `generation`. Call [`HealthMonitor::restarted`] when done.
    Restart { generation: u32 },
    /// Stop the partition for good; its windows stay reserved and idle.
    Stop { reason: StopReason },
    /// Halt the whole system.
    HaltSystem,
}

/// A partition's life cycle as the monitor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionState {
    /// Running (or ready to run) normally.
    Running,
    /// The kernel is re-initialising it after a fault.
    Restarting,
    /// Stopped for good.
    Stopped,
}

/// Why a policy was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthError {
    /// The partition number is beyond the monitor's table.
    NoSuchPartition,
    /// `max_restarts` is zero (use `Stop`) or above [`MAX_TRACKED_RESTARTS`].
    MaxRestartsOutOfRange,
    /// `period_ns` is zero.
    ZeroPeriod,
}

/// Fault and restart counters of one partition, for reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthCounters {
    /// Faults reported.
    pub faults: u64,
    /// Restarts granted.
    pub restarts: u64,
    /// The last fault and when it happened.
    pub last_fault: Option<(Fault, u64)>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    policy: Option<Policy>,
    state: PartitionState,
    generation: u32,
    counters: HealthCounters,
    /// Times of the most recent restarts, a ring; `recent_len` of them are valid.
    recent: [u64; MAX_TRACKED_RESTARTS],
    recent_len: usize,
    recent_next: usize,
}

impl Entry {
    const EMPTY: Entry = Entry {
        policy: None,
        state: PartitionState::Running,
        generation: 0,
        counters: HealthCounters {
            faults: 0,
            restarts: 0,
            last_fault: None,
        },
        recent: [0; MAX_TRACKED_RESTARTS],
        recent_len: 0,
        recent_next: 0,
    };

    /// Restarts in `(now - period_ns, now]`.
    fn restarts_within(&self, now: u64, period_ns: u64) -> usize {
        self.recent[..self.recent_len]
            .iter()
            .filter(|&&t| t <= now && now - t < period_ns)
            .count()
    }

    fn remember_restart(&mut self, now: u64) {
        self.recent[self.recent_next] = now;
        self.recent_next = (self.recent_next + 1) % MAX_TRACKED_RESTARTS;
        self.recent_len = (self.recent_len + 1).min(MAX_TRACKED_RESTARTS);
    }
}

/// Health state of up to `PARTITIONS` partitions (at most [`MAX_PARTITIONS`] are addressable).
#[derive(Clone, Debug)]
pub struct HealthMonitor<const PARTITIONS: usize> {
    entries: [Entry; PARTITIONS],
    halted: bool,
}

impl<const PARTITIONS: usize> Default for HealthMonitor<PARTITIONS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const PARTITIONS: usize> HealthMonitor<PARTITIONS> {
    /// A monitor with no policies. A partition without a policy that faults halts the system:
    /// a fault nobody planned for is a configuration error, and halting is the only safe
    /// answer to it.
    pub const fn new() -> Self {
        Self {
            entries: [Entry::EMPTY; PARTITIONS],
            halted: false,
        }
    }

    fn entry(&self, partition: PartitionId) -> Option<&Entry> {
        if usize::from(partition.0) >= MAX_PARTITIONS {
            return None;
        }
        self.entries.get(usize::from(partition.0))
    }

    fn entry_mut(&mut self, partition: PartitionId) -> Option<&mut Entry> {
        if usize::from(partition.0) >= MAX_PARTITIONS {
            return None;
        }
        self.entries.get_mut(usize::from(partition.0))
    }

    /// Sets a partition's policy (at boot, from the system description).
    pub fn configure(&mut self, partition: PartitionId, policy: Policy) -> Result<(), HealthError> {
        if let Policy::Restart {
            max_restarts,
            period_ns,
        } = policy
        {
            if max_restarts == 0 || max_restarts as usize > MAX_TRACKED_RESTARTS {
                return Err(HealthError::MaxRestartsOutOfRange);
            }
            if period_ns == 0 {
                return Err(HealthError::ZeroPeriod);
            }
        }
        let entry = self
            .entry_mut(partition)
            .ok_or(HealthError::NoSuchPartition)?;
        entry.policy = Some(policy);
        Ok(())
    }

    /// Decides what to do about `fault` in `partition` at `now` (monotonic nanoseconds), and
    /// records it. A restart is granted if fewer than `max_restarts` restarts happened in
    /// `(now - period_ns, now]`; otherwise the partition is stopped.
    pub fn on_fault(&mut self, partition: PartitionId, fault: Fault, now: u64) -> Action {
        let Some(entry) = self.entry_mut(partition) else {
            self.halted = true;
            return Action::HaltSystem;
        };
        entry.counters.faults = entry.counters.faults.saturating_add(1);
        entry.counters.last_fault = Some((fault, now));
        if entry.state == PartitionState::Stopped {
            return Action::Stop {
                reason: StopReason::AlreadyStopped,
            };
        }
        let action = match entry.policy {
            None | Some(Policy::Halt) => Action::HaltSystem,
            Some(Policy::Stop) => Action::Stop {
                reason: StopReason::Policy,
            },
            Some(Policy::Restart {
                max_restarts,
                period_ns,
            }) => {
                if entry.restarts_within(now, period_ns) < max_restarts as usize {
                    entry.remember_restart(now);
                    entry.counters.restarts = entry.counters.restarts.saturating_add(1);
                    // Wrapping needs 2^32 restarts; rate limiting makes that centuries.
                    entry.generation = entry.generation.wrapping_add(1);
                    Action::Restart {
                        generation: entry.generation,
                    }
                } else {
                    Action::Stop {
                        reason: StopReason::RateLimited,
                    }
                }
            }
        };
        match action {
            Action::Restart { .. } => entry.state = PartitionState::Restarting,
            Action::Stop { .. } => entry.state = PartitionState::Stopped,
            Action::HaltSystem => {
                entry.state = PartitionState::Stopped;
                self.halted = true;
            }
        }
        action
    }

    /// The kernel finished re-initialising `partition` after an [`Action::Restart`]; it runs
    /// again. Returns `false` (and changes nothing) unless it was restarting.
    pub fn restarted(&mut self, partition: PartitionId) -> bool {
        match self.entry_mut(partition) {
            Some(entry) if entry.state == PartitionState::Restarting => {
                entry.state = PartitionState::Running;
                true
            }
            _ => false,
        }
    }

    /// A partition's generation number: 0 at boot, one more after each restart. Peers holding
    /// an older number learn "peer restarted" on their next operation with it.
    pub fn generation(&self, partition: PartitionId) -> Option<u32> {
        self.entry(partition).map(|e| e.generation)
    }

    /// A partition's state.
    pub fn state(&self, partition: PartitionId) -> Option<PartitionState> {
        self.entry(partition).map(|e| e.state)
    }

    /// A partition's policy, if configured.
    pub fn policy(&self, partition: PartitionId) -> Option<Policy> {
        self.entry(partition).and_then(|e| e.policy)
    }

    /// A partition's fault and restart counters.
    pub fn counters(&self, partition: PartitionId) -> Option<HealthCounters> {
        self.entry(partition).map(|e| e.counters)
    }

    /// Whether some fault asked for the system to halt.
    pub fn is_halted(&self) -> bool {
        self.halted
    }

    /// The log line for a fault and the action taken, for the kernel to print.
    pub fn log_line<'a>(
        &self,
        name: &'a str,
        partition: PartitionId,
        fault: Fault,
        action: Action,
    ) -> FaultLog<'a> {
        FaultLog {
            name,
            fault,
            action,
            restarts: self.counters(partition).map_or(0, |c| c.restarts),
            policy: self.policy(partition),
        }
    }
}

/// One health-monitor log line, e.g.
/// `health: partition "crasher" page fault (write) at 0x1000 (pc 0x401234): restart 3 (generation 3)`.
#[derive(Clone, Copy, Debug)]
pub struct FaultLog<'a> {
    /// The partition's name.
    pub name: &'a str,
    /// The fault.
    pub fault: Fault,
    /// What the monitor decided.
    pub action: Action,
    /// Restarts granted so far, this one included.
    pub restarts: u64,
    /// The partition's policy, for the limit quoted when restarts are exhausted.
    pub policy: Option<Policy>,
}

impl fmt::Display for FaultLog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "health: partition \"{}\" {}", self.name, self.fault.kind)?;
        if let Some(address) = self.fault.address {
            write!(f, " at {address:#x}")?;
        }
        write!(f, " (pc {:#x}): ", self.fault.pc)?;
        match self.action {
            Action::Restart { generation } => {
                write!(f, "restart {} (generation {generation})", self.restarts)
            }
            Action::Stop {
                reason: StopReason::RateLimited,
            } => match self.policy {
                Some(Policy::Restart {
                    max_restarts,
                    period_ns,
                }) => write!(
                    f,
                    "stopped: restart limit reached ({max_restarts} in {})",
                    Nanos(period_ns)
                ),
                _ => f.write_str("stopped: restart limit reached"),
            },
            Action::Stop {
                reason: StopReason::Policy,
            } => f.write_str("stopped (policy)"),
            Action::Stop {
                reason: StopReason::AlreadyStopped,
            } => f.write_str("already stopped"),
            Action::HaltSystem => f.write_str("halting the system"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    const MS: u64 = 1_000_000;
    const P: PartitionId = PartitionId(0);
    const Q: PartitionId = PartitionId(1);

    fn fault() -> Fault {
        Fault {
            kind: FaultKind::PageFault {
                access: Access::Write,
            },
            pc: 0x40_1234,
            address: Some(0x1000),
        }
    }

    fn restart(max_restarts: u32, period_ns: u64) -> Policy {
        Policy::Restart {
            max_restarts,
            period_ns,
        }
    }

    #[test]
    fn restart_bumps_the_generation() {
        let mut m: HealthMonitor<4> = HealthMonitor::new();
        m.configure(P, restart(5, 1000 * MS)).unwrap();
        assert_eq!(m.generation(P), Some(0));
        assert_eq!(
            m.on_fault(P, fault(), 10),
            Action::Restart { generation: 1 }
        );
        assert_eq!(m.state(P), Some(PartitionState::Restarting));
        assert!(m.restarted(P));
        assert!(!m.restarted(P), "only once per restart");
        assert_eq!(m.state(P), Some(PartitionState::Running));
        assert_eq!(
            m.on_fault(P, fault(), 20),
            Action::Restart { generation: 2 }
        );
        assert_eq!(m.generation(P), Some(2));
        let c = m.counters(P).unwrap();
        assert_eq!((c.faults, c.restarts), (2, 2));
        assert_eq!(c.last_fault, Some((fault(), 20)));
        assert!(!m.is_halted());
    }

    #[test]
    fn restarts_are_rate_limited_then_stopped_for_good() {
        let mut m: HealthMonitor<4> = HealthMonitor::new();
        m.configure(P, restart(3, 100 * MS)).unwrap();
        for (i, t) in [0, 10 * MS, 20 * MS].into_iter().enumerate() {
            assert_eq!(
                m.on_fault(P, fault(), t),
                Action::Restart {
                    generation: i as u32 + 1
                }
            );
            m.restarted(P);
        }
        // A fourth within 100 ms of the first: stopped.
        assert_eq!(
            m.on_fault(P, fault(), 99 * MS),
            Action::Stop {
                reason: StopReason::RateLimited
            }
        );
        assert_eq!(m.state(P), Some(PartitionState::Stopped));
        assert_eq!(m.generation(P), Some(3), "no bump without a restart");
        // Stop is final, even after the period has passed.
        assert_eq!(
            m.on_fault(P, fault(), 10_000 * MS),
            Action::Stop {
                reason: StopReason::AlreadyStopped
            }
        );
        assert!(!m.restarted(P));
        assert_eq!(m.state(P), Some(PartitionState::Stopped));
        assert_eq!(m.counters(P).unwrap().faults, 5);
    }

    #[test]
    fn rate_limit_window_slides_across_the_period_boundary() {
        let mut m: HealthMonitor<4> = HealthMonitor::new();
        m.configure(P, restart(2, 100 * MS)).unwrap();
        assert!(matches!(m.on_fault(P, fault(), 0), Action::Restart { .. }));
        assert!(matches!(
            m.on_fault(P, fault(), 50 * MS),
            Action::Restart { .. }
        ));
        // Exactly one period after the first restart, it no longer counts: (t - period, t].
        assert!(matches!(
            m.on_fault(P, fault(), 100 * MS),
            Action::Restart { .. }
        ));
        // But 50 ms and 100 ms are both within 100 ms of 149 ms.
        assert_eq!(
            m.on_fault(P, fault(), 149 * MS),
            Action::Stop {
                reason: StopReason::RateLimited
            }
        );

        // One nanosecond earlier, the first restart still counts.
        let mut m: HealthMonitor<4> = HealthMonitor::new();
        m.configure(P, restart(2, 100 * MS)).unwrap();
        m.on_fault(P, fault(), 0);
        m.on_fault(P, fault(), 50 * MS);
        assert_eq!(
            m.on_fault(P, fault(), 100 * MS - 1),
            Action::Stop {
                reason: StopReason::RateLimited
            }
        );
    }

    #[test]
    fn a_steady_trickle_of_faults_restarts_forever() {
        // A fault every 1.5 ms puts 22 restarts in any 32 ms, below the limit of 32: restarts
        // go on for ever, and the 32-entry ring never forgets one that still counts.
        let mut m: HealthMonitor<1> = HealthMonitor::new();
        m.configure(P, restart(32, 32 * MS)).unwrap();
        for i in 0..1000u64 {
            let action = m.on_fault(P, fault(), i * 1_500_000);
            assert!(
                matches!(action, Action::Restart { .. }),
                "fault {i}: {action:?}"
            );
            m.restarted(P);
        }
        // Then a burst 1 us apart, starting 1.5 ms after the last: the 21 restarts of the last
        // 31.5 ms still count, so 11 more are granted and the 12th is refused.
        let base = 1000 * 1_500_000;
        let mut granted = 0;
        for i in 0..40u64 {
            match m.on_fault(P, fault(), base + i * 1_000) {
                Action::Restart { .. } => granted += 1,
                Action::Stop { .. } => break,
                Action::HaltSystem => panic!("halt"),
            }
            m.restarted(P);
        }
        assert_eq!(granted, 11);
        assert_eq!(m.generation(P), Some(1011));
    }

    #[test]
    fn stop_and_halt_policies() {
        let mut m: HealthMonitor<4> = HealthMonitor::new();
        m.configure(P, Policy::Stop).unwrap();
        m.configure(Q, Policy::Halt).unwrap();
        assert_eq!(
            m.on_fault(P, fault(), 0),
            Action::Stop {
                reason: StopReason::Policy
            }
        );
        assert_eq!(m.state(P), Some(PartitionState::Stopped));
        assert!(!m.is_halted());
        assert_eq!(m.on_fault(Q, fault(), 0), Action::HaltSystem);
        assert!(m.is_halted());
        assert_eq!(m.generation(Q), Some(0));
    }

    #[test]
    fn unknown_or_unconfigured_partitions_halt() {
        let mut m: HealthMonitor<2> = HealthMonitor::new();
        assert_eq!(m.on_fault(PartitionId(1), fault(), 0), Action::HaltSystem);
        let mut m: HealthMonitor<2> = HealthMonitor::new();
        assert_eq!(m.on_fault(PartitionId(2), fault(), 0), Action::HaltSystem);
        assert!(m.is_halted());
        assert_eq!(m.generation(PartitionId(2)), None);
        assert_eq!(m.state(PartitionId(200)), None);
    }

    #[test]
    fn bad_policies_are_refused() {
        let mut m: HealthMonitor<2> = HealthMonitor::new();
        assert_eq!(
            m.configure(P, restart(0, MS)),
            Err(HealthError::MaxRestartsOutOfRange)
        );
        assert_eq!(
            m.configure(P, restart(MAX_TRACKED_RESTARTS as u32 + 1, MS)),
            Err(HealthError::MaxRestartsOutOfRange)
        );
        assert_eq!(m.configure(P, restart(1, 0)), Err(HealthError::ZeroPeriod));
        assert_eq!(
            m.configure(PartitionId(2), Policy::Stop),
            Err(HealthError::NoSuchPartition)
        );
        assert_eq!(m.policy(P), None);
        assert!(
            m.configure(P, restart(MAX_TRACKED_RESTARTS as u32, MS))
                .is_ok()
        );
    }

    #[test]
    fn x86_64_exceptions_are_classified() {
        assert_eq!(FaultKind::from_x86_64(0, 0), FaultKind::DivideError);
        assert_eq!(FaultKind::from_x86_64(3, 0), FaultKind::Breakpoint);
        assert_eq!(FaultKind::from_x86_64(6, 0), FaultKind::InvalidOpcode);
        assert_eq!(FaultKind::from_x86_64(13, 0), FaultKind::GeneralProtection);
        assert_eq!(FaultKind::from_x86_64(17, 0), FaultKind::Alignment);
        assert_eq!(FaultKind::from_x86_64(19, 0), FaultKind::Other(19));
        let pf = |code| FaultKind::from_x86_64(14, code);
        assert_eq!(
            pf(0b0_0100),
            FaultKind::PageFault {
                access: Access::Read
            }
        );
        assert_eq!(
            pf(0b0_0111),
            FaultKind::PageFault {
                access: Access::Write
            }
        );
        assert_eq!(
            pf(0b1_0101),
            FaultKind::PageFault {
                access: Access::Execute
            }
        );
    }

    #[test]
    fn aarch64_exceptions_are_classified() {
        let esr = |class: u64, iss: u64| (class << 26) | (1 << 25) | iss;
        assert_eq!(
            FaultKind::from_aarch64_esr(esr(0x00, 0)),
            FaultKind::InvalidOpcode
        );
        assert_eq!(
            FaultKind::from_aarch64_esr(esr(0x24, 1 << 6)),
            FaultKind::PageFault {
                access: Access::Write
            }
        );
        assert_eq!(
            FaultKind::from_aarch64_esr(esr(0x24, 0)),
            FaultKind::PageFault {
                access: Access::Read
            }
        );
        assert_eq!(
            FaultKind::from_aarch64_esr(esr(0x20, 0)),
            FaultKind::PageFault {
                access: Access::Execute
            }
        );
        assert_eq!(
            FaultKind::from_aarch64_esr(esr(0x22, 0)),
            FaultKind::Alignment
        );
        assert_eq!(
            FaultKind::from_aarch64_esr(esr(0x26, 0)),
            FaultKind::Alignment
        );
        assert_eq!(
            FaultKind::from_aarch64_esr(esr(0x3c, 0)),
            FaultKind::Breakpoint
        );
        assert_eq!(
            FaultKind::from_aarch64_esr(esr(0x15, 0)),
            FaultKind::Other(0x15)
        );
    }

    #[test]
    fn log_lines() {
        let mut m: HealthMonitor<4> = HealthMonitor::new();
        m.configure(P, restart(2, 1000 * MS)).unwrap();
        m.configure(Q, Policy::Stop).unwrap();
        let line = |m: &HealthMonitor<4>, p, f, a| m.log_line("crasher", p, f, a).to_string();
        let a = m.on_fault(P, fault(), 0);
        assert_eq!(
            line(&m, P, fault(), a),
            "health: partition \"crasher\" page fault (write) at 0x1000 (pc 0x401234): \
             restart 1 (generation 1)"
        );
        m.on_fault(P, fault(), 1);
        let ud = Fault {
            kind: FaultKind::InvalidOpcode,
            pc: 0x40_0000,
            address: None,
        };
        let a = m.on_fault(P, ud, 2);
        assert_eq!(
            line(&m, P, ud, a),
            "health: partition \"crasher\" invalid opcode (pc 0x400000): \
             stopped: restart limit reached (2 in 1.000 s)"
        );
        let a = m.on_fault(Q, ud, 2);
        assert!(line(&m, Q, ud, a).ends_with("(pc 0x400000): stopped (policy)"));
        let a = m.on_fault(Q, ud, 3);
        assert!(line(&m, Q, ud, a).ends_with("already stopped"));
        let gp = Fault {
            kind: FaultKind::GeneralProtection,
            pc: 0x1,
            address: None,
        };
        assert!(
            m.log_line("x", PartitionId(3), gp, Action::HaltSystem)
                .to_string()
                .ends_with("general protection fault (pc 0x1): halting the system")
        );
        assert_eq!(FaultKind::Other(0x21).to_string(), "fault 0x21");
        assert_eq!(FaultKind::DivideError.to_string(), "divide error");
    }
}
