//! The devices the device tree describes: the register ranges of every node that has a
//! `compatible` and a `reg` property (other than memory). A grant of an MMIO range the system
//! description makes is honoured only inside one of them, so the description can hand a
//! partition the devices QEMU (or the board's firmware) says are there, and nothing else.

use kcore::fdt::Fdt;
use spin::Mutex;

/// Most register ranges kept (QEMU virt has about 45 nodes with registers).
const MAX_RANGES: usize = 96;

static RANGES: Mutex<([(u64, u64); MAX_RANGES], usize)> = Mutex::new(([(0, 0); MAX_RANGES], 0));

/// Records the register ranges of the tree's device nodes.
pub fn record(tree: &Fdt<'_>) {
    let mut ranges = RANGES.lock();
    for node in tree.nodes() {
        if node.property("compatible").is_none()
            || node.property_str("device_type") == Some("memory")
        {
            continue;
        }
        for i in 0..4 {
            let Some((base, size)) = node.reg(i) else {
                break;
            };
            let count = ranges.1;
            if count == MAX_RANGES || size == 0 {
                break;
            }
            ranges.0[count] = (base, base.saturating_add(size));
            ranges.1 += 1;
        }
    }
}

/// Whether `[start, end)` lies inside one device node's registers.
pub fn mmio_described(start: u64, end: u64) -> bool {
    let ranges = RANGES.lock();
    ranges.0[..ranges.1]
        .iter()
        .any(|&(base, limit)| base <= start && end <= limit)
}
