//! Links the aarch64 kernel with its linker script; x86_64 needs none (the boot loader loads
//! the ELF wherever its configuration says).

fn main() {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch == "aarch64" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let script = format!("{dir}/src/arch/aarch64/link.ld");
        println!("cargo:rustc-link-arg=-T{script}");
        println!("cargo:rustc-link-arg=-zmax-page-size=4096");
        println!("cargo:rerun-if-changed={script}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
