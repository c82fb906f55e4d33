//! The block benchmark's client path (`cargo xtask bench`): the workloads of
//! `blk_server::bench` on a virtual disk exported by the block server, over the
//! inter-partition VirtIO transport, with the same requests the server issues on the real
//! device in its `bench = "direct"` mode. Prints one `blkbench:` line per workload and ends.
//!
//! Unlike `demo-storage`, which polls its notification word with 1 ms sleeps, this client
//! blocks in the kernel's `wait` on its interrupt notification bit: a completion wakes it at
//! once.
//!
//! Configuration (`[partitions.NAME.config]`, all optional): `channel` (default `bench-disk`;
//! the shared region and the kick notification are named after it as in docs/io-servers.md),
//! `irq-mask` (notification bits to wait on, default all).
#![no_std]
#![no_main]

use abi::ObjectKind;
use blk_client::{BlkClient, Options};
use blk_server::bench::{self, Engine, EngineError};
use rt::println;
use rt::syscall::{lookup, notify, poll, region_info, sleep_until, time_now_ns, wait};
use virtio::devices::blk;
use virtio::dma::DmaRegion;
use virtio::transport::shmem::Notifier;

rt::entry!(main);

/// Entries of the client's queue.
const QUEUE: usize = 128;

/// Kicks the server through `C-kick`; waits for `C-irq` blocking in the kernel.
#[derive(Clone)]
struct BlockingNotifier {
    kick: usize,
    mask: u64,
}

impl Notifier for BlockingNotifier {
    fn notify_peer(&mut self) {
        let _ = notify(self.kick);
    }
    fn take_pending(&mut self) -> bool {
        poll(self.mask).is_ok_and(|bits| bits != 0)
    }
    fn wait(&mut self) -> bool {
        wait(self.mask).is_ok_and(|bits| bits != 0)
    }
}

struct Client<'a> {
    disk: BlkClient<'a, BlockingNotifier, QUEUE>,
    buffers: DmaRegion<'a>,
}

impl Engine for Client<'_> {
    fn buffer(&self, tag: usize, bytes: usize) -> Option<DmaRegion<'_>> {
        self.buffers.subregion(tag * bytes, bytes).ok()
    }

    fn submit(
        &mut self,
        tag: usize,
        op: bench::Op,
        sector: u64,
        bytes: usize,
    ) -> Result<(), EngineError> {
        let op = match op {
            bench::Op::Read => blk_client::Op::Read,
            bench::Op::Write => blk_client::Op::Write,
            bench::Op::Flush => blk_client::Op::Flush,
        };
        self.disk
            .submit_at(tag, op, sector, tag * bytes, bytes)
            .map_err(|_| EngineError)
    }

    fn kick(&mut self) {
        let _ = self.disk.kick();
    }

    fn poll(&mut self) -> Result<Option<(usize, bool)>, EngineError> {
        match self.disk.poll() {
            Ok(done) => Ok(done.map(|(tag, status)| (tag, status == blk::status::OK))),
            Err(_) => Err(EngineError),
        }
    }

    fn wait(&mut self) -> Result<(usize, bool), EngineError> {
        match self.disk.wait_any() {
            Ok((tag, status)) => Ok((tag, status == blk::status::OK)),
            Err(e) => {
                println!("blkbench: client: wait failed: {e:?}");
                Err(EngineError)
            }
        }
    }

    fn now_ns(&self) -> u64 {
        time_now_ns()
    }
}

fn main() {
    let mut text = [0u8; 1024];
    // The settings were checked against config-schema.toml and every default filled in when
    // the image was built: a missing one means a broken image (said, and we stop).
    let Some(config) = rt::config::load(&mut text) else {
        return;
    };
    // `kick` and `region` default to names derived from `channel` (config-schema.toml).
    let (Some(kick_name), Some(region_name)) = (config.need("kick"), config.need("region")) else {
        return;
    };
    // Absent `irq-mask`: wait on every bit.
    let mask = config.get_u64("irq-mask").unwrap_or(u64::MAX);
    let region = lookup(ObjectKind::SharedRegion, region_name).and_then(region_info);
    let kick = lookup(ObjectKind::Notification, kick_name);
    let (Ok(region), Ok(kick)) = (region, kick) else {
        println!("blkbench: {region_name} or {kick_name} not granted: {region:?} {kick:?}");
        return;
    };
    // SAFETY: the kernel mapped the shared region at `address` for this partition and the
    // server for the partition's whole life; it is accessed only through DmaRegion views
    // (volatile and atomic accesses), and the library treats its contents as untrusted.
    let Ok(memory) =
        (unsafe { DmaRegion::new(region.address as *mut u8, region.size as usize, 0) })
    else {
        return;
    };
    let notifier = BlockingNotifier { kick, mask };
    let options = Options {
        depth: bench::DEEP,
        max_waits: u32::MAX,
    };
    let disk = loop {
        match BlkClient::<_, QUEUE>::attach(memory, notifier.clone(), options) {
            Ok(disk) => break disk,
            Err(_) => sleep_until(time_now_ns() + 1_000_000),
        }
    };
    let buffers = disk.buffers();
    if buffers.len() < bench::BUFFER_BYTES {
        println!(
            "blkbench: client: {} bytes of buffers, needs {} (a larger shared region)",
            buffers.len(),
            bench::BUFFER_BYTES
        );
        return;
    }
    let capacity = disk.capacity();
    println!(
        "blkbench: client path through the block server, {capacity} sectors, queue {QUEUE}, depth {}",
        bench::DEEP
    );
    let mut client = Client { disk, buffers };
    bench::run_all(&mut client, capacity, |w, f| {
        println!("{}", bench::Line(w, f));
    });
    println!("blkbench: done");
}
