//! Bootable images: BIOS or UEFI disk images made with the `bootloader` crate on x86_64; on
//! aarch64 a raw arm64 Image (the Linux boot protocol: firmware passes the device tree's address
//! in x0), which QEMU's `-kernel` and U-Boot's `booti` load alike, and the system image as its
//! initrd (QEMU's `-initrd`, U-Boot's `booti`'s second argument), which the device tree's
//! `/chosen` node locates.

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
    /// A raw kernel Image, the system image as its initrd, and the command line QEMU passes
    /// in the device tree (aarch64; the system image carries the same command line).
    Kernel {
        path: PathBuf,
        initrd: PathBuf,
        cmdline: String,
    },
}

impl Bootable {
    pub fn path(&self) -> &Path {
        match self {
            Bootable::Disk { path, .. } | Bootable::Kernel { path, .. } => path,
        }
    }
}

/// Validates the system description (if any), builds the kernel and every program, and makes
/// a bootable image carrying the system image and `cmdline`. A description that fails
/// validation stops here: no image is made.
pub fn bootable(
    opts: &BuildOpts,
    uefi: bool,
    cmdline: &str,
    system: Option<&str>,
) -> Result<Bootable> {
    let payload = payload(opts.arch, cmdline, system)?;
    let kernel = build::kernel(opts)?;
    from_kernel(
        &kernel,
        opts.arch,
        uefi,
        cmdline,
        &payload,
        system.unwrap_or("none"),
    )
}

/// The boot payload: the system image built from `system`, or one with only `cmdline`.
pub fn payload(arch: Arch, cmdline: &str, system: Option<&str>) -> Result<Vec<u8>> {
    let Some(name) = system else {
        return Ok(crate::system::empty_image(cmdline));
    };
    let description = crate::system::load(&crate::system::description_path(name))?;
    if !description.arches.iter().any(|a| a.name() == arch.name()) {
        let listed: Vec<&str> = description.arches.iter().map(|a| a.name()).collect();
        bail!(
            "system {} is described for {} only (its `arch` list), not {}",
            description.name,
            listed.join(", "),
            arch.name()
        );
    }
    crate::system::image(&description, arch, cmdline)
}

/// Makes a bootable image for `arch` from an already built kernel and boot payload.
pub fn from_kernel(
    kernel: &Path,
    arch: Arch,
    uefi: bool,
    cmdline: &str,
    payload: &[u8],
    tag: &str,
) -> Result<Bootable> {
    match arch {
        Arch::X86_64 => disk_image(kernel, uefi, payload, &image_name(uefi, tag, cmdline)),
        Arch::Aarch64 => {
            let dir = build::out_dir();
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let initrd = dir.join(format!("aarch64-{}.system", tag_of(tag, cmdline)));
            fs::write(&initrd, payload).context("writing the system image")?;
            Ok(Bootable::Kernel {
                path: raw_image(kernel)?,
                initrd,
                cmdline: cmdline.to_string(),
            })
        }
    }
}

/// A file-name tag unique to a system and command line, so images for different systems and
/// command lines (one per integration test) coexist.
fn tag_of(system: &str, cmdline: &str) -> String {
    format!("{system}-{cmdline}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(64)
        .collect()
}

fn image_name(uefi: bool, system: &str, cmdline: &str) -> String {
    let tag = tag_of(system, cmdline);
    format!("x86_64-{}-{tag}.img", if uefi { "uefi" } else { "bios" })
}

/// Makes a disk image from a kernel ELF; the boot loader hands `payload` (the system image) to
/// the kernel as its ramdisk.
pub fn disk_image(kernel: &Path, uefi: bool, payload: &[u8], name: &str) -> Result<Bootable> {
    let dir = build::out_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ramdisk = dir.join(format!("{name}.system"));
    fs::write(&ramdisk, payload).context("writing the system image")?;
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

/// Converts a kernel ELF to a raw Image next to it, with the toolchain's llvm-objcopy.
///
/// Why not boot the ELF: QEMU puts an ELF kernel's device tree below the kernel, where its
/// 1 MiB tree does not fit under the 0x40080000 load address, and passes no address in x0.
pub fn raw_image(kernel: &Path) -> Result<PathBuf> {
    let image = kernel.with_extension("img");
    // Every aarch64 test boots the same kernel: convert it only when the ELF is newer.
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(elf), Some(img)) = (modified(kernel), modified(&image))
        && img >= elf
    {
        return Ok(image);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_description_yields_no_image() {
        let dir = std::env::temp_dir().join(format!("bulkhead-invalid-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broken.toml");
        // A window that runs past the major frame.
        fs::write(
            &path,
            "[system]\nname = \"broken\"\narch = [\"x86_64\"]\n\n[partitions.a]\nprogram = \"hello\"\n\
             memory = \"64 KiB\"\nthreads = [{ name = \"main\", priority = 1 }]\n\n[schedule]\n\
             major-frame = \"10 ms\"\nwindows = [{ partition = \"a\", length = \"20 ms\" }]\n",
        )
        .unwrap();
        let err = payload(Arch::X86_64, "", Some(path.to_str().unwrap())).unwrap_err();
        assert!(
            err.to_string()
                .contains("is not a valid system description; no image was built"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_system_is_built_only_for_the_architectures_it_lists() {
        let dir = std::env::temp_dir().join(format!("bulkhead-arch-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x86-only.toml");
        fs::write(
            &path,
            "[system]\nname = \"x86-only\"\narch = [\"x86_64\"]\n\n[partitions.a]\nprogram = \"hello\"\n\
             memory = \"64 KiB\"\nthreads = [{ name = \"main\", priority = 1 }]\n\n[schedule]\n\
             major-frame = \"10 ms\"\nwindows = [{ partition = \"a\", length = \"10 ms\" }]\n",
        )
        .unwrap();
        let err = payload(Arch::Aarch64, "", Some(path.to_str().unwrap())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "system x86-only is described for x86_64 only (its `arch` list), not aarch64"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
