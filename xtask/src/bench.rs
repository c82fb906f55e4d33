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

pub fn run(block: &crate::blkbench::Opts, block_only: bool, net_only: bool) -> Result<()> {
    if block_only {
        return crate::blkbench::run(block);
    }
    if net_only {
        return network();
    }
    for arch in [Arch::X86_64, Arch::Aarch64] {
        kernel_paths(arch)?;
        println!();
    }
    window_starts()?;
    println!();
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
    println!();
    crate::blkbench::run(block)?;
    println!();
    // The network figure is reported, or why there is none, without hiding the others.
    if let Err(why) = network() {
        println!("xtask: network throughput: no figure ({why:#})");
    }
    Ok(())
}

/// Only the kernel paths, on `arch` or on both architectures: the figures the IPC work is
/// measured by, without the block and network boots of the full run.
pub fn kernel_only(arch: Option<Arch>) -> Result<()> {
    let arches = match arch {
        Some(arch) => vec![arch],
        None => vec![Arch::X86_64, Arch::Aarch64],
    };
    for arch in arches {
        kernel_paths(arch)?;
        println!();
    }
    Ok(())
}

/// Boots the `bench` system and returns what its client printed. Under `-icount shift=0`
/// (`icount`) its figures are guest instructions; without, nanoseconds of wall time.
fn boot_kernel_bench(arch: Arch, icount: bool) -> Result<Vec<String>> {
    let opts = BuildOpts { arch, debug: false };
    let cmdline = qemu::effective_cmdline(arch, "exit_after=client");
    let bootable = image::bootable(&opts, false, &cmdline, Some("bench"))?;
    let mut cmd = qemu::command(arch, &bootable, false);
    if icount {
        cmd.args(["-icount", "shift=0"]);
    }
    let captured = qemu::capture(cmd, arch, Duration::from_secs(300), false)?;
    if captured.outcome != Outcome::Success {
        for line in captured.lines.iter().rev().take(20).rev() {
            eprintln!("  | {line}");
        }
        bail!("the bench system ended with {:?}", captured.outcome);
    }
    Ok(captured.lines)
}

/// The figure `name` the bench system's client printed in `lines`.
fn kernel_figure(lines: &[String], name: &str) -> Result<u64> {
    let prefix = format!("bench: {name} ");
    lines
        .iter()
        .find_map(|l| l.split_once(&prefix).map(|(_, v)| v.trim().parse::<u64>()))
        .with_context(|| format!("the bench system printed no figure for {name}"))?
        .with_context(|| format!("the figure for {name} is not a number"))
}

/// Wall-clock nanoseconds of a 0-byte call+reply between two partitions on x86_64 (two
/// address-space switches), measured without `-icount`: what isolation costs per round trip
/// on this host, next to the instructions `-icount` counts for it.
pub fn round_trip_wall_ns() -> Result<u64> {
    let lines = boot_kernel_bench(Arch::X86_64, false)?;
    kernel_figure(&lines, "call+reply 0 bytes")
}

/// Boots the `bench` system under -icount and prints the figures its client measured.
fn kernel_paths(arch: Arch) -> Result<()> {
    let lines = boot_kernel_bench(arch, true)?;
    let figure = |name: &str| kernel_figure(&lines, name);
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

/// Window start latency: how long after each window's boundary the kernel's decision came,
/// worst and 99th percentile, in guest instructions (`-icount shift=0,sleep=off`: 1 ns each,
/// and a halted CPU's time jumps to its timer deadline instead of following the host's clock).
/// The demo, and the `spin` system: a neighbour that spins and a client that floods its
/// server. For reference, the demo once more with QEMU's default `sleep=on`, where the time a
/// halted CPU takes to wake follows the host's clock.
pub fn window_starts() -> Result<()> {
    println!(
        "xtask: window start latency (boundary to the kernel's decision), guest instructions (QEMU -icount shift=0,sleep=off)"
    );
    println!(
        "  {:<52} {:>8} {:>10} {:>10} {:>6}",
        "system", "starts", "p99 <=", "worst", "late"
    );
    let runs: [(Arch, &str, &str, &[&str], &str); 4] = [
        (
            Arch::X86_64,
            "demo",
            "run_ms=2000",
            crate::tests::ICOUNT_DETERMINISTIC,
            "demo (x86_64)",
        ),
        (
            Arch::X86_64,
            "spin",
            "run_ms=1500",
            crate::tests::ICOUNT_DETERMINISTIC,
            "spinner + flooding client (x86_64)",
        ),
        (
            Arch::Aarch64,
            "spin",
            "run_ms=1500",
            crate::tests::ICOUNT_DETERMINISTIC,
            "spinner + flooding client (aarch64)",
        ),
        (
            Arch::X86_64,
            "demo",
            "run_ms=2000",
            &["-icount", "shift=0,sleep=on"],
            "reference: demo, sleep=on (host clock while halted), ns",
        ),
    ];
    let mut worst = 0;
    for (arch, system, cmdline, icount, label) in runs {
        let captured = boot_system(arch, system, cmdline, icount)?;
        let (starts, p99, max, _tolerance, late) =
            crate::tests::start_summary(&captured.lines).map_err(anyhow::Error::msg)?;
        println!("  {label:<52} {starts:>8} {p99:>10} {max:>10} {late:>6}");
        if icount == crate::tests::ICOUNT_DETERMINISTIC {
            worst = worst.max(max);
        }
    }
    let tolerance = kcore::sched::WINDOW_TOLERANCE_NS;
    let verdict = if worst <= tolerance { "met" } else { "MISSED" };
    println!(
        "  target: every start within the kernel's tolerance, {tolerance} ns (deterministic runs): {verdict} (worst {worst})"
    );
    Ok(())
}

/// Boots the `devices` system (x86_64) or `devices-aarch64` under -icount: its `uart`
/// partition owns COM2 (x86_64) or the PL061 GPIO (aarch64) and measures, over 200 rounds, the
/// instructions from making the device raise its interrupt (at once) to its own return from
/// `wait`: the interrupt controller, the kernel's interrupt entry, the notification and the
/// switch back into the owner.
fn device_interrupt(arch: Arch) -> Result<Option<u64>> {
    let system = match arch {
        Arch::X86_64 => "devices",
        Arch::Aarch64 => "devices-aarch64",
    };
    let captured = boot_system(arch, system, "exit", crate::tests::DEVICE_QEMU)?;
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

/// Boots `system` (release kernel, command line `cmdline`) with the QEMU devices its
/// description grants (without them its partitions would wait for devices that are not there
/// until the timeout) and `extra` QEMU arguments; what it printed.
fn boot_system(arch: Arch, system: &str, cmdline: &str, extra: &[&str]) -> Result<qemu::Captured> {
    let opts = BuildOpts { arch, debug: false };
    let cmdline = qemu::effective_cmdline(arch, cmdline);
    let bootable = image::bootable(&opts, false, &cmdline, Some(system))?;
    let mut cmd = qemu::command(arch, &bootable, false);
    let description = crate::system::load(&crate::system::description_path(system))?;
    cmd.args(crate::devices::qemu_args(
        &description,
        arch,
        crate::devices::Disk::Fresh,
    )?);
    cmd.args(extra);
    qemu::capture(cmd, arch, Duration::from_secs(300), false)
}

/// Bytes of each bulk transfer in the network benchmark.
const NET_BULK: u64 = 4 << 20;

/// Network throughput between a client partition and the host: the `net` system boots, the
/// host asks `web` for 4 MiB of its bulk pattern over TCP (through the net server, the NIC and
/// QEMU's user networking, forwarded to a host port) and times it, three times. The reference
/// in the same run is QEMU's user networking alone: the same host program reading 4 MiB from
/// a host TCP server through the loopback. Measured on the host, in MB/s (10^6 bytes).
fn network() -> Result<()> {
    println!(
        "xtask: network throughput, client partition -> host (TCP through net server, virtio-net, QEMU user networking)"
    );
    let (captured, result) = crate::nettest::boot_and_act(
        Arch::X86_64,
        "net",
        "exit_after=web",
        Duration::from_secs(300),
        |forwards| {
            let tcp = crate::nettest::forward(forwards, "web", "tcp")?;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let (mut stream, _) = crate::nettest::tcp_connect(tcp.host_port, deadline)?;
            let mut out = Vec::new();
            for _ in 0..3 {
                let took = crate::nettest::tcp_bulk(&mut stream, NET_BULK)?;
                out.push(format!("{}", took.as_secs_f64()));
            }
            let _ = crate::nettest::tcp_line(&mut stream, "halt");
            Ok(out)
        },
    )?;
    let times = match result {
        Ok(times) => times,
        Err(why) => {
            for line in captured.lines.iter().rev().take(20).rev() {
                eprintln!("  | {line}");
            }
            bail!("network benchmark: {why}");
        }
    };
    let mb = NET_BULK as f64 / 1e6;
    let rates: Vec<f64> = times
        .iter()
        .filter_map(|t| t.parse::<f64>().ok())
        .map(|t| mb / t)
        .collect();
    let best = rates.iter().cloned().fold(0.0, f64::max);
    let reference = loopback_reference()?;
    println!("  {:<44} {:>10}", "path", "MB/s");
    for (i, r) in rates.iter().enumerate() {
        println!(
            "  {:<44} {r:>10.2}",
            format!("client -> host, 4 MiB, run {}", i + 1)
        );
    }
    println!(
        "  {:<44} {reference:>10.1}",
        "reference: host loopback TCP, 4 MiB"
    );
    println!(
        "  client path / loopback reference: {:.4} (best client run {best:.2} MB/s)",
        best / reference
    );
    Ok(())
}

/// The host's own TCP loopback throughput for the same transfer and reader: what the host
/// side costs without the guest.
fn loopback_reference() -> Result<f64> {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut line = [0u8; 64];
        let _ = std::io::Read::read(&mut s, &mut line)?;
        let data: Vec<u8> = (0..NET_BULK).map(|i| (i % 251) as u8).collect();
        s.write_all(&data)
    });
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let took = crate::nettest::tcp_bulk(&mut stream, NET_BULK).map_err(anyhow::Error::msg)?;
    let _ = server.join();
    Ok(NET_BULK as f64 / 1e6 / took.as_secs_f64())
}
