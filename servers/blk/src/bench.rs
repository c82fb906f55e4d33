//! The block benchmark's workloads (`cargo xtask bench`, issue #6 items 7-8), shared by the
//! two paths it compares so that both issue exactly the same requests:
//!
//! - *direct*: the block server itself on its [`Backend`](crate::backend::Backend)
//!   (`bench = "direct"` in its configuration; see `src/partition.rs`);
//! - *client*: the `blk-bench` partition through the server, over the inter-partition
//!   transport.
//!
//! Workloads (../shared/bench-devices.md): sequential 1 MiB reads over the whole disk (4
//! passes); 4 KiB random reads at queue depth 1 and at queue depth 32; sequential 1 MiB writes
//! over the last 64 MiB (8 passes), then one flush. Sequential workloads keep 4 requests in
//! flight. The disk image carries a known pattern in every sector ([`PATTERN`]
//! after the LBA): every read is verified, and writes write the same pattern so the image stays
//! valid for the next boot.
//!
//! Each workload prints one line that `cargo xtask bench` parses:
//! `blkbench: KEY ns=N ops=N bytes=N bad=N errors=N`.

use virtio::dma::DmaRegion;

/// Bytes per sector.
pub const SECTOR: u64 = 512;
/// Bytes 8..16 of every sector of the benchmark image (bytes 0..8: the sector's LBA,
/// little-endian; the rest zero).
pub const PATTERN: u64 = u64::from_le_bytes(*b"BULKHEAD");
/// Requests in flight for the sequential workloads.
pub const SEQ_DEPTH: usize = 4;
/// Requests in flight for the deep random workload.
pub const DEEP: usize = 32;
/// Largest request of any workload.
pub const MAX_REQUEST: usize = 1 << 20;
/// Buffer bytes an engine needs for every workload: per tag, `bytes` at `tag * bytes`.
pub const BUFFER_BYTES: usize = if SEQ_DEPTH * MAX_REQUEST > DEEP * 4096 {
    SEQ_DEPTH * MAX_REQUEST
} else {
    DEEP * 4096
};
/// Random reads at queue depth 1.
pub const RANDOM_READS_QD1: u64 = 8192;
/// Random reads at queue depth 32.
pub const RANDOM_READS_DEEP: u64 = 32768;
/// Passes of the sequential read over the whole disk (one pass of a 256 MiB disk lasts well
/// under 100 ms of guest time: too short to stand out of the host's noise).
pub const READ_PASSES: u64 = 4;
/// Passes of the sequential write over its span, before the one flush.
pub const WRITE_PASSES: u64 = 8;
/// The write workload covers the last this many bytes of the disk.
pub const WRITE_SPAN: u64 = 64 << 20;

/// A request's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Flush,
}

/// Where the requests of a workload go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// One after the other from sector `first`, over `span` sectors, starting again at
    /// `first` after the last (passes).
    Sequential { first: u64, span: u64 },
    /// Uniformly at random, aligned to the request size, within the first `sectors` sectors.
    Random { sectors: u64, seed: u64 },
}

/// One workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// The key printed and parsed by `cargo xtask bench`.
    pub key: &'static str,
    pub op: Op,
    /// Bytes per request.
    pub bytes: usize,
    /// Requests.
    pub count: u64,
    /// Requests in flight at most.
    pub depth: usize,
    pub pattern: Pattern,
    /// Ends with one flush (counted in the time, not in `ops`).
    pub flush: bool,
}

/// The workloads on a disk of `capacity` sectors, in the order they run.
pub fn workloads(capacity: u64) -> [Workload; 4] {
    let mib = MAX_REQUEST as u64 / SECTOR;
    let write_sectors = (WRITE_SPAN / SECTOR).min(capacity / mib * mib);
    [
        Workload {
            key: "seq-read-1m",
            op: Op::Read,
            bytes: MAX_REQUEST,
            count: capacity / mib * READ_PASSES,
            depth: SEQ_DEPTH,
            pattern: Pattern::Sequential {
                first: 0,
                span: capacity / mib * mib,
            },
            flush: false,
        },
        Workload {
            key: "rand-read-4k-qd1",
            op: Op::Read,
            bytes: 4096,
            count: RANDOM_READS_QD1,
            depth: 1,
            pattern: Pattern::Random {
                sectors: capacity,
                seed: 0x9e37_79b9_7f4a_7c15,
            },
            flush: false,
        },
        Workload {
            key: "rand-read-4k-qd32",
            op: Op::Read,
            bytes: 4096,
            count: RANDOM_READS_DEEP,
            depth: DEEP,
            pattern: Pattern::Random {
                sectors: capacity,
                seed: 0x2545_f491_4f6c_dd1d,
            },
            flush: false,
        },
        Workload {
            key: "seq-write-1m-flush",
            op: Op::Write,
            bytes: MAX_REQUEST,
            count: write_sectors / mib * WRITE_PASSES,
            depth: SEQ_DEPTH,
            pattern: Pattern::Sequential {
                first: capacity / mib * mib - write_sectors,
                span: write_sectors,
            },
            flush: true,
        },
    ]
}

/// What a workload measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Guest nanoseconds from the first submission to the last completion (and the flush).
    pub ns: u64,
    /// Requests completed (the flush not counted).
    pub ops: u64,
    /// Data bytes moved.
    pub bytes: u64,
    /// Sectors read back with the wrong pattern.
    pub bad: u64,
    /// Requests that failed (submission refused or an error status).
    pub errors: u64,
}

/// Why an engine could not go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineError;

/// A path to the disk: the backend directly, or a client through the server.
pub trait Engine {
    /// The buffer of `tag` for requests of `bytes` bytes (at `tag * bytes` of the engine's
    /// buffer area, which holds [`BUFFER_BYTES`]).
    fn buffer(&self, tag: usize, bytes: usize) -> Option<DmaRegion<'_>>;
    /// Starts `op` on tag `tag`'s buffer: `bytes` at `sector` (both ignored for a flush).
    fn submit(&mut self, tag: usize, op: Op, sector: u64, bytes: usize) -> Result<(), EngineError>;
    /// Tells the device about what was submitted (if the engine batches notifications).
    fn kick(&mut self) {}
    /// Waits for one request to finish: its tag and whether it succeeded.
    fn wait(&mut self) -> Result<(usize, bool), EngineError>;
    /// Takes one finished request without waiting, if there is one.
    fn poll(&mut self) -> Result<Option<(usize, bool)>, EngineError>;
    /// Guest time in nanoseconds.
    fn now_ns(&self) -> u64;
}

/// Writes the benchmark pattern of sectors `sector..` into `bytes` bytes of `buffer`.
pub fn fill(buffer: &DmaRegion<'_>, sector: u64, bytes: usize) -> bool {
    (0..bytes / SECTOR as usize).all(|i| {
        let at = i * SECTOR as usize;
        buffer.write_u64(at, sector + i as u64).is_ok() && buffer.write_u64(at + 8, PATTERN).is_ok()
    })
}

/// Sectors of `bytes` bytes of `buffer` that do not carry the pattern of sectors `sector..`.
pub fn verify(buffer: &DmaRegion<'_>, sector: u64, bytes: usize) -> u64 {
    (0..bytes / SECTOR as usize)
        .filter(|&i| {
            let at = i * SECTOR as usize;
            buffer.read_u64(at).ok() != Some(sector + i as u64)
                || buffer.read_u64(at + 8).ok() != Some(PATTERN)
        })
        .count() as u64
}

/// Runs `workload` on `engine`.
pub fn run<E: Engine>(engine: &mut E, workload: &Workload) -> Result<Figures, EngineError> {
    let mut figures = Figures::default();
    let depth = workload.depth.clamp(1, 64);
    let step = workload.bytes as u64 / SECTOR;
    let mut rng = match workload.pattern {
        Pattern::Random { seed, .. } => seed | 1,
        Pattern::Sequential { .. } => 1,
    };
    let mut next_sector = |i: u64| match workload.pattern {
        Pattern::Sequential { first, span } => first + i * step % span.max(step),
        Pattern::Random { sectors, .. } => {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % (sectors / step).max(1) * step
        }
    };
    if workload.op == Op::Write {
        // Sectors are all zero after their first 16 bytes: clear the buffers once, then
        // each request writes only the LBA and the pattern word of its sectors.
        for tag in 0..depth {
            let buffer = engine.buffer(tag, workload.bytes).ok_or(EngineError)?;
            buffer.fill(0, workload.bytes, 0).map_err(|_| EngineError)?;
        }
    }
    let mut sector_of = [0u64; 64];
    let mut busy = [false; 64];
    let mut issued = 0u64;
    let mut in_flight = 0usize;
    let start = engine.now_ns();
    loop {
        let mut submitted = false;
        for tag in 0..depth {
            if issued >= workload.count {
                break;
            }
            if busy[tag] {
                continue;
            }
            let sector = next_sector(issued);
            if workload.op == Op::Write {
                let buffer = engine.buffer(tag, workload.bytes).ok_or(EngineError)?;
                if !fill(&buffer, sector, workload.bytes) {
                    return Err(EngineError);
                }
            }
            issued += 1;
            match engine.submit(tag, workload.op, sector, workload.bytes) {
                Ok(()) => {
                    busy[tag] = true;
                    sector_of[tag] = sector;
                    in_flight += 1;
                    submitted = true;
                }
                Err(_) => figures.errors += 1,
            }
        }
        if submitted {
            engine.kick();
        }
        if in_flight == 0 {
            break;
        }
        // Take every completion there is (waiting for the first), then refill the queue with
        // one notification for the whole batch.
        let mut done = Some(engine.wait()?);
        while let Some((tag, ok)) = done {
            if tag >= depth || !busy[tag] {
                return Err(EngineError);
            }
            busy[tag] = false;
            in_flight -= 1;
            figures.ops += 1;
            if !ok {
                figures.errors += 1;
            } else {
                figures.bytes += workload.bytes as u64;
                if workload.op == Op::Read {
                    let buffer = engine.buffer(tag, workload.bytes).ok_or(EngineError)?;
                    figures.bad += verify(&buffer, sector_of[tag], workload.bytes);
                }
            }
            done = if in_flight > 0 { engine.poll()? } else { None };
        }
    }
    if workload.flush {
        engine.submit(0, Op::Flush, 0, 0)?;
        engine.kick();
        match engine.wait()? {
            (0, true) => {}
            _ => figures.errors += 1,
        }
    }
    figures.ns = engine.now_ns().saturating_sub(start).max(1);
    Ok(figures)
}

/// Runs every workload on a disk of `capacity` sectors, printing one line per workload with
/// `print`.
pub fn run_all<E: Engine>(
    engine: &mut E,
    capacity: u64,
    mut print: impl FnMut(&Workload, Result<Figures, EngineError>),
) {
    for workload in workloads(capacity) {
        let figures = run(engine, &workload);
        print(&workload, figures);
    }
}

/// The line `cargo xtask bench` parses for one workload.
#[derive(Debug, Clone, Copy)]
pub struct Line<'w>(pub &'w Workload, pub Result<Figures, EngineError>);

impl core::fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.1 {
            Ok(r) => {
                // MB/s = bytes per microsecond.
                let mbps = r.bytes as f64 * 1e3 / r.ns as f64;
                let iops = r.ops as f64 * 1e9 / r.ns as f64;
                write!(
                    f,
                    "blkbench: {} ns={} ops={} bytes={} bad={} errors={} ({mbps:.1} MB/s, {iops:.0} IOPS)",
                    self.0.key, r.ns, r.ops, r.bytes, r.bad, r.errors
                )
            }
            Err(_) => write!(f, "blkbench: {} failed", self.0.key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;
    use virtio::dma::OwnedDma;

    /// A synchronous in-memory disk with the benchmark pattern: requests finish in order.
    struct Fake {
        disk: Vec<u8>,
        buffers: OwnedDma,
        done: Vec<(usize, bool)>,
        flushes: u32,
        corrupt: Option<u64>,
    }

    impl Fake {
        fn new(sectors: u64) -> Self {
            let mut disk = std::vec![0u8; (sectors * SECTOR) as usize];
            for (lba, s) in disk.chunks_mut(SECTOR as usize).enumerate() {
                s[..8].copy_from_slice(&(lba as u64).to_le_bytes());
                s[8..16].copy_from_slice(b"BULKHEAD");
            }
            Self {
                disk,
                buffers: OwnedDma::new(BUFFER_BYTES),
                done: Vec::new(),
                flushes: 0,
                corrupt: None,
            }
        }
    }

    impl Engine for Fake {
        fn buffer(&self, tag: usize, bytes: usize) -> Option<DmaRegion<'_>> {
            self.buffers.region(0).subregion(tag * bytes, bytes).ok()
        }
        fn submit(
            &mut self,
            tag: usize,
            op: Op,
            sector: u64,
            bytes: usize,
        ) -> Result<(), EngineError> {
            let at = (sector * SECTOR) as usize;
            let buffer = self
                .buffers
                .region(0)
                .subregion(tag * bytes, bytes)
                .unwrap();
            match op {
                Op::Read => {
                    buffer.write_bytes(0, &self.disk[at..at + bytes]).unwrap();
                    if self
                        .corrupt
                        .is_some_and(|c| (sector..sector + bytes as u64 / SECTOR).contains(&c))
                    {
                        buffer
                            .write_u64(((self.corrupt.unwrap() - sector) * SECTOR) as usize, 7)
                            .unwrap();
                    }
                }
                Op::Write => buffer
                    .read_bytes(0, &mut self.disk[at..at + bytes])
                    .unwrap(),
                Op::Flush => self.flushes += 1,
            }
            self.done.push((tag, true));
            Ok(())
        }
        fn wait(&mut self) -> Result<(usize, bool), EngineError> {
            self.poll()?.ok_or(EngineError)
        }
        fn poll(&mut self) -> Result<Option<(usize, bool)>, EngineError> {
            Ok((!self.done.is_empty()).then(|| self.done.remove(0)))
        }
        fn now_ns(&self) -> u64 {
            0
        }
    }

    #[test]
    fn workloads_verify_reads_and_keep_the_pattern() {
        // 256 MiB would be slow to simulate: 128 MiB, the write span at its end.
        let capacity = (128 << 20) / SECTOR;
        let mut fake = Fake::new(capacity);
        let before = fake.disk.clone();
        let all = workloads(capacity);
        for w in &all {
            let f = run(&mut fake, w).unwrap();
            assert_eq!((f.bad, f.errors), (0, 0), "{}", w.key);
            assert_eq!(f.ops, w.count, "{}", w.key);
            assert_eq!(f.bytes, w.count * w.bytes as u64, "{}", w.key);
        }
        assert_eq!(all[0].count, 128 * READ_PASSES);
        assert_eq!(all[3].count, 64 * WRITE_PASSES);
        assert_eq!(fake.flushes, 1);
        assert!(fake.disk == before, "the writes changed the pattern");
        fake.corrupt = Some(capacity - 3);
        assert_eq!(run(&mut fake, &all[0]).unwrap().bad, READ_PASSES);
    }
}
