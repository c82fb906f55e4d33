//! Traditional memory balloon (§5.5).

/// Feature bits (§5.5.3).
pub mod features {
    /// Host must be told before pages are used from the balloon.
    pub const MUST_TELL_HOST: u32 = 0;
    /// Statistics queue present.
    pub const STATS_VQ: u32 = 1;
    /// Deflate on guest out-of-memory.
    pub const DEFLATE_ON_OOM: u32 = 2;
    /// Free page hinting queue.
    pub const FREE_PAGE_HINT: u32 = 3;
    /// Page poisoning value in `poison_val`.
    pub const PAGE_POISON: u32 = 4;
    /// Free page reporting queue.
    pub const PAGE_REPORTING: u32 = 5;
}

/// Configuration layout (§5.5.4): byte offsets.
pub mod config {
    /// le32: pages the device wants in the balloon.
    pub const NUM_PAGES: usize = 0;
    /// le32: pages actually in the balloon (driver writes).
    pub const ACTUAL: usize = 4;
    /// le32: free page hint command id.
    pub const FREE_PAGE_HINT_CMD_ID: usize = 8;
    /// le32: poison value.
    pub const POISON_VAL: usize = 12;
}

/// Queue indexes (§5.5.2).
pub mod queue {
    /// inflateq.
    pub const INFLATE: u16 = 0;
    /// deflateq.
    pub const DEFLATE: u16 = 1;
    /// statsq (STATS_VQ).
    pub const STATS: u16 = 2;
}

/// Page size for page frame numbers in the queues (§5.5.6).
pub const PAGE_SIZE: u64 = 4096;
