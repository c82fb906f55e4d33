//! `cargo xtask lint`: formatting and clippy with warnings denied, for host crates and for
//! the kernel on both of its targets.

use anyhow::{Result, bail};

use crate::{Arch, build};

fn cargo(args: &[&str]) -> Result<()> {
    println!("xtask: cargo {}", args.join(" "));
    let status = build::cargo()
        .current_dir(build::root())
        .args(args)
        .status()?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

pub fn run() -> Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"])?;
    // Partition programs and their runtime are built for the kernel's targets only.
    let programs = crate::system::available_programs();
    for arch in [Arch::X86_64, Arch::Aarch64] {
        // The VirtIO library on its own and without its `alloc` feature, as partitions use it:
        // in one command with the programs, cargo would unify the feature into every program
        // that links it, and a program without a heap would then fail to link.
        let mut library = vec![
            "clippy",
            "--quiet",
            "--package",
            "bulkhead-virtio",
            "--no-default-features",
        ];
        library.extend(build::target_args(arch));
        library.extend(["--", "-D", "warnings"]);
        cargo(&library)?;
        let mut args = vec![
            "clippy",
            "--quiet",
            "--package",
            "bulkhead-kernel",
            "--package",
            "bulkhead-rt",
            "--package",
            "bulkhead-iokit",
            "--package",
            "bulkhead-blk-client",
            "--package",
            "bulkhead-net-client",
            "--package",
            "bulkhead-console-client",
            "--package",
            "bulkhead-entropy-client",
        ];
        for program in &programs {
            args.extend(["--package", program.as_str()]);
        }
        args.extend(build::target_args(arch));
        args.extend(["--", "-D", "warnings"]);
        cargo(&args)?;
    }
    Ok(())
}
