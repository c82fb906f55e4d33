//! Device types (§5): IDs, feature bits, configuration layouts, and for the devices the
//! mission drives first (block, network, console, entropy) the request and response formats.
//!
//! Configuration layouts are given as byte offsets into device configuration space, to be read
//! with [`crate::transport::read_config`] (which checks the generation counter). Fields are
//! little-endian (§2.5).

pub mod balloon;
pub mod blk;
pub mod console;
pub mod crypto;
pub mod entropy;
pub mod fs;
pub mod gpio;
pub mod gpu;
pub mod i2c;
pub mod input;
pub mod iommu;
pub mod mem;
pub mod net;
pub mod p9;
pub mod pmem;
pub mod rpmb;
pub mod scmi;
pub mod scsi;
pub mod sound;
pub mod vsock;

/// Device IDs (§5 "Device Types", table of Device IDs).
pub mod id {
    /// Network card (§5.1).
    pub const NET: u32 = 1;
    /// Block device (§5.2).
    pub const BLOCK: u32 = 2;
    /// Console (§5.3).
    pub const CONSOLE: u32 = 3;
    /// Entropy source (§5.4).
    pub const ENTROPY: u32 = 4;
    /// Traditional memory balloon (§5.5).
    pub const BALLOON: u32 = 5;
    /// SCSI host (§5.6).
    pub const SCSI: u32 = 8;
    /// 9P transport.
    pub const NINE_P: u32 = 9;
    /// GPU (§5.7).
    pub const GPU: u32 = 16;
    /// Input (§5.8).
    pub const INPUT: u32 = 18;
    /// Socket (vsock, §5.10).
    pub const VSOCK: u32 = 19;
    /// Crypto (§5.9).
    pub const CRYPTO: u32 = 20;
    /// IOMMU (§5.13).
    pub const IOMMU: u32 = 23;
    /// Memory device (§5.15).
    pub const MEMORY: u32 = 24;
    /// Sound (§5.14).
    pub const SOUND: u32 = 25;
    /// File system (§5.11).
    pub const FS: u32 = 26;
    /// Persistent memory (§5.19).
    pub const PMEM: u32 = 27;
    /// RPMB (§5.12).
    pub const RPMB: u32 = 28;
    /// SCMI (§5.17).
    pub const SCMI: u32 = 32;
    /// I2C adapter (§5.16).
    pub const I2C: u32 = 34;
    /// GPIO (§5.18).
    pub const GPIO: u32 = 41;
}

/// Reads a little-endian `u16` at `offset` of `bytes`, if it is long enough.
pub(crate) fn le16(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(offset..offset + 2)?.try_into().ok()?,
    ))
}

/// Reads a little-endian `u32` at `offset` of `bytes`, if it is long enough.
pub(crate) fn le32(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

/// Reads a little-endian `u64` at `offset` of `bytes`, if it is long enough.
pub(crate) fn le64(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(offset..offset + 8)?.try_into().ok()?,
    ))
}
