//! `cargo xtask`: Bulkhead's build driver.
//!
//! Every command that needs QEMU or the pinned toolchain's components checks for them first
//! and installs what is missing (see `setup`), so the README's quick-start commands work on a
//! fresh machine.

mod bench;
mod blkbench;
mod build;
mod devices;
mod image;
mod lint;
mod nettest;
mod qemu;
mod setup;
mod system;
mod tests;

use std::io::IsTerminal;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, boot and test Bulkhead", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Target architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// Options shared by every command that builds a kernel.
#[derive(clap::Args, Clone, Debug)]
pub struct BuildOpts {
    /// Target architecture.
    #[arg(long, value_enum, default_value = "x86_64")]
    pub arch: Arch,
    /// Build the kernel with the dev profile instead of release (slow to load under BIOS).
    #[arg(long)]
    pub debug: bool,
}

/// What goes into a bootable image; shared by `image` and `run`.
#[derive(clap::Args, Clone, Debug)]
pub struct ImageOpts {
    /// System description: a name in systems/ or a path (default: demo). `none` means no
    /// system: the kernel alone.
    pub system: Option<String>,
    #[command(flatten)]
    pub build: BuildOpts,
    /// Boot through UEFI (OVMF) instead of BIOS (x86_64).
    #[arg(long)]
    pub uefi: bool,
    /// Kernel command line words (e.g. `log=debug`, `test=page_fault`).
    #[arg(long, default_value = "")]
    pub cmdline: String,
}

impl ImageOpts {
    /// The system to build, after defaults: `None` for the kernel alone.
    pub fn system(&self) -> Option<&str> {
        match self.system.as_deref() {
            Some("none") => None,
            Some(name) => Some(name),
            None => Some("demo"),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing: QEMU and OVMF (through apt-get) and the toolchain's components.
    Setup,
    /// Build the kernel for an architecture.
    Build {
        #[command(flatten)]
        build: BuildOpts,
    },
    /// Build a bootable image: a BIOS (or UEFI) disk image on x86_64, a raw Image on aarch64.
    Image {
        #[command(flatten)]
        image: ImageOpts,
    },
    /// Build and boot the system in QEMU (TCG) with the serial console on this terminal.
    ///
    /// When standard output is not a terminal, the kernel is asked to power off once the boot
    /// demonstration is done, and the exit status says whether it succeeded.
    Run {
        #[command(flatten)]
        image: ImageOpts,
        /// Give up after this many seconds when not on a terminal.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Raw disk image for the system's block device (default: one made under
        /// target/disks, 64 MiB).
        #[arg(long)]
        disk: Option<std::path::PathBuf>,
        /// Extra arguments passed to QEMU as they are.
        #[arg(last = true)]
        qemu_args: Vec<String>,
    },
    /// Run every test: host unit tests, then QEMU integration tests on both architectures.
    Test {
        /// Run only the host unit tests.
        #[arg(long, conflicts_with = "qemu_only")]
        host_only: bool,
        /// Run only the QEMU integration tests.
        #[arg(long)]
        qemu_only: bool,
        /// Run only integration tests whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// The long fuzz: twenty million random system calls on each architecture while a
    /// neighbour checks its memory (the test suite runs one million).
    Soak,
    /// Check formatting and run clippy (warnings denied) on host and target crates.
    Lint,
    /// Print performance figures, each compared with a reference measured in the same run.
    Bench {
        /// Raw disk image for the block benchmark (256 MiB; made with the benchmark's sector
        /// pattern if it does not exist; default target/disks/bench-blk.img).
        #[arg(long)]
        disk: Option<std::path::PathBuf>,
        /// Boots per block path (direct and client, interleaved; at least 3).
        #[arg(long, default_value_t = 3)]
        boots: usize,
        /// Only the block benchmark.
        #[arg(long, conflicts_with = "net_only")]
        block_only: bool,
        /// Only the network benchmark.
        #[arg(long, conflicts_with_all = ["kernel_only", "windows_only"])]
        net_only: bool,
        /// Only the kernel paths (system calls, IPC round trips, device interrupt).
        #[arg(long, conflicts_with_all = ["block_only", "windows_only"])]
        kernel_only: bool,
        /// With --kernel-only: only this architecture (default: both).
        #[arg(long, value_enum, requires = "kernel_only")]
        arch: Option<Arch>,
        /// Only the window start latency (the demo, and a spinner with a flooding client).
        #[arg(long, conflicts_with = "block_only")]
        windows_only: bool,
        /// Extra arguments passed to QEMU as they are (block benchmark boots).
        #[arg(last = true)]
        qemu_args: Vec<String>,
    },
}

fn main() {
    if let Err(error) = run() {
        eprintln!("xtask: error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => {
            setup::ensure_toolchain()?;
            setup::ensure_qemu()
        }
        Command::Build { build } => {
            setup::ensure_toolchain()?;
            let kernel = build::kernel(&build)?;
            println!("{}", kernel.display());
            Ok(())
        }
        Command::Image { image } => {
            setup::ensure_toolchain()?;
            let boot = image::bootable(&image.build, image.uefi, &image.cmdline, image.system())?;
            println!("{}", boot.path().display());
            Ok(())
        }
        Command::Run {
            image,
            timeout,
            disk,
            qemu_args,
        } => {
            setup::ensure_toolchain()?;
            setup::ensure_qemu()?;
            let interactive = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
            qemu::run(&image, interactive, timeout, disk.as_deref(), &qemu_args)
        }
        Command::Test {
            host_only,
            qemu_only,
            filter,
        } => {
            setup::ensure_toolchain()?;
            if !qemu_only {
                tests::host()?;
            }
            if !host_only {
                setup::ensure_qemu()?;
                tests::qemu(filter.as_deref())?;
            }
            Ok(())
        }
        Command::Soak => {
            setup::ensure_toolchain()?;
            setup::ensure_qemu()?;
            tests::soak()
        }
        Command::Lint => {
            setup::ensure_toolchain()?;
            lint::run()
        }
        Command::Bench {
            disk,
            boots,
            block_only,
            net_only,
            kernel_only,
            arch,
            windows_only,
            qemu_args,
        } => {
            setup::ensure_toolchain()?;
            setup::ensure_qemu()?;
            let block = blkbench::Opts {
                disk,
                boots,
                extra: qemu_args,
            };
            if kernel_only {
                return bench::kernel_only(arch);
            }
            if windows_only {
                return bench::window_starts();
            }
            bench::run(&block, block_only, net_only)
        }
    }
}
