//! The partition: the block class on the framework's server partition (`iokit::serve`). Its
//! disk is a granted virtio-blk device (`disk`) with its ring and bounce slots in the DMA
//! region (`dma`); each channel's `lba-start`, `lba-count` and `access` are its virtual disk
//! (a channel whose `disk` names another device is not served).
//!
//! Server-wide settings besides: `queue-depth` (largest client queue), `slot-kib` (largest
//! bounce slot), `poll-us` (how long to poll the device for a completion before sleeping while
//! requests are in flight: a completion found by polling costs no interrupt, no wake-up and no
//! switch to the idle loop and back), `bench = "direct"` (run the benchmark on the backend
//! instead of serving) and `crash-after-requests` (fault injection). Their defaults and ranges
//! are in config-schema.toml. See docs/io-servers.md.

use core::cell::Cell;

use blk_server::backend::{Backend, Op, VirtioBackend};
use blk_server::bench;
use blk_server::server::{Block, MAX_CLIENTS, Tables};
use iokit::DeviceTransport;
use iokit::serve::{Opening, ServerProgram, run};
use rt::println;
use rt::syscall::{irq_ack, sleep_until, time_now_ns, wait};
use virtio::dma::DmaRegion;

rt::entry!(main);

/// Ring memory for the real device's queue (legacy layout of 256 entries: 10.3 KiB).
const DEVICE_RING_LEN: usize = 0x4000;
/// Entries of the real device's queue (QEMU's virtio-blk default; a legacy device's queue
/// size is fixed by the device).
const DEVICE_QUEUE: usize = 256;
/// How long to sleep between polls of the device while requests are in flight and its
/// interrupt is not routed to us.
const POLL_NS: u64 = 200_000;

const PROGRAM: ServerProgram = ServerProgram {
    device_key: "disk",
    // Enough for a split or packed queue of 256 entries.
    client_ring_len: 0x4000,
    poll_period_ns: POLL_NS,
};

type Disk = VirtioBackend<'static, DeviceTransport, DEVICE_QUEUE>;

fn main() {
    // The engine's tables, made here once: the class borrows them, so the stack holds them
    // once rather than once for each move of the class (into `open`'s result, the server).
    let tables = &mut Tables::new();
    // Fault injection for the tests: in the first generation only, fault in the middle of
    // I/O once this many requests have completed.
    let crash_after = &Cell::new(None);
    let open = move |o: &mut Opening<'_>| {
        let crash = o.config.get_u64("crash-after-requests");
        crash_after.set(crash.filter(|_| o.generation == 0));
        // Moved into the class, which keeps the borrow.
        let tables = tables;
        open_disk(o, tables)
    };
    run(PROGRAM, open, move |server, _| {
        let Some(limit) = crash_after.get() else {
            return;
        };
        let done: u64 = (0..MAX_CLIENTS)
            .filter_map(|i| server.client_stats(i))
            .map(|s| s.ok)
            .sum();
        let in_flight = server.class_ref().in_flight();
        if done >= limit && in_flight > 0 {
            println!("fault injection: crashing with {in_flight} requests in flight");
            // SAFETY: deliberately reading address 0, which is never mapped: the page fault
            // is the injected crash.
            unsafe { core::ptr::read_volatile(core::ptr::null::<u8>()) };
        }
    });
}

/// Brings up the virtio-blk with its bounce slots; logs what it is. With `bench = "direct"`
/// it runs the benchmark on the backend and serves nobody.
fn open_disk<'t>(o: &mut Opening<'_>, tables: &'t mut Tables) -> Option<Block<'t, Disk>> {
    let dma = o.dma;
    let (Ok(ring), Ok(memory)) = (
        dma.subregion(0, DEVICE_RING_LEN),
        dma.subregion(DEVICE_RING_LEN, dma.len().saturating_sub(DEVICE_RING_LEN)),
    ) else {
        println!(
            "DMA region {} ({} bytes) is too small",
            o.dma_name,
            dma.len()
        );
        return None;
    };
    // The largest bounce slot (up to `slot-kib`, 4..=4096 by the schema) that still leaves at
    // least 8 of them.
    let mut slot_len = (o.number("slot-kib")? as usize * 1024).next_power_of_two();
    while slot_len > 4096 && memory.len().saturating_sub(4096) / slot_len < 8 {
        slot_len /= 2;
    }
    let transport = o.take_transport()?;
    let backend = VirtioBackend::new(transport, ring, memory, slot_len, |_| {
        o.route(0);
        Ok(())
    });
    let mut backend = backend
        .inspect_err(|e| println!("{}: initialisation failed ({e:?}); stopping", o.name))
        .ok()?;
    let capacity = backend.capacity();
    println!(
        "{}: virtio-blk {}, {capacity} sectors ({} MiB){}, {} bounce slots of {} KiB, interrupts {} (generation {})",
        o.name,
        o.kind,
        capacity / 2048,
        if backend.read_only() {
            ", read-only"
        } else {
            ""
        },
        backend.slots(),
        slot_len / 1024,
        o.interrupts_word(),
        o.generation,
    );
    if o.config.get("bench") == Some("direct") {
        let poll_ns = o.number("poll-us")? * 1000;
        bench_direct(&mut backend, o, poll_ns);
        return None;
    }
    // 1..=256 by the schema.
    let queue_depth = o.number("queue-depth")? as u16;
    Some(Block::new(backend, tables, o.name, queue_depth))
}

/// The benchmark's direct path: the workloads on the backend itself, waiting for the device's
/// interrupt exactly as the serving loop does (or polling every [`POLL_NS`] without one).
struct Direct<'b, B> {
    backend: &'b mut B,
    device: usize,
    irq_bits: u64,
    interrupts: bool,
    /// Polls this long before sleeping, as the serving loop does.
    poll_ns: u64,
}

impl<B: Backend> bench::Engine for Direct<'_, B> {
    fn buffer(&self, tag: usize, bytes: usize) -> Option<DmaRegion<'_>> {
        // One bounce slot per tag, as the server uses them when serving.
        (bytes <= self.backend.slot_len())
            .then(|| self.backend.slot_buffer(tag))
            .flatten()
    }

    fn submit(
        &mut self,
        tag: usize,
        op: bench::Op,
        sector: u64,
        bytes: usize,
    ) -> Result<(), bench::EngineError> {
        let op = match op {
            bench::Op::Read => Op::Read,
            bench::Op::Write => Op::Write,
            bench::Op::Flush => Op::Flush,
        };
        self.backend
            .submit(tag, op, sector, bytes)
            .map_err(|_| bench::EngineError)
    }

    fn kick(&mut self) {
        self.backend.kick();
    }

    fn poll(&mut self) -> Result<Option<(usize, bool)>, bench::EngineError> {
        Ok(self.backend.poll())
    }

    fn wait(&mut self) -> Result<(usize, bool), bench::EngineError> {
        self.backend.suppress_interrupts();
        if self.poll_ns > 0 {
            let until = time_now_ns() + self.poll_ns;
            while time_now_ns() < until {
                if let Some(done) = self.backend.poll() {
                    return Ok(done);
                }
            }
        }
        loop {
            if let Some(done) = self.backend.poll() {
                return Ok(done);
            }
            if !self.interrupts {
                sleep_until(time_now_ns() + POLL_NS);
                continue;
            }
            if self.backend.request_interrupt() {
                continue;
            }
            let bits = wait(u64::MAX).map_err(|_| bench::EngineError)?;
            if bits & self.irq_bits != 0 {
                self.backend.ack_interrupt();
                let _ = irq_ack(self.device, bits & self.irq_bits);
            }
        }
    }

    fn now_ns(&self) -> u64 {
        time_now_ns()
    }
}

fn bench_direct<B: Backend>(backend: &mut B, o: &Opening<'_>, poll_ns: u64) {
    let capacity = backend.capacity();
    let needed = bench::BUFFER_BYTES / backend.slot_len().max(1);
    if backend.slot_len() < bench::MAX_REQUEST || backend.slots() < needed.max(bench::DEEP) {
        println!(
            "blkbench: direct: needs {} bounce slots of {} KiB (slot-kib and a larger DMA region)",
            needed.max(bench::DEEP),
            bench::MAX_REQUEST / 1024
        );
        return;
    }
    println!("blkbench: direct path on the backend, {capacity} sectors");
    let mut engine = Direct {
        backend,
        device: o.device(),
        irq_bits: o.irq_bits(),
        interrupts: o.interrupts(),
        poll_ns,
    };
    bench::run_all(&mut engine, capacity, |w, f| {
        println!("{}", bench::Line(w, f));
    });
    println!("blkbench: done");
}
