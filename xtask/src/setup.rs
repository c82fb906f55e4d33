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

/// The oldest QEMU the project runs on: 10.0 brings virtio-sound, vhost-user-scmi and the
/// Raspberry Pi 4 machine (`-M raspi4b`), which later device classes and boards need.
pub const QEMU_MIN: (u32, u32) = (10, 0);
/// Where Debian 12 gets QEMU 10 from.
const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/bulkhead-bookworm-backports.sources";
const BACKPORTS: &str = "Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

/// `(major, minor)` from `QEMU emulator version 10.0.2 (...)`.
fn parse_qemu_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.split("version ").nth(1)?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The version of `program`, if it runs.
fn qemu_version(program: &str) -> Option<(u32, u32)> {
    let out = Command::new(program).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| parse_qemu_version(&String::from_utf8_lossy(&out.stdout)))?
}

/// What is missing: QEMU for either architecture at `QEMU_MIN` or later, or OVMF.
fn qemu_missing() -> Vec<String> {
    let mut missing = Vec::new();
    for program in ["qemu-system-x86_64", "qemu-system-aarch64"] {
        match qemu_version(program) {
            Some(v) if v >= QEMU_MIN => {}
            Some((major, minor)) => missing.push(format!(
                "{program} {major}.{minor} (older than {}.{})",
                QEMU_MIN.0, QEMU_MIN.1
            )),
            None => missing.push(format!("{program} (not found)")),
        }
    }
    if !Path::new(OVMF).exists() {
        missing.push(format!("OVMF ({OVMF})"));
    }
    missing
}

/// The Debian release codename of this host, if it is Debian.
fn debian_codename() -> Option<String> {
    let release = std::fs::read_to_string("/etc/os-release").ok()?;
    let field = |key: &str| {
        release
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_string())
    };
    (field("ID=")? == "debian").then(|| field("VERSION_CODENAME="))?
}

/// Ensures QEMU (>= `QEMU_MIN`) for x86_64 and aarch64 and OVMF are installed, installing them
/// with apt-get (as root, or through passwordless sudo) when they are not: on Debian 12 from
/// bookworm-backports, whose suite it adds to apt's sources; elsewhere from the host's own
/// suites, checking the version after.
pub fn ensure_qemu() -> Result<()> {
    let missing = qemu_missing();
    if missing.is_empty() {
        return Ok(());
    }
    let packages = QEMU_PACKAGES.join(" ");
    let codename = debian_codename();
    let bookworm = codename.as_deref() == Some("bookworm");
    let how = if bookworm {
        format!(
            "add the bookworm-backports suite to apt's sources, then `apt-get install -t bookworm-backports --no-install-recommends {packages}`"
        )
    } else {
        format!(
            "install QEMU {}.{} or later with qemu-system-x86_64, qemu-system-aarch64 and OVMF at {OVMF} (on Debian or Ubuntu: `apt-get install --no-install-recommends {packages}` where the release has QEMU {}.{})",
            QEMU_MIN.0, QEMU_MIN.1, QEMU_MIN.0, QEMU_MIN.1
        )
    };
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
            "QEMU is missing or too old ({}) and cannot be installed from here: {how}",
            missing.join(", ")
        );
    }
    eprintln!(
        "xtask: {} missing; installing {packages} with apt-get{} (QEMU {}.{} and OVMF are needed to boot Bulkhead)",
        missing.join(", "),
        if bookworm {
            " from bookworm-backports"
        } else {
            ""
        },
        QEMU_MIN.0,
        QEMU_MIN.1
    );
    let run = |args: &[&str]| -> Result<()> {
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.args(args);
            c
        } else {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        };
        let status = cmd
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .with_context(|| format!("running {}", args[0]))?;
        if !status.success() {
            bail!("{} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    if bookworm && !Path::new(BACKPORTS_SOURCES).exists() {
        eprintln!("xtask: adding bookworm-backports to apt's sources ({BACKPORTS_SOURCES})");
        if sudo {
            let mut child = Command::new("sudo")
                .args(["tee", BACKPORTS_SOURCES])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .context("running sudo tee")?;
            use std::io::Write;
            child
                .stdin
                .take()
                .context("sudo tee's input")?
                .write_all(BACKPORTS.as_bytes())?;
            child.wait()?;
        } else {
            std::fs::write(BACKPORTS_SOURCES, BACKPORTS)
                .with_context(|| format!("writing {BACKPORTS_SOURCES}"))?;
        }
    }
    run(&["apt-get", "update", "-q"])?;
    let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    if bookworm {
        install.extend(["-t", "bookworm-backports"]);
    }
    install.extend(QEMU_PACKAGES);
    run(&install)?;
    let missing = qemu_missing();
    if !missing.is_empty() {
        bail!(
            "apt-get finished but {} still missing: {how}",
            missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions_are_read_from_the_banner() {
        assert_eq!(
            parse_qemu_version(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"
            ),
            Some((10, 0))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u18)"),
            Some((7, 2))
        );
        assert_eq!(parse_qemu_version("something else"), None);
        assert!(parse_qemu_version("QEMU emulator version 7.2.15").unwrap() < QEMU_MIN);
    }
}
