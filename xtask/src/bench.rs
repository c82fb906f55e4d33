//! `cargo xtask bench`: performance figures. Each figure is printed next to a reference
//! measured in the same run: kernel paths as multiples of the null system call, VirtIO rings
//! as split against packed and EVENT_IDX off against on. Kernel paths are counted in guest
//! instructions under `-icount shift=0` (1 instruction = 1 ns of guest time), so they do not
//! move with the host's load.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::qemu::{self, Outcome};
use crate::{Arch, BuildOpts, build, image};

/// The 0-byte call+reply round trip target, in instructions (issue: "at most 1,000"; seL4's
/// published x86-64 round trip is about 1,300 cycles).
const ROUND_TRIP_TARGET: u64 = 1_000;

pub fn run() -> Result<()> {
    for arch in [Arch::X86_64, Arch::Aarch64] {
        kernel_paths(arch)?;
        println!();
    }
    println!();
    println!(
        "xtask: VirtIO rings through the simulated block device (split vs packed, EVENT_IDX off vs on)"
    );
    let status = build::cargo()
        .current_dir(build::root())
        .args([
            "bench",
            "--quiet",
            "-p",
            "bulkhead-virtio",
            "--bench",
            "rings",
        ])
        .status()?;
    if !status.success() {
        bail!("the VirtIO ring benchmark failed");
    }
    Ok(())
}

/// Boots the `bench` system under -icount and reads the figures its client prints.
fn kernel_paths(arch: Arch) -> Result<()> {
    let opts = BuildOpts { arch, debug: false };
    let cmdline = qemu::effective_cmdline(arch, "exit_after=client");
    let bootable = image::bootable(&opts, false, &cmdline, Some("bench"))?;
    let mut cmd = qemu::command(arch, &bootable, false);
    cmd.args(["-icount", "shift=0"]);
    let captured = qemu::capture(cmd, arch, Duration::from_secs(300), false)?;
    if captured.outcome != Outcome::Success {
        for line in captured.lines.iter().rev().take(20).rev() {
            eprintln!("  | {line}");
        }
        bail!("the bench system ended with {:?}", captured.outcome);
    }
    let figure = |name: &str| -> Result<u64> {
        let prefix = format!("bench: {name} ");
        captured
            .lines
            .iter()
            .find_map(|l| l.split_once(&prefix).map(|(_, v)| v.trim().parse::<u64>()))
            .with_context(|| format!("the bench system printed no figure for {name}"))?
            .with_context(|| format!("the figure for {name} is not a number"))
    };
    let null = figure("null syscall")?.max(1);
    let rows = [
        ("null system call (time_now)", null),
        ("yield (a scheduler pass, no switch)", figure("yield")?),
        (
            "call+reply round trip, 0 bytes",
            figure("call+reply 0 bytes")?,
        ),
        (
            "call+reply round trip, 64 bytes",
            figure("call+reply 64 bytes")?,
        ),
        (
            "notify to wake-up, round trip",
            figure("notify+wake round trip")?,
        ),
    ];
    println!(
        "xtask: kernel paths on {}, guest instructions per operation (QEMU -icount shift=0)",
        arch.name()
    );
    println!(
        "  {:<36} {:>12} {:>14}",
        "path", "instructions", "x null syscall"
    );
    for (name, value) in rows {
        println!(
            "  {name:<36} {value:>12} {:>14.1}",
            value as f64 / null as f64
        );
    }
    match device_interrupt(arch)? {
        Some(value) => println!(
            "  {:<36} {value:>12} {:>14.1}",
            "device interrupt to handler",
            value as f64 / null as f64
        ),
        None => println!(
            "  {:<36} {:>12}",
            "device interrupt to handler", "-  (no self-triggered device on this machine yet)"
        ),
    }
    let round_trip = rows[2].1;
    let verdict = if round_trip <= ROUND_TRIP_TARGET {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "  target: 0-byte round trip <= {ROUND_TRIP_TARGET} instructions: {verdict} ({round_trip})"
    );
    Ok(())
}

/// Boots the `devices` system (x86_64) under -icount: its `uart` partition owns COM2 and
/// measures, over 200 rounds, the instructions from enabling the UART's transmitter-empty
/// interrupt (which fires at once) to its own return from `wait`: the I/O APIC, the kernel's
/// interrupt entry, the notification and the switch back into the owner.
fn device_interrupt(arch: Arch) -> Result<Option<u64>> {
    if arch != Arch::X86_64 {
        return Ok(None);
    }
    let opts = BuildOpts { arch, debug: false };
    let cmdline = qemu::effective_cmdline(arch, "exit");
    let bootable = image::bootable(&opts, false, &cmdline, Some("devices"))?;
    let mut cmd = qemu::command(arch, &bootable, false);
    // The devices the description grants (COM2 for `uart`), on blank disks, as in the tests.
    let description = crate::system::load(&crate::system::description_path("devices"))?;
    cmd.args(crate::devices::qemu_args(
        &description,
        arch,
        crate::devices::Disk::Fresh,
    )?);
    cmd.args(crate::tests::DEVICE_QEMU);
    let captured = qemu::capture(cmd, arch, Duration::from_secs(300), false)?;
    let value = captured
        .lines
        .iter()
        .find_map(|l| {
            l.split_once("bench: device interrupt to handler ")
                .and_then(|(_, v)| v.trim_end_matches(" ns").trim().parse::<u64>().ok())
        })
        .context("the devices system printed no device interrupt figure")?;
    Ok(Some(value))
}
