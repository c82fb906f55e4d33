//! `cargo xtask test`: host unit tests, then integration tests that boot real kernels in QEMU
//! and check what they print and how they exit.

use std::time::Duration;

use anyhow::{Result, bail};
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
    Ok(())
}

/// A check of a whole serial log; says what is wrong.
type LogCheck = fn(&[String]) -> Result<(), String>;

/// One boot of a test kernel and what it must show.
struct Case {
    name: &'static str,
    arch: Arch,
    uefi: bool,
    /// Kernel command line; `exit` makes a successful boot power off.
    cmdline: &'static str,
    expect: Outcome,
    /// Regular expressions that must match lines of the serial log, in this order.
    patterns: &'static [&'static str],
    /// A further check of the whole log.
    check: Option<LogCheck>,
}

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
        cmdline: "exit",
        expect: Outcome::Success,
        patterns: BANNER_X86,
        check: Some(|log| find(log, r"booted by BIOS; command line: .exit.")),
    },
    Case {
        name: "x86_64-uefi-banner",
        arch: Arch::X86_64,
        uefi: true,
        cmdline: "exit",
        expect: Outcome::Success,
        patterns: BANNER_X86,
        check: Some(|log| find(log, r"booted by UEFI; command line: .exit.")),
    },
    Case {
        name: "x86_64-ticks-advance",
        arch: Arch::X86_64,
        uefi: false,
        cmdline: "test=ticks exit",
        expect: Outcome::Success,
        patterns: &[r"boot demo complete"],
        check: Some(ticks_advance),
    },
    Case {
        name: "x86_64-page-fault-reported",
        arch: Arch::X86_64,
        uefi: false,
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
    },
    Case {
        name: "x86_64-invalid-opcode-reported",
        arch: Arch::X86_64,
        uefi: false,
        cmdline: "test=invalid_opcode exit",
        expect: Outcome::Failure,
        patterns: &[
            r"selftest: executing an undefined instruction",
            r"^EXCEPTION: invalid opcode \(#UD\) \(vector 6\) in kernel mode$",
            r"^  RIP=0xffffffff8[0-9a-f]{7} ",
            r"^kernel fault: stopping the system$",
        ],
        check: Some(|log| absent(log, "boot demo complete")),
    },
    Case {
        name: "x86_64-stack-overflow-double-fault",
        arch: Arch::X86_64,
        uefi: false,
        cmdline: "test=stack_overflow exit",
        expect: Outcome::Failure,
        patterns: &[
            r"selftest: overflowing the kernel stack",
            r"^EXCEPTION: double fault \(#DF\) \(vector 8\) in kernel mode$",
            r"^kernel fault: stopping the system$",
        ],
        check: Some(|log| absent(log, "boot demo complete")),
    },
    Case {
        name: "x86_64-panic-reported",
        arch: Arch::X86_64,
        uefi: false,
        cmdline: "test=panic exit",
        expect: Outcome::Failure,
        patterns: &[
            r"^KERNEL PANIC: panicked at kernel/src/boot\.rs:\d+:\d+:$",
            r"selftest: deliberate kernel panic",
        ],
        check: None,
    },
    Case {
        name: "aarch64-banner",
        arch: Arch::Aarch64,
        uefi: false,
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
        check: None,
    },
    Case {
        name: "aarch64-ticks-advance",
        arch: Arch::Aarch64,
        uefi: false,
        cmdline: "test=ticks exit",
        expect: Outcome::Success,
        patterns: &[r"boot demo complete"],
        check: Some(ticks_advance),
    },
    Case {
        name: "aarch64-page-fault-reported",
        arch: Arch::Aarch64,
        uefi: false,
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
    },
    Case {
        name: "aarch64-invalid-opcode-reported",
        arch: Arch::Aarch64,
        uefi: false,
        cmdline: "test=invalid_opcode exit",
        expect: Outcome::Failure,
        patterns: &[
            r"selftest: executing an undefined instruction",
            r"^EXCEPTION: undefined instruction in kernel mode$",
            r"^  ESR=0x02[0-9a-f]{6} FAR=",
            r"^kernel fault: stopping the system$",
        ],
        check: Some(|log| absent(log, "boot demo complete")),
    },
];

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
        if !(100..=110).contains(&(t1 - t0)) {
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

/// Boots every integration case (or those whose name contains `filter`) and reports.
pub fn qemu(filter: Option<&str>) -> Result<()> {
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
        .collect();
    let mut failed = Vec::new();
    println!("xtask: {} QEMU integration tests", cases.len());
    let mut kernels = std::collections::HashMap::new();
    for case in &cases {
        if let std::collections::hash_map::Entry::Vacant(slot) = kernels.entry(case.arch.name()) {
            slot.insert(build::kernel(&BuildOpts {
                arch: case.arch,
                debug: false,
            })?);
        }
    }
    for case in &cases {
        let kernel = &kernels[&case.arch.name()];
        let bootable = image::from_kernel(kernel, case.arch, case.uefi, &qemu_cmdline(case))?;
        let cmd = qemu::command(case.arch, &bootable, false);
        let captured = qemu::capture(cmd, case.arch, Duration::from_secs(90), false)?;
        match verify(case, &captured) {
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
        let mut names: Vec<_> = CASES.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CASES.len());
        for case in CASES {
            for p in case.patterns {
                Regex::new(p).unwrap_or_else(|e| panic!("{}: {p}: {e}", case.name));
            }
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
