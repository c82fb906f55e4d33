//! The demo's storage partition: on its virtual disk (exported by the block server over the
//! inter-partition VirtIO transport) it writes a round of checksummed blocks, flushes, reads
//! them back and verifies them, prints what it did, sleeps a little and goes again.
//!
//! Rounds alternate between two areas of the disk, so the previous round's flushed blocks are
//! always on the disk while the next round writes. When the server restarts (the transport
//! reports a device reset) the round in progress is abandoned, the client reconnects, checks
//! that the last flushed round is intact (no acknowledged write may be lost), and redoes the
//! round. When this partition itself restarts it looks for the newest intact round first.
//!
//! Configuration (`[partitions.NAME.config]`, declared with types, ranges and defaults in
//! config-schema.toml): `channel` (required; the shared region and notifications are named
//! after it as in docs/io-servers.md), `blocks` per round, `sleep-ms` between rounds, `mode`
//! and `irq-mask` (notification bits to wait on, absent: all).
#![no_std]
#![no_main]

use blk_client::{BlkClient, BlkError, Options};
use rt::println;
use rt::syscall::{partition_info, sleep_until, time_now_ns};
use virtio::dma::DmaRegion;
use virtio::transport::shmem::Notifier;

use iokit::KernelNotifier;

rt::entry!(main);

const SECTOR: usize = 512;
/// Most blocks per round (the buffer is on the stack).
const MAX_BLOCKS: usize = 32;
/// Bytes of a block covered by its checksum.
const BODY: usize = SECTOR - 4;
const MAGIC: &[u8; 4] = b"BHDS";

/// FNV-1a, 32 bits.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Block `lba` of round `round`: magic, round, LBA, pseudo-random filler, checksum.
fn fill_block(block: &mut [u8], round: u64, lba: u64) {
    block[0..4].copy_from_slice(MAGIC);
    block[4..12].copy_from_slice(&round.to_le_bytes());
    block[12..20].copy_from_slice(&lba.to_le_bytes());
    let mut x = round.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ lba ^ 0x5555;
    for b in &mut block[20..BODY] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let sum = checksum(&block[..BODY]);
    block[BODY..SECTOR].copy_from_slice(&sum.to_le_bytes());
}

/// The round a block belongs to, if its checksum and LBA are right.
fn check_block(block: &[u8], lba: u64) -> Option<u64> {
    let sum = u32::from_le_bytes(block[BODY..SECTOR].try_into().ok()?);
    if &block[0..4] != MAGIC || checksum(&block[..BODY]) != sum {
        return None;
    }
    let round = u64::from_le_bytes(block[4..12].try_into().ok()?);
    let at = u64::from_le_bytes(block[12..20].try_into().ok()?);
    (at == lba).then_some(round)
}

/// Reads area `area` and returns the round all its blocks carry, if they are all intact and
/// agree.
fn read_area(
    disk: &mut BlkClient<'_, KernelNotifier>,
    buf: &mut [u8],
    area_lba: u64,
) -> Result<Option<u64>, BlkError> {
    disk.read(area_lba, buf)?;
    let mut round = None;
    for (i, block) in buf.chunks(SECTOR).enumerate() {
        let r = check_block(block, area_lba + i as u64);
        match (r, round) {
            (None, _) => return Ok(None),
            (Some(r), None) => round = Some(r),
            (Some(r), Some(seen)) if r != seen => return Ok(None),
            _ => {}
        }
    }
    Ok(round)
}

fn sleep_ms(ms: u64) {
    sleep_until(time_now_ns() + ms * 1_000_000);
}

/// Attaches (or re-attaches) to the disk, waiting for the server as long as it takes.
fn connect<'a>(
    region: DmaRegion<'a>,
    notifier: &KernelNotifier,
    channel: &str,
) -> BlkClient<'a, KernelNotifier> {
    let mut reported = false;
    loop {
        let options = Options {
            depth: 1,
            max_waits: 100,
        };
        match BlkClient::attach(region, notifier.clone(), options) {
            Ok(disk) => return disk,
            Err(e) => {
                if !reported {
                    println!("{channel}: waiting for the disk server ({e:?})");
                    reported = true;
                }
                sleep_ms(100);
            }
        }
    }
}

/// `mode = "rogue"` (a test client): asks for sectors past its disk (which is how another
/// client's range would be named: sector numbers are relative to the own disk) and for a
/// wrapping range, then corrupts its own ring with a descriptor naming memory outside its data
/// area. Each must fail with a defined error while the server goes on serving everyone else;
/// then it resets its device and carries on as a normal client.
fn rogue(
    disk: &mut BlkClient<'_, KernelNotifier>,
    buf: &mut [u8],
    channel: &str,
    region: DmaRegion<'_>,
) {
    let capacity = disk.capacity();
    match disk.read(capacity, &mut buf[..SECTOR]) {
        Err(BlkError::Io) => {
            println!("{channel}: rogue: reading past its disk was refused (IOERR)")
        }
        other => println!("FAIL {channel}: rogue: reading past its disk returned {other:?}"),
    }
    match disk.read(u64::MAX - 1, &mut buf[..2 * SECTOR]) {
        Err(BlkError::Io) => {
            println!("{channel}: rogue: a wrapping sector range was refused (IOERR)")
        }
        other => println!("FAIL {channel}: rogue: a wrapping sector range returned {other:?}"),
    }
    match disk.write(capacity - 1, &buf[..2 * SECTOR]) {
        Err(BlkError::Io) => {
            println!("{channel}: rogue: a write across the end of its disk was refused (IOERR)")
        }
        other => println!("FAIL {channel}: rogue: a write across its end returned {other:?}"),
    }
    // The split ring of queue 0, from the control block (docs/virtio.md): a descriptor naming
    // an address far outside the data area, made available ahead of a legitimate request, and
    // queue 0 kicked by hand (the driver would overwrite the entry with its own next one).
    // These are fields the client may write; the server treats everything in them as
    // untrusted.
    let corrupt = || -> virtio::Result<()> {
        let ring_area = region.read_u64(0x40)? as usize;
        let size = usize::from(region.read_u16(0x100)?);
        let desc = ring_area + region.read_u64(0x108)? as usize;
        let avail = ring_area + region.read_u64(0x110)? as usize;
        let last = size - 1;
        region.write_u64(desc + 16 * last, 0xffff_ffff_0000_0000)?;
        region.write_u32(desc + 16 * last + 8, 0x1000)?;
        region.write_u16(desc + 16 * last + 12, 0)?;
        let idx = region.read_u16(avail + 2)?;
        region.write_u16(avail + 4 + 2 * (usize::from(idx) % size), last as u16)?;
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        region.write_u16(avail + 2, idx.wrapping_add(1))?;
        region.fetch_or_u32(0x38, 1)?;
        Ok(())
    };
    if let Err(e) = corrupt() {
        println!("FAIL {channel}: rogue: could not reach its own ring: {e:?}");
    }
    disk.notifier().notify_peer();
    sleep_ms(50);
    // Only the server's word counts as proof that it stopped the channel: DEVICE_NEEDS_RESET
    // (§2.1.2) in the device status. A wait that ran out proves nothing by itself, so after
    // one the status is read again.
    let read = disk.read(0, &mut buf[..SECTOR]);
    let status = match read {
        Err(BlkError::Timeout) => disk.check_device(),
        other => other,
    };
    match status {
        Err(BlkError::NeedsReset) => println!(
            "{channel}: rogue: a descriptor outside its data area stopped its device (NeedsReset)"
        ),
        other => println!(
            "FAIL {channel}: rogue: a corrupt ring returned {read:?} (device status: {other:?})"
        ),
    }
    match disk
        .reconnect()
        .and_then(|()| disk.read(0, &mut buf[..SECTOR]))
    {
        Ok(()) => println!("{channel}: rogue: after a reset its disk works again"),
        Err(e) => println!("FAIL {channel}: rogue: after a reset: {e:?}"),
    }
}

/// On a read-only disk: shows that reads work and that the server refuses writes (IOERR,
/// never reaching the real device), then keeps reading the disk every `pause_ms`.
fn read_only_rounds(
    disk: &mut BlkClient<'_, KernelNotifier>,
    buf: &mut [u8],
    channel: &str,
    pause_ms: u64,
) -> ! {
    match disk.write(0, &buf[..SECTOR]) {
        Err(BlkError::Io) => {
            println!("{channel}: a write to the read-only disk was refused by the server (IOERR)")
        }
        other => println!("FAIL {channel}: a write to the read-only disk returned {other:?}"),
    }
    let mut round = 0u64;
    let mut sector = 0u64;
    loop {
        round += 1;
        let span = (buf.len() / SECTOR) as u64;
        if sector + span > disk.capacity() {
            sector = 0;
        }
        match disk.read(sector, buf) {
            Ok(()) => {
                let sum = buf
                    .iter()
                    .fold(0u32, |s, &b| s.rotate_left(5) ^ u32::from(b));
                println!(
                    "{channel}: read round {round}: {} blocks at sector {sector}, checksum {sum:#010x}",
                    span
                );
                sector += span;
            }
            Err(e) => {
                println!("{channel}: read round {round} failed ({e:?}); reconnecting");
                let _ = disk.reconnect();
            }
        }
        sleep_until(time_now_ns() + pause_ms * 1_000_000);
    }
}

fn main() {
    let generation = partition_info().map_or(0, |i| i.generation);
    let mut text = [0u8; 1024];
    // The settings were checked against config-schema.toml and every default filled in when
    // the image was built: a missing one means a broken image (said, and we stop).
    let Some(config) = rt::config::load(&mut text) else {
        return;
    };
    let (Some(channel), Some(blocks), Some(pause)) = (
        config.need("channel"),
        config.need_u64("blocks"),
        config.need_u64("sleep-ms"),
    ) else {
        return;
    };
    // The schema bounds `blocks` to 1..=MAX_BLOCKS.
    let blocks = blocks.clamp(1, MAX_BLOCKS as u64) as usize;
    let Some((_, memory, notifier)) = iokit::client_attach(&config) else {
        return;
    };
    let mut disk = connect(memory, &notifier, channel);
    let sectors = (blocks * SECTOR) as u64 / SECTOR as u64;
    println!(
        "{channel}: {} sectors ({} KiB){}, flush {}; rounds of {blocks} blocks (generation {generation})",
        disk.capacity(),
        disk.capacity() / 2,
        if disk.read_only() { ", read-only" } else { "" },
        if disk.has_flush() { "yes" } else { "no" },
    );
    let mut buf = [0u8; MAX_BLOCKS * SECTOR];
    let buf = &mut buf[..blocks * SECTOR];
    if config.get("mode") == Some("rogue") {
        rogue(&mut disk, buf, channel, memory);
    }
    if disk.read_only() {
        read_only_rounds(&mut disk, buf, channel, pause);
    }
    if disk.capacity() < 2 * sectors {
        println!("{channel}: the disk is too small for two areas of {blocks} blocks; stopping");
        return;
    }
    let area = |round: u64| (round % 2) * sectors;

    // After our own restart: continue after the newest intact round on the disk.
    let mut flushed: Option<u64> = None;
    for a in 0..2 {
        if let Ok(Some(r)) = read_area(&mut disk, buf, a * sectors) {
            flushed = Some(flushed.map_or(r, |f: u64| f.max(r)));
        }
    }
    if let Some(r) = flushed {
        println!("{channel}: found round {r} intact on the disk; continuing after it");
    }
    let mut round = flushed.map_or(1, |r| r + 1);
    let mut recovering = false;
    loop {
        let started = time_now_ns();
        let result = (|| -> Result<(), BlkError> {
            if recovering {
                if let Some(r) = flushed {
                    match read_area(&mut disk, buf, area(r))? {
                        Some(found) if found == r => println!(
                            "{channel}: round {r}'s flushed blocks survived the restart intact"
                        ),
                        other => println!(
                            "FAIL {channel}: round {r}'s flushed blocks were lost: found {other:?}"
                        ),
                    }
                }
                recovering = false;
            }
            let lba = area(round);
            for (i, block) in buf.chunks_mut(SECTOR).enumerate() {
                fill_block(block, round, lba + i as u64);
            }
            disk.write(lba, buf)?;
            disk.flush()?;
            flushed = Some(round);
            buf.fill(0);
            match read_area(&mut disk, buf, lba)? {
                Some(r) if r == round => Ok(()),
                other => {
                    println!("FAIL {channel}: round {round} read back wrong: {other:?}");
                    Ok(())
                }
            }
        })();
        match result {
            Ok(()) => {
                let us = (time_now_ns() - started) / 1000;
                println!(
                    "round {round}: wrote {blocks} blocks at sector {}, flushed, read back, verified ({us} us)",
                    area(round)
                );
                round += 1;
            }
            Err(e @ (BlkError::Reset | BlkError::NeedsReset | BlkError::Timeout)) => {
                println!("round {round}: disk server gone ({e:?}); reconnecting and retrying");
                disk = connect(memory, &notifier, channel);
                recovering = true;
                continue;
            }
            Err(e) => println!("round {round}: I/O error {e:?}; retrying"),
        }
        sleep_ms(pause);
    }
}
