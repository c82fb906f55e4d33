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
        let mut args = vec![
            "clippy",
            "--quiet",
            "--package",
            "bulkhead-kernel",
            "--package",
            "bulkhead-rt",
        ];
        for program in &programs {
            args.extend(["--package", program.as_str()]);
        }
        args.extend(build::target_args(arch));
        args.extend(["--", "-D", "warnings"]);
        cargo(&args)?;
        // The VirtIO library on its own: selected with the programs, its default `alloc`
        // feature would be unified into partitions that have no allocator.
        let mut args = vec!["clippy", "--quiet", "--package", "bulkhead-virtio"];
        args.extend(build::target_args(arch));
        args.extend(["--", "-D", "warnings"]);
        cargo(&args)?;
    }
    Ok(())
}
