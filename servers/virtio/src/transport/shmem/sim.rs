//! In-process notifications for host tests of the inter-partition transport and of the I/O
//! servers and clients built on it: what the kernel's notification objects do between
//! partitions, in one thread. A [`SimNotifier`] rings its peer's [`Doorbell`]; its `wait` runs a
//! [`Pump`] (the rest of the simulated system, as a partition blocked in `wait` lets the others
//! run) and then takes a pending signal.

use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::{Cell, RefCell};

use super::Notifier;

/// Runs the rest of a simulated system once; empty until a test installs it (the parts it runs
/// usually need the notifiers first).
pub type Pump<'a> = Rc<RefCell<Option<Box<dyn FnMut() + 'a>>>>;

/// A pump with nothing to run yet.
pub fn no_pump<'a>() -> Pump<'a> {
    Rc::new(RefCell::new(None))
}

/// One direction's doorbell: whether a signal is pending, and how many were sent.
#[derive(Debug, Default)]
pub struct Doorbell {
    /// A signal not yet taken.
    pub pending: Cell<bool>,
    /// Signals sent so far.
    pub rung: Cell<usize>,
}

/// One end of a simulated notification pair.
#[derive(Clone)]
pub struct SimNotifier<'a> {
    /// Rung by the peer.
    pub inbox: Rc<Doorbell>,
    /// Rung by this end.
    pub outbox: Rc<Doorbell>,
    /// What `wait` runs before looking at the inbox.
    pub pump: Pump<'a>,
}

impl Notifier for SimNotifier<'_> {
    fn notify_peer(&mut self) {
        self.outbox.pending.set(true);
        self.outbox.rung.set(self.outbox.rung.get() + 1);
    }
    fn take_pending(&mut self) -> bool {
        self.inbox.pending.replace(false)
    }
    fn wait(&mut self) -> bool {
        if let Some(run) = self.pump.borrow_mut().as_mut() {
            run();
        }
        self.take_pending()
    }
}

/// Two connected ends: what the first sends the second receives and back; each end's `wait`
/// runs its own pump.
pub fn pair<'a>(pump_a: Pump<'a>, pump_b: Pump<'a>) -> (SimNotifier<'a>, SimNotifier<'a>) {
    let ab = Rc::new(Doorbell::default());
    let ba = Rc::new(Doorbell::default());
    (
        SimNotifier {
            inbox: ba.clone(),
            outbox: ab.clone(),
            pump: pump_a,
        },
        SimNotifier {
            inbox: ab,
            outbox: ba,
            pump: pump_b,
        },
    )
}
