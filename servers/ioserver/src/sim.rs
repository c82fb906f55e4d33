//! A class's host-test world (feature `conformance`): its server next to its simulated real
//! device, in one thread, at a test-controlled time. A client's wait runs the device and the
//! server until neither moves, as a partition blocked in `wait` lets the others run; a wait on
//! the real device's transport runs the device alone.
extern crate std;

use core::cell::{Cell, RefCell};
use std::boxed::Box;
use std::rc::Rc;
use std::string::String;
use std::vec::Vec;

use virtio::dma::{DmaRegion, OwnedDma};
use virtio::transport::shmem::sim::{Pump, SimNotifier, no_pump, pair};

use crate::conformance::{Harness, REGIONS, run_all};
use crate::{AddError, DeviceClass, Server};

/// A channel's configuration for host tests: its name and its `key = value` pairs (numbers
/// in decimal), as the partition glue hands them to [`DeviceClass::spec`].
#[derive(Debug, Clone, Copy)]
pub struct Keys<'k> {
    /// The channel's name.
    pub channel: &'k str,
    /// Its settings.
    pub pairs: &'k [(&'k str, &'k str)],
}

impl crate::Settings for Keys<'_> {
    fn text(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
    fn number(&self, key: &str) -> Option<u64> {
        self.text(key)?.parse().ok()
    }
    fn channel(&self) -> Option<&str> {
        Some(self.channel)
    }
}

/// Steps of a simulated device per wait on its transport, at most.
const DEVICE_STEPS: usize = 100;
/// Rounds of device steps and server passes per client wait, at most.
const WORLD_ROUNDS: usize = 1000;

/// The driver's end of the notifications of a simulated device whose own end is `device_end`:
/// each wait on it runs `step` on `device` until a step does nothing.
pub fn driver_end<'a, D: 'a>(
    device_end: &SimNotifier<'a>,
    device: &Rc<RefCell<D>>,
    step: fn(&mut D) -> bool,
) -> SimNotifier<'a> {
    let device = device.clone();
    let pump: Pump<'a> = Rc::new(RefCell::new(Some(Box::new(move || {
        for _ in 0..DEVICE_STEPS {
            if !step(&mut device.borrow_mut()) {
                break;
            }
        }
    }))));
    SimNotifier {
        inbox: device_end.outbox.clone(),
        outbox: device_end.inbox.clone(),
        pump,
    }
}

/// A server of class `C` next to its simulated real device `D`.
pub struct World<'a, C: DeviceClass, D> {
    /// The simulated real device.
    pub device: Rc<RefCell<D>>,
    /// The server.
    pub server: Rc<RefCell<Server<'a, SimNotifier<'a>, C>>>,
    /// What a client's wait runs: device steps and server passes until neither moves.
    pub pump: Pump<'a>,
    /// The server's clock, in nanoseconds (0 at first).
    pub now: Rc<Cell<u64>>,
}

impl<'a, C: DeviceClass + 'a, D: 'a> World<'a, C, D> {
    /// A server of `class` next to `device`, which `step` runs once (whether it did anything).
    pub fn new(device: Rc<RefCell<D>>, class: C, step: fn(&mut D) -> bool) -> Self {
        let server = Rc::new(RefCell::new(Server::new(class)));
        let now = Rc::new(Cell::new(0u64));
        let (dev, srv, clock) = (device.clone(), server.clone(), now.clone());
        let pump: Pump<'a> = Rc::new(RefCell::new(Some(Box::new(move || {
            for _ in 0..WORLD_ROUNDS {
                let device_moved = step(&mut dev.borrow_mut());
                let server_moved = srv.borrow_mut().run_once(clock.get()).busy;
                if !device_moved && !server_moved {
                    break;
                }
            }
        }))));
        Self {
            device,
            server,
            pump,
            now,
        }
    }

    /// Adds a client granted `spec` whose channel is `region` (`ring_len` bytes of ring area):
    /// its index, and the client's end of its notifications (whose waits run the world).
    pub fn add_client(
        &self,
        region: DmaRegion<'a>,
        ring_len: usize,
        spec: &C::Spec,
    ) -> Result<(usize, SimNotifier<'a>), AddError<C::Refusal>> {
        let (server_end, client_end) = pair(no_pump(), self.pump.clone());
        let index = self.server.borrow_mut().add_client(
            region,
            ring_len,
            spec,
            self.now.get(),
            server_end,
        )?;
        Ok((index, client_end))
    }

    /// Runs the device and the server until neither moves.
    pub fn run(&self) {
        if let Some(run) = self.pump.borrow_mut().as_mut() {
            run();
        }
    }
}

/// Runs the conformance suite ([`run_all`]) on harnesses that `make` builds, each over a fresh
/// pair of simulated-device memories of `len` bytes (the device of the server, and of the
/// server after a restart), with client regions of `len` bytes. The memories live as long as
/// the test.
pub fn conformance<H: Harness<'static>>(
    len: usize,
    make: impl Fn(&'static [OwnedDma; 2]) -> H,
) -> Result<(), String> {
    let regions: Vec<DmaRegion<'static>> = (0..REGIONS)
        .map(|_| Box::leak(Box::new(OwnedDma::new(len))).region(0))
        .collect();
    let devices = || &*Box::leak(Box::new([OwnedDma::new(len), OwnedDma::new(len)]));
    run_all(|| make(devices()), Vec::leak(regions))
}
