//! PMEM device (§5.19).

/// Feature bits (§5.19.3).
pub mod features {
    /// The region is a shared memory region (1.4).
    pub const SHMEM_REGION: u32 = 0;
}

/// Configuration layout (§5.19.4): byte offsets.
pub mod config {
    /// le64: guest physical start of the region.
    pub const START: usize = 0;
    /// le64: size.
    pub const SIZE: usize = 8;
}

/// The request queue (flush requests, §5.19.2).
pub const REQUEST_QUEUE: u16 = 0;
