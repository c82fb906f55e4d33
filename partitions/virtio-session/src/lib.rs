//! What every client-side VirtIO driver over Bulkhead's inter-partition transport does the same
//! way, whatever its device class: attach to the channel a server laid out, check the device
//! type, negotiate features and set up split queues (§3.1.1, through the library's
//! [`initialize`]), notice a server restart or a broken channel, reconnect, and wait for used
//! buffers without waiting forever.
//!
//! A class driver (`blk-client`, `net-client`, `console-client`, `entropy-client`) describes its
//! device with a [`Class`], holds a [`Session`] and keeps only what is its own: its buffers, its
//! requests, its configuration fields. Its error type comes from [`client_error!`]: the common
//! variants, a conversion from [`SessionError`], and the class's own variants.
//!
//! Queues: a session of `K` queues sets up the device's queues `0..K`, each a split queue of `Q`
//! entries, in equal page-aligned shares of the ring area (the last share takes what is left).
//! Queue `i` of the session is the device's queue `i`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub use virtio;

use virtio::dma::DmaRegion;
use virtio::features::{Features, status};
use virtio::queue::{Completion, DriverQueue, Token};
use virtio::split::SplitQueue;
use virtio::transport::shmem::{Notifier, SharedMemoryTransport};
use virtio::transport::{Transport, initialize, read_config};

#[cfg(test)]
mod tests;

/// Ring-area shares are page-aligned when a page or more each.
const PAGE: usize = 4096;
/// Smallest alignment of a split queue's parts (§2.7: the descriptor table's 16 bytes).
const QUEUE_ALIGN: usize = 16;

/// Why attaching, a wait or the device failed, whatever the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// The server has not laid out the channel (yet): no magic in the control block.
    NotReady,
    /// The channel's device type is not the class's.
    WrongDevice,
    /// The data area is smaller than the class needs ([`Class::data_bytes`]).
    TooSmall,
    /// The device was reset (the server restarted, status no longer DRIVER_OK): whatever was in
    /// flight is lost; reconnect.
    Reset,
    /// The server declared the channel broken (DEVICE_NEEDS_RESET, §2.1.2): reconnect.
    NeedsReset,
    /// No used buffer within the session's bounded waits, or the server did not answer a
    /// request during initialisation.
    Timeout,
    /// The transport or a queue failed.
    Transport(virtio::Error),
}

impl From<virtio::Error> for SessionError {
    fn from(error: virtio::Error) -> Self {
        match error {
            virtio::Error::NoDevice => SessionError::NotReady,
            virtio::Error::DeviceNeedsReset => SessionError::NeedsReset,
            virtio::Error::Timeout => SessionError::Timeout,
            other => SessionError::Transport(other),
        }
    }
}

/// What a class driver asks of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// The VirtIO device type (§5, [`virtio::devices::id`]).
    pub device_type: u32,
    /// The features the driver understands; the negotiated ones are their intersection with
    /// what the server offers (plus VERSION_1).
    pub features: Features,
    /// Bytes of data area the driver needs for its buffers; less is [`SessionError::TooSmall`],
    /// found before the device is touched.
    pub data_bytes: usize,
}

/// A live connection to one device over a shared-memory channel, with `K` split queues of `Q`
/// entries. Keeps what reconnecting needs: the region, a notifier to clone, the class and the
/// wait bound.
#[derive(Debug)]
pub struct Session<'a, N: Notifier + Clone, const Q: usize, const K: usize> {
    region: DmaRegion<'a>,
    template: N,
    class: Class,
    max_waits: u32,
    transport: SharedMemoryTransport<'a, N>,
    queues: [Option<SplitQueue<'a, Q>>; K],
    features: Features,
}

impl<'a, N: Notifier + Clone, const Q: usize, const K: usize> Session<'a, N, Q, K> {
    /// Attaches to the channel laid out in `region` and initialises the device (§3.1.1): checks
    /// the device type and the data area, negotiates `class.features`, sets up and enables the
    /// queues, sets DRIVER_OK. `max_waits` bounds [`Session::wait_used`].
    /// [`SessionError::NotReady`] means the server has not laid the channel out yet: try again
    /// later.
    pub fn attach(
        region: DmaRegion<'a>,
        notifier: N,
        class: Class,
        max_waits: u32,
    ) -> Result<Self, SessionError> {
        let mut transport = SharedMemoryTransport::new(region, notifier.clone())?;
        if transport.device_type() != class.device_type {
            return Err(SessionError::WrongDevice);
        }
        if transport.data_area().len() < class.data_bytes {
            return Err(SessionError::TooSmall);
        }
        let ring = transport.ring_area();
        let mut queues = [const { None }; K];
        let features = initialize(&mut transport, class.features, |t, negotiated| {
            for (index, slot) in queues.iter_mut().enumerate() {
                let queue = SplitQueue::<Q>::new(queue_ring(ring, index, K)?, negotiated, false)?;
                let index = u16::try_from(index).map_err(|_| virtio::Error::QueueUnavailable)?;
                t.enable_queue(index, queue.size(), queue.addresses())?;
                *slot = Some(queue);
            }
            Ok(())
        })?;
        Ok(Self {
            region,
            template: notifier,
            class,
            max_waits,
            transport,
            queues,
            features,
        })
    }

    /// A fresh session on the same channel, with the same class and wait bound: what a driver
    /// builds its state on again after [`SessionError::Reset`] or [`SessionError::NeedsReset`].
    /// This session is left as it was if that fails ([`SessionError::NotReady`] while the
    /// server is not back).
    pub fn reattach(&self) -> Result<Self, SessionError> {
        Self::attach(
            self.region,
            self.template.clone(),
            self.class,
            self.max_waits,
        )
    }

    /// Replaces this session by a fresh one on the same channel (see [`Session::reattach`]):
    /// everything in flight on the old queues is forgotten.
    pub fn reconnect(&mut self) -> Result<(), SessionError> {
        *self = self.reattach()?;
        Ok(())
    }

    /// Whether the device is still live: [`SessionError::NeedsReset`] if the server declared
    /// the channel broken, [`SessionError::Reset`] if it laid the channel out again (status no
    /// longer DRIVER_OK) or the device FAILED.
    pub fn check_device(&mut self) -> Result<(), SessionError> {
        let s = self.transport.status();
        if s & status::DEVICE_NEEDS_RESET != 0 {
            Err(SessionError::NeedsReset)
        } else if s & status::DRIVER_OK == 0 || s & status::FAILED != 0 {
            Err(SessionError::Reset)
        } else {
            Ok(())
        }
    }

    /// The negotiated features.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Where the driver places its buffers; bus addresses are offsets in this area.
    pub fn data_area(&self) -> DmaRegion<'a> {
        self.transport.data_area()
    }

    /// How many empty waits in a row [`Session::wait_used`] allows.
    pub fn max_waits(&self) -> u32 {
        self.max_waits
    }

    /// The notifier (e.g. to count signals in tests).
    pub fn notifier(&mut self) -> &mut N {
        self.transport.notifier()
    }

    /// The driver side of queue `index`.
    pub fn queue(&mut self, index: u16) -> Result<&mut SplitQueue<'a, Q>, SessionError> {
        self.queues
            .get_mut(usize::from(index))
            .and_then(Option::as_mut)
            .ok_or(SessionError::Transport(virtio::Error::QueueUnavailable))
    }

    /// Takes the next used buffer on queue `index`, if any, with the position in `slots` of
    /// the token it carries; that slot is cleared. A token in no slot is the device's error
    /// ([`virtio::Error::BadUsedId`]).
    pub fn take_used(
        &mut self,
        index: u16,
        slots: &mut [Option<Token>],
    ) -> Result<Option<(usize, Completion)>, SessionError> {
        let Some(completion) = self.queue(index)?.poll_used()? else {
            return Ok(None);
        };
        let slot = slots
            .iter()
            .position(|t| *t == Some(completion.token))
            .ok_or(SessionError::Transport(virtio::Error::BadUsedId))?;
        slots[slot] = None;
        Ok(Some((slot, completion)))
    }

    /// Notifies the server of what was submitted on queue `index` since the last call, if it
    /// asked to be (§2.7.13.4; with EVENT_IDX one notification covers a batch).
    pub fn kick(&mut self, index: u16) -> Result<(), SessionError> {
        if self.queue(index)?.should_notify()? {
            self.transport.notify(index)?;
        }
        Ok(())
    }

    /// Reads `out.len()` bytes of device configuration at `offset`, consistently (§2.5.1).
    pub fn read_config(&mut self, offset: usize, out: &mut [u8]) -> Result<(), SessionError> {
        Ok(read_config(&mut self.transport, offset, out)?)
    }

    /// Acknowledges interrupts (clears the interrupt word).
    pub fn ack_interrupt(&mut self) {
        self.transport.ack_interrupt();
    }

    /// One round of a bounded wait for a used buffer on queue `index`, for a driver that has
    /// just polled the queue and found nothing it wanted; it polls again when this returns
    /// `Ok`. The round checks the device ([`Session::check_device`]), asks for an interrupt and
    /// re-checks the queue (§2.7.10: if a buffer is already there it returns at once rather than
    /// sleep), then waits once on the notifier. `misses` counts the waits in a row that brought
    /// no signal (start it at 0 for each wait); at [`Session::max_waits`] the round checks the
    /// device once more and fails with [`SessionError::Timeout`].
    pub fn wait_used(&mut self, index: u16, misses: &mut u32) -> Result<(), SessionError> {
        self.check_device()?;
        if self.queue(index)?.enable_interrupts()? {
            return Ok(());
        }
        if self.transport.notifier().wait() {
            self.transport.ack_interrupt();
            *misses = 0;
            return Ok(());
        }
        *misses += 1;
        if *misses >= self.max_waits {
            self.check_device()?;
            return Err(SessionError::Timeout);
        }
        Ok(())
    }
}

/// Queue `index`'s share of the ring area when `count` queues share it.
fn queue_ring(ring: DmaRegion<'_>, index: usize, count: usize) -> virtio::Result<DmaRegion<'_>> {
    let share = ring.len() / count;
    let align = if share >= PAGE { PAGE } else { QUEUE_ALIGN };
    let share = share / align * align;
    let start = index * share;
    let len = if index + 1 == count {
        ring.len() - start
    } else {
        share
    };
    ring.subregion(start, len)
}

/// Declares a class driver's error enum: the common variants (`NotReady`, the class's
/// wrong-device variant, `Reset`, `NeedsReset`, `Transport(virtio::Error)`) around the class's
/// own, with `From<SessionError>` and `From<virtio::Error>` (through [`SessionError`]).
/// `too_small` and `timeout` say what [`SessionError::TooSmall`] and [`SessionError::Timeout`]
/// become for the class; without them, `Transport(virtio::Error::OutOfBounds)` and the class's
/// own `Timeout` variant.
///
/// ```
/// virtio_session::client_error! {
///     /// Why the widget failed.
///     pub enum WidgetError {
///         /// The channel is not a widget.
///         wrong_device: NotWidget,
///         /// No answer in time.
///         Timeout,
///     }
/// }
/// assert_eq!(
///     WidgetError::from(virtio_session::virtio::Error::NoDevice),
///     WidgetError::NotReady
/// );
/// assert_eq!(
///     WidgetError::from(virtio_session::SessionError::TooSmall),
///     WidgetError::Transport(virtio_session::virtio::Error::OutOfBounds)
/// );
/// ```
#[macro_export]
macro_rules! client_error {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $($body:tt)* }
    ) => {
        $crate::client_error! {
            $(#[$meta])*
            $vis enum $name { $($body)* }
            too_small => $name::Transport($crate::virtio::Error::OutOfBounds),
            timeout => $name::Timeout,
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(#[$wrong_meta:meta])*
            wrong_device: $wrong:ident,
            $( $(#[$own_meta:meta])* $own:ident, )*
        }
        too_small => $too_small:expr,
        timeout => $timeout:expr $(,)?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            /// The server has not laid out the channel (yet): no magic in the control block.
            NotReady,
            $(#[$wrong_meta])*
            $wrong,
            $( $(#[$own_meta])* $own, )*
            /// The device was reset (the server restarted): whatever was in flight is lost;
            /// reconnect.
            Reset,
            /// The server declared the channel broken (DEVICE_NEEDS_RESET): reconnect.
            NeedsReset,
            /// The transport or a queue failed.
            Transport($crate::virtio::Error),
        }

        impl From<$crate::SessionError> for $name {
            fn from(error: $crate::SessionError) -> Self {
                match error {
                    $crate::SessionError::NotReady => Self::NotReady,
                    $crate::SessionError::WrongDevice => Self::$wrong,
                    $crate::SessionError::TooSmall => $too_small,
                    $crate::SessionError::Reset => Self::Reset,
                    $crate::SessionError::NeedsReset => Self::NeedsReset,
                    $crate::SessionError::Timeout => $timeout,
                    $crate::SessionError::Transport(error) => Self::Transport(error),
                }
            }
        }

        impl From<$crate::virtio::Error> for $name {
            fn from(error: $crate::virtio::Error) -> Self {
                $crate::SessionError::from(error).into()
            }
        }
    };
}
