//! Bootable images: BIOS or UEFI disk images made with the `bootloader` crate on x86_64; on
//! aarch64 a raw arm64 Image (the Linux boot protocol: firmware passes the device tree's address
//! in x0), which QEMU's `-kernel` and U-Boot's `booti` load alike.

use std::fs;
use std::path::{Path, PathBuf};

use std::process::Command;

use anyhow::{Context, Result, bail};
use bootloader::{BootConfig, DiskImageBuilder};
use bootloader_boot_config::LevelFilter;

use crate::{Arch, BuildOpts, build};

/// What QEMU boots.
#[derive(Debug, Clone)]
pub enum Bootable {
    /// A raw disk image (x86_64), with BIOS or UEFI boot code.
    Disk { path: PathBuf, uefi: bool },
    /// A raw kernel Image and the command line QEMU passes it in the device tree (aarch64).
    Kernel { path: PathBuf, cmdline: String },
}

impl Bootable {
    pub fn path(&self) -> &Path {
        match self {
            Bootable::Disk { path, .. } | Bootable::Kernel { path, .. } => path,
        }
    }
}

/// Builds the kernel and makes a bootable image carrying `cmdline`.
pub fn bootable(opts: &BuildOpts, uefi: bool, cmdline: &str) -> Result<Bootable> {
    let kernel = build::kernel(opts)?;
    from_kernel(&kernel, opts.arch, uefi, cmdline)
}

/// Makes a bootable image for `arch` from an already built kernel.
pub fn from_kernel(kernel: &Path, arch: Arch, uefi: bool, cmdline: &str) -> Result<Bootable> {
    match arch {
        Arch::X86_64 => disk_image(kernel, uefi, cmdline, &image_name(uefi, cmdline)),
        Arch::Aarch64 => Ok(Bootable::Kernel {
            path: raw_image(kernel)?,
            cmdline: cmdline.to_string(),
        }),
    }
}

/// Converts a kernel ELF to a raw Image next to it, with the toolchain's llvm-objcopy.
///
/// Why not boot the ELF: QEMU puts an ELF kernel's device tree below the kernel, where its
/// 1 MiB tree does not fit under the 0x40080000 load address, and passes no address in x0.
pub fn raw_image(kernel: &Path) -> Result<PathBuf> {
    let rustc = |arg: &str| -> Result<String> {
        let out = Command::new("rustc")
            .args(["--print", arg])
            .output()
            .context("running rustc")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let objcopy = Path::new(&rustc("sysroot")?)
        .join("lib/rustlib")
        .join(rustc("host-tuple")?)
        .join("bin/llvm-objcopy");
    let image = kernel.with_extension("img");
    let status = Command::new(&objcopy)
        .args(["-O", "binary"])
        .arg(kernel)
        .arg(&image)
        .status()
        .with_context(|| {
            format!(
                "running {} (is llvm-tools-preview installed?)",
                objcopy.display()
            )
        })?;
    if !status.success() {
        bail!("llvm-objcopy failed on {}", kernel.display());
    }
    Ok(image)
}

/// A file name unique to the image's contents, so images for different command lines (one
/// per integration test) coexist.
fn image_name(uefi: bool, cmdline: &str) -> String {
    let tag: String = cmdline
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(48)
        .collect();
    format!(
        "x86_64-{}-{}.img",
        if uefi { "uefi" } else { "bios" },
        if tag.is_empty() { "default" } else { &tag }
    )
}

/// Makes a disk image from a kernel ELF. The boot loader hands the ramdisk to the kernel, which
/// reads its command line from it (the system image will join it there).
pub fn disk_image(kernel: &Path, uefi: bool, cmdline: &str, name: &str) -> Result<Bootable> {
    let dir = build::out_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ramdisk = dir.join(format!("{name}.cmdline"));
    fs::write(&ramdisk, cmdline.as_bytes()).context("writing the command line")?;
    let path = dir.join(name);
    let mut builder = DiskImageBuilder::new(kernel.to_path_buf());
    builder.set_ramdisk(ramdisk);
    // The boot loader's own log is noise on the console; keep its warnings and errors.
    let mut config = BootConfig::default();
    config.log_level = LevelFilter::Warn;
    config.frame_buffer_logging = false;
    builder.set_boot_config(&config);
    if uefi {
        builder.create_uefi_image(&path)
    } else {
        builder.create_bios_image(&path)
    }
    .with_context(|| format!("creating {}", path.display()))?;
    Ok(Bootable::Disk { path, uefi })
}
