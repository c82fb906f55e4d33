//! A minimal, defensive reader of flattened device trees (Devicetree Specification v0.4, ch. 5).
//!
//! On aarch64 the firmware (QEMU, U-Boot) describes the machine with a device tree: RAM, the
//! UART, the interrupt controller, the timer's interrupts, PSCI and the boot arguments. This
//! reader walks the structure block without allocating and bounds-checks every offset, because
//! a corrupt tree must produce an error, not a kernel fault.

const MAGIC: u32 = 0xd00d_feed;
const HEADER_SIZE: usize = 40;
const TOKEN_BEGIN_NODE: u32 = 1;
const TOKEN_END_NODE: u32 = 2;
const TOKEN_PROP: u32 = 3;
const TOKEN_NOP: u32 = 4;
const TOKEN_END: u32 = 9;
/// Deeper trees are rejected; QEMU's and the Raspberry Pi's are under 8 levels.
const MAX_DEPTH: usize = 16;

/// Why a device tree was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    TooShort,
    BadMagic,
    BadHeader,
    /// The structure block is malformed at this byte offset within it.
    BadStructure {
        offset: usize,
    },
    TooDeep,
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// The total size a device tree claims in its header, to learn how many bytes to map before
/// calling [`Fdt::new`]. `None` if the header is not a device tree's.
pub fn total_size(header: &[u8]) -> Option<usize> {
    (be32(header, 0)? == MAGIC).then(|| be32(header, 4).map(|n| n as usize))?
}

/// A validated device tree.
#[derive(Clone, Copy, Debug)]
pub struct Fdt<'a> {
    structure: &'a [u8],
    strings: &'a [u8],
}

/// One node of the tree, with the `#address-cells`/`#size-cells` its `reg` is encoded with.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    pub name: &'a str,
    pub depth: usize,
    /// Offset in the structure block of this node's first property token.
    props_at: usize,
    address_cells: u32,
    size_cells: u32,
    fdt: Fdt<'a>,
}

impl<'a> Fdt<'a> {
    /// Validates the header and block bounds of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Result<Self, FdtError> {
        if bytes.len() < HEADER_SIZE {
            return Err(FdtError::TooShort);
        }
        let h = |i: usize| be32(bytes, i * 4).ok_or(FdtError::TooShort);
        if h(0)? != MAGIC {
            return Err(FdtError::BadMagic);
        }
        let total = h(1)? as usize;
        let (off_struct, off_strings) = (h(2)? as usize, h(3)? as usize);
        let (size_strings, size_struct) = (h(8)? as usize, h(9)? as usize);
        let block = |off: usize, size: usize| {
            let end = off.checked_add(size)?;
            (end <= total && total <= bytes.len()).then(|| &bytes[off..end])
        };
        let structure = block(off_struct, size_struct).ok_or(FdtError::BadHeader)?;
        let strings = block(off_strings, size_strings).ok_or(FdtError::BadHeader)?;
        let fdt = Self { structure, strings };
        // Walk once so that later queries can rely on a well-formed structure block.
        let mut count = 0usize;
        for node in fdt.walk() {
            node?;
            count += 1;
        }
        if count == 0 {
            return Err(FdtError::BadStructure { offset: 0 });
        }
        Ok(fdt)
    }

    /// Every node in document order, root first.
    pub fn nodes(&self) -> impl Iterator<Item = Node<'a>> + 'a {
        self.walk().map_while(Result::ok)
    }

    /// The first node whose `compatible` list contains `compatible`.
    pub fn find_compatible(&self, compatible: &str) -> Option<Node<'a>> {
        self.nodes().find(|n| n.is_compatible(compatible))
    }

    /// The node at an absolute `path` such as `/chosen` or `/memory`; a path component without a
    /// unit address matches a node name with one (`/memory` finds `memory@40000000`).
    pub fn find_path(&self, path: &str) -> Option<Node<'a>> {
        let mut wanted = path.split('/').filter(|c| !c.is_empty());
        let mut next = wanted.next();
        let mut matched_depth = 0;
        for node in self.nodes() {
            if node.depth == 0 {
                if next.is_none() {
                    return Some(node);
                }
                continue;
            }
            if node.depth <= matched_depth {
                return None; // left the subtree we were descending into
            }
            let name_matches = |c: &str| node.name == c || node.name.split('@').next() == Some(c);
            if node.depth == matched_depth + 1 && next.is_some_and(name_matches) {
                matched_depth += 1;
                next = wanted.next();
                if next.is_none() {
                    return Some(node);
                }
            }
        }
        None
    }

    fn string_at(&self, offset: usize) -> Option<&'a str> {
        let tail = self.strings.get(offset..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        core::str::from_utf8(&tail[..end]).ok()
    }

    fn walk(&self) -> Walk<'a> {
        Walk {
            fdt: *self,
            offset: 0,
            depth: 0,
            cells: [(2, 1); MAX_DEPTH + 1],
            done: false,
        }
    }

    /// Reads the property token at `offset`: (name, value, offset of the next token).
    fn prop_at(&self, offset: usize) -> Option<(&'a str, &'a [u8], usize)> {
        let len = be32(self.structure, offset + 4)? as usize;
        let name = self.string_at(be32(self.structure, offset + 8)? as usize)?;
        let value = self
            .structure
            .get(offset + 12..offset.checked_add(12)?.checked_add(len)?)?;
        Some((name, value, align4(offset + 12 + len)))
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

struct Walk<'a> {
    fdt: Fdt<'a>,
    offset: usize,
    depth: usize,
    /// (#address-cells, #size-cells) in force for children of the node at each depth.
    cells: [(u32, u32); MAX_DEPTH + 1],
    done: bool,
}

impl<'a> Iterator for Walk<'a> {
    type Item = Result<Node<'a>, FdtError>;

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.fdt.structure;
        while !self.done {
            let at = self.offset;
            let fail = |this: &mut Self| {
                this.done = true;
                Some(Err(FdtError::BadStructure { offset: at }))
            };
            let Some(token) = be32(s, at) else {
                return fail(self);
            };
            match token {
                TOKEN_BEGIN_NODE => {
                    let name_start = at + 4;
                    let Some(len) = s
                        .get(name_start..)
                        .and_then(|t| t.iter().position(|&b| b == 0))
                    else {
                        return fail(self);
                    };
                    let Ok(name) = core::str::from_utf8(&s[name_start..name_start + len]) else {
                        return fail(self);
                    };
                    if self.depth >= MAX_DEPTH {
                        self.done = true;
                        return Some(Err(FdtError::TooDeep));
                    }
                    let props_at = align4(name_start + len + 1);
                    let (address_cells, size_cells) = self.cells[self.depth];
                    // Children inherit the defaults unless this node's properties override them.
                    let mut child_cells = (2, 1);
                    let mut p = props_at;
                    while be32(s, p) == Some(TOKEN_PROP) || be32(s, p) == Some(TOKEN_NOP) {
                        if be32(s, p) == Some(TOKEN_NOP) {
                            p += 4;
                            continue;
                        }
                        let Some((pname, value, next)) = self.fdt.prop_at(p) else {
                            return fail(self);
                        };
                        match (pname, be32(value, 0)) {
                            ("#address-cells", Some(v)) => child_cells.0 = v,
                            ("#size-cells", Some(v)) => child_cells.1 = v,
                            _ => {}
                        }
                        p = next;
                    }
                    let node = Node {
                        name,
                        depth: self.depth,
                        props_at,
                        address_cells,
                        size_cells,
                        fdt: self.fdt,
                    };
                    self.depth += 1;
                    self.cells[self.depth] = child_cells;
                    self.offset = p;
                    return Some(Ok(node));
                }
                TOKEN_END_NODE => {
                    if self.depth == 0 {
                        return fail(self);
                    }
                    self.depth -= 1;
                    self.offset = at + 4;
                }
                TOKEN_PROP => {
                    // Properties after a child node are malformed per spec §5.4.1, but skip
                    // them rather than refuse a tree a firmware produced.
                    let Some((_, _, next)) = self.fdt.prop_at(at) else {
                        return fail(self);
                    };
                    self.offset = next;
                }
                TOKEN_NOP => self.offset = at + 4,
                TOKEN_END => {
                    self.done = true;
                    if self.depth != 0 {
                        return Some(Err(FdtError::BadStructure { offset: at }));
                    }
                }
                _ => return fail(self),
            }
        }
        None
    }
}

impl<'a> Node<'a> {
    /// The value of property `name`, if present.
    pub fn property(&self, name: &str) -> Option<&'a [u8]> {
        let s = self.fdt.structure;
        let mut p = self.props_at;
        loop {
            match be32(s, p)? {
                TOKEN_NOP => p += 4,
                TOKEN_PROP => {
                    let (pname, value, next) = self.fdt.prop_at(p)?;
                    if pname == name {
                        return Some(value);
                    }
                    p = next;
                }
                _ => return None,
            }
        }
    }

    /// A string property without its terminating NUL.
    pub fn property_str(&self, name: &str) -> Option<&'a str> {
        let v = self.property(name)?;
        let v = v.strip_suffix(&[0]).unwrap_or(v);
        core::str::from_utf8(v).ok()
    }

    /// Whether the node's `compatible` string list contains `compatible`.
    pub fn is_compatible(&self, compatible: &str) -> bool {
        self.property("compatible").is_some_and(|v| {
            v.split(|&b| b == 0)
                .any(|entry| entry == compatible.as_bytes())
        })
    }

    /// The `index`-th (address, size) pair of the node's `reg` property.
    pub fn reg(&self, index: usize) -> Option<(u64, u64)> {
        let (ac, sc) = (self.address_cells as usize, self.size_cells as usize);
        if ac > 2 || sc > 2 {
            return None;
        }
        let entry = (ac + sc) * 4;
        let v = self
            .property("reg")?
            .get(index.checked_mul(entry)?..)?
            .get(..entry)?;
        let read = |cells: &[u8]| {
            cells
                .chunks(4)
                .fold(0u64, |acc, c| (acc << 32) | be32(c, 0).unwrap_or(0) as u64)
        };
        Some((read(&v[..ac * 4]), read(&v[ac * 4..])))
    }

    /// Property `name` read as one big-endian number of one or two cells (4 or 8 bytes), as
    /// `/chosen`'s `linux,initrd-start` and `linux,initrd-end` are written.
    pub fn property_u64(&self, name: &str) -> Option<u64> {
        let v = self.property(name)?;
        match v.len() {
            4 => be32(v, 0).map(u64::from),
            8 => Some(((be32(v, 0)? as u64) << 32) | be32(v, 4)? as u64),
            _ => None,
        }
    }

    /// The `index`-th 32-bit cell of property `name`.
    pub fn cell(&self, name: &str, index: usize) -> Option<u32> {
        be32(self.property(name)?, index.checked_mul(4)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2 `-M virt -cpu cortex-a72 -m 512M -append "test=ticks exit"`, packed with dtc.
    const VIRT: &[u8] = include_bytes!("../tests/data/qemu-virt.dtb");

    #[test]
    fn reads_qemu_virt() {
        assert_eq!(total_size(VIRT), Some(VIRT.len()));
        let fdt = Fdt::new(VIRT).unwrap();
        let mem = fdt.find_path("/memory").unwrap();
        assert_eq!(mem.reg(0), Some((0x4000_0000, 0x2000_0000)));
        assert_eq!(
            fdt.find_path("/chosen").unwrap().property_str("bootargs"),
            Some("test=ticks exit")
        );
        let uart = fdt.find_compatible("arm,pl011").unwrap();
        assert_eq!(uart.reg(0), Some((0x0900_0000, 0x1000)));
        let gic = fdt.find_compatible("arm,cortex-a15-gic").unwrap();
        assert_eq!(gic.reg(0), Some((0x0800_0000, 0x10000)));
        assert_eq!(gic.reg(1), Some((0x0801_0000, 0x10000)));
        assert_eq!(gic.reg(2), None);
        let timer = fdt.find_compatible("arm,armv8-timer").unwrap();
        // Second triple: the non-secure EL1 physical timer, PPI 14 (INTID 30).
        assert_eq!(
            (timer.cell("interrupts", 3), timer.cell("interrupts", 4)),
            (Some(1), Some(14))
        );
        assert_eq!(
            fdt.find_compatible("arm,psci-1.0")
                .unwrap()
                .property_str("method"),
            Some("hvc")
        );
        assert!(fdt.find_path("/nonexistent").is_none());
        assert!(fdt.find_path("/").is_some());
    }

    /// QEMU 7.2 `-M virt,gic-version=3 -cpu cortex-a72 -m 512M -initrd FILE -append "exit"`
    /// (a 5000-byte initrd), packed with dtc.
    const VIRT_GICV3_INITRD: &[u8] = include_bytes!("../tests/data/qemu-virt-gicv3-initrd.dtb");

    #[test]
    fn reads_initrd_and_gicv3() {
        let fdt = Fdt::new(VIRT_GICV3_INITRD).unwrap();
        let chosen = fdt.find_path("/chosen").unwrap();
        assert_eq!(chosen.property_u64("linux,initrd-start"), Some(0x4800_0000));
        assert_eq!(
            chosen.property_u64("linux,initrd-end"),
            Some(0x4800_0000 + 5000)
        );
        // Two cells: kaslr-seed; other lengths are refused.
        assert!(chosen.property_u64("kaslr-seed").is_some());
        assert_eq!(chosen.property_u64("rng-seed"), None);
        assert_eq!(chosen.property_u64("bootargs"), None);
        assert!(fdt.find_compatible("arm,cortex-a15-gic").is_none());
        let gic = fdt.find_compatible("arm,gic-v3").unwrap();
        assert_eq!(gic.reg(0), Some((0x0800_0000, 0x10000)));
        assert_eq!(gic.reg(1), Some((0x080a_0000, 0xf6_0000)));
        // The tree without an initrd has none.
        let plain = Fdt::new(VIRT).unwrap();
        assert_eq!(
            plain
                .find_path("/chosen")
                .unwrap()
                .property_u64("linux,initrd-start"),
            None
        );
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(Fdt::new(&VIRT[..10]).unwrap_err(), FdtError::TooShort);
        let mut b = VIRT.to_vec();
        b[0] = 0;
        assert_eq!(Fdt::new(&b).unwrap_err(), FdtError::BadMagic);
        assert_eq!(total_size(&b), None);
        assert_eq!(
            Fdt::new(&VIRT[..VIRT.len() - 1]).unwrap_err(),
            FdtError::BadHeader
        );
    }

    #[test]
    fn mutated_trees_never_panic_and_are_often_rejected() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rejected = 0;
        for _ in 0..3_000 {
            let mut b = VIRT.to_vec();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed % b.len() as u64) as usize;
                b[i] = (seed >> 32) as u8;
            }
            match Fdt::new(&b) {
                Ok(fdt) => {
                    for n in fdt.nodes() {
                        let _ = (
                            n.reg(0),
                            n.property_str("compatible"),
                            n.cell("interrupts", 1),
                        );
                    }
                    let _ = fdt.find_path("/chosen");
                }
                Err(_) => rejected += 1,
            }
        }
        assert!(rejected > 0, "structural mutations must be detected");
    }
}
