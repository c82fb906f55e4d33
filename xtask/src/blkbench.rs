//! `cargo xtask bench`, block part (issue #6 items 7-8): block throughput of a client partition
//! through the block server next to the same workloads issued by the server directly on the
//! device, on the reference device of ../shared/bench-devices.md, and the isolation overhead as
//! a ratio per workload.
//!
//! Each path is its own system (systems/bench-blk-direct.toml, systems/bench-blk-client.toml);
//! boots alternate direct, client, direct, client... in one run (the host is noisy: its medians
//! drift within minutes), and each figure is the median over the boots of its path. The disk
//! image carries a known pattern in every sector (its LBA, then `BULKHEAD`): the guest verifies
//! every sector it reads, and the write workload writes the same pattern.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::qemu::{self, Outcome};
use crate::{Arch, BuildOpts, build, image};

/// The reference disk: 256 MiB raw.
pub const DISK_BYTES: u64 = 256 << 20;
const SECTOR: usize = 512;
/// Bytes 8..16 of every sector (bytes 0..8: the LBA, little-endian; the rest zero).
const PATTERN: &[u8; 8] = b"BULKHEAD";
/// The client path must reach this share of the direct path's throughput.
const TARGET: f64 = 0.90;

/// The workloads, as the guest names them, and how to show them.
const WORKLOADS: [(&str, &str, bool); 4] = [
    ("seq-read-1m", "sequential read 1 MiB, QD4", false),
    ("rand-read-4k-qd1", "random read 4 KiB, QD1", true),
    ("rand-read-4k-qd32", "random read 4 KiB, QD32", true),
    (
        "seq-write-1m-flush",
        "sequential write 1 MiB, QD4, +flush",
        false,
    ),
];

/// Options of the block benchmark.
#[derive(Debug, Clone)]
pub struct Opts {
    /// The disk image (made with the pattern if it does not exist).
    pub disk: Option<PathBuf>,
    /// Boots per path (at least 3).
    pub boots: usize,
    /// Extra QEMU arguments, after the reference ones.
    pub extra: Vec<String>,
}

/// One boot's figures: per workload, (ns, ops, bytes).
type Figures = Vec<(u64, u64, u64)>;

pub fn run(opts: &Opts) -> Result<()> {
    let boots = opts.boots.max(3);
    let disk = match &opts.disk {
        Some(path) => {
            prepare_disk(path, true)?;
            path.clone()
        }
        None => {
            let dir = build::root().join("target/disks");
            fs::create_dir_all(&dir)?;
            let path = dir.join("bench-blk.img");
            prepare_disk(&path, false)?;
            path
        }
    };
    let disk = disk.canonicalize().unwrap_or(disk);
    let (aio, aio_note) = match probe_io_uring(&disk) {
        Ok(()) => ("io_uring", String::new()),
        Err(why) => (
            "threads",
            format!(
                "  NOTE: this QEMU cannot use aio=io_uring ({why}); fell back to aio=threads, \
                 so these figures are not on the reference device\n"
            ),
        ),
    };
    let version = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();

    let opts_x86 = BuildOpts {
        arch: Arch::X86_64,
        debug: false,
    };
    let direct = image::bootable(&opts_x86, false, "exit_after=blk", Some("bench-blk-direct"))?;
    let client = image::bootable(
        &opts_x86,
        false,
        "exit_after=bench",
        Some("bench-blk-client"),
    )?;

    println!(
        "xtask: block I/O on the reference device (../shared/bench-devices.md): {} boots per path, interleaved",
        boots
    );
    let mut results: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
    for boot in 0..boots {
        for (path, (name, bootable)) in [("direct", &direct), ("client", &client)]
            .into_iter()
            .enumerate()
        {
            let figures = boot_once(bootable, &disk, aio, &opts.extra)
                .with_context(|| format!("{name} path, boot {}", boot + 1))?;
            let summary: Vec<String> = figures
                .iter()
                .zip(WORKLOADS)
                .map(|(&(ns, ops, bytes), (_, _, iops))| {
                    if iops {
                        format!("{:.0} IOPS", ops as f64 * 1e9 / ns as f64)
                    } else {
                        format!("{:.1} MB/s", bytes as f64 * 1e3 / ns as f64)
                    }
                })
                .collect();
            println!("  boot {} {name:<6} {}", boot + 1, summary.join(" | "));
            results[path].push(figures);
        }
    }

    println!(
        "xtask: block throughput, client through the server vs the server on the device \
         (median of {boots} boots each; guest clock)"
    );
    println!(
        "  {version}; -machine pc -cpu qemu64 -smp 1 -m 512M; virtio-blk-pci transitional, 1 queue of 256"
    );
    println!(
        "  disk {} (256 MiB raw), cache=writeback, aio={aio}",
        disk.display()
    );
    print!("{aio_note}");
    println!(
        "  {:<36} {:>22} {:>22} {:>8}",
        "workload", "direct", "client", "client/direct"
    );
    let mut missed = Vec::new();
    let mut direct_qd1_ns = None;
    for (i, (key, label, iops)) in WORKLOADS.iter().enumerate() {
        let rate = |path: usize| {
            let mut values: Vec<(f64, f64)> = results[path]
                .iter()
                .map(|f| {
                    let (ns, ops, bytes) = f[i];
                    (bytes as f64 * 1e3 / ns as f64, ops as f64 * 1e9 / ns as f64)
                })
                .collect();
            values.sort_by(|a, b| a.0.total_cmp(&b.0));
            values[values.len() / 2]
        };
        let (d_mbps, d_iops) = rate(0);
        let (c_mbps, c_iops) = rate(1);
        if *key == "rand-read-4k-qd1" {
            direct_qd1_ns = Some(1e9 / d_iops);
        }
        let show = |mbps: f64, ops: f64| {
            if *iops {
                format!("{ops:.0} IOPS ({mbps:.1} MB/s)")
            } else {
                format!("{mbps:.1} MB/s")
            }
        };
        let ratio = c_mbps / d_mbps;
        let verdict = if ratio >= TARGET { "met" } else { "MISSED" };
        if ratio < TARGET {
            missed.push(*key);
        }
        println!(
            "  {label:<36} {:>22} {:>22} {:>7.1} %  {verdict}",
            show(d_mbps, d_iops),
            show(c_mbps, c_iops),
            ratio * 100.0
        );
    }
    println!(
        "  target: client path >= {:.0} % of the direct path on every workload: {}",
        TARGET * 100.0,
        if missed.is_empty() {
            "met".to_string()
        } else {
            format!("MISSED ({})", missed.join(", "))
        }
    );
    // What one CPU allows: a client request through the server costs at least one switch into
    // the server and one back, which under TCG empty QEMU's software TLB each time.
    match (direct_qd1_ns, crate::bench::round_trip_wall_ns()) {
        (Some(direct), Ok(round_trip)) => {
            let (direct_us, round_trip_us) = (direct / 1e3, round_trip as f64 / 1e3);
            println!(
                "  floor: a 0-byte call+reply between two partitions (two address-space switches, \
                 the least a request through a server adds on one CPU) takes {round_trip_us:.1} µs \
                 of wall time on this host; with the direct path's {direct_us:.1} µs per QD1 \
                 request the client path cannot exceed {:.1} % at QD1 here",
                100.0 * direct / (direct + round_trip as f64)
            );
        }
        (_, Err(why)) => println!("  floor: no round-trip figure ({why:#})"),
        (None, _) => {}
    }
    Ok(())
}

/// Boots one bench system on the reference device and returns its figures.
fn boot_once(
    bootable: &image::Bootable,
    disk: &Path,
    aio: &str,
    extra: &[String],
) -> Result<Figures> {
    let mut cmd = qemu::command(Arch::X86_64, bootable, false);
    // qemu::command gives `-machine pc -cpu qemu64 -m 512M`; the rest of the reference.
    cmd.args(["-smp", "1"]);
    cmd.arg("-drive").arg(format!(
        "if=none,id=d0,file={},format=raw,cache=writeback,aio={aio}",
        disk.display()
    ));
    cmd.args([
        "-device",
        "virtio-blk-pci,drive=d0,num-queues=1,queue-size=256,disable-legacy=off,disable-modern=off,addr=0x4",
    ]);
    cmd.args(extra);
    let captured = qemu::capture(cmd, Arch::X86_64, Duration::from_secs(900), false)?;
    let tail = || {
        for line in captured.lines.iter().rev().take(30).rev() {
            eprintln!("  | {line}");
        }
    };
    if captured.outcome != Outcome::Success {
        tail();
        bail!("the system ended with {:?}", captured.outcome);
    }
    let mut figures = Vec::new();
    for (key, _, _) in WORKLOADS {
        let prefix = format!("blkbench: {key} ");
        let Some(line) = captured.lines.iter().find_map(|l| l.split_once(&prefix)) else {
            tail();
            bail!("no figure for {key}");
        };
        let field = |name: &str| -> Option<u64> {
            line.1
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
        };
        let (Some(ns), Some(ops), Some(bytes), Some(bad), Some(errors)) = (
            field("ns"),
            field("ops"),
            field("bytes"),
            field("bad"),
            field("errors"),
        ) else {
            tail();
            bail!("unreadable figure for {key}: {}", line.1);
        };
        if bad > 0 || errors > 0 {
            tail();
            bail!("{key}: {bad} sectors read back wrong, {errors} requests failed");
        }
        figures.push((ns.max(1), ops, bytes));
    }
    Ok(figures)
}

/// Sector `lba` of the benchmark image.
fn sector(lba: u64, out: &mut [u8]) {
    out.fill(0);
    out[..8].copy_from_slice(&lba.to_le_bytes());
    out[8..16].copy_from_slice(PATTERN);
}

/// Makes sure `path` is a benchmark image (256 MiB, the pattern in every sector). A missing
/// file is made; a wrong one is remade unless the user `given` it (then it is refused rather
/// than overwritten).
fn prepare_disk(path: &Path, given: bool) -> Result<()> {
    if path.exists() {
        match check_disk(path) {
            Ok(()) => return Ok(()),
            Err(why) if given => bail!(
                "{} is not a benchmark disk image ({why}): the benchmark verifies a pattern in \
                 every sector; name a file that does not exist and it is made",
                path.display()
            ),
            Err(why) => println!(
                "xtask: remaking the benchmark disk image {} ({why})",
                path.display()
            ),
        }
    } else {
        println!(
            "xtask: making the benchmark disk image {} (256 MiB, LBA pattern)",
            path.display()
        );
    }
    let mut file = std::io::BufWriter::new(
        fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut chunk = vec![0u8; 1 << 20];
    for mib in 0..DISK_BYTES >> 20 {
        for (i, s) in chunk.chunks_mut(SECTOR).enumerate() {
            sector(mib * 2048 + i as u64, s);
        }
        file.write_all(&chunk)?;
    }
    file.flush()?;
    Ok(())
}

fn check_disk(path: &Path) -> Result<(), String> {
    let len = fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len != DISK_BYTES {
        return Err(format!("{len} bytes, not {DISK_BYTES}"));
    }
    let mut file = fs::File::open(path).map_err(|e| e.to_string())?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut expected = [0u8; SECTOR];
    for mib in 0..DISK_BYTES >> 20 {
        file.read_exact(&mut chunk).map_err(|e| e.to_string())?;
        for (i, s) in chunk.chunks(SECTOR).enumerate() {
            let lba = mib * 2048 + i as u64;
            sector(lba, &mut expected);
            if s != expected {
                return Err(format!("sector {lba} does not carry the pattern"));
            }
        }
    }
    Ok(())
}

/// Whether this QEMU opens a drive with aio=io_uring (it needs liburing at build time and a
/// host kernel that allows io_uring).
fn probe_io_uring(disk: &Path) -> Result<(), String> {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "stdio",
        ])
        .arg("-drive")
        .arg(format!(
            "if=none,id=d0,file={},format=raw,cache=writeback,aio=io_uring,readonly=on",
            disk.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"quit\n");
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&output.stderr);
        Err(err.lines().last().unwrap_or("failed").trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_carry_their_lba_and_the_pattern() {
        let mut s = [0xffu8; SECTOR];
        sector(0x0102_0304, &mut s);
        assert_eq!(&s[..8], &0x0102_0304u64.to_le_bytes());
        assert_eq!(&s[8..16], b"BULKHEAD");
        assert!(s[16..].iter().all(|&b| b == 0));
    }
}
