//! Partition address spaces on aarch64 (TTBR0 per partition, ASIDs) arrive with the
//! aarch64-parity issue. Until then no address space can be made, so the kernel starts no
//! partition here and says so; xtask refuses to build a system image for aarch64.

use crate::exec::Perm;

/// Why a page could not be mapped.
#[expect(
    dead_code,
    reason = "used once partitions run on aarch64 (the aarch64-parity issue)"
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    OutOfMemory,
    BadAddress,
}

/// One partition's address space (none can be made yet).
#[derive(Debug)]
pub struct AddressSpace {
    _private: (),
}

impl AddressSpace {
    /// Always `None` until partitions run on aarch64.
    pub fn new() -> Option<Self> {
        None
    }

    /// Unreachable without an address space.
    pub fn map(&mut self, _va: u64, _phys: u64, _perm: Perm) -> Result<(), MapError> {
        Err(MapError::BadAddress)
    }

    /// Unreachable without an address space.
    pub fn translate(&self, _va: u64) -> Option<(u64, Perm)> {
        None
    }

    /// Unreachable without an address space.
    pub fn activate(&self) {}
}
