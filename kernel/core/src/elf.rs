//! A minimal, defensive ELF64 little-endian reader: the header and the program headers.
//!
//! The kernel reads two kinds of ELF files: its own image (to map each segment with the right
//! permissions in its own page tables) and, later, partition programs from the system image.
//! Only what loading needs is parsed; every offset and size is bounds-checked.

use crate::bytes::{u16_at, u32_at, u64_at};

/// ELF `e_machine` for x86-64.
pub const EM_X86_64: u16 = 62;
/// ELF `e_machine` for AArch64.
pub const EM_AARCH64: u16 = 183;
/// Program header type of a loadable segment.
pub const PT_LOAD: u32 = 1;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// Why an ELF file was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    TooShort,
    BadMagic,
    Not64BitLittleEndian,
    WrongMachine {
        found: u16,
    },
    BadProgramHeaderTable,
    /// A segment's file bytes lie outside the file, or its sizes or addresses overflow.
    BadSegment {
        index: usize,
    },
}

/// Segment permission flags (`p_flags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFlags(pub u32);

impl SegmentFlags {
    pub fn executable(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn writable(self) -> bool {
        self.0 & 2 != 0
    }
    pub fn readable(self) -> bool {
        self.0 & 4 != 0
    }
}

/// A loadable segment, checked to lie within the file and not to overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub mem_size: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub flags: SegmentFlags,
}

/// A validated view of an ELF64 file in memory.
#[derive(Clone, Copy, Debug)]
pub struct Elf<'a> {
    bytes: &'a [u8],
    entry: u64,
    phoff: usize,
    phnum: usize,
}

impl<'a> Elf<'a> {
    /// Validates the header of `bytes` for machine `machine` (e.g. [`EM_X86_64`]).
    pub fn parse(bytes: &'a [u8], machine: u16) -> Result<Self, ElfError> {
        if bytes.len() < EHDR_SIZE {
            return Err(ElfError::TooShort);
        }
        if bytes[..4] != *b"\x7fELF" {
            return Err(ElfError::BadMagic);
        }
        if bytes[4] != 2 || bytes[5] != 1 {
            return Err(ElfError::Not64BitLittleEndian);
        }
        let found = u16_at(bytes, 18);
        if found != machine {
            return Err(ElfError::WrongMachine { found });
        }
        let phoff =
            usize::try_from(u64_at(bytes, 32)).map_err(|_| ElfError::BadProgramHeaderTable)?;
        let phentsize = u16_at(bytes, 54) as usize;
        let phnum = u16_at(bytes, 56) as usize;
        let table_end = phnum
            .checked_mul(PHDR_SIZE)
            .and_then(|n| n.checked_add(phoff));
        if phentsize != PHDR_SIZE || table_end.is_none_or(|end| end > bytes.len()) {
            return Err(ElfError::BadProgramHeaderTable);
        }
        Ok(Self {
            bytes,
            entry: u64_at(bytes, 24),
            phoff,
            phnum,
        })
    }

    /// The entry point's virtual address (before any load offset).
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The loadable segments, each checked; the first bad one ends the iteration with an error.
    pub fn load_segments(&self) -> impl Iterator<Item = Result<Segment, ElfError>> + 'a {
        let (bytes, phoff) = (self.bytes, self.phoff);
        (0..self.phnum).filter_map(move |index| {
            let ph = &bytes[phoff + index * PHDR_SIZE..][..PHDR_SIZE];
            if u32_at(ph, 0) != PT_LOAD {
                return None;
            }
            let seg = Segment {
                flags: SegmentFlags(u32_at(ph, 4)),
                file_offset: u64_at(ph, 8),
                vaddr: u64_at(ph, 16),
                file_size: u64_at(ph, 32),
                mem_size: u64_at(ph, 40),
            };
            let file_end = seg.file_offset.checked_add(seg.file_size);
            let ok = file_end.is_some_and(|end| end <= bytes.len() as u64)
                && seg.file_size <= seg.mem_size
                && seg.vaddr.checked_add(seg.mem_size).is_some();
            Some(if ok {
                Ok(seg)
            } else {
                Err(ElfError::BadSegment { index })
            })
        })
    }

    /// The file bytes of a segment returned by [`load_segments`](Self::load_segments).
    pub fn segment_data(&self, seg: &Segment) -> &'a [u8] {
        let start = seg.file_offset as usize;
        self.bytes
            .get(start..start + seg.file_size as usize)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Builds a small ELF with the given (type, flags, offset, vaddr, filesz, memsz) headers.
    fn build(machine: u16, phdrs: &[(u32, u32, u64, u64, u64, u64)], len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len.max(EHDR_SIZE + phdrs.len() * PHDR_SIZE)];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[24..32].copy_from_slice(&0x40_1000u64.to_le_bytes());
        b[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes());
        b[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        b[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for (i, &(ty, fl, off, va, fs, ms)) in phdrs.iter().enumerate() {
            let p = &mut b[EHDR_SIZE + i * PHDR_SIZE..][..PHDR_SIZE];
            p[0..4].copy_from_slice(&ty.to_le_bytes());
            p[4..8].copy_from_slice(&fl.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&va.to_le_bytes());
            p[32..40].copy_from_slice(&fs.to_le_bytes());
            p[40..48].copy_from_slice(&ms.to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_load_segments() {
        let b = build(
            EM_X86_64,
            &[
                (6, 4, 0, 0, 0, 0),
                (1, 5, 0, 0x40_0000, 0x200, 0x200),
                (1, 6, 0x200, 0x40_1000, 0x10, 0x1000),
            ],
            0x400,
        );
        let elf = Elf::parse(&b, EM_X86_64).unwrap();
        assert_eq!(elf.entry(), 0x40_1000);
        let segs: Vec<_> = elf.load_segments().collect::<Result<_, _>>().unwrap();
        assert_eq!(segs.len(), 2);
        assert!(segs[0].flags.executable() && !segs[0].flags.writable());
        assert!(segs[1].flags.writable() && !segs[1].flags.executable());
        assert_eq!(elf.segment_data(&segs[1]).len(), 0x10);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            Elf::parse(&[0; 10], EM_X86_64).unwrap_err(),
            ElfError::TooShort
        );
        let mut b = build(EM_X86_64, &[], 64);
        assert_eq!(
            Elf::parse(&b, EM_AARCH64).unwrap_err(),
            ElfError::WrongMachine { found: EM_X86_64 }
        );
        b[4] = 1;
        assert_eq!(
            Elf::parse(&b, EM_X86_64).unwrap_err(),
            ElfError::Not64BitLittleEndian
        );
        b[0] = 0;
        assert_eq!(Elf::parse(&b, EM_X86_64).unwrap_err(), ElfError::BadMagic);
        let mut b = build(EM_X86_64, &[(1, 4, 0, 0, 0, 0)], 0);
        b[56..58].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(
            Elf::parse(&b, EM_X86_64).unwrap_err(),
            ElfError::BadProgramHeaderTable
        );
    }

    #[test]
    fn rejects_segments_outside_file_or_overflowing() {
        let cases = [
            (1, 4, 0x100, 0x1000, 0x1000, 0x1000), // bytes past end of file
            (1, 4, u64::MAX, 0x1000, 2, 2),        // offset overflow
            (1, 4, 0, 0x1000, 0x20, 0x10),         // filesz > memsz
            (1, 4, 0, u64::MAX - 1, 0x10, 0x10),   // vaddr overflow
        ];
        for case in cases {
            let b = build(EM_AARCH64, &[case], 0x200);
            let elf = Elf::parse(&b, EM_AARCH64).unwrap();
            let r: Vec<_> = elf.load_segments().collect();
            assert_eq!(r, [Err(ElfError::BadSegment { index: 0 })], "{case:?}");
        }
    }

    #[test]
    fn fuzz_like_inputs_never_panic() {
        let base = build(
            EM_X86_64,
            &[
                (1, 5, 0, 0x1000, 0x40, 0x80),
                (1, 6, 0x40, 0x2000, 0x40, 0x40),
            ],
            0x100,
        );
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed % b.len() as u64) as usize;
                b[i] = (seed >> 32) as u8;
            }
            b.truncate((seed >> 40) as usize % (b.len() + 1));
            if let Ok(elf) = Elf::parse(&b, EM_X86_64) {
                for s in elf.load_segments().flatten() {
                    let _ = elf.segment_data(&s);
                }
            }
        }
    }
}
