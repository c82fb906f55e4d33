//! `cargo xtask test`: host unit tests, then integration tests that boot real kernels in QEMU
//! and check what they print and how they exit.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use kcore::sched::WINDOW_TOLERANCE_NS;
use regex::Regex;

use crate::qemu::{self, Outcome};
use crate::{Arch, BuildOpts, build, image};

/// Runs the unit tests of every host crate (the workspace's default members).
pub fn host() -> Result<()> {
    println!("xtask: host unit tests");
    let status = build::cargo()
        .current_dir(build::root())
        .args(["test", "--quiet"])
        .status()?;
    if !status.success() {
        bail!("host unit tests failed");
    }
    miri()
}

/// Runs the VirtIO library's tests under Miri: its ring code is the project's densest unsafe
/// code outside the kernel's arch layer, and it handles memory another partition shares.
fn miri() -> Result<()> {
    println!("xtask: VirtIO ring tests under Miri");
    let root = build::root();
    let setup = build::cargo()
        .current_dir(&root)
        .args(["miri", "setup"])
        .output()?;
    if !setup.status.success() {
        bail!(
            "cargo miri setup failed: {}",
            String::from_utf8_lossy(&setup.stderr)
        );
    }
    let status = build::cargo()
        .current_dir(&root)
        .args(["miri", "test", "--quiet", "-p", "bulkhead-virtio"])
        .status()?;
    if !status.success() {
        bail!("VirtIO tests under Miri failed");
    }
    Ok(())
}

/// A check of a whole serial log; says what is wrong.
type LogCheck = fn(&[String]) -> Result<(), String>;

/// One boot of a test kernel and what it must show.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    arch: Arch,
    uefi: bool,
    /// The system description booted, if any.
    system: Option<&'static str>,
    /// Kernel command line; `exit` makes a successful boot power off.
    cmdline: &'static str,
    expect: Outcome,
    /// Regular expressions that must match lines of the serial log, in this order.
    patterns: &'static [&'static str],
    /// A further check of the whole log.
    check: Option<LogCheck>,
    /// Extra QEMU arguments.
    qemu_args: &'static [&'static str],
    /// The system's devices as `cargo xtask run` gives them (xtask/src/devices.rs), host
    /// chardevs talked to while QEMU runs, and a check of what they received.
    host: Option<HostSide>,
}

/// What a case does on the host side of the system's devices.
#[derive(Clone, Copy)]
struct HostSide {
    /// Console channels whose host chardev (a Unix socket, devices::console_socket) is
    /// connected as soon as QEMU listens, read until QEMU ends, and sent this text at once
    /// (the device delivers it when the guest's port is open).
    consoles: &'static [(&'static str, &'static str)],
    /// Checks the serial log, what each console's host side received (in `consoles` order)
    /// and how long QEMU ran.
    check: HostCheck,
}

type HostCheck = fn(&[String], &[Vec<u8>], Duration) -> Result<(), String>;

/// Guest time from instructions executed (1 ns each) rather than the host's clock: timing
/// assertions then measure the kernel, not the load on the host.
const ICOUNT: &[&str] = &["-icount", "shift=0"];

/// Guest time from instructions alone: with `sleep=off` a halted CPU's time jumps to the next
/// timer deadline instead of following the host's clock (QEMU's default, `sleep=on`), so
/// window start latencies are the kernel's and the same in every run.
pub const ICOUNT_DETERMINISTIC: &[&str] = &["-icount", "shift=0,sleep=off"];

/// QEMU `virt` with a GICv3 (distributor, redistributors, system-register CPU interface)
/// instead of its default GICv2.
const GIC_V3: &[&str] = &["-machine", "gic-version=3"];
const GIC_V3_ICOUNT: &[&str] = &["-machine", "gic-version=3", "-icount", "shift=0"];
const FROM_EL2_GIC_V3: &[&str] = &["-machine", "gic-version=3,virtualization=on"];
const FROM_EL2_GIC_V3_ICOUNT: &[&str] = &[
    "-machine",
    "gic-version=3,virtualization=on",
    "-icount",
    "shift=0",
];

const BANNER_X86: &[&str] = &[
    r"^Bulkhead \d+\.\d+\.\d+ \(x86_64\) - partitioned real-time kernel$",
    r"memory: \d+ regions, \d+(\.\d)? MiB usable in \d+ regions",
    r"frames: \d+ free",
    r"heap: 1 MiB at 0x[0-9a-f]+, self-check ok",
    r"timer: TSC counter at \d+\.\d{3} [GM]Hz \(calibrated against the PIT\); the Local APIC timer at \d+\.\d{3} [GM]Hz gives a 1\.000 kHz tick",
    r"tick 500 at uptime",
    r"boot demo complete$",
];

const CASES: &[Case] = &[
    Case {
        name: "x86_64-bios-banner",
        arch: Arch::X86_64,
        uefi: false,
        system: None,
        cmdline: "exit",
        expect: Outcome::Success,
        patterns: BANNER_X86,
        check: Some(|log| find(log, r"booted by BIOS; command line: .exit.")),
        qemu_args: &[],
        host: None,
    },
    Case {
        name: "x86_64-uefi-banner",
        arch: Arch::X86_64,
        uefi: true,
        system: None,
        cmdline: "exit",
        expect: Outcome::Success,
        patterns: BANNER_X86,
        check: Some(|log| find(log, r"booted by UEFI; command line: .exit.")),
        qemu_args: &[],
        host: None,
    },
    Case {
        name: "x86_64-ticks-advance",
        arch: Arch::X86_64,
        uefi: false,
        system: None,
        cmdline: "test=ticks exit",
        expect: Outcome::Success,
        patterns: &[r"boot demo complete"],
        check: Some(ticks_advance),
        qemu_args: &[],
        host: None,
    },
    Case {
        name: "x86_64-page-fault-reported",
        arch: Arch::X86_64,
        uefi: false,
        system: None,
        cmdline: "test=page_fault exit",
        expect: Outcome::Failure,
        patterns: &[
            r"selftest: reading unmapped address 0x1234deadb000",
            r"^page fault: read at address CR2=0x00001234deadb000 \(page not present\)$",
            r"^EXCEPTION: page fault \(#PF\) \(vector 14\) in kernel mode$",
            r"^  error code 0x0$",
            r"^  RIP=0xffffffff8[0-9a-f]{7} CS=0x8 ",
            r"^kernel fault: stopping the system$",
        ],
        check: Some(|log| absent(log, "boot demo complete")),
        qemu_args: &[],
        host: None,
    },
    Case {
        name: "x86_64-invalid-opcode-reported",
        arch: Arch::X86_64,
        uefi: false,
        system: None,
        cmdline: "test=invalid_opcode exit",
        expect: Outcome::Failure,
        patterns: &[
            r"selftest: executing an undefined instruction",
            r"^EXCEPTION: invalid opcode \(#UD\) \(vector 6\) in kernel mode$",
            r"^  RIP=0xffffffff8[0-9a-f]{7} ",
            r"^kernel fault: stopping the system$",
        ],
        check: Some(|log| absent(log, "boot demo complete")),
        qemu_args: &[],
        host: None,
    },
    Case {
        name: "x86_64-stack-overflow-double-fault",
        arch: Arch::X86_64,
        uefi: false,
        system: None,
        cmdline: "test=stack_overflow exit",
        expect: Outcome::Failure,
        patterns: &[
            r"selftest: overflowing the kernel stack",
            r"^EXCEPTION: double fault \(#DF\) \(vector 8\) in kernel mode$",
            r"^kernel fault: stopping the system$",
        ],
        check: Some(|log| absent(log, "boot demo complete")),
        qemu_args: &[],
        host: None,
    },
    Case {
        name: "x86_64-panic-reported",
        arch: Arch::X86_64,
        uefi: false,
        system: None,
        cmdline: "test=panic exit",
        expect: Outcome::Failure,
        patterns: &[
            r"^KERNEL PANIC: panicked at kernel/src/boot\.rs:\d+:\d+:$",
            r"selftest: deliberate kernel panic",
        ],
        check: None,
        qemu_args: &[],
        host: None,
    },
    Case {
        name: "aarch64-banner",
        arch: Arch::Aarch64,
        uefi: false,
        system: None,
        cmdline: "exit",
        expect: Outcome::Success,
        patterns: &[
            r"^Bulkhead \d+\.\d+\.\d+ \(aarch64\) - partitioned real-time kernel$",
            r"booted by device tree; command line: .exit semihosting.",
            r"memory: \d+ regions, \d+(\.\d)? MiB usable in \d+ regions",
            r"heap: 1 MiB at 0x[0-9a-f]+, self-check ok",
            r"timer: CNTPCT counter at \d+\.\d{3} MHz \(calibrated against CNTFRQ_EL0\); the EL1 physical timer at \d+\.\d{3} MHz gives a 1\.000 kHz tick",
            r"tick 500 at uptime",
            r"boot demo complete$",
        ],
        check: Some(|log| {
            find(
                log,
                r"interrupt controller: GICv2 \(distributor 0x8000000, CPU interface 0x8010000\)$",
            )
        }),
        qemu_args: &[],
        host: None,
    },
    Case {
        name: "aarch64-gicv3-banner",
        arch: Arch::Aarch64,
        uefi: false,
        system: None,
        cmdline: "exit",
        expect: Outcome::Success,
        patterns: &[
            r"interrupt controller: GICv3 \(distributor 0x8000000, redistributor 0x80a0000\)$",
            r"^Bulkhead \d+\.\d+\.\d+ \(aarch64\) - partitioned real-time kernel$",
            r"timer: CNTPCT counter at \d+\.\d{3} MHz \(calibrated against CNTFRQ_EL0\); the EL1 physical timer at \d+\.\d{3} MHz gives a 1\.000 kHz tick",
            r"boot demo complete$",
        ],
        check: Some(ticks_advance),
        qemu_args: GIC_V3,
        host: None,
    },
    Case {
        name: "aarch64-ticks-advance",
        arch: Arch::Aarch64,
        uefi: false,
        system: None,
        cmdline: "test=ticks exit",
        expect: Outcome::Success,
        patterns: &[r"boot demo complete"],
        check: Some(ticks_advance),
        // Guest time from instructions: a loaded host cannot stall the tick between reports.
        qemu_args: ICOUNT,
        host: None,
    },
    Case {
        name: "aarch64-page-fault-reported",
        arch: Arch::Aarch64,
        uefi: false,
        system: None,
        cmdline: "test=page_fault exit",
        expect: Outcome::Failure,
        patterns: &[
            r"selftest: reading unmapped address 0x1234deadb000",
            r"^EXCEPTION: data abort \(read, translation fault level \d\) in kernel mode$",
            r"^  ESR=0x96[0-9a-f]{6} FAR=0x00001234deadb000$",
            r"^  ELR=0xffff[0-9a-f]{12} ",
            r"^kernel fault: stopping the system$",
        ],
        check: Some(|log| absent(log, "boot demo complete")),
        qemu_args: &[],
        host: None,
    },
    Case {
        name: "aarch64-invalid-opcode-reported",
        arch: Arch::Aarch64,
        uefi: false,
        system: None,
        cmdline: "test=invalid_opcode exit",
        expect: Outcome::Failure,
        patterns: &[
            r"selftest: executing an undefined instruction",
            r"^EXCEPTION: undefined instruction in kernel mode$",
            r"^  ESR=0x02[0-9a-f]{6} FAR=",
            r"^kernel fault: stopping the system$",
        ],
        check: Some(|log| absent(log, "boot demo complete")),
        qemu_args: &[],
        host: None,
    },
    Case {
        name: "aarch64-stack-overflow-reported",
        arch: Arch::Aarch64,
        uefi: false,
        system: None,
        cmdline: "test=stack_overflow exit",
        expect: Outcome::Failure,
        patterns: &[
            r"selftest: overflowing the kernel stack",
            r"^EXCEPTION: data abort \((read|write), translation fault level 3\) in kernel mode$",
            r"^  the address is the boot stack's guard page: kernel stack overflow$",
            r"^kernel fault: stopping the system$",
        ],
        check: Some(|log| absent(log, "boot demo complete")),
        qemu_args: &[],
        host: None,
    },
];

/// Partition tests: programs run in user mode, in their windows, contained when they fault.
const PARTITION_CASES: &[Case] = &[
    Case {
        name: "x86_64-partitions-run-in-their-windows",
        arch: Arch::X86_64,
        uefi: false,
        system: Some("hello"),
        cmdline: "exit",
        expect: Outcome::Success,
        patterns: &[
            r"partition hello-a: loaded, \d+ KiB of 64 KiB, entry 0x400000, priority 10$",
            r"partition hello-b: loaded, \d+ KiB of 64 KiB, entry 0x400000, priority 10$",
            r"schedule: major frame 10000 us, 2 windows; partitions start now",
            r"hello-a: round 3 at \d+ us",
            r"partition hello-a: Stopped, generation 0",
            r"every partition has ended; powering off",
        ],
        check: Some(hello_in_windows),
        qemu_args: ICOUNT,
        host: None,
    },
    Case {
        name: "x86_64-faults-contained-and-restarted",
        arch: Arch::X86_64,
        uefi: false,
        system: Some("faults"),
        cmdline: "run_ms=500",
        expect: Outcome::Success,
        patterns: &[
            r"writer: generation 0: writing to kernel memory at 0xffffffff80000000",
            r#"health: partition "writer" page fault \(write\) at 0xffffffff80000000 \(pc 0x4[0-9a-f]{5}\): restart 1 \(generation 1\)$"#,
            r"health: partition writer restarted \(generation 1\)",
            r"writer: generation 1: writing to kernel memory",
            r"health: partition writer restarted \(generation 3\)",
            r#"health: partition "writer" page fault \(write\) at 0xffffffff80000000 \(pc 0x4[0-9a-f]{5}\): stopped: restart limit reached \(5 in 10\.000 s\)$"#,
            r"run time elapsed",
        ],
        check: Some(faults_contained),
        qemu_args: &[],
        host: None,
    },
    Case {
        name: "x86_64-spinner-and-flood-keep-to-their-windows",
        arch: Arch::X86_64,
        uefi: false,
        system: Some("spin"),
        // Ends in the flooder's tenth window: the spinner's and the counter's are all whole.
        cmdline: "run_ms=148",
        expect: Outcome::Success,
        patterns: &[
            r"spinner: spinning",
            r"flooder: 10000 calls answered",
            r"counter: progress \d+",
            r"run time elapsed",
        ],
        check: Some(flood_contained),
        qemu_args: ICOUNT_DETERMINISTIC,
        host: None,
    },
    Case {
        name: "x86_64-policy-stop-stays-stopped",
        arch: Arch::X86_64,
        uefi: false,
        system: Some("policy-stop"),
        cmdline: "run_ms=300",
        expect: Outcome::Success,
        patterns: &[
            r#"health: partition "writer" page fault \(write\) at 0xffffffff80000000 \(pc 0x4[0-9a-f]{5}\): stopped \(policy\)$"#,
            r"partition writer: Stopped, generation 0",
            r"run time elapsed",
        ],
        check: Some(|log| {
            absent(log, "writer restarted")?;
            progress_after(log, "stopped (policy)", 3)
        }),
        qemu_args: &[],
        host: None,
    },
    Case {
        name: "x86_64-policy-halt-halts",
        arch: Arch::X86_64,
        uefi: false,
        system: Some("policy-halt"),
        cmdline: "run_ms=300",
        expect: Outcome::Failure,
        patterns: &[
            r#"health: partition "writer" page fault \(write\) at 0xffffffff80000000 \(pc 0x4[0-9a-f]{5}\): halting the system$"#,
            r"health: partition writer's policy is halt: stopping the system$",
        ],
        check: Some(|log| absent(log, "run time elapsed")),
        qemu_args: &[],
        host: None,
    },
    HOSTILE_CASE,
    IPC_CASE,
    SHARED_CASE,
    DMA_CASE,
];

/// Hostile and random system calls, with a neighbour checking its memory.
const HOSTILE_CASE: Case = Case {
    name: "x86_64-hostile-and-random-syscalls-fail-cleanly",
    arch: Arch::X86_64,
    uefi: false,
    system: Some("hostile"),
    cmdline: "exit_after=fuzz",
    expect: Outcome::Success,
    patterns: &[
        r"hostile: all \d+ malformed calls returned their errors$",
        r"fuzz: 250000 calls, \d+ returned errors",
        r"fuzz: done: 1000000 calls, \d+ errors, the kernel is still here",
        r"partition fuzz has ended; powering off",
    ],
    check: Some(|log| {
        absent(log, "FAIL")?;
        absent(log, "CORRUPTED")?;
        absent(log, "health: ")?;
        // The neighbour kept verifying its memory while the fuzzer ran.
        let fuzz_start = log
            .iter()
            .position(|l| l.contains("fuzz: 250000 calls"))
            .ok_or("no fuzz progress")?;
        let fuzz_end = log
            .iter()
            .position(|l| l.contains("fuzz: done"))
            .ok_or("fuzz did not finish")?;
        let checks = log[fuzz_start..fuzz_end]
            .iter()
            .filter(|l| l.contains("memory intact"))
            .count();
        if checks < 3 {
            return Err(format!(
                "memcheck reported only {checks} times during the fuzz"
            ));
        }
        Ok(())
    }),
    qemu_args: &[],
    host: None,
};

/// The partition cases again on aarch64: the same systems, the same programs rebuilt for
/// aarch64, the same patterns and checks (the kernel reports faults in the same terms: the
/// writer's store to 0xffff_ffff_8000_0000, a TTBR1 address that EL0 may not touch, is a
/// translation-fault data abort with WnR set, "page fault (write)"; the jumper's branch to
/// unmapped memory is an instruction abort, "page fault (execute)"; user PCs are at
/// 0x400000 on both). The hostile, IPC, shared-region and DMA cases too. Plus the hello system
/// once more on a GICv3, and entered at EL2.
fn aarch64_partition_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = PARTITION_CASES
        .iter()
        .map(|c| Case {
            name: String::leak(c.name.replacen("x86_64-", "aarch64-", 1)),
            arch: Arch::Aarch64,
            ..*c
        })
        .collect();
    let hello = cases[0];
    cases.push(Case {
        name: "aarch64-gicv3-partitions-run-in-their-windows",
        qemu_args: if hello.qemu_args == ICOUNT {
            GIC_V3_ICOUNT
        } else {
            GIC_V3
        },
        ..hello
    });
    // Entered at EL2 (as from firmware with virtualization), which the boot stub drops to EL1.
    cases.push(Case {
        name: "aarch64-from-el2-gicv3-partitions-run-in-their-windows",
        qemu_args: if hello.qemu_args == ICOUNT {
            FROM_EL2_GIC_V3_ICOUNT
        } else {
            FROM_EL2_GIC_V3
        },
        ..hello
    });
    cases
}

/// Channels, notifications and restarts across them.
const IPC_CASE: Case = Case {
    name: "x86_64-ipc-call-reply-notify-and-peer-restart",
    arch: Arch::X86_64,
    uefi: false,
    system: Some("ipc"),
    cmdline: "exit_after=watcher",
    expect: Outcome::Success,
    patterns: &[
        r"server: serving \(generation 0\)",
        r"stuck: calling a server that never replies",
        r"black-hole: received 6 bytes on channel 2; never replying",
        r"server: asked to crash after 1000 calls",
        r"health: partition server restarted \(generation 1\)",
        r"server: serving \(generation 1\)",
        r"client: 2000 of 2000 calls answered correctly, 1 server restart seen, in \d+ us",
        r"watcher: woken by notification 0: bits 0x1$",
        r"partition watcher has ended; powering off",
    ],
    check: Some(|log| {
        absent(log, "FAIL")?;
        absent(log, "panic")?;
        absent(log, "health: partition \"client\"")?;
        // The watcher's first poll and the stuck caller run in windows of their own: their
        // order depends on where the first major frame starts, so neither is held to it.
        find(log, r"watcher: poll before the notification: 0x0$")?;
        // The calls spanned several major frames (20 ms), so window boundaries fell during
        // calls, and the counter kept going while the stuck client waited forever.
        let us = number_in(
            log,
            r"calls answered correctly, 1 server restart seen, in (\d+) us",
        )?;
        if us < 40_000 {
            return Err(format!(
                "the calls took {us} us: fewer than two major frames"
            ));
        }
        // Two increasing reports after the stuck call prove the counter kept going.
        progress_after(log, "never replying", 2)?;
        Ok(())
    }),
    qemu_args: &[],
    host: None,
};

/// Shared memory with per-side rights.
const SHARED_CASE: Case = Case {
    name: "x86_64-shared-region-with-per-side-rights",
    arch: Arch::X86_64,
    uefi: false,
    system: Some("shared"),
    cmdline: "exit_after=producer",
    expect: Outcome::Success,
    patterns: &[
        r"shared region board: 8 KiB at 0x100000000000 in 2 partitions, WriteBack",
        r"shared region mailbox: 4 KiB at 0x100000003000 in 2 partitions, Uncached",
        r"consumer: board at 0x100000000000, 8192 bytes, writable false",
        r"consumer: read 20 whole records, last \d+; now writing to the read-only region",
        r#"health: partition "consumer" page fault \(write\) at 0x100000000000 \(pc 0x4[0-9a-f]{5}\): stopped \(policy\)$"#,
        r"producer: wrote 200 records",
    ],
    check: Some(|log| {
        absent(log, "FAIL")?;
        // The two partitions' first lines come in their own windows; which is first depends on
        // where the first major frame starts, so the producer's is checked anywhere.
        find(
            log,
            r"producer: board at 0x100000000000, 8192 bytes, writable true",
        )
    }),
    qemu_args: &[],
    host: None,
};

/// DMA regions: own physical address only.
const DMA_CASE: Case = Case {
    name: "x86_64-dma-regions-physical-address-to-owner-only",
    arch: Arch::X86_64,
    uefi: false,
    system: Some("dma"),
    cmdline: "exit",
    expect: Outcome::Success,
    patterns: &[
        r"DMA region dma-0: 16 KiB for partition a at 0x200000000000",
        r"DMA region dma-1: 8 KiB for partition b at 0x2000000",
        r"a: dma-0: 16384 bytes at 0x200000000000, physical 0x[0-9a-f]+, page aligned true, contents intact true",
        r"a: dma-1: refused \(NotGranted\)",
        r"every partition has ended; powering off",
    ],
    // b's lines come in its own windows, before, between or after a's depending on how much
    // of a's first window a's work took (host time: this case runs without -icount).
    check: Some(|log| {
        absent(log, "FAIL")?;
        let b = log
            .iter()
            .position(|l| l.contains("b: dma-1: "))
            .ok_or("no line from b about dma-1")?;
        find(
            &log[b..b + 1],
            r"b: dma-1: 8192 bytes at 0x2000000[0-9a-f]+, physical 0x[0-9a-f]+, page aligned true, contents intact true",
        )?;
        find(&log[b..], r"b: dma-0: refused \(NotGranted\)")
    }),
    qemu_args: &[],
    host: None,
};

/// The demo (x86_64 only), 2 s of deterministic guest time: every one of its 550 window
/// starts within the kernel's tolerance while its servers and clients work.
const DEMO_CASE: Case = Case {
    name: "x86_64-demo-windows-start-on-time",
    arch: Arch::X86_64,
    uefi: false,
    system: Some("demo"),
    cmdline: "run_ms=2000",
    expect: Outcome::Success,
    patterns: &[r"storage: round 1: .* verified", r"run time elapsed"],
    check: Some(|log| {
        absent(log, "FAIL")?;
        windows_on_time(log)
    }),
    qemu_args: ICOUNT_DETERMINISTIC,
    host: None,
};

/// Extra QEMU arguments of the device-grant case (its devices, a virtio-blk PCI function at
/// 00:04.0 and a second serial port for COM2, come from its description): instruction
/// counting, so the interrupt figure it prints is deterministic.
pub const DEVICE_QEMU: &[&str] = &["-icount", "shift=0"];

/// Device grants on aarch64: an MMIO page and a GIC line for the owner, nothing past them.
const AARCH64_DEVICE_CASE: Case = Case {
    name: "aarch64-device-grants-mmio-and-interrupts",
    arch: Arch::Aarch64,
    uefi: false,
    system: Some("devices-aarch64"),
    cmdline: "exit",
    expect: Outcome::Success,
    patterns: &[
        r"device gpio: granted to uart \(1 windows, interrupt bits 0x1\)",
        r"device phantom: no device in the device tree at its MMIO address; not granted",
        r"uart: gpio: registers at 0x300000000000, 4096 bytes, interrupt bits 0x1",
        r"uart: bench: device interrupt to handler \d+ ns",
        r"uart: 200 interrupts taken and acknowledged",
        r#"health: partition "uart" page fault \(read\) at 0x300000001000 .*stopped"#,
        r"every partition has ended; powering off",
    ],
    check: Some(|log| absent(log, "FAIL")),
    qemu_args: DEVICE_QEMU,
    host: None,
};

/// The block server under a rogue client and an injected crash mid-I/O.
const BLK_FAULTS_CASE: Case = Case {
    name: "x86_64-block-server-rogue-client-and-crash-mid-io",
    arch: Arch::X86_64,
    uefi: false,
    system: Some("blk-faults"),
    cmdline: "run_ms=5000",
    expect: Outcome::Success,
    patterns: &[
        r"device disk0: granted to blk",
        r"archive: archive-disk: rogue: reading past its disk was refused \(IOERR\)",
        r"archive: archive-disk: rogue: a wrapping sector range was refused \(IOERR\)",
        r"archive: archive-disk: rogue: a write across the end of its disk was refused \(IOERR\)",
        r"blk: archive-disk: stopped until it resets",
        r"archive: archive-disk: rogue: a descriptor outside its data area stopped its device",
        r"archive: archive-disk: rogue: after a reset its disk works again",
        r"blk: fault injection: crashing with \d+ requests in flight",
        r#"health: partition "blk" page fault \(read\) at 0x0 .*restart"#,
        r"health: partition blk restarted \(generation 1\)",
        r"storage: storage-disk: round \d+'s flushed blocks survived the restart intact",
        r"run time elapsed",
    ],
    check: Some(|log| {
        absent(log, "FAIL")?;
        // Storage kept completing verified rounds while the rogue attacked, and after the
        // server's restart.
        let attack = log
            .iter()
            .position(|l| l.contains("rogue: a descriptor outside its data area"))
            .ok_or("no attack")?;
        let restart = log
            .iter()
            .position(|l| l.contains("restarted (generation 1)"))
            .ok_or("no restart")?;
        let verified_between = log[..restart]
            .iter()
            .skip(attack)
            .filter(|l| l.contains("storage: round") && l.contains("verified"))
            .count();
        let verified_after = log[restart..]
            .iter()
            .filter(|l| l.contains("storage: round") && l.contains("verified"))
            .count();
        if verified_after < 3 {
            return Err(format!(
                "storage verified only {verified_after} rounds after the server restarted"
            ));
        }
        let _ = verified_between;
        Ok(())
    }),
    qemu_args: &[],
    host: None,
};

/// Device grants: a PCI function's registers, configuration space and windows for its owner;
/// I/O ports and an interrupt line for another; nothing past either grant.
const DEVICE_CASE: Case = Case {
    name: "x86_64-device-grants-pci-io-ports-and-interrupts",
    arch: Arch::X86_64,
    uefi: false,
    system: Some("devices"),
    cmdline: "exit",
    expect: Outcome::Success,
    patterns: &[
        r"device disk0: granted to probe \(3 windows, interrupt bits 0x3\)",
        r"device com2: granted to uart \(1 windows, interrupt bits 0x1\)",
        r"every partition has ended; powering off",
    ],
    check: Some(|log| {
        absent(log, "FAIL")?;
        for pattern in [
            r"probe: disk0: PCI 00:04\.0 1af4:1001, MSI-X vectors 2, interrupt bits 0x3",
            r"probe: disk0: window IoBar 0 at 0x0 port 0x[0-9a-f]+ size 0x80",
            r"probe: disk0: window MemoryBar 4 at 0x3000000[0-9a-f]+ port 0x0 size 0x4000",
            r"probe: ok: another partition's device is not granted",
            r"probe: ok: BAR0 reads its type bits only",
            r"probe: ok: writing a BAR is refused",
            r"probe: ok: writing MSI-X message control is refused",
            r"probe: ok: bus mastering can be enabled",
            r"probe: ok: the legacy I/O BAR answers",
            r"probe: ok: the modern memory BAR answers",
            r"probe: ok: the kernel will not read device registers",
            r"probe: ok: config access to another partition's device is refused",
            r#"health: partition "probe" page fault \(read\) at 0x3000000[0-9a-f]+ .*stopped"#,
            r"uart: com2: ports 0x2f8\+8, interrupt bits 0x1",
            r"uart: bench: device interrupt to handler \d+ ns",
            r"uart: 200 interrupts taken and acknowledged",
            r#"health: partition "uart" general protection .*stopped"#,
        ] {
            find(log, pattern)?;
        }
        let probe_oks = log.iter().filter(|l| l.contains("probe: ok: ")).count();
        if probe_oks != 17 {
            return Err(format!("expected 17 probe checks to pass, saw {probe_oks}"));
        }
        Ok(())
    }),
    qemu_args: DEVICE_QEMU,
    host: None,
};

/// The block server case on aarch64, over virtio-mmio version 1 (QEMU's default, legacy) and
/// version 2 (`force-legacy=false`).
fn aarch64_block_cases() -> Vec<Case> {
    let v1 = Case {
        name: "aarch64-block-server-virtio-mmio-v1-rogue-client-and-crash",
        arch: Arch::Aarch64,
        patterns: &[
            r"blk: disk0: virtio-blk virtio-mmio version 1 \(legacy\)",
            r"archive: archive-disk: rogue: a wrapping sector range was refused \(IOERR\)",
            r"blk: archive-disk: stopped until it resets",
            r"archive: archive-disk: rogue: after a reset its disk works again",
            r"blk: fault injection: crashing with \d+ requests in flight",
            r"health: partition blk restarted \(generation 1\)",
            r"storage: storage-disk: round \d+'s flushed blocks survived the restart intact",
            r"run time elapsed",
        ],
        ..BLK_FAULTS_CASE
    };
    let v2 = Case {
        name: "aarch64-block-server-virtio-mmio-v2-rogue-client-and-crash",
        patterns: &[
            r"blk: disk0: virtio-blk virtio-mmio version 2",
            r"archive: archive-disk: rogue: a wrapping sector range was refused \(IOERR\)",
            r"blk: archive-disk: stopped until it resets",
            r"archive: archive-disk: rogue: after a reset its disk works again",
            r"blk: fault injection: crashing with \d+ requests in flight",
            r"health: partition blk restarted \(generation 1\)",
            r"storage: storage-disk: round \d+'s flushed blocks survived the restart intact",
            r"run time elapsed",
        ],
        qemu_args: &["-global", "virtio-mmio.force-legacy=false"],
        ..v1
    };
    let pcie = Case {
        name: "aarch64-block-server-virtio-pci-on-pcie-rogue-client-and-crash",
        system: Some("blk-pcie"),
        patterns: &[
            r"pci: PCIe host bridge: ECAM 0x4010000000 \(256 buses\)",
            r"device disk0: granted to blk \(2 windows, interrupt bits 0x4\)",
            r"blk: disk0: virtio-blk PCI modern \(memory BARs\).*interrupts on",
            r"archive: archive-disk: rogue: a wrapping sector range was refused \(IOERR\)",
            r"blk: archive-disk: stopped until it resets",
            r"archive: archive-disk: rogue: after a reset its disk works again",
            r"blk: fault injection: crashing with \d+ requests in flight",
            r"health: partition blk restarted \(generation 1\)",
            r"storage: storage-disk: round \d+'s flushed blocks survived the restart intact",
            r"run time elapsed",
        ],
        qemu_args: &[],
        ..v1
    };
    vec![v1, v2, pcie]
}

/// Consoles: each client's output on its own host chardev and nowhere else, host input to
/// the right client, the rate-limited client held to its rate; the kernel log on COM1.
const CONSOLE_CASE: Case = Case {
    name: "x86_64-console-per-client-chardevs",
    arch: Arch::X86_64,
    uefi: false,
    system: Some("console"),
    cmdline: "exit run_ms=8000",
    expect: Outcome::Success,
    patterns: &[
        r"console0: virtio-console PCI modern \(memory BARs\), multiport yes, 3 ports, interrupts on",
        r"con-a: console on port 1, unlimited",
        r"con-b: console on port 2, output limited to 400 bytes/s",
    ],
    check: Some(|log| {
        absent(log, "FAIL")?;
        absent(log, "stopped until it resets")?;
        for pattern in [
            r"con-a: console attached; greeting written",
            r"con-b: console attached; greeting written",
            r"port 1: host side connected",
            r"port 2: host side connected",
            r#"con-a: the host typed 7 bytes: "ping-a\.""#,
            r#"con-b: the host typed 7 bytes: "ping-b\.""#,
            r"con-a: wrote line 10 to its console",
        ] {
            find(log, pattern)?;
        }
        Ok(())
    }),
    qemu_args: &[],
    host: Some(HostSide {
        consoles: &[("con-a", "ping-a\n"), ("con-b", "ping-b\n")],
        check: consoles_separate,
    }),
};

/// Entropy shared at per-client rates.
const ENTROPY_CASE: Case = Case {
    name: "x86_64-entropy-per-client-rates",
    arch: Arch::X86_64,
    uefi: false,
    system: Some("entropy"),
    cmdline: "exit run_ms=6000",
    expect: Outcome::Success,
    patterns: &[
        r"rng0: virtio-rng PCI modern \(memory BARs\), pool of 8 x 512 bytes, interrupts on",
        r"rng-a: entropy at 1024 bytes/s",
        r"rng-b: entropy at 8192 bytes/s",
    ],
    check: Some(|log| {
        absent(log, "FAIL")?;
        absent(log, "stopped until it resets")?;
        entropy_rates(log)
    }),
    qemu_args: &[],
    host: Some(HostSide {
        consoles: &[],
        check: |_, _, _| Ok(()),
    }),
};

/// What each console's host side received: its own greeting, lines and echo, nothing of the
/// other's; the rate-limited one (`con-b`, 400 bytes/s, burst 400) no more than its rate
/// allows over the time QEMU ran.
fn consoles_separate(_log: &[String], outputs: &[Vec<u8>], ran: Duration) -> Result<(), String> {
    let [a, b] = outputs else {
        return Err(format!("expected 2 consoles, got {}", outputs.len()));
    };
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    for (name, text, other) in [("con-a", &a, "con-b"), ("con-b", &b, "con-a")] {
        if !text.contains(&format!("hello from {name}: this is its own console")) {
            return Err(format!(
                "{name}'s chardev has no greeting: {:?}",
                tail(text)
            ));
        }
        if text.contains(other) {
            return Err(format!(
                "{name}'s chardev shows {other}'s output: {:?}",
                tail(text)
            ));
        }
    }
    for needle in ["con-a: line 10\r\n", "con-a echo: ping-a\n"] {
        if !a.contains(needle) {
            return Err(format!("con-a's chardev lacks {needle:?}: {:?}", tail(&a)));
        }
    }
    if !b.contains("con-b flood 00000001: the quick brown fox") {
        return Err(format!(
            "con-b's chardev has no flood lines: {:?}",
            tail(&b)
        ));
    }
    let limit = 400 + 400 * ran.as_millis() as usize / 1000;
    if b.len() > limit {
        return Err(format!(
            "con-b got {} bytes out in {:.1} s at 400 bytes/s (limit {limit})",
            b.len(),
            ran.as_secs_f64()
        ));
    }
    if b.len() < 1000 {
        return Err(format!("con-b got only {} bytes out", b.len()));
    }
    Ok(())
}

fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(200);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Each entropy client's last report: within its rate (bytes ≤ burst + rate × time, burst =
/// one second's worth), not far below it, the faster one clearly faster, and the bytes look
/// random (mean near 127.5, most byte values seen).
fn entropy_rates(log: &[String]) -> Result<(), String> {
    let re = Regex::new(
        r"(rng-[ab]): (\d+) bytes in (\d+) ms \((\d+) bytes/s, \d+ requests\), mean (\d+)\.\d+, (\d+)/256 byte values seen",
    )
    .unwrap();
    let mut last = std::collections::HashMap::new();
    for line in log {
        if let Some(c) = re.captures(line) {
            let n = |i: usize| c[i].parse::<u64>().unwrap_or(0);
            last.insert(c[1].to_string(), (n(2), n(3), n(4), n(5), n(6)));
        }
    }
    let mut rates = Vec::new();
    for (name, rate) in [("rng-a", 1024u64), ("rng-b", 8192)] {
        let Some(&(bytes, ms, measured, mean, distinct)) = last.get(name) else {
            return Err(format!("no report from {name}"));
        };
        if ms < 2000 {
            return Err(format!("{name} reported after only {ms} ms"));
        }
        let limit = rate + rate * ms / 1000;
        if bytes > limit {
            return Err(format!(
                "{name} got {bytes} bytes in {ms} ms: over its {rate} bytes/s (limit {limit})"
            ));
        }
        if measured < rate / 2 {
            return Err(format!("{name} got only {measured} bytes/s of its {rate}"));
        }
        if !(110..=145).contains(&mean) || distinct < 200 {
            return Err(format!(
                "{name}'s bytes do not look random: mean {mean}, {distinct} values"
            ));
        }
        rates.push(measured);
    }
    if rates[1] < 3 * rates[0] {
        return Err(format!(
            "rng-b ({} bytes/s) is not clearly faster than rng-a ({} bytes/s)",
            rates[1], rates[0]
        ));
    }
    Ok(())
}

/// Seconds since boot of a log line (`[    1.234567] ...`).
fn timestamp_us(line: &str) -> Option<u64> {
    let rest = line.strip_prefix('[')?;
    let (stamp, _) = rest.split_once(']')?;
    let (secs, micros) = stamp.trim().split_once('.')?;
    Some(secs.parse::<u64>().ok()? * 1_000_000 + micros.parse::<u64>().ok()?)
}

/// Every line hello-a logs falls in its window (the first 5 ms of each 10 ms frame) and every
/// line of hello-b in the second, allowing 300 us for the switch at a boundary (the timer is
/// programmed for each boundary).
fn hello_in_windows(log: &[String]) -> Result<(), String> {
    let t0 = log
        .iter()
        .find(|l| l.contains("partitions start now"))
        .and_then(|l| timestamp_us(l))
        .ok_or("no schedule start line")?;
    let mut seen = [0; 2];
    for line in log {
        let Some(t) = timestamp_us(line) else {
            continue;
        };
        // Records the partitions wrote themselves: `[time] INFO  hello-a: ...`.
        let (who, window_start) = if line.contains("] INFO  hello-a: ") {
            (0, 0)
        } else if line.contains("] INFO  hello-b: ") {
            (1, 5_000)
        } else {
            continue;
        };
        let phase = t.saturating_sub(t0) % 10_000;
        let into = (phase + 10_000 - window_start) % 10_000;
        if into > 5_000 + 300 {
            return Err(format!(
                "logged {into} us after its window began (5 ms window): {line}"
            ));
        }
        seen[who] += 1;
    }
    if seen.iter().any(|&n| n < 4) {
        return Err(format!(
            "expected at least 4 lines from each partition, saw {seen:?}"
        ));
    }
    Ok(())
}

/// The counter's progress lines, in order.
fn progress(log: &[String]) -> Vec<(usize, u64)> {
    let re = Regex::new(r"counter: progress (\d+)").unwrap();
    log.iter()
        .enumerate()
        .filter_map(|(i, l)| re.captures(l).map(|c| (i, c[1].parse().unwrap())))
        .collect()
}

/// At least `n` progress lines of the counter come after the first line containing `marker`,
/// and the counter only ever grows.
fn progress_after(log: &[String], marker: &str, n: usize) -> Result<(), String> {
    let at = log
        .iter()
        .position(|l| l.contains(marker))
        .ok_or(format!("no line contains {marker:?}"))?;
    let p = progress(log);
    if p.windows(2).any(|w| w[1].1 <= w[0].1) {
        return Err("the counter went backwards or stood still".into());
    }
    let after = p.iter().filter(|(i, _)| *i > at).count();
    if after < n {
        return Err(format!(
            "only {after} progress lines after {marker:?}, expected {n}"
        ));
    }
    Ok(())
}

/// Both crashers were restarted several times while the counter kept advancing, the
/// jumper's faults were reported as instruction fetches at the unmapped address, and the
/// counter never faulted.
fn faults_contained(log: &[String]) -> Result<(), String> {
    find(
        log,
        r#"health: partition "jumper" page fault \(execute\) at 0x600000000000 \(pc 0x600000000000\): restart 1 \(generation 1\)$"#,
    )?;
    find(log, r"health: partition jumper restarted \(generation 3\)")?;
    absent(log, "health: partition \"counter\"")?;
    progress_after(log, "writer restarted (generation 3)", 3)
}

/// A duration as the accounting table prints it (`827.960 us`, `4.202 ms`, `0 ns`), in us.
fn table_duration_us(value: &str, unit: &str) -> Option<f64> {
    let v: f64 = value.parse().ok()?;
    Some(match unit {
        "ns" => v / 1000.0,
        "us" => v,
        "ms" => v * 1000.0,
        "s" => v * 1_000_000.0,
        _ => return None,
    })
}

/// A partition row of the accounting table: (name, windows, used us, overrun us, max latency
/// us, late starts).
fn table_row(line: &str) -> Option<(String, u64, f64, f64, f64, u64)> {
    let t: Vec<&str> = line.split_whitespace().collect();
    if t.len() != 14 {
        return None;
    }
    Some((
        t[0].to_string(),
        t[1].parse().ok()?,
        table_duration_us(t[2], t[3])?,
        table_duration_us(t[8], t[9])?,
        table_duration_us(t[11], t[12])?,
        t[13].parse().ok()?,
    ))
}

/// The spinner, which never makes a system call, got no more than its half of the time and
/// ran outside its windows for at most 2 % of the run (the kernel's reaction at each boundary);
/// every window of both started within 500 us of its boundary (the stated bound).
fn spinner_contained(log: &[String]) -> Result<(), String> {
    let elapsed = number_in(log, r"run time elapsed after (\d+) us")? as f64;
    let mut found = 0;
    for (name, windows, used, overrun, latency, _late) in log.iter().filter_map(|l| table_row(l)) {
        if name != "spinner" && name != "counter" {
            continue;
        }
        found += 1;
        if used > elapsed * 0.55 {
            return Err(format!(
                "{name} used {used} us of {elapsed} us: more than its 50 % share"
            ));
        }
        if (windows as f64) < elapsed / 15_000.0 - 2.0 {
            return Err(format!(
                "{name} started only {windows} windows in {elapsed} us"
            ));
        }
        if latency > 500.0 || overrun > elapsed * 0.02 {
            return Err(format!(
                "{name}: max start latency {latency} us (bound 500 us), {overrun} us outside its windows (bound 2 % of {elapsed} us)"
            ));
        }
    }
    if found != 2 {
        return Err(format!(
            "expected accounting for 2 partitions, found {found}"
        ));
    }
    Ok(())
}

/// The accounting's summary of window starts: (starts, p99 ns, max ns, tolerance ns, late).
pub fn start_summary(log: &[String]) -> Result<(u64, u64, u64, u64, u64), String> {
    let re = Regex::new(
        r"window starts (\d+): latency p50 <= [\d.]+ \w+, p99 <= ([\d.]+) (\w+), max ([\d.]+) (\w+); tolerance ([\d.]+) (\w+), late (\d+)",
    )
    .map_err(|e| e.to_string())?;
    let c = log
        .iter()
        .find_map(|l| re.captures(l))
        .ok_or("no window start summary in the accounting table")?;
    let ns = |v: usize, u: usize| {
        table_duration_us(&c[v], &c[u])
            .map(|us| (us * 1000.0).round() as u64)
            .ok_or(format!("bad duration {} {}", &c[v], &c[u]))
    };
    let number = |i: usize| c[i].parse::<u64>().map_err(|e| e.to_string());
    Ok((number(1)?, ns(2, 3)?, ns(4, 5)?, ns(6, 7)?, number(8)?))
}

/// Every window started within the kernel's tolerance ([`WINDOW_TOLERANCE_NS`], which the
/// kernel's table must state too): no late start, the worst no later than the tolerance.
fn windows_on_time(log: &[String]) -> Result<(), String> {
    let (starts, _p99, max, tolerance, late) = start_summary(log)?;
    if tolerance != WINDOW_TOLERANCE_NS {
        return Err(format!(
            "the kernel judged lateness by {tolerance} ns, not WINDOW_TOLERANCE_NS ({WINDOW_TOLERANCE_NS} ns)"
        ));
    }
    if starts == 0 {
        return Err("no window started".into());
    }
    if late > 0 || max > WINDOW_TOLERANCE_NS {
        return Err(format!(
            "{late} of {starts} window starts later than the tolerance ({WINDOW_TOLERANCE_NS} ns); the worst {max} ns"
        ));
    }
    Ok(())
}

/// Each of `names`, always ready in its windows, had all of its windows' time: at most the
/// tolerance less per window instance (the kernel's reaction at the boundary). A neighbour that
/// took some of it (a flooding client, a server working for it) makes this fail.
fn full_window_time(log: &[String], names: &[&str]) -> Result<(), String> {
    let mut owed: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for l in log {
        let t: Vec<&str> = l.split_whitespace().collect();
        if t.len() != 14 || t[0].parse::<u64>().is_err() {
            continue;
        }
        let (Some(length), Ok(starts)) = (table_duration_us(t[4], t[5]), t[6].parse::<u64>())
        else {
            continue;
        };
        let e = owed.entry(t[1].to_string()).or_default();
        e.0 += length * starts as f64;
        e.1 += starts;
    }
    for name in names {
        let &(due, starts) = owed
            .get(*name)
            .ok_or(format!("no window of {name} in the table"))?;
        let in_windows = log
            .iter()
            .find_map(|l| {
                let t: Vec<&str> = l.split_whitespace().collect();
                (t.len() == 14 && t[0] == *name)
                    .then(|| table_duration_us(t[4], t[5]))
                    .flatten()
            })
            .ok_or(format!("no accounting row for {name}"))?;
        let allowance = starts as f64 * WINDOW_TOLERANCE_NS as f64 / 1000.0;
        if in_windows < due - allowance || in_windows > due + 0.001 {
            return Err(format!(
                "{name} ran {in_windows} us in its windows, not their {due} us (less at most {allowance} us)"
            ));
        }
    }
    Ok(())
}

/// The spin system: the spinner kept to its share, every window started on time, and neither
/// the spinner nor the flooding client (nor its server) took time from another's windows.
fn flood_contained(log: &[String]) -> Result<(), String> {
    absent(log, "FAIL")?;
    spinner_contained(log)?;
    windows_on_time(log)?;
    full_window_time(log, &["spinner", "counter"])
}

/// The number the first capture group of `pattern` matches on the first line it matches.
fn number_in(log: &[String], pattern: &str) -> Result<u64, String> {
    let re = Regex::new(pattern).map_err(|e| e.to_string())?;
    let captures = log
        .iter()
        .find_map(|l| re.captures(l))
        .ok_or(format!("no line matches /{pattern}/"))?;
    captures[1].parse().map_err(|e| format!("/{pattern}/: {e}"))
}

fn find(log: &[String], pattern: &str) -> Result<(), String> {
    let re = Regex::new(pattern).map_err(|e| e.to_string())?;
    log.iter()
        .any(|l| re.is_match(l))
        .then_some(())
        .ok_or(format!("no line matches /{pattern}/"))
}

fn absent(log: &[String], text: &str) -> Result<(), String> {
    match log.iter().find(|l| l.contains(text)) {
        Some(line) => Err(format!("unexpected line: {line}")),
        None => Ok(()),
    }
}

/// The five tick reports must show a tick count that grows by about 100 each time, and the
/// time between reports, measured with the free-running counter, must fit 100 ticks of 1 ms.
fn ticks_advance(log: &[String]) -> Result<(), String> {
    let re = Regex::new(r"tick (\d+) at uptime [\d.]+ ms \((\d+) us since the previous report\)")
        .unwrap();
    let reports: Vec<(u64, u64)> = log
        .iter()
        .filter_map(|l| re.captures(l))
        .map(|c| (c[1].parse().unwrap(), c[2].parse().unwrap()))
        .collect();
    if reports.len() != 5 {
        return Err(format!("expected 5 tick reports, found {}", reports.len()));
    }
    for pair in reports.windows(2) {
        let ((t0, _), (t1, us)) = (pair[0], pair[1]);
        // Reports fall due at each multiple of 100 ticks; a report that comes a tick late (a
        // busy host) makes the next difference 99.
        if !(90..=110).contains(&(t1 - t0)) {
            return Err(format!("ticks went from {t0} to {t1}, expected about +100"));
        }
        // 100 ticks are 100 ms; TCG on a busy host stretches, but not by 20x or to nothing.
        if !(50_000..=2_000_000).contains(&us) {
            return Err(format!(
                "100 ticks took {us} us of counter time, expected about 100000"
            ));
        }
    }
    Ok(())
}

/// Checks a captured boot against its case; returns what went wrong.
fn verify(case: &Case, captured: &qemu::Captured) -> Result<(), String> {
    if captured.outcome != case.expect {
        return Err(format!(
            "ended with {:?}, expected {:?}",
            captured.outcome, case.expect
        ));
    }
    let mut from = 0;
    for pattern in case.patterns {
        let re = Regex::new(pattern).map_err(|e| format!("bad pattern {pattern}: {e}"))?;
        match captured.lines[from..].iter().position(|l| re.is_match(l)) {
            Some(i) => from += i + 1,
            None => return Err(format!("no line (after line {from}) matches /{pattern}/")),
        }
    }
    case.check.map_or(Ok(()), |check| check(&captured.lines))
}

/// Every integration case: kernel self-tests, partition cases on x86_64, then on aarch64.
fn all_cases() -> Vec<Case> {
    CASES
        .iter()
        .chain(PARTITION_CASES)
        .copied()
        .chain(aarch64_partition_cases())
        .chain([
            DEVICE_CASE,
            AARCH64_DEVICE_CASE,
            BLK_FAULTS_CASE,
            CONSOLE_CASE,
            ENTROPY_CASE,
            DEMO_CASE,
        ])
        .chain(aarch64_block_cases())
        .chain(aarch64_console_entropy_cases())
        .collect()
}

/// A case whose host side acts while QEMU runs (through the system's host forwards); the
/// action's result is part of the verdict.
struct HostCase {
    case: Case,
    action: fn(&[crate::devices::Forward]) -> crate::nettest::HostResult,
}

/// The network server end to end: the host reaches two smoltcp partitions behind the switch
/// through QEMU's user networking (UDP echo from both, a TCP session with echo, stats and a
/// checked 200 kB bulk transfer), and the partitions log what they answered.
const NET_CASE: HostCase = HostCase {
    case: Case {
        name: "x86_64-net-udp-echo-and-tcp-from-the-host",
        arch: Arch::X86_64,
        uefi: false,
        system: Some("net"),
        cmdline: "exit_after=web",
        expect: Outcome::Success,
        patterns: &[
            r"net: net0: virtio-net PCI (modern|legacy) .*, MAC 52:54:00:12:34:56, link up, \d+ packet buffers each way",
            r"net: web-nic: virtual NIC with MAC 52:54:00:12:34:61",
            r"net: web2-nic: virtual NIC with MAC 52:54:00:12:34:62",
            r"web: web-nic: MAC 52-54-00-12-34-61, link up, 10\.0\.2\.15/24 via 10\.0\.2\.2",
            r"web: udp: echoed 31 bytes to 10\.0\.2\.2:\d+ \(datagram 1\)",
            r"web: tcp: connection 1 from 10\.0\.2\.2:\d+",
            r#"web: tcp: echoed line "hello bulkhead""#,
            r"web: tcp: stats asked",
            r"web: tcp: bulk transfer of 200000 bytes queued",
            r"web: tcp: halt asked",
            r"web: web-nic: halting as asked \(\d+ UDP datagrams, 1 TCP connections\)",
            r"partition web has ended; powering off",
        ],
        check: Some(|log| {
            absent(log, "health: ")?;
            absent(log, "FAIL")?;
            find(
                log,
                r"web2: web2-nic: MAC 52-54-00-12-34-62, link up, 10\.0\.2\.16/24",
            )?;
            find(
                log,
                r"web2: udp: echoed 32 bytes to 10\.0\.2\.2:\d+ \(datagram 1\)",
            )?;
            find(
                log,
                r"^\[host\] udp 10\.0\.2\.16:7 via host port \d+: echoed",
            )?;
            find(log, r"^\[host\] tcp bulk: 200000 bytes checked")
        }),
        qemu_args: &[],
        host: None,
    },
    action: crate::nettest::check_services,
};

/// The network case on aarch64: the NIC a PCI function behind the PCIe host bridge.
const AARCH64_NET_CASE: HostCase = HostCase {
    case: Case {
        name: "aarch64-net-udp-echo-and-tcp-from-the-host",
        arch: Arch::Aarch64,
        ..NET_CASE.case
    },
    action: crate::nettest::check_services,
};

/// The console and entropy cases on aarch64, their devices PCI functions behind the PCIe host
/// bridge (interrupts by INTx through its interrupt map).
fn aarch64_console_entropy_cases() -> Vec<Case> {
    vec![
        Case {
            name: "aarch64-console-per-client-chardevs",
            arch: Arch::Aarch64,
            ..CONSOLE_CASE
        },
        Case {
            name: "aarch64-entropy-per-client-rates",
            arch: Arch::Aarch64,
            ..ENTROPY_CASE
        },
    ]
}

/// Boots every integration case (or those whose name contains `filter`) and reports.
pub fn qemu(filter: Option<&str>) -> Result<()> {
    let all = all_cases();
    let selected = |name: &str| filter.is_none_or(|f| name.contains(f));
    let cases: Vec<&Case> = all.iter().filter(|c| selected(c.name)).collect();
    let host_cases: Vec<&HostCase> = [&NET_CASE, &AARCH64_NET_CASE]
        .into_iter()
        .filter(|c| selected(c.case.name))
        .collect();
    let mut failed = Vec::new();
    if (!cases.is_empty() || host_cases.is_empty())
        && let Err(e) = run_cases(&cases, Duration::from_secs(90))
    {
        failed.push(e.to_string());
    }
    for case in host_cases {
        if !run_host_case(case, Duration::from_secs(180))? {
            failed.push(format!("failed: {}", case.case.name));
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// Boots a host case, runs its action against the forwards while QEMU runs, and checks both.
fn run_host_case(host: &HostCase, timeout: Duration) -> Result<bool> {
    let case = &host.case;
    let system = case.system.unwrap_or("none");
    let (mut captured, result) =
        crate::nettest::boot_and_act(case.arch, system, case.cmdline, timeout, host.action)?;
    let verdict = match result {
        Ok(lines) => {
            captured
                .lines
                .extend(lines.into_iter().map(|l| format!("[host] {l}")));
            verify(case, &captured)
        }
        Err(why) => Err(format!("host side: {why}")),
    };
    match verdict {
        Ok(()) => {
            println!(
                "test {} ... ok ({:.1} s)",
                case.name,
                captured.elapsed.as_secs_f64()
            );
            for line in captured.lines.iter().filter(|l| l.starts_with("[host]")) {
                println!("  {line}");
            }
            println!("qemu: 1 passed, 0 failed");
            Ok(true)
        }
        Err(why) => {
            println!("test {} ... FAILED: {why}", case.name);
            println!("---- last lines of the serial log of {} ----", case.name);
            let tail = captured.lines.len().saturating_sub(40);
            for line in &captured.lines[tail..] {
                println!("  | {line}");
            }
            println!("qemu: 0 passed, 1 failed");
            Ok(false)
        }
    }
}

/// The soak run (`cargo xtask soak`): the hostile system with twenty million random syscalls
/// instead of one million, on both architectures, checked as the test suite checks the short
/// run.
pub fn soak() -> Result<()> {
    let x86 = Case {
        name: "x86_64-soak-20-million-random-syscalls",
        system: Some("soak"),
        patterns: &[
            r"hostile: all \d+ malformed calls returned their errors$",
            r"fuzz: 250000 calls, \d+ returned errors",
            r"fuzz: done: 20000000 calls, \d+ errors, the kernel is still here",
            r"partition fuzz has ended; powering off",
        ],
        ..HOSTILE_CASE
    };
    let aarch64 = Case {
        name: "aarch64-soak-20-million-random-syscalls",
        arch: Arch::Aarch64,
        ..x86
    };
    run_cases(&[&x86, &aarch64], Duration::from_secs(3600))
}

/// Boots each case with its own image and checks its log; fails if any case failed.
fn run_cases(cases: &[&Case], timeout: Duration) -> Result<()> {
    let mut failed = Vec::new();
    println!("xtask: {} QEMU integration tests", cases.len());
    let mut kernels = std::collections::HashMap::new();
    for case in cases {
        if let std::collections::hash_map::Entry::Vacant(slot) = kernels.entry(case.arch.name()) {
            slot.insert(build::kernel(&BuildOpts {
                arch: case.arch,
                debug: false,
            })?);
        }
    }
    for case in cases {
        let kernel = &kernels[&case.arch.name()];
        let cmdline = qemu_cmdline(case);
        let payload = image::payload(case.arch, &cmdline, case.system)?;
        let tag = case.system.unwrap_or("none");
        let bootable = image::from_kernel(kernel, case.arch, case.uefi, &cmdline, &payload, tag)?;
        let mut cmd = qemu::command(case.arch, &bootable, false);
        // The devices the description grants, each test on blank disks.
        if let Some(name) = case.system {
            let description = crate::system::load(&crate::system::description_path(name))?;
            cmd.args(crate::devices::qemu_args(
                &description,
                case.arch,
                crate::devices::Disk::Fresh,
            )?);
        }
        cmd.args(case.qemu_args);
        let mut host = None;
        if let (Some(side), Some(system)) = (case.host, case.system) {
            host = Some((side, HostConsoles::start(system, side.consoles)?));
        }
        let captured = qemu::capture(cmd, case.arch, timeout, false)?;
        let verdict = verify(case, &captured).and_then(|()| match host {
            Some((side, consoles)) => {
                let outputs = consoles.finish();
                (side.check)(&captured.lines, &outputs, captured.elapsed)
            }
            None => Ok(()),
        });
        match verdict {
            Ok(()) => println!(
                "test {} ... ok ({:.1} s)",
                case.name,
                captured.elapsed.as_secs_f64()
            ),
            Err(why) => {
                println!("test {} ... FAILED: {why}", case.name);
                println!("---- last lines of the serial log of {} ----", case.name);
                let tail = captured.lines.len().saturating_sub(40);
                for line in &captured.lines[tail..] {
                    println!("  | {line}");
                }
                failed.push(case.name);
            }
        }
    }
    println!(
        "qemu: {} passed, {} failed",
        cases.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The host ends of a case's console chardevs: one thread per socket connects as soon as QEMU
/// listens, sends its input, and collects what arrives until told to stop.
struct HostConsoles {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    readers: Vec<std::thread::JoinHandle<Vec<u8>>>,
}

impl HostConsoles {
    fn start(system: &str, consoles: &[(&'static str, &'static str)]) -> Result<Self> {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut readers = Vec::new();
        for &(channel, input) in consoles {
            let path = crate::devices::console_socket(system, channel)?;
            let stop = stop.clone();
            readers.push(std::thread::spawn(move || {
                let mut received = Vec::new();
                let mut stream = loop {
                    if stop.load(Ordering::Relaxed) {
                        return received;
                    }
                    match std::os::unix::net::UnixStream::connect(&path) {
                        Ok(s) => break s,
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                };
                let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
                let _ = stream.write_all(input.as_bytes());
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => received.extend_from_slice(&buf[..n]),
                        Err(_) => {}
                    }
                }
                received
            }));
        }
        Ok(Self { stop, readers })
    }

    /// Stops the readers (QEMU has ended) and returns what each received.
    fn finish(self) -> Vec<Vec<u8>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.readers
            .into_iter()
            .map(|r| r.join().unwrap_or_default())
            .collect()
    }
}

fn qemu_cmdline(case: &Case) -> String {
    qemu::effective_cmdline(case.arch, case.cmdline)
}

#[cfg(test)]
mod unit {
    use super::*;

    fn log(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_pattern_compiles_and_names_are_unique() {
        let mut all = all_cases();
        all.push(NET_CASE.case);
        all.push(AARCH64_NET_CASE.case);
        let mut names: Vec<_> = all.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for case in all {
            for p in case.patterns {
                Regex::new(p).unwrap_or_else(|e| panic!("{}: {p}: {e}", case.name));
            }
        }
    }

    #[test]
    fn console_check_rejects_crossed_missing_or_unlimited_output() {
        let a = "hello from con-a: this is its own console; type a line\r\ncon-a: line 1\r\n\
                 con-a echo: ping-a\ncon-a: line 10\r\n";
        let mut b = String::from("hello from con-b: this is its own console; type a line\r\n");
        while b.len() < 1500 {
            b.push_str("con-b flood 00000001: the quick brown fox jumps over the lazy dog\r\n");
        }
        let ran = Duration::from_secs(10);
        let ok = vec![a.as_bytes().to_vec(), b.as_bytes().to_vec()];
        consoles_separate(&[], &ok, ran).unwrap();
        // Swapped chardevs, one client's output on the other's, no echo, too fast, too little.
        let swapped = vec![ok[1].clone(), ok[0].clone()];
        assert!(consoles_separate(&[], &swapped, ran).is_err());
        let crossed = vec![[a.as_bytes(), b"con-b"].concat(), ok[1].clone()];
        assert!(consoles_separate(&[], &crossed, ran).is_err());
        let no_echo = vec![a.replace("echo", "ohce").into_bytes(), ok[1].clone()];
        assert!(consoles_separate(&[], &no_echo, ran).is_err());
        assert!(consoles_separate(&[], &ok, Duration::from_secs(2)).is_err());
        let little = vec![ok[0].clone(), ok[1][..900].to_vec()];
        assert!(consoles_separate(&[], &little, ran).is_err());
        assert!(consoles_separate(&[], &ok[..1], ran).is_err());
    }

    #[test]
    fn entropy_check_rejects_rates_over_the_limit_or_starved() {
        let report = |name: &str, bytes: u64, ms: u64, mean: u64| {
            format!(
                "[    5.000000] INFO  {name}: {name}: {bytes} bytes in {ms} ms ({} bytes/s, 9 requests), mean {mean}.31, 256/256 byte values seen",
                bytes * 1000 / ms
            )
        };
        let good = vec![
            report("rng-a", 4000, 4000, 127),
            report("rng-b", 30000, 4000, 128),
        ];
        entropy_rates(&good).unwrap();
        for bad in [
            // rng-a over 1024 bytes/s + burst.
            vec![report("rng-a", 6000, 4000, 127), good[1].clone()],
            // rng-a starved.
            vec![report("rng-a", 1000, 4000, 127), good[1].clone()],
            // rng-b no faster than rng-a.
            vec![good[0].clone(), report("rng-b", 5000, 4000, 127)],
            // Not random.
            vec![report("rng-a", 4000, 4000, 0), good[1].clone()],
            // Missing report.
            vec![good[0].clone()],
        ] {
            assert!(entropy_rates(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn patterns_must_appear_in_order() {
        let case = &CASES[3]; // page fault
        let good = log(&[
            "[0.1] INFO  boot: selftest: reading unmapped address 0x1234deadb000",
            "page fault: read at address CR2=0x00001234deadb000 (page not present)",
            "EXCEPTION: page fault (#PF) (vector 14) in kernel mode",
            "  error code 0x0",
            "  RIP=0xffffffff80012345 CS=0x8 RFLAGS=0x2",
            "kernel fault: stopping the system",
        ]);
        let ok = qemu::Captured {
            lines: good.clone(),
            outcome: Outcome::Failure,
            elapsed: Duration::ZERO,
        };
        assert_eq!(verify(case, &ok), Ok(()));
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        let bad = qemu::Captured {
            lines: swapped,
            outcome: Outcome::Failure,
            elapsed: Duration::ZERO,
        };
        assert!(verify(case, &bad).is_err());
        let wrong_exit = qemu::Captured {
            lines: good,
            outcome: Outcome::Success,
            elapsed: Duration::ZERO,
        };
        assert!(verify(case, &wrong_exit).is_err());
    }

    #[test]
    fn window_check_rejects_lines_outside_the_window() {
        let at = |us: u64, who: &str| {
            format!(
                "[{:5}.{:06}] INFO  {who}: x",
                us / 1_000_000,
                us % 1_000_000
            )
        };
        let mut good = vec![at(1_000_000, "exec") + " partitions start now"];
        for frame in 0..4 {
            good.push(at(1_000_000 + frame * 10_000 + 1_000, "hello-a"));
            good.push(at(1_000_000 + frame * 10_000 + 6_000, "hello-b"));
        }
        assert_eq!(hello_in_windows(&good), Ok(()));
        let mut bad = good.clone();
        bad.push(at(1_000_000 + 7_500, "hello-a"));
        assert!(
            hello_in_windows(&bad).is_err(),
            "hello-a in hello-b's window"
        );
        assert!(hello_in_windows(&good[..3]).is_err(), "too few lines");
    }

    #[test]
    fn progress_check_needs_growth_after_the_marker() {
        let lines = log(&[
            "counter: progress 1",
            "writer restarted (generation 3)",
            "counter: progress 2",
            "counter: progress 3",
            "counter: progress 4",
        ]);
        assert_eq!(
            progress_after(&lines, "restarted (generation 3)", 3),
            Ok(())
        );
        assert!(progress_after(&lines, "restarted (generation 3)", 4).is_err());
        let stuck = log(&[
            "marker",
            "counter: progress 5",
            "counter: progress 5",
            "counter: progress 6",
        ]);
        assert!(progress_after(&stuck, "marker", 1).is_err());
    }

    #[test]
    fn spinner_check_enforces_share_and_latency() {
        let line = |name: &str, used: u64, latency: u64| {
            format!("{name:<16} 30 {used}.000 us {used}.000 us 0 ns 0 ns 0 {latency}.000 us 0")
        };
        let ok = vec![
            line("spinner", 150_000, 300),
            line("counter", 149_000, 400),
            "run time elapsed after 300000 us; powering off".to_string(),
        ];
        assert_eq!(spinner_contained(&ok), Ok(()));
        let greedy = vec![line("spinner", 250_000, 300), ok[1].clone(), ok[2].clone()];
        assert!(spinner_contained(&greedy).is_err());
        let overrun = vec![
            ok[0].replace(" 0 ns 0 300", " 9000.000 us 3 300"),
            ok[1].clone(),
            ok[2].clone(),
        ];
        assert!(spinner_contained(&overrun).is_err(), "{overrun:?}");
        assert_eq!(
            table_row(
                "counter                20      96.686 ms      84.082 ms           0 ns      12.604 ms        0     827.960 us      0"
            ),
            Some(("counter".into(), 20, 96_686.0, 12_604.0, 827.96, 0))
        );
        let late = vec![
            ok[0].clone(),
            line("counter", 149_000, 4_000),
            ok[2].clone(),
        ];
        assert!(spinner_contained(&late).is_err());
    }

    /// A spin system's table: spinner and counter with 20 windows of 5 ms each, the spinner
    /// and counter each losing `lost_us` of them; the summary line with `max` and `late`.
    fn spin_table(lost_us: u64, max: &str, late: u64) -> Vec<String> {
        let in_windows = 100_000 - lost_us;
        let row = |name: &str, in_windows: u64| {
            format!("{name:<16} 20 {in_windows}.000 us {in_windows}.000 us 0 ns 0 ns 0 150 ns 0")
        };
        let window = |i: u64, name: &str| {
            format!(
                "{i:<6} {name:<16} {}.000 ms 5.000 ms 20 4.999 ms 4.999 ms 150 ns 0",
                i * 5
            )
        };
        vec![
            row("spinner", in_windows),
            row("counter", in_windows),
            row("flooder", 99_000),
            window(0, "spinner"),
            window(1, "counter"),
            window(2, "flooder"),
            format!(
                "window starts 60: latency p50 <= 143 ns, p99 <= 159 ns, max {max}; tolerance 50.000 us, late {late}"
            ),
            "run time elapsed after 300000 us; powering off".to_string(),
        ]
    }

    #[test]
    fn window_start_check_rejects_a_late_window() {
        assert_eq!(
            start_summary(&spin_table(3, "149 ns", 0)),
            Ok((60, 159, 149, 50_000, 0))
        );
        assert_eq!(windows_on_time(&spin_table(3, "149 ns", 0)), Ok(()));
        assert_eq!(flood_contained(&spin_table(3, "149 ns", 0)), Ok(()));
        // One start past the tolerance, whether the kernel counted it late or not.
        assert!(windows_on_time(&spin_table(3, "50.001 us", 1)).is_err());
        assert!(windows_on_time(&spin_table(3, "1.200 ms", 0)).is_err());
        // A kernel judging by another tolerance than the one the tests know.
        let other = spin_table(3, "149 ns", 0)
            .into_iter()
            .map(|l| l.replace("tolerance 50.000 us", "tolerance 200.000 us"))
            .collect::<Vec<_>>();
        assert!(windows_on_time(&other).is_err());
        assert!(windows_on_time(&spin_table(3, "149 ns", 0)[..6]).is_err());
    }

    #[test]
    fn flood_check_rejects_time_taken_from_a_neighbours_windows() {
        // 20 windows may lose up to 20 x 50 us = 1 ms between them.
        assert_eq!(flood_contained(&spin_table(999, "149 ns", 0)), Ok(()));
        let robbed = flood_contained(&spin_table(1_200, "149 ns", 0));
        assert!(
            robbed
                .as_ref()
                .is_err_and(|e| e.contains("spinner ran 98800 us")),
            "{robbed:?}"
        );
        assert!(full_window_time(&spin_table(3, "149 ns", 0), &["nobody"]).is_err());
    }

    #[test]
    fn tick_check_rejects_stuck_or_implausible_ticks() {
        let line = |t: u64, us: u64| {
            format!(
                "[1.0] INFO  boot: tick {t} at uptime 1.000 ms ({us} us since the previous report)"
            )
        };
        let good: Vec<String> = (1..=5).map(|i| line(i * 100, 100_000)).collect();
        assert_eq!(ticks_advance(&good), Ok(()));
        let stuck: Vec<String> = (1..=5).map(|_| line(100, 100_000)).collect();
        assert!(ticks_advance(&stuck).is_err());
        let too_fast: Vec<String> = (1..=5).map(|i| line(i * 100, 10)).collect();
        assert!(ticks_advance(&too_fast).is_err());
        assert!(ticks_advance(&good[..4]).is_err());
    }
}
