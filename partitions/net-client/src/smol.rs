//! A `smoltcp::phy::Device` over [`NetClient`]: received frames are copied out of the shared
//! data area into a private buffer before smoltcp sees them (so the server cannot change a
//! frame while it is parsed), and frames to send are built in a private buffer and copied in.

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use virtio::transport::shmem::Notifier;

use crate::{MAX_FRAME, NetClient, NetError};

/// smoltcp's view of the NIC.
#[derive(Debug)]
pub struct SmolNic<'a, N: Notifier + Clone, const Q: usize = 32> {
    /// The driver.
    pub nic: NetClient<'a, N, Q>,
    rx: [u8; MAX_FRAME],
    /// The last error the driver reported (e.g. [`NetError::Reset`]), for the caller to act on.
    pub error: Option<NetError>,
    /// Frames sent or received since the caller last cleared it.
    pub activity: bool,
}

impl<'a, N: Notifier + Clone, const Q: usize> SmolNic<'a, N, Q> {
    /// Wraps a driver.
    pub fn new(nic: NetClient<'a, N, Q>) -> Self {
        Self {
            nic,
            rx: [0; MAX_FRAME],
            error: None,
            activity: false,
        }
    }
}

/// A received frame, already copied out of shared memory.
pub struct RxToken<'b>(&'b [u8]);

/// Room to send one frame.
pub struct TxToken<'b, 'a, N: Notifier + Clone, const Q: usize> {
    nic: &'b mut NetClient<'a, N, Q>,
    error: &'b mut Option<NetError>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0)
    }
}

impl<N: Notifier + Clone, const Q: usize> phy::TxToken for TxToken<'_, '_, N, Q> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut f = Some(f);
        let mut result = None;
        if len > 0 && len <= MAX_FRAME && self.nic.can_transmit() {
            let sent = self.nic.transmit_with(len, |buf| {
                if let Some(f) = f.take() {
                    result = Some(f(buf));
                }
            });
            if let Err(e) = sent {
                *self.error = Some(e);
            }
        }
        match (result, f) {
            (Some(r), _) => r,
            // The frame could not be sent (too long, or no buffer after all): let smoltcp
            // build it into scratch space and drop it, as a lossy link would.
            (None, Some(f)) => {
                let mut scratch = [0u8; MAX_FRAME];
                f(&mut scratch[..len.min(MAX_FRAME)])
            }
            (None, None) => unreachable!("the closure ran but produced no result"),
        }
    }
}

impl<'a, N: Notifier + Clone, const Q: usize> Device for SmolNic<'a, N, Q> {
    type RxToken<'b>
        = RxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b, 'a, N, Q>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let len = match self.nic.receive(&mut self.rx) {
            Ok(Some(len)) => len,
            Ok(None) => return None,
            Err(e) => {
                self.error = Some(e);
                return None;
            }
        };
        self.activity = true;
        Some((
            RxToken(&self.rx[..len]),
            TxToken {
                nic: &mut self.nic,
                error: &mut self.error,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        if !self.nic.can_transmit() {
            return None;
        }
        self.activity = true;
        Some(TxToken {
            nic: &mut self.nic,
            error: &mut self.error,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // For Ethernet smoltcp counts the 14-byte header in the MTU.
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(16);
        caps
    }
}
