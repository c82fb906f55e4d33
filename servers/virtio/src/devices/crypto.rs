//! Crypto device (§5.9).

/// Feature bits (§5.9.3).
pub mod features {
    /// Revision 1.
    pub const REVISION_1: u32 = 0;
    /// Stateless cipher mode.
    pub const CIPHER_STATELESS_MODE: u32 = 1;
    /// Stateless hash mode.
    pub const HASH_STATELESS_MODE: u32 = 2;
    /// Stateless MAC mode.
    pub const MAC_STATELESS_MODE: u32 = 3;
    /// Stateless AEAD mode.
    pub const AEAD_STATELESS_MODE: u32 = 4;
    /// Stateless asymmetric cipher mode (1.4).
    pub const AKCIPHER_STATELESS_MODE: u32 = 5;
}

/// Configuration layout (§5.9.4): byte offsets, le32 unless noted.
pub mod config {
    /// Status bits.
    pub const STATUS: usize = 0;
    /// Maximum data queues.
    pub const MAX_DATAQUEUES: usize = 4;
    /// Supported services bitmap.
    pub const CRYPTO_SERVICES: usize = 8;
    /// Cipher algorithms, low word.
    pub const CIPHER_ALGO_L: usize = 12;
    /// Cipher algorithms, high word.
    pub const CIPHER_ALGO_H: usize = 16;
    /// Hash algorithms.
    pub const HASH_ALGO: usize = 20;
    /// MAC algorithms, low word.
    pub const MAC_ALGO_L: usize = 24;
    /// MAC algorithms, high word.
    pub const MAC_ALGO_H: usize = 28;
    /// AEAD algorithms.
    pub const AEAD_ALGO: usize = 32;
    /// Maximum cipher key length.
    pub const MAX_CIPHER_KEY_LEN: usize = 36;
    /// Maximum authentication key length.
    pub const MAX_AUTH_KEY_LEN: usize = 40;
    /// Asymmetric cipher algorithms (1.4; reserved in 1.2).
    pub const AKCIPHER_ALGO: usize = 44;
    /// le64: maximum request size.
    pub const MAX_SIZE: usize = 48;
}
