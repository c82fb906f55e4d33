//! Bootable images: BIOS or UEFI disk images made with the `bootloader` crate on x86_64, the
//! kernel ELF itself on aarch64 (QEMU's `-kernel` loads it; boards come later).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bootloader::{BootConfig, DiskImageBuilder};
use bootloader_boot_config::LevelFilter;

use crate::{Arch, BuildOpts, build};

/// What QEMU boots.
#[derive(Debug, Clone)]
pub enum Bootable {
    /// A raw disk image (x86_64), with BIOS or UEFI boot code.
    Disk { path: PathBuf, uefi: bool },
    /// A kernel ELF and the command line QEMU passes it in the device tree (aarch64).
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
            path: kernel.to_path_buf(),
            cmdline: cmdline.to_string(),
        }),
    }
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
