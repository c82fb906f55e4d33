//! IOMMU device (§5.13).

/// Feature bits (§5.13.3).
pub mod features {
    /// `input_range` is valid.
    pub const INPUT_RANGE: u32 = 0;
    /// `domain_range` is valid.
    pub const DOMAIN_RANGE: u32 = 1;
    /// Map and unmap requests.
    pub const MAP_UNMAP: u32 = 2;
    /// Bypass when no domain is attached (legacy behaviour).
    pub const BYPASS: u32 = 3;
    /// Probe requests.
    pub const PROBE: u32 = 4;
    /// VIRTIO_IOMMU_MAP_F_MMIO flag.
    pub const MMIO: u32 = 5;
    /// `bypass` configuration field.
    pub const BYPASS_CONFIG: u32 = 6;
}

/// Configuration layout (§5.13.4): byte offsets.
pub mod config {
    /// le64: supported page sizes.
    pub const PAGE_SIZE_MASK: usize = 0;
    /// le64 start, le64 end: input address range.
    pub const INPUT_RANGE: usize = 8;
    /// le32 start, le32 end: domain ID range.
    pub const DOMAIN_RANGE: usize = 24;
    /// le32: probe buffer size.
    pub const PROBE_SIZE: usize = 32;
    /// u8: global bypass.
    pub const BYPASS: usize = 36;
}

/// Queue indexes (§5.13.2).
pub mod queue {
    /// requestq.
    pub const REQUEST: u16 = 0;
    /// eventq.
    pub const EVENT: u16 = 1;
}
