//! A generic ECAM PCIe host bridge as a device tree describes it (`pci-host-ecam-generic`,
//! the Linux binding `host-generic-pci.yaml` and the PCI bus binding of IEEE 1275): where its
//! configuration space is, which CPU addresses its memory window has, and how its INTx pins
//! reach the interrupt controller (`interrupt-map`). QEMU's `virt` machine has one; without
//! firmware nothing assigns BARs, so the kernel assigns them from the memory window.

use crate::fdt::Fdt;

/// Most `interrupt-map` entries kept (QEMU virt has 16: four slots by four pins).
pub const MAX_IRQ_MAP: usize = 32;

/// One `interrupt-map` entry: a (masked) device address and pin, and the GIC interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqMapEntry {
    /// phys.hi of the child unit address (bus/device/function bits), masked.
    pub address_hi: u32,
    /// INTx pin, 1..=4, masked.
    pub pin: u32,
    /// The GIC interrupt id (SPIs from 32).
    pub intid: u32,
}

/// The host bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamHost {
    /// Configuration space: physical base and size.
    pub ecam: (u64, u64),
    pub bus_start: u8,
    pub bus_end: u8,
    /// The 32-bit memory window: (PCI address, CPU address, size).
    pub mem32: Option<(u64, u64, u64)>,
    pub irq_map: [IrqMapEntry; MAX_IRQ_MAP],
    pub irq_map_count: usize,
    /// `interrupt-map-mask`: phys.hi mask and pin mask.
    pub mask: (u32, u32),
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

impl EcamHost {
    /// The first `pci-host-ecam-generic` node of `fdt`, if it is complete enough to use.
    pub fn from_fdt(fdt: &Fdt<'_>) -> Option<EcamHost> {
        let node = fdt.find_compatible("pci-host-ecam-generic")?;
        let ecam = node.reg(0)?;
        let (bus_start, bus_end) = match node.property("bus-range") {
            Some(v) => (be32(v, 0)? as u8, be32(v, 4)?.min(255) as u8),
            None => (0, ((ecam.1 >> 20).saturating_sub(1)).min(255) as u8),
        };
        // ranges: child address (3 cells) + parent address (2 cells) + size (2 cells).
        let mut mem32 = None;
        if let Some(ranges) = node.property("ranges") {
            for entry in ranges.as_chunks::<28>().0 {
                let hi = be32(entry, 0)?;
                let pci = u64::from(be32(entry, 4)?) << 32 | u64::from(be32(entry, 8)?);
                let cpu = u64::from(be32(entry, 12)?) << 32 | u64::from(be32(entry, 16)?);
                let size = u64::from(be32(entry, 20)?) << 32 | u64::from(be32(entry, 24)?);
                // Space code in phys.hi bits 24-25: 0b10 = 32-bit memory (non-prefetchable).
                if (hi >> 24) & 3 == 2 && mem32.is_none() {
                    mem32 = Some((pci, cpu, size));
                }
            }
        }
        let mut host = EcamHost {
            ecam,
            bus_start,
            bus_end,
            mem32,
            irq_map: [IrqMapEntry::default(); MAX_IRQ_MAP],
            irq_map_count: 0,
            mask: (
                node.cell("interrupt-map-mask", 0).unwrap_or(u32::MAX),
                node.cell("interrupt-map-mask", 3).unwrap_or(u32::MAX),
            ),
        };
        // interrupt-map: child address (3) + pin (1) + parent phandle (1) + parent address
        // (the GIC's #address-cells) + parent specifier (the GIC's #interrupt-cells: 3, type
        // 0 = SPI, number, flags).
        let map = node.property("interrupt-map").unwrap_or(&[]);
        let phandle = be32(map, 16)?;
        let gic = fdt
            .nodes()
            .find(|n| n.cell("phandle", 0) == Some(phandle))?;
        let parent_address = gic.cell("#address-cells", 0).unwrap_or(0) as usize;
        let parent_cells = gic.cell("#interrupt-cells", 0).unwrap_or(3) as usize;
        let stride = (5 + parent_address + parent_cells) * 4;
        for entry in map.chunks_exact(stride) {
            if host.irq_map_count == MAX_IRQ_MAP {
                break;
            }
            let spec = 20 + parent_address * 4;
            let (kind, number) = (be32(entry, spec)?, be32(entry, spec + 4)?);
            let intid = match kind {
                0 => number + 32, // SPI
                1 => number + 16, // PPI
                _ => continue,
            };
            host.irq_map[host.irq_map_count] = IrqMapEntry {
                address_hi: be32(entry, 0)?,
                pin: be32(entry, 12)?,
                intid,
            };
            host.irq_map_count += 1;
        }
        Some(host)
    }

    /// The GIC interrupt id that INTx pin `pin` (1..=4) of function `bdf` raises.
    pub fn intx_intid(&self, bdf: u16, pin: u8) -> Option<u32> {
        let hi = u32::from(bdf) << 8 & self.mask.0;
        let pin = u32::from(pin) & self.mask.1;
        self.irq_map[..self.irq_map_count]
            .iter()
            .find(|e| e.address_hi == hi && e.pin == pin)
            .map(|e| e.intid)
    }

    /// Where function `bdf`'s configuration space is, relative to the ECAM base, if the bus
    /// is the bridge's.
    pub fn config_offset(&self, bdf: u16) -> Option<u64> {
        let bus = (bdf >> 8) as u8;
        if bus < self.bus_start || bus > self.bus_end {
            return None;
        }
        let offset = u64::from(bdf - (u16::from(self.bus_start) << 8)) << 12;
        (offset + 4096 <= self.ecam.1).then_some(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIRT: &[u8] = include_bytes!("../tests/data/qemu-virt.dtb");

    #[test]
    fn finds_qemu_virts_host_bridge() {
        let fdt = Fdt::new(VIRT).unwrap();
        let host = EcamHost::from_fdt(&fdt).expect("virt has a PCIe host bridge");
        // QEMU virt with highmem: the high ECAM, 256 buses.
        assert_eq!(host.ecam, (0x40_1000_0000, 0x1000_0000));
        assert_eq!((host.bus_start, host.bus_end), (0, 255));
        assert_eq!(host.mem32, Some((0x1000_0000, 0x1000_0000, 0x2eff_0000)));
        assert_eq!(host.irq_map_count, 16);
        // QEMU's swizzle: SPI 3 + (slot + pin - 1) % 4, i.e. INTID 35..38.
        assert_eq!(host.intx_intid(0x0008, 1), Some(36)); // 00:01.0 INTA
        assert_eq!(host.intx_intid(0x0010, 1), Some(37)); // 00:02.0 INTA
        assert_eq!(host.intx_intid(0x0010, 4), Some(36)); // 00:02.0 INTD
        assert_eq!(host.intx_intid(0x0000, 1), Some(35));
        assert_eq!(host.intx_intid(0x0010, 0), None);
        assert_eq!(host.config_offset(0x0010), Some(0x10000));
        assert_eq!(host.config_offset(0x0100), Some(0x100000));
    }
}
