//! Finds its own DMA region (named after its partition: dma-0, dma-1, ...), learns its
//! physical address, writes and checks it; then asks for its neighbour's, which must be
//! refused: a partition learns the physical address of its own DMA memory and nothing else.
#![no_std]
#![no_main]

use abi::{ObjectKind, SysError};
use rt::println;
use rt::syscall::{dma_info, lookup, partition_info};

rt::entry!(main);

fn main() {
    let me = partition_info().expect("partition_info").id;
    let own = if me == 0 { "dma-0" } else { "dma-1" };
    let other = if me == 0 { "dma-1" } else { "dma-0" };
    let region = lookup(ObjectKind::DmaRegion, own).expect("its own DMA region is granted");
    let info = dma_info(region).expect("dma_info");
    let page_aligned = info.phys % 4096 == 0 && info.phys != 0;
    let words = info.size as usize / 8;
    let base = info.address as *mut u64;
    for i in 0..words {
        // SAFETY: the kernel mapped `size` bytes at `address` read-write for this partition.
        unsafe { core::ptr::write_volatile(base.add(i), info.phys ^ i as u64) };
    }
    // SAFETY: as above.
    let intact = (0..words)
        .all(|i| unsafe { core::ptr::read_volatile(base.add(i)) } == info.phys ^ i as u64);
    println!(
        "{own}: {} bytes at {:#x}, physical {:#x}, page aligned {page_aligned}, contents intact {intact}",
        info.size, info.address, info.phys
    );
    let theirs = lookup(ObjectKind::DmaRegion, other);
    let asked = rt::syscall::dma_info(if region == 0 { 1 } else { 0 });
    if theirs == Err(SysError::NotGranted) && asked == Err(SysError::NotGranted) {
        println!("{other}: refused (NotGranted)");
    } else {
        println!("FAIL: {other} was not refused: lookup {theirs:?}, dma_info {asked:?}");
    }
}
