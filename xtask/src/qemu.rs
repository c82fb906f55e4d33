//! Booting images in QEMU (TCG): interactively on a terminal, or captured with a timeout for
//! scripts and tests.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::image::{self, Bootable};
use crate::setup::OVMF;
use crate::{Arch, ImageOpts};

/// Exit status `2v+1` that QEMU's isa-debug-exit gives for the kernel's success value 0x10.
const X86_EXIT_SUCCESS: i32 = 33;
/// ... and for its failure value 0x11.
const X86_EXIT_FAILURE: i32 = 35;

/// How a boot ended, as the kernel told QEMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel powered off reporting success.
    Success,
    /// The kernel powered off reporting a failure (fault, panic, failed self-check).
    Failure,
    /// QEMU ended some other way (a triple fault resets the machine; `-no-reboot` exits 0).
    Other(i32),
    /// The deadline passed and QEMU was killed.
    TimedOut,
}

impl Outcome {
    fn from_exit_code(arch: Arch, code: i32) -> Outcome {
        match (arch, code) {
            (Arch::X86_64, X86_EXIT_SUCCESS) | (Arch::Aarch64, 0) => Outcome::Success,
            (Arch::X86_64, X86_EXIT_FAILURE) | (Arch::Aarch64, 1) => Outcome::Failure,
            (_, code) => Outcome::Other(code),
        }
    }
}

/// Everything a captured boot printed, and how it ended.
pub struct Captured {
    pub lines: Vec<String>,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// The kernel command line QEMU should deliver: on aarch64 the kernel may exit through
/// semihosting, which QEMU is always asked to provide.
pub fn effective_cmdline(arch: Arch, cmdline: &str) -> String {
    let mut words: Vec<&str> = cmdline.split_whitespace().collect();
    if arch == Arch::Aarch64 {
        words.push("semihosting");
    }
    words.join(" ")
}

/// The QEMU command for `bootable`. `interactive` puts the serial console and QEMU's monitor
/// on the terminal; otherwise the serial console goes to standard output.
pub fn command(arch: Arch, bootable: &Bootable, interactive: bool) -> Command {
    let mut cmd = match arch {
        Arch::X86_64 => Command::new("qemu-system-x86_64"),
        Arch::Aarch64 => Command::new("qemu-system-aarch64"),
    };
    cmd.args(["-accel", "tcg", "-m", "512M", "-no-reboot"]);
    if interactive {
        cmd.arg("-nographic");
    } else {
        cmd.args(["-display", "none", "-serial", "stdio", "-monitor", "none"]);
    }
    match (arch, bootable) {
        (Arch::X86_64, Bootable::Disk { path, uefi }) => {
            cmd.args(["-machine", "pc", "-cpu", "qemu64"]);
            cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
            cmd.arg("-drive")
                .arg(format!("format=raw,file={}", path.display()));
            if *uefi {
                cmd.args(["-bios", OVMF]);
            }
        }
        (
            Arch::Aarch64,
            Bootable::Kernel {
                path,
                initrd,
                cmdline,
            },
        ) => {
            cmd.args(["-machine", "virt", "-cpu", "cortex-a72"]);
            cmd.args(["-semihosting-config", "enable=on,target=native"]);
            cmd.arg("-kernel").arg(path);
            cmd.arg("-initrd").arg(initrd);
            cmd.arg("-append").arg(cmdline);
        }
        _ => unreachable!("image::bootable makes disks for x86_64 and kernels for aarch64"),
    }
    cmd
}

/// Builds the image and boots it. Interactive: until the user quits QEMU (Ctrl-A X).
/// Otherwise: the kernel powers off after its demonstration and the exit status says how it went.
pub fn run(
    image_opts: &ImageOpts,
    interactive: bool,
    timeout: u64,
    disk: Option<&std::path::Path>,
    extra: &[String],
) -> Result<()> {
    let (opts, uefi, cmdline, system) = (
        &image_opts.build,
        image_opts.uefi,
        image_opts.cmdline.as_str(),
        image_opts.system(),
    );
    if uefi && opts.arch != Arch::X86_64 {
        bail!("--uefi applies to x86_64 only (aarch64 boots the kernel ELF directly)");
    }
    let mut words = cmdline.to_string();
    if !interactive {
        // A system that ends by itself powers off when done; one that serves forever (the
        // demo) is shown for a few seconds of guest time, long enough for the host to visit
        // its network services.
        words.push_str(" exit run_ms=8000");
    }
    let cmdline = effective_cmdline(opts.arch, &words);
    let bootable = image::bootable(opts, uefi, &cmdline, system)?;
    let mut cmd = command(opts.arch, &bootable, interactive);
    let mut forwards = Vec::new();
    if let Some(name) = system {
        let description = crate::system::load(&crate::system::description_path(name))?;
        let disk = disk.map_or(crate::devices::Disk::Kept, crate::devices::Disk::Given);
        let (args, fwd) = crate::devices::qemu_setup(
            &description,
            opts.arch,
            disk,
            crate::devices::HostPorts::Preferred,
        )?;
        for f in &fwd {
            println!(
                "xtask: host {} port {} -> {}:{} ({})",
                f.proto, f.host_port, f.guest_ip, f.guest_port, f.partition
            );
        }
        cmd.args(args);
        forwards = fwd;
    }
    cmd.args(extra);
    if !interactive && !forwards.is_empty() {
        // Shown, not just described: the host reaches the system's network partitions through
        // their forwards while it runs.
        std::thread::spawn(move || visit(&forwards));
    }
    if interactive {
        eprintln!(
            "xtask: booting {} in QEMU; quit with Ctrl-A X",
            bootable.path().display()
        );
        let status = cmd.status().context("starting QEMU")?;
        let code = status.code().unwrap_or(-1);
        return match Outcome::from_exit_code(opts.arch, code) {
            Outcome::Failure => bail!("the kernel reported a failure"),
            _ => Ok(()),
        };
    }
    let captured = capture(cmd, opts.arch, Duration::from_secs(timeout), true)?;
    match captured.outcome {
        Outcome::Success => Ok(()),
        Outcome::Failure => bail!("the kernel reported a failure"),
        Outcome::Other(code) => bail!("QEMU exited with status {code} (machine reset or crash?)"),
        Outcome::TimedOut => bail!("the system did not finish within {timeout} s"),
    }
}

/// Runs QEMU with its output captured line by line until it exits or `timeout` passes.
/// With `echo`, lines are printed as they arrive.
pub fn capture(mut cmd: Command, arch: Arch, timeout: Duration, echo: bool) -> Result<Captured> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting QEMU")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(text).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut lines = Vec::new();
    let outcome = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                if echo {
                    println!("{line}");
                }
                lines.push(line);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            break Outcome::from_exit_code(arch, status.code().unwrap_or(-1));
        }
        if start.elapsed() > timeout {
            kill(&mut child);
            break Outcome::TimedOut;
        }
    };
    let _ = reader.join();
    for line in rx.try_iter() {
        if echo {
            println!("{line}");
        }
        lines.push(line);
    }
    let stderr = err_reader.join().unwrap_or_default();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        lines.push(format!("[qemu stderr] {line}"));
        if echo {
            eprintln!("[qemu stderr] {line}");
        }
    }
    Ok(Captured {
        lines,
        outcome,
        elapsed: start.elapsed(),
    })
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Says hello to each forwarded service from the host once it answers (UDP echo, the TCP line
/// service) and prints what came back.
fn visit(forwards: &[crate::devices::Forward]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for f in forwards {
        match f.proto {
            "udp" => {
                match crate::nettest::udp_echo(f.host_port, b"hello from the host", deadline) {
                    Ok(took) => println!(
                        "[host] udp {}:{} ({}) echoed \"hello from the host\" in {} ms",
                        f.guest_ip,
                        f.guest_port,
                        f.partition,
                        took.as_millis()
                    ),
                    Err(why) => println!("[host] udp {}:{}: {why}", f.guest_ip, f.guest_port),
                }
            }
            _ => match crate::nettest::tcp_connect(f.host_port, deadline).and_then(
                |(mut stream, greeting)| {
                    let answer = crate::nettest::tcp_line(&mut stream, "hello from the host")?;
                    Ok((greeting, answer))
                },
            ) {
                Ok((greeting, answer)) => println!(
                    "[host] tcp {}:{} ({}) greeted {greeting:?}, answered {answer:?}",
                    f.guest_ip, f.guest_port, f.partition
                ),
                Err(why) => println!("[host] tcp {}:{}: {why}", f.guest_ip, f.guest_port),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_outcomes() {
        assert_eq!(Outcome::from_exit_code(Arch::X86_64, 33), Outcome::Success);
        assert_eq!(Outcome::from_exit_code(Arch::X86_64, 35), Outcome::Failure);
        // A triple fault with -no-reboot exits 0: never a success on x86_64.
        assert_eq!(Outcome::from_exit_code(Arch::X86_64, 0), Outcome::Other(0));
        assert_eq!(Outcome::from_exit_code(Arch::Aarch64, 0), Outcome::Success);
        assert_eq!(Outcome::from_exit_code(Arch::Aarch64, 1), Outcome::Failure);
    }

    #[test]
    fn aarch64_always_gets_semihosting() {
        assert_eq!(
            effective_cmdline(Arch::Aarch64, " exit  log=debug"),
            "exit log=debug semihosting"
        );
        assert_eq!(effective_cmdline(Arch::X86_64, "exit"), "exit");
    }
}
