//! `cargo xtask bench`: performance figures. Each figure is printed next to a reference
//! measured in the same run (wall-clock times on these machines drift too much to compare
//! with an old figure).

use anyhow::{Result, bail};

use crate::build;

pub fn run() -> Result<()> {
    println!(
        "xtask: VirtIO rings through the simulated block device (split vs packed, EVENT_IDX off vs on)"
    );
    let status = build::cargo()
        .current_dir(build::root())
        .args([
            "bench",
            "--quiet",
            "-p",
            "bulkhead-virtio",
            "--bench",
            "rings",
        ])
        .status()?;
    if !status.success() {
        bail!("the VirtIO ring benchmark failed");
    }
    Ok(())
}
