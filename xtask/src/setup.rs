//! Installs what the other commands need, saying what it installs.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian packages providing QEMU for both architectures and OVMF. `--no-install-recommends`
/// matters: the recommends pull QEMU packages of mixed versions that fail to install.
const QEMU_PACKAGES: [&str; 3] = ["qemu-system-x86", "qemu-system-arm", "ovmf"];
/// OVMF firmware image used for UEFI boots.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Ensures the pinned toolchain has the components the build needs. `rustup toolchain install`
/// (which reads rust-toolchain.toml) runs before cargo in the quick-start commands; this only
/// checks, because a running cargo cannot replace its own toolchain.
pub fn ensure_toolchain() -> Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc")?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let rust_src = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
    if !rust_src.exists() {
        bail!(
            "the toolchain lacks rust-src; run `rustup toolchain install` in the repository root"
        );
    }
    Ok(())
}

/// Ensures QEMU for x86_64 and aarch64 and OVMF are installed, installing them with apt-get
/// (as root, or through passwordless sudo) when they are not.
pub fn ensure_qemu() -> Result<()> {
    let missing = !on_path("qemu-system-x86_64")
        || !on_path("qemu-system-aarch64")
        || !Path::new(OVMF).exists();
    if !missing {
        return Ok(());
    }
    let packages = QEMU_PACKAGES.join(" ");
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let sudo = !is_root
        && Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !on_path("apt-get") || (!is_root && !sudo) {
        bail!(
            "QEMU is missing and cannot be installed from here: install the Debian/Ubuntu packages \
             `{packages}` (apt-get install --no-install-recommends {packages}), or QEMU >= 7.2 with \
             qemu-system-x86_64, qemu-system-aarch64 and OVMF at {OVMF}"
        );
    }
    eprintln!(
        "xtask: installing {packages} with apt-get (QEMU and OVMF are needed to boot Bulkhead)"
    );
    let apt = |args: &[&str]| -> Result<()> {
        let mut cmd = if sudo {
            Command::new("sudo")
        } else {
            Command::new("apt-get")
        };
        if sudo {
            cmd.arg("apt-get");
        }
        let status = cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(QEMU_PACKAGES);
    apt(&install)?;
    if !on_path("qemu-system-x86_64")
        || !on_path("qemu-system-aarch64")
        || !Path::new(OVMF).exists()
    {
        bail!("apt-get finished but QEMU or OVMF is still missing");
    }
    Ok(())
}
