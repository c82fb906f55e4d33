//! Builds the kernel for its target.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{Arch, BuildOpts};

/// The repository root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// The directory for images and logs that xtask produces.
pub fn out_dir() -> PathBuf {
    root().join("target/bulkhead")
}

/// The Rust target a kernel for `arch` is built for. aarch64 uses the soft-float variant so
/// that the kernel never touches FP/SIMD registers, which belong to partitions; its standard
/// library is built from source because this nightly ships none for it.
pub fn kernel_target(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64-unknown-none",
        Arch::Aarch64 => "aarch64-unknown-none-softfloat",
    }
}

/// Cargo arguments selecting the kernel's target (and building core/alloc where needed).
pub fn target_args(arch: Arch) -> Vec<&'static str> {
    let mut args = vec!["--target", kernel_target(arch)];
    if arch == Arch::Aarch64 {
        args.extend([
            "-Zbuild-std=core,alloc",
            "-Zbuild-std-features=compiler-builtins-mem",
        ]);
    }
    args
}

/// The cargo that runs xtask, so the pinned toolchain builds the kernel too.
pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Builds the kernel and returns the path of its ELF file.
pub fn kernel(opts: &BuildOpts) -> Result<PathBuf> {
    let profile = if opts.debug { "dev" } else { "release" };
    let status = cargo()
        .current_dir(root())
        .args([
            "build",
            "--package",
            "bulkhead-kernel",
            "--profile",
            profile,
        ])
        .args(target_args(opts.arch))
        .status()
        .context("running cargo build for the kernel")?;
    if !status.success() {
        bail!("building the {} kernel failed", opts.arch.name());
    }
    let dir = if opts.debug { "debug" } else { "release" };
    Ok(root()
        .join("target")
        .join(kernel_target(opts.arch))
        .join(dir)
        .join("bulkhead-kernel"))
}
