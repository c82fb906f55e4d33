//! Virtual disks: how a client's disk is described, and the translation and checks that keep a
//! client inside it.

use virtio::devices::blk;
use virtio::features::{Features, bits};

/// Sector size of every `sector` field (§5.2.6).
pub const SECTOR: u64 = blk::SECTOR_SIZE;

/// One client's virtual disk: `lba_count` sectors of the real disk from `lba_start`, read-only
/// or read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpec {
    /// First sector of the real disk exported.
    pub lba_start: u64,
    /// Sectors exported; the client's capacity.
    pub lba_count: u64,
    /// Whether the client may only read (VIRTIO_BLK_F_RO).
    pub read_only: bool,
}

/// Why a channel's configuration does not describe a usable virtual disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecError {
    /// `lba-start` is missing or not an integer.
    MissingStart,
    /// `lba-count` is missing, not an integer or zero.
    MissingCount,
    /// `access` is neither `"read-only"` nor `"read-write"`.
    BadAccess,
    /// The range runs past the end of the real disk.
    BeyondDisk {
        /// Sectors the real disk has.
        capacity: u64,
    },
    /// `disk` names another device than the server's.
    OtherDevice,
}

impl DiskSpec {
    /// Builds a spec from a channel's configuration values: `lba-start`, `lba-count`, `access`
    /// (absent: read-only, the safe default), checked against the real disk's capacity.
    pub fn from_config(
        lba_start: Option<u64>,
        lba_count: Option<u64>,
        access: Option<&str>,
        real_capacity: u64,
    ) -> Result<Self, SpecError> {
        let lba_start = lba_start.ok_or(SpecError::MissingStart)?;
        let lba_count = lba_count
            .filter(|&c| c > 0)
            .ok_or(SpecError::MissingCount)?;
        let read_only = match access {
            None | Some("read-only") => true,
            Some("read-write") => false,
            Some(_) => return Err(SpecError::BadAccess),
        };
        match lba_start.checked_add(lba_count) {
            Some(end) if end <= real_capacity => Ok(Self {
                lba_start,
                lba_count,
                read_only,
            }),
            _ => Err(SpecError::BeyondDisk {
                capacity: real_capacity,
            }),
        }
    }

    /// Translates a client request of `sectors` sectors at virtual `sector` into the real
    /// disk's sector, or `None` if any part of it lies outside the virtual disk.
    pub fn translate(&self, sector: u64, sectors: u64) -> Option<u64> {
        let end = sector.checked_add(sectors)?;
        if end > self.lba_count {
            return None;
        }
        self.lba_start.checked_add(sector)
    }

    /// What the server offers the client (§5.2.3): flush always, RO for a read-only disk,
    /// SEG_MAX (the device side parses at most 64 descriptors per chain), and the ring
    /// features the library's device side implements.
    pub fn features(&self) -> Features {
        let mut f = Features::from_bits(&[
            blk::features::FLUSH,
            blk::features::SEG_MAX,
            bits::EVENT_IDX,
            bits::INDIRECT_DESC,
            bits::RING_PACKED,
        ]);
        if self.read_only {
            f = f.with(blk::features::RO);
        }
        f
    }

    /// The configuration space the client reads (§5.2.4): capacity and seg_max; the rest is
    /// zero (fields of features not offered).
    pub fn config_space(&self) -> [u8; blk::config::SIZE] {
        let mut c = [0u8; blk::config::SIZE];
        c[blk::config::CAPACITY..blk::config::CAPACITY + 8]
            .copy_from_slice(&self.lba_count.to_le_bytes());
        // Header and status take two of the 64 segments a chain may have.
        let seg_max = (virtio::queue::MAX_CHAIN_SEGMENTS - 2) as u32;
        c[blk::config::SEG_MAX..blk::config::SEG_MAX + 4].copy_from_slice(&seg_max.to_le_bytes());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked_against_the_real_disk() {
        let rw = DiskSpec::from_config(Some(100), Some(50), Some("read-write"), 1000).unwrap();
        assert_eq!(
            rw,
            DiskSpec {
                lba_start: 100,
                lba_count: 50,
                read_only: false
            }
        );
        let ro = DiskSpec::from_config(Some(0), Some(1000), None, 1000).unwrap();
        assert!(ro.read_only, "no access key means read-only");
        assert_eq!(
            DiskSpec::from_config(Some(1), Some(1000), None, 1000),
            Err(SpecError::BeyondDisk { capacity: 1000 })
        );
        assert_eq!(
            DiskSpec::from_config(Some(u64::MAX), Some(2), None, u64::MAX),
            Err(SpecError::BeyondDisk { capacity: u64::MAX })
        );
        assert_eq!(
            DiskSpec::from_config(None, Some(1), None, 10),
            Err(SpecError::MissingStart)
        );
        assert_eq!(
            DiskSpec::from_config(Some(0), Some(0), None, 10),
            Err(SpecError::MissingCount)
        );
        assert_eq!(
            DiskSpec::from_config(Some(0), Some(1), Some("rw"), 10),
            Err(SpecError::BadAccess)
        );
    }

    #[test]
    fn translation_stays_inside_the_virtual_disk() {
        let d = DiskSpec {
            lba_start: 1000,
            lba_count: 100,
            read_only: false,
        };
        assert_eq!(d.translate(0, 1), Some(1000));
        assert_eq!(d.translate(99, 1), Some(1099));
        assert_eq!(d.translate(0, 100), Some(1000));
        assert_eq!(d.translate(0, 0), Some(1000));
        assert_eq!(d.translate(100, 0), Some(1100));
        assert_eq!(d.translate(99, 2), None);
        assert_eq!(d.translate(100, 1), None);
        assert_eq!(d.translate(u64::MAX, 1), None);
        assert_eq!(d.translate(1, u64::MAX), None);
    }

    #[test]
    fn features_and_config() {
        let d = DiskSpec {
            lba_start: 0,
            lba_count: 0x1234,
            read_only: true,
        };
        assert!(d.features().has(blk::features::RO));
        assert!(d.features().has(blk::features::FLUSH));
        assert!(
            !DiskSpec {
                read_only: false,
                ..d
            }
            .features()
            .has(blk::features::RO)
        );
        let c = d.config_space();
        assert_eq!(&c[0..8], &0x1234u64.to_le_bytes());
        assert_eq!(&c[12..16], &62u32.to_le_bytes());
    }
}
