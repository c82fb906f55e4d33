//! The physical frame allocator: one bit per 4 KiB frame of usable RAM.
//!
//! A bitmap rather than a free list because the kernel allocates only while it boots (partition
//! memory, page tables, stacks) and never afterwards: a bitmap needs no memory inside the frames it
//! manages, can hand out physically contiguous runs (DMA regions, heaps), and detects double
//! frees. Its storage is carved out of usable RAM by the caller, using [`bitmap_placement`].

use super::{PAGE_SIZE, PhysRegion, RegionKind};

/// At most this many usable ranges are managed; the rest of a longer map is ignored (and
/// reported through [`FrameAllocator::ignored_ranges`]).
pub const MAX_RANGES: usize = 64;

/// Frames below this address are never handed out: the first MiB holds real-mode firmware data
/// on x86 and a null frame is a classic source of silent bugs.
pub const LOWEST_ALLOCATABLE: u64 = 0x10_0000;

/// Why a frame operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The address is not 4 KiB aligned.
    Misaligned,
    /// The address is not in any managed range.
    NotManaged,
    /// The frame is already free.
    DoubleFree,
    /// The bitmap storage is smaller than [`bitmap_words`] requires.
    BitmapTooSmall,
}

#[derive(Clone, Copy, Debug, Default)]
struct Range {
    start: u64,
    frames: u64,
    /// Index of this range's first bit in the bitmap.
    first_bit: u64,
}

/// Iterates the page-aligned usable ranges of a map, clipped below [`LOWEST_ALLOCATABLE`].
fn usable_ranges(regions: &[PhysRegion]) -> impl Iterator<Item = (u64, u64)> + '_ {
    regions
        .iter()
        .filter(|r| r.kind == RegionKind::Usable)
        .filter_map(|r| {
            let clipped = PhysRegion {
                start: r.start.max(LOWEST_ALLOCATABLE),
                ..*r
            };
            clipped.page_aligned()
        })
        .take(MAX_RANGES)
}

/// Number of 64-bit bitmap words needed to manage the usable RAM of `regions`.
pub fn bitmap_words(regions: &[PhysRegion]) -> usize {
    let frames: u64 = usable_ranges(regions)
        .map(|(s, e)| (e - s) / PAGE_SIZE)
        .sum();
    frames.div_ceil(64) as usize
}

/// Chooses where the bitmap itself lives: the start of the first usable range large enough,
/// returned as `(physical address, bytes)` with bytes rounded up to whole pages.
pub fn bitmap_placement(regions: &[PhysRegion]) -> Option<(u64, u64)> {
    let bytes = (bitmap_words(regions) as u64 * 8).next_multiple_of(PAGE_SIZE);
    usable_ranges(regions)
        .find(|(s, e)| e - s >= bytes)
        .map(|(s, _)| (s, bytes))
}

/// Hands out and takes back 4 KiB physical frames of usable RAM.
#[derive(Debug)]
pub struct FrameAllocator<'a> {
    ranges: [Range; MAX_RANGES],
    range_count: usize,
    ignored_ranges: usize,
    /// One bit per frame; a set bit means free.
    bitmap: &'a mut [u64],
    free_frames: u64,
    total_frames: u64,
}

impl<'a> FrameAllocator<'a> {
    /// Builds an allocator in which every usable frame of `regions` is free. `bitmap` must hold
    /// at least [`bitmap_words`] words; its old contents are ignored.
    pub fn new(regions: &[PhysRegion], bitmap: &'a mut [u64]) -> Result<Self, FrameError> {
        if bitmap.len() < bitmap_words(regions) {
            return Err(FrameError::BitmapTooSmall);
        }
        let mut this = Self {
            ranges: [Range::default(); MAX_RANGES],
            range_count: 0,
            ignored_ranges: regions
                .iter()
                .filter(|r| r.kind == RegionKind::Usable && r.page_aligned().is_some())
                .count()
                .saturating_sub(MAX_RANGES),
            bitmap,
            free_frames: 0,
            total_frames: 0,
        };
        this.bitmap.fill(0);
        for (start, end) in usable_ranges(regions) {
            let frames = (end - start) / PAGE_SIZE;
            this.ranges[this.range_count] = Range {
                start,
                frames,
                first_bit: this.total_frames,
            };
            this.range_count += 1;
            for bit in this.total_frames..this.total_frames + frames {
                this.set_free(bit, true);
            }
            this.total_frames += frames;
        }
        this.free_frames = this.total_frames;
        Ok(this)
    }

    /// Usable ranges beyond [`MAX_RANGES`] that were left unmanaged.
    pub fn ignored_ranges(&self) -> usize {
        self.ignored_ranges
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> u64 {
        self.free_frames
    }

    /// Frames managed in all.
    pub fn total_frames(&self) -> u64 {
        self.total_frames
    }

    /// Whether `[start, end)` overlaps memory this allocator manages (RAM that is or may be
    /// handed out), which must never be mapped as something else, such as device registers.
    pub fn overlaps_managed(&self, start: u64, end: u64) -> bool {
        self.ranges[..self.range_count].iter().any(|r| {
            let r_end = r.start + r.frames * PAGE_SIZE;
            start < r_end && r.start < end
        })
    }

    /// Marks every managed frame overlapping `[start, end)` as in use (for example the bitmap's
    /// own storage). Frames already in use stay so.
    pub fn reserve(&mut self, start: u64, end: u64) {
        for i in 0..self.range_count {
            let r = self.ranges[i];
            let r_end = r.start + r.frames * PAGE_SIZE;
            let lo = start.max(r.start) & !(PAGE_SIZE - 1);
            let hi = end.min(r_end);
            let mut addr = lo.max(r.start);
            while addr < hi {
                let bit = r.first_bit + (addr - r.start) / PAGE_SIZE;
                if self.is_free(bit) {
                    self.set_free(bit, false);
                    self.free_frames -= 1;
                }
                addr += PAGE_SIZE;
            }
        }
    }

    /// Allocates one frame; returns its physical address.
    pub fn alloc(&mut self) -> Option<u64> {
        self.alloc_contiguous(1)
    }

    /// Allocates `count` physically contiguous frames (lowest address first); returns the
    /// address of the first. `None` if no run that long is free or `count` is zero.
    pub fn alloc_contiguous(&mut self, count: u64) -> Option<u64> {
        if count == 0 || count > self.free_frames {
            return None;
        }
        for i in 0..self.range_count {
            let r = self.ranges[i];
            let mut run = 0;
            for frame in 0..r.frames {
                if self.is_free(r.first_bit + frame) {
                    run += 1;
                    if run == count {
                        let first = frame + 1 - count;
                        for f in first..=frame {
                            self.set_free(r.first_bit + f, false);
                        }
                        self.free_frames -= count;
                        return Some(r.start + first * PAGE_SIZE);
                    }
                } else {
                    run = 0;
                }
            }
        }
        None
    }

    /// Returns a frame obtained from [`alloc`](Self::alloc) to the pool.
    pub fn free(&mut self, addr: u64) -> Result<(), FrameError> {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(FrameError::Misaligned);
        }
        let bit = self.bit_of(addr).ok_or(FrameError::NotManaged)?;
        if self.is_free(bit) {
            return Err(FrameError::DoubleFree);
        }
        self.set_free(bit, true);
        self.free_frames += 1;
        Ok(())
    }

    fn bit_of(&self, addr: u64) -> Option<u64> {
        self.ranges[..self.range_count]
            .iter()
            .find(|r| addr >= r.start && addr < r.start + r.frames * PAGE_SIZE)
            .map(|r| r.first_bit + (addr - r.start) / PAGE_SIZE)
    }

    fn is_free(&self, bit: u64) -> bool {
        self.bitmap[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    fn set_free(&mut self, bit: u64, free: bool) {
        let word = &mut self.bitmap[(bit / 64) as usize];
        if free {
            *word |= 1 << (bit % 64);
        } else {
            *word &= !(1 << (bit % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn usable(start: u64, end: u64) -> PhysRegion {
        PhysRegion {
            start,
            end,
            kind: RegionKind::Usable,
        }
    }

    fn map() -> Vec<PhysRegion> {
        vec![
            usable(0x1000, 0x9f000), // entirely below LOWEST_ALLOCATABLE: ignored
            PhysRegion {
                start: 0x100000,
                end: 0x200000,
                kind: RegionKind::Loaded,
            },
            usable(0x200000, 0x210000), // 16 frames
            usable(0x300800, 0x305000), // 0x301000..0x305000: 4 frames
        ]
    }

    #[test]
    fn counts_only_aligned_usable_frames_above_1mib() {
        let m = map();
        let mut words = vec![0u64; bitmap_words(&m)];
        let fa = FrameAllocator::new(&m, &mut words).unwrap();
        assert_eq!(fa.total_frames(), 20);
        assert_eq!(fa.free_frames(), 20);
    }

    #[test]
    fn knows_which_ranges_it_manages() {
        let m = map();
        let mut words = vec![0u64; bitmap_words(&m)];
        let fa = FrameAllocator::new(&m, &mut words).unwrap();
        assert!(fa.overlaps_managed(0x20f000, 0x210000));
        assert!(fa.overlaps_managed(0x1ff000, 0x201000));
        assert!(!fa.overlaps_managed(0x210000, 0x300000));
        assert!(fa.overlaps_managed(0x304000, 0xfee0_0000));
        assert!(!fa.overlaps_managed(0xfebd_0000, 0xfebd_4000));
    }

    #[test]
    fn allocates_distinct_frames_until_exhausted() {
        let m = map();
        let mut words = vec![0u64; bitmap_words(&m)];
        let mut fa = FrameAllocator::new(&m, &mut words).unwrap();
        let mut got: Vec<u64> = (0..20).map(|_| fa.alloc().unwrap()).collect();
        assert_eq!(fa.alloc(), None);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 20);
        assert!(got.iter().all(|a| a % PAGE_SIZE == 0 && *a >= 0x200000));
        assert!(got.contains(&0x301000) && !got.contains(&0x300000));
    }

    #[test]
    fn free_detects_misuse() {
        let m = map();
        let mut words = vec![0u64; bitmap_words(&m)];
        let mut fa = FrameAllocator::new(&m, &mut words).unwrap();
        let a = fa.alloc().unwrap();
        assert_eq!(fa.free(a + 1), Err(FrameError::Misaligned));
        assert_eq!(fa.free(0x100000), Err(FrameError::NotManaged));
        assert_eq!(fa.free(a), Ok(()));
        assert_eq!(fa.free(a), Err(FrameError::DoubleFree));
        assert_eq!(fa.free_frames(), 20);
    }

    #[test]
    fn contiguous_runs_skip_holes() {
        let m = map();
        let mut words = vec![0u64; bitmap_words(&m)];
        let mut fa = FrameAllocator::new(&m, &mut words).unwrap();
        fa.reserve(0x205000, 0x206000); // a hole in the first range
        assert_eq!(fa.free_frames(), 19);
        assert_eq!(fa.alloc_contiguous(5), Some(0x200000));
        assert_eq!(fa.alloc_contiguous(10), Some(0x206000));
        assert_eq!(
            fa.alloc_contiguous(5),
            None,
            "only 4 frames left in any run"
        );
        assert_eq!(fa.alloc_contiguous(4), Some(0x301000));
        assert_eq!(fa.alloc_contiguous(0), None);
        assert_eq!(fa.free_frames(), 0);
    }

    #[test]
    fn bitmap_placement_and_size_check() {
        let m = map();
        let (at, bytes) = bitmap_placement(&m).unwrap();
        assert_eq!((at, bytes), (0x200000, PAGE_SIZE));
        let mut small: [u64; 0] = [];
        assert_eq!(
            FrameAllocator::new(&m, &mut small).unwrap_err(),
            FrameError::BitmapTooSmall
        );
        let mut words = vec![0u64; bitmap_words(&m)];
        let mut fa = FrameAllocator::new(&m, &mut words).unwrap();
        fa.reserve(at, at + bytes);
        assert_eq!(fa.free_frames(), 19);
        assert_ne!(fa.alloc(), Some(0x200000));
    }

    #[test]
    fn large_map_spans_many_words() {
        let m = [usable(0x100000, 0x100000 + 1000 * PAGE_SIZE)];
        let mut words = vec![0u64; bitmap_words(&m)];
        assert_eq!(words.len(), 16);
        let mut fa = FrameAllocator::new(&m, &mut words).unwrap();
        assert_eq!(fa.alloc_contiguous(999), Some(0x100000));
        assert_eq!(fa.alloc(), Some(0x100000 + 999 * PAGE_SIZE));
        assert_eq!(fa.alloc(), None);
    }
}
