//! The partition: binds the portable server (`blk_server`) to the kernel. It finds its disk
//! (a device granted by the description), its DMA region, and per client channel a shared
//! region and two notifications; then it serves in a loop, sleeping in `wait` when idle.
//!
//! Names, per channel `C` the server serves (overridable with `channels.C.region`,
//! `channels.C.kick`, `channels.C.irq`): shared region `C`, notification `C-kick` (client →
//! server) and `C-irq` (server → client). Server-wide keys: `disk` (device name, default
//! `disk0`), `dma` (DMA region name, default `queues`), `queue-depth` (largest client queue,
//! default 64), `poll-us` (how long to poll the device for a completion before sleeping while
//! requests are in flight, default [`POLL_BEFORE_SLEEP_NS`]; 0: sleep at once). See
//! docs/io-servers.md.

use abi::DeviceInfo;
use blk_server::backend::{Backend, Op, VirtioBackend};
use blk_server::bench;
use blk_server::disk::DiskSpec;
use blk_server::server::{ClientState, MAX_CLIENTS, Server};
use iokit::{client_channel, open_device};
use rt::config::Config;
use rt::println;
use rt::syscall::{irq_ack, partition_info, poll, sleep_until, time_now_ns, wait};
use virtio::dma::DmaRegion;

rt::entry!(main);

/// Ring area per client channel: enough for a split or packed queue of 256 entries.
const CLIENT_RING_LEN: usize = 0x4000;
/// Ring memory for the real device's queue (legacy layout of 256 entries: 10.3 KiB).
const DEVICE_RING_LEN: usize = 0x4000;
/// Entries of the real device's queue (QEMU's virtio-blk default; a legacy device's queue
/// size is fixed by the device).
const DEVICE_QUEUE: usize = 256;
/// How long to sleep between polls of the device while requests are in flight and its
/// interrupt is not routed to us.
const POLL_NS: u64 = 200_000;
/// How long the server keeps polling while requests are on the device and no client got a
/// completion, before it sleeps in `wait` (`poll-us`): a completion found by polling costs no
/// interrupt, no wake-up and no switch to the idle loop and back.
const POLL_BEFORE_SLEEP_NS: u64 = 50_000;

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

fn bench_direct<B: Backend>(
    backend: &mut B,
    device: usize,
    info: &DeviceInfo,
    interrupts: bool,
    poll_ns: u64,
) {
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
        device,
        irq_bits: info.irq_bits,
        interrupts,
        poll_ns,
    };
    bench::run_all(&mut engine, capacity, |w, f| {
        println!("{}", bench::Line(w, f));
    });
    println!("blkbench: done");
}

fn main() {
    let generation = partition_info().map_or(0, |i| i.generation);
    let mut text = [0u8; 4096];
    let config = rt::config::read(&mut text).unwrap_or_else(|e| {
        println!("no configuration ({e:?}): serving no clients");
        Config::new("")
    });
    let disk_name = config.get("disk").unwrap_or("disk0");
    let dma_name = config.get("dma").unwrap_or("queues");
    let queue_depth = config.get_u64("queue-depth").unwrap_or(64).clamp(1, 256) as u16;
    let poll_ns = config
        .get_u64("poll-us")
        .map_or(POLL_BEFORE_SLEEP_NS, |us| us.min(10_000) * 1000);
    // Fault injection for the tests: in the first generation only, fault in the middle of
    // I/O once this many requests have completed.
    let crash_after = config
        .get_u64("crash-after-requests")
        .filter(|_| generation == 0);

    let Some((device, info)) = iokit::granted_device(disk_name) else {
        return;
    };
    let Some(dma_region) = iokit::dma_region(dma_name) else {
        return;
    };
    let (Ok(ring), Ok(memory)) = (
        dma_region.subregion(0, DEVICE_RING_LEN),
        dma_region.subregion(
            DEVICE_RING_LEN,
            dma_region.len().saturating_sub(DEVICE_RING_LEN),
        ),
    ) else {
        println!(
            "DMA region {dma_name} ({} bytes) is too small",
            dma_region.len()
        );
        return;
    };
    // The largest bounce slot (up to `slot-kib`, default 64 KiB) that still leaves at least 8
    // of them.
    let mut slot_len = config.get_u64("slot-kib").map_or(64 * 1024, |k| {
        (k.clamp(4, 4096) as usize * 1024).next_power_of_two()
    });
    while slot_len > 4096 && memory.len().saturating_sub(4096) / slot_len < 8 {
        slot_len /= 2;
    }

    let (transport, route, kind) = match open_device(device, &info) {
        Ok(t) => t,
        Err(e) => {
            println!("{disk_name}: no virtio-blk device ({e:?}); stopping");
            return;
        }
    };
    let mut routed = false;
    let backend = VirtioBackend::<_, DEVICE_QUEUE>::new(transport, ring, memory, slot_len, |_| {
        if let Some(mut r) = route {
            routed = r.route(0);
        }
        Ok(())
    });
    let backend = match backend {
        Ok(b) => b,
        Err(e) => {
            println!("{disk_name}: initialisation failed ({e:?}); stopping");
            return;
        }
    };
    let capacity = backend.capacity();
    let interrupts = info.irq_bits != 0 && (routed || info.msix_vectors == 0);
    println!(
        "{disk_name}: virtio-blk {kind}, {capacity} sectors ({} MiB){}, {} bounce slots of {} KiB, interrupts {} (generation {generation})",
        capacity / 2048,
        if backend.read_only() {
            ", read-only"
        } else {
            ""
        },
        backend.slots(),
        slot_len / 1024,
        if interrupts { "on" } else { "off (polling)" },
    );

    if config.get("bench") == Some("direct") {
        let mut backend = backend;
        bench_direct(&mut backend, device, &info, interrupts, poll_ns);
        return;
    }

    let mut server = Server::new(backend);
    let mut names: [&str; MAX_CLIENTS] = [""; MAX_CLIENTS];
    for channel in config.channels() {
        if config
            .channel_get(channel, "disk")
            .is_some_and(|d| d != disk_name)
        {
            continue;
        }
        let spec = match DiskSpec::from_config(
            config.channel_u64(channel, "lba-start"),
            config.channel_u64(channel, "lba-count"),
            config.channel_get(channel, "access"),
            capacity,
        ) {
            Ok(spec) => spec,
            Err(e) => {
                println!("{channel}: not exported: {e:?}");
                continue;
            }
        };
        let Some((memory, notifier, phys)) = client_channel(&config, channel) else {
            continue;
        };
        match server.add_client(
            memory,
            CLIENT_RING_LEN,
            spec,
            channel.as_bytes(),
            queue_depth,
            notifier,
        ) {
            Ok(index) => {
                names[index] = channel;
                // The kernel tells us the region's physical address only if the description
                // makes us its DMA owner: then the device can reach the client's buffers.
                let zero_copy = phys != 0 && server.set_dma_base(index, phys);
                println!(
                    "{channel}: virtual disk of {} sectors = {disk_name} sectors {}..{}, {}, {}",
                    spec.lba_count,
                    spec.lba_start,
                    spec.lba_start + spec.lba_count,
                    if spec.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    if zero_copy {
                        "zero copy"
                    } else {
                        "bounce buffers"
                    }
                );
            }
            Err(e) => println!("{channel}: cannot lay out the channel: {e:?}"),
        }
    }

    let mut states = [None; MAX_CLIENTS];
    loop {
        // While awake the server polls the device; its interrupt is asked for again only
        // before sleeping (a completion costs no interrupt, no acknowledgement, no wake-up).
        server.backend().suppress_interrupts();
        // Whether to sleep as soon as a pass does nothing: a client got a completion (it has
        // work now, and runs once we sleep), or we polled already since the last wake-up.
        let mut sleep_when_idle = poll_ns == 0;
        loop {
            let pass = server.run_once();
            sleep_when_idle |= pass.completed;
            if !pass.busy {
                if sleep_when_idle || server.in_flight() == 0 {
                    break;
                }
                // Requests on the device and no client has anything to do yet: poll a while
                // for the completion instead of sleeping until its interrupt.
                let until = time_now_ns() + poll_ns;
                while !server.run_once().busy && server.in_flight() > 0 && time_now_ns() < until {}
                sleep_when_idle = true;
                continue;
            }
            if let Some(limit) = crash_after {
                let done: u64 = (0..MAX_CLIENTS)
                    .filter_map(|i| server.client_stats(i))
                    .map(|s| s.ok)
                    .sum();
                if done >= limit && server.in_flight() > 0 {
                    println!(
                        "fault injection: crashing with {} requests in flight",
                        server.in_flight()
                    );
                    // SAFETY: deliberately reading address 0, which is never mapped: the
                    // page fault is the injected crash.
                    unsafe { core::ptr::read_volatile(core::ptr::null::<u8>()) };
                }
            }
        }
        for (index, last) in states.iter_mut().enumerate() {
            let now = server.client_state(index);
            if now != *last {
                if let Some(state) = now {
                    let stats = server.client_stats(index).unwrap_or_default();
                    match state {
                        ClientState::Serving => println!("{}: serving", names[index]),
                        ClientState::Idle => println!("{}: reset by the client", names[index]),
                        ClientState::Broken(why) => println!(
                            "{}: stopped until it resets: {why:?} (break {})",
                            names[index], stats.breaks
                        ),
                    }
                }
                *last = now;
            }
        }
        if interrupts && server.backend().request_interrupt() {
            // A completion arrived between the last pass and the request: serve it now.
            continue;
        }
        let bits = if server.in_flight() > 0 && !interrupts {
            sleep_until(time_now_ns() + POLL_NS);
            poll(u64::MAX).unwrap_or(0)
        } else {
            // Every bit: client kicks and the device's interrupts. Whatever woke us, the next
            // pass looks at every channel and at the device.
            match wait(u64::MAX) {
                Ok(bits) => bits,
                Err(_) => {
                    sleep_until(time_now_ns() + POLL_NS);
                    0
                }
            }
        };
        if bits & info.irq_bits != 0 {
            server.backend().ack_interrupt();
            let _ = irq_ack(device, bits & info.irq_bits);
        }
    }
}
