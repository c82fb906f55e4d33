//! Physical memory: the boot memory map, its summary, and the frame allocator.

pub mod frames;

/// Size of the smallest page and of a physical frame, on every supported architecture.
pub const PAGE_SIZE: u64 = 4096;

/// What a range of physical memory is, as the boot firmware and boot loader report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Free RAM the kernel may allocate.
    Usable,
    /// RAM holding the kernel image, boot loader structures or the boot image: in use.
    Loaded,
    /// Anything else the firmware reports (ACPI tables, MMIO holes, reserved ranges).
    Reserved,
}

/// A half-open physical address range `[start, end)` of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRegion {
    pub start: u64,
    pub end: u64,
    pub kind: RegionKind,
}

impl PhysRegion {
    /// Bytes in the region; zero for an empty or inverted one.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the region holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The largest page-aligned sub-range, or `None` if no whole page fits.
    pub fn page_aligned(&self) -> Option<(u64, u64)> {
        let start = self.start.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
        let end = self.end & !(PAGE_SIZE - 1);
        (start < end).then_some((start, end))
    }
}

/// Builds a memory map from RAM ranges and ranges already in use (kernel image, device tree):
/// RAM outside every used range is `Usable`, inside one `Loaded`. Writes up to `out.len()`
/// regions sorted by address and returns how many; used ranges outside RAM are ignored.
pub fn carve(ram: &[(u64, u64)], used: &[(u64, u64)], out: &mut [PhysRegion]) -> usize {
    let mut n = 0;
    let mut push = |start: u64, end: u64, kind: RegionKind| {
        if start < end && n < out.len() {
            out[n] = PhysRegion { start, end, kind };
            n += 1;
        }
    };
    let mut ram_sorted = [(0u64, 0u64); 16];
    let ram_count = ram.len().min(ram_sorted.len());
    ram_sorted[..ram_count].copy_from_slice(&ram[..ram_count]);
    ram_sorted[..ram_count].sort_unstable();
    for &(ram_start, ram_end) in &ram_sorted[..ram_count] {
        let mut cursor = ram_start;
        while cursor < ram_end {
            // The used range that starts first among those overlapping [cursor, ram_end).
            let next = used
                .iter()
                .filter(|&&(s, e)| s < ram_end && e > cursor && s < e)
                .min_by_key(|&&(s, _)| s);
            match next {
                None => {
                    push(cursor, ram_end, RegionKind::Usable);
                    cursor = ram_end;
                }
                Some(&(s, e)) => {
                    push(cursor, s.max(cursor), RegionKind::Usable);
                    let loaded_end = e.min(ram_end);
                    push(s.max(cursor), loaded_end, RegionKind::Loaded);
                    cursor = loaded_end;
                }
            }
        }
    }
    n
}

/// Totals of a memory map, printed at boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemorySummary {
    pub regions: usize,
    pub usable_bytes: u64,
    pub usable_regions: usize,
    pub loaded_bytes: u64,
    pub reserved_bytes: u64,
    pub largest_usable: u64,
    pub highest_address: u64,
}

/// Sums a memory map by kind.
pub fn summarize(regions: &[PhysRegion]) -> MemorySummary {
    let mut s = MemorySummary {
        regions: regions.len(),
        ..Default::default()
    };
    for r in regions {
        match r.kind {
            RegionKind::Usable => {
                s.usable_bytes += r.len();
                s.usable_regions += 1;
                s.largest_usable = s.largest_usable.max(r.len());
            }
            RegionKind::Loaded => s.loaded_bytes += r.len(),
            RegionKind::Reserved => s.reserved_bytes += r.len(),
        }
        s.highest_address = s.highest_address.max(r.end);
    }
    s
}

/// A byte count printed with a binary unit: `512 MiB`, `4 KiB`, `505.6 MiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl core::fmt::Display for Bytes {
    /// The largest unit the value reaches; one decimal unless the value is a whole multiple.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        match UNITS.iter().find(|(_, scale)| self.0 >= *scale) {
            Some((unit, scale)) if self.0.is_multiple_of(*scale) => {
                write!(f, "{} {unit}", self.0 / scale)
            }
            Some((unit, scale)) => {
                let tenths = (self.0 as u128 * 10 / *scale as u128) as u64;
                write!(f, "{}.{} {unit}", tenths / 10, tenths % 10)
            }
            None => write!(f, "{} B", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn r(start: u64, end: u64, kind: RegionKind) -> PhysRegion {
        PhysRegion { start, end, kind }
    }

    #[test]
    fn summary_totals() {
        let map = [
            r(0x0, 0x9f000, RegionKind::Usable),
            r(0x9f000, 0x100000, RegionKind::Reserved),
            r(0x100000, 0x400000, RegionKind::Loaded),
            r(0x400000, 0x2000_0000, RegionKind::Usable),
            r(0xfffc_0000, 0x1_0000_0000, RegionKind::Reserved),
        ];
        let s = summarize(&map);
        assert_eq!(s.regions, 5);
        assert_eq!(s.usable_regions, 2);
        assert_eq!(s.usable_bytes, 0x9f000 + 0x2000_0000 - 0x400000);
        assert_eq!(s.loaded_bytes, 0x300000);
        assert_eq!(s.reserved_bytes, 0x61000 + 0x40000);
        assert_eq!(s.largest_usable, 0x2000_0000 - 0x400000);
        assert_eq!(s.highest_address, 0x1_0000_0000);
    }

    #[test]
    fn alignment_inward() {
        assert_eq!(
            r(0x1001, 0x3fff, RegionKind::Usable).page_aligned(),
            Some((0x2000, 0x3000))
        );
        assert_eq!(r(0x1001, 0x1fff, RegionKind::Usable).page_aligned(), None);
        assert_eq!(
            r(u64::MAX - 5, u64::MAX, RegionKind::Usable).page_aligned(),
            None
        );
        assert_eq!(
            r(0x5000, 0x1000, RegionKind::Usable).len(),
            0,
            "inverted is empty"
        );
    }

    #[test]
    fn carve_splits_ram_around_used_ranges() {
        let mut out = [r(0, 0, RegionKind::Reserved); 8];
        let ram = [(0x4000_0000, 0x6000_0000)];
        // The DTB at the start of RAM, the kernel overlapping it, something outside RAM.
        let used = [
            (0x4008_0000, 0x4020_0000),
            (0x4000_0000, 0x4010_0000),
            (0x1000, 0x2000),
        ];
        let n = carve(&ram, &used, &mut out);
        assert_eq!(
            &out[..n],
            &[
                r(0x4000_0000, 0x4010_0000, RegionKind::Loaded),
                r(0x4010_0000, 0x4020_0000, RegionKind::Loaded),
                r(0x4020_0000, 0x6000_0000, RegionKind::Usable),
            ]
        );
        let n = carve(
            &[(0x1000, 0x9000), (0x0, 0x800)],
            &[(0x3000, 0x4000)],
            &mut out,
        );
        assert_eq!(
            &out[..n],
            &[
                r(0x0, 0x800, RegionKind::Usable),
                r(0x1000, 0x3000, RegionKind::Usable),
                r(0x3000, 0x4000, RegionKind::Loaded),
                r(0x4000, 0x9000, RegionKind::Usable),
            ]
        );
        assert_eq!(
            carve(&ram, &[], &mut out[..0]),
            0,
            "output capacity is respected"
        );
    }

    #[test]
    fn byte_units() {
        assert_eq!(Bytes(512 << 20).to_string(), "512 MiB");
        assert_eq!(Bytes(4096).to_string(), "4 KiB");
        assert_eq!(Bytes(0x9f000).to_string(), "636 KiB");
        assert_eq!(Bytes((1 << 30) + (1 << 29)).to_string(), "1.5 GiB");
        assert_eq!(Bytes(517_783 * 1024).to_string(), "505.6 MiB");
        assert_eq!(Bytes(1000).to_string(), "1000 B");
        assert_eq!(Bytes(1500).to_string(), "1.4 KiB");
    }
}
