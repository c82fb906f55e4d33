//! What the split and packed formats share: buffers and tokens on the driver side, validated
//! descriptor chains on the device side, and the event-index arithmetic.

use crate::dma::DmaRegion;
use crate::{Error, Result};

/// One guest buffer: `len` bytes at bus address `addr` (a data-area offset on the shared-memory
/// transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Bus address (or data-area offset) of the first byte.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// Names a submitted chain until the device returns it: the head descriptor index (split) or
/// buffer id (packed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub u16);

/// A chain the device has finished with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The token `submit` returned for the chain.
    pub token: Token,
    /// Bytes the device says it wrote, already checked against the chain's writable length.
    pub written: u32,
}

/// Where a queue's three areas live, as bus addresses for the transport (§2.6: descriptor area,
/// driver area, device area).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueAddresses {
    /// Descriptor table (split) or descriptor ring (packed).
    pub desc: u64,
    /// Available ring (split) or driver event suppression structure (packed).
    pub driver: u64,
    /// Used ring (split) or device event suppression structure (packed).
    pub device: u64,
}

/// The driver side of a virtqueue, whichever its format: non-blocking submit and complete.
pub trait DriverQueue {
    /// Makes a chain available: `readable` buffers first, then `writable` ones (§2.7.4.2).
    /// Returns the token its completion will carry. Does not notify the device.
    fn submit(&mut self, readable: &[Buffer], writable: &[Buffer]) -> Result<Token>;
    /// Whether the device asked to be notified about what was submitted since the last call
    /// (honouring EVENT_IDX or the no-notify flag). Call once after a batch of `submit`s.
    fn should_notify(&mut self) -> Result<bool>;
    /// Takes the next completed chain, if any. Ids and lengths from the device are checked.
    fn poll_used(&mut self) -> Result<Option<Completion>>;
    /// Asks the device not to interrupt (polling mode).
    fn disable_interrupts(&mut self) -> Result<()>;
    /// Asks the device to interrupt on the next completion, then re-checks: returns `true` if a
    /// completion is already pending, in which case the caller must poll again rather than
    /// sleep (the "request signal, re-check, cancel" idiom).
    fn enable_interrupts(&mut self) -> Result<bool>;
    /// How many more descriptors (split) or ring slots (packed) can be submitted.
    fn free_descriptors(&self) -> usize;
    /// The addresses to hand to the transport.
    fn addresses(&self) -> QueueAddresses;
    /// The queue size.
    fn size(&self) -> u16;
}

/// A driver's record of its chains on one queue: which of its own slots (a buffer, a request)
/// each outstanding token stands for. The device is not trusted (§2.7.8): a completion counts
/// only for a token the driver handed out and has not had back, and a queue whose device broke
/// the ring protocol once is not read again, nor given more work.
#[derive(Debug, Clone)]
pub struct Outstanding<const Q: usize> {
    slot_of: [u16; Q],
    broken: bool,
}

impl<const Q: usize> Default for Outstanding<Q> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const Q: usize> Outstanding<Q> {
    const NONE: u16 = u16::MAX;

    /// Nothing outstanding.
    pub const fn new() -> Self {
        Self {
            slot_of: [Self::NONE; Q],
            broken: false,
        }
    }

    /// Whether the device broke the ring protocol (or the driver found it unusable).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The device is not to be trusted any more: nothing more is read or submitted.
    pub fn set_broken(&mut self) {
        self.broken = true;
    }

    /// Makes `readable` then `writable` available on `queue` as slot `slot`'s chain. A full
    /// queue is `QueueFull` and nothing changes; any other failure marks the queue broken.
    pub fn submit(
        &mut self,
        queue: &mut dyn DriverQueue,
        slot: usize,
        readable: &[Buffer],
        writable: &[Buffer],
    ) -> Result<Token> {
        if self.broken {
            return Err(Error::DeviceNeedsReset);
        }
        let slot = u16::try_from(slot)
            .ok()
            .filter(|&s| s != Self::NONE)
            .ok_or(Error::OutOfBounds)?;
        let token = match queue.submit(readable, writable) {
            Ok(token) => token,
            Err(Error::QueueFull) => return Err(Error::QueueFull),
            Err(e) => {
                self.broken = true;
                return Err(e);
            }
        };
        match self.slot_of.get_mut(usize::from(token.0)) {
            Some(entry) => *entry = slot,
            None => {
                // A queue larger than this record: a driver's mistake, never the device's.
                self.broken = true;
                return Err(Error::BadUsedId);
            }
        }
        Ok(token)
    }

    /// The next chain the device finished on `queue`, with its slot; `None` when there is none
    /// or the queue is broken (from the first ring violation on, always `None`). A completion
    /// for a token that is not outstanding is skipped.
    pub fn next(&mut self, queue: &mut dyn DriverQueue) -> Option<(usize, Completion)> {
        while !self.broken {
            let completion = match queue.poll_used() {
                Ok(Some(completion)) => completion,
                Ok(None) => return None,
                Err(_) => {
                    self.broken = true;
                    return None;
                }
            };
            let Some(entry) = self.slot_of.get_mut(usize::from(completion.token.0)) else {
                continue;
            };
            let slot = core::mem::replace(entry, Self::NONE);
            if slot != Self::NONE {
                return Some((usize::from(slot), completion));
            }
        }
        None
    }
}

/// The device side of a virtqueue, whichever its format.
pub trait DeviceQueue {
    /// Takes and validates the next available chain into `chain`, replacing what it held;
    /// whether there was one (on an error its contents are unspecified). A chain is over a
    /// kilobyte: a server that keeps one per request pops straight into it rather than copying.
    fn pop_into(&mut self, chain: &mut Chain) -> Result<bool>;
    /// Takes and validates the next available chain, if any.
    fn pop(&mut self) -> Result<Option<Chain>> {
        let mut chain = Chain::empty();
        Ok(self.pop_into(&mut chain)?.then_some(chain))
    }
    /// Returns `chain` to the driver, declaring `written` bytes written into it.
    fn push(&mut self, chain: &Chain, written: u32) -> Result<()>;
    /// Whether the driver asked to be interrupted for what was pushed since the last call.
    fn should_interrupt(&mut self) -> Result<bool>;
    /// Asks the driver not to notify (polling mode).
    fn disable_notifications(&mut self) -> Result<()>;
    /// Asks the driver to notify on its next submission, then re-checks: returns `true` if a
    /// chain is already available and the caller must pop again rather than sleep.
    fn enable_notifications(&mut self) -> Result<bool>;
}

/// Whether moving an index from `old` to `new` crossed `event`, i.e. the peer asked to be
/// notified (§2.7.10: "`vring_need_event`"; also used by §2.8.10 with descriptor offsets).
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Most segments one chain may have on the device side. The specification bounds a chain only
/// by the queue size; an I/O server bounds it further so that parsing needs no allocation.
pub const MAX_CHAIN_SEGMENTS: usize = 64;

/// Longest chain in bytes (§2.7.5.2: "Drivers MUST NOT add a descriptor chain longer than
/// 2^32 bytes in total").
pub const MAX_CHAIN_BYTES: u64 = 1 << 32;

/// Total length of a chain's buffers, refused if it exceeds [`MAX_CHAIN_BYTES`].
pub(crate) fn chain_bytes(readable: &[Buffer], writable: &[Buffer]) -> Result<u64> {
    let total: u64 = readable
        .iter()
        .chain(writable)
        .map(|b| u64::from(b.len))
        .sum();
    if total > MAX_CHAIN_BYTES {
        return Err(Error::ChainTooLong);
    }
    Ok(total)
}

/// One validated buffer of a chain, as an offset into the client's granted area.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    /// Offset of the first byte in the granted area.
    pub offset: usize,
    /// Length in bytes.
    pub len: u32,
    /// Whether the driver made it device-writable.
    pub writable: bool,
}

/// The memory a client granted the I/O server: buffers must lie inside it. Its region's bus
/// base is the address the client uses for byte 0 (0 when buffers are named by offset).
#[derive(Debug, Clone, Copy)]
pub struct GrantedArea<'a> {
    memory: DmaRegion<'a>,
}

impl<'a> GrantedArea<'a> {
    /// The granted memory; the client names its byte 0 as `memory.bus_base()`.
    pub fn new(memory: DmaRegion<'a>) -> Self {
        Self { memory }
    }

    /// The underlying memory.
    pub fn memory(&self) -> &DmaRegion<'a> {
        &self.memory
    }

    /// Translates a client address range into an offset, if it lies wholly inside the grant.
    pub fn translate(&self, addr: u64, len: u32) -> Result<usize> {
        let offset = addr
            .checked_sub(self.memory.bus_base())
            .ok_or(Error::BufferOutsideGrant)?;
        let end = offset
            .checked_add(u64::from(len))
            .ok_or(Error::BufferOutsideGrant)?;
        if end > self.memory.len() as u64 {
            return Err(Error::BufferOutsideGrant);
        }
        usize::try_from(offset).map_err(|_| Error::BufferOutsideGrant)
    }
}

/// A descriptor chain taken from a queue by the device, copied and validated: every segment
/// lies inside the granted area and readable segments precede writable ones.
#[derive(Debug, Clone)]
pub struct Chain {
    id: u16,
    ring_slots: u16,
    segments: [Segment; MAX_CHAIN_SEGMENTS],
    count: usize,
    readable_len: u64,
    writable_len: u64,
}

impl Chain {
    pub(crate) fn new(id: u16) -> Self {
        Self {
            id,
            ring_slots: 0,
            segments: [Segment::default(); MAX_CHAIN_SEGMENTS],
            count: 0,
            readable_len: 0,
            writable_len: 0,
        }
    }

    /// A chain with no segments: storage for [`DeviceQueue::pop_into`].
    pub fn empty() -> Self {
        Self::new(0)
    }

    /// Empties the chain for reuse by a pop, without clearing the segment storage.
    pub(crate) fn restart(&mut self, id: u16) {
        self.id = id;
        self.ring_slots = 0;
        self.count = 0;
        self.readable_len = 0;
        self.writable_len = 0;
    }

    pub(crate) fn set_id(&mut self, id: u16) {
        self.id = id;
    }

    pub(crate) fn set_ring_slots(&mut self, slots: u16) {
        self.ring_slots = slots;
    }

    pub(crate) fn ring_slots(&self) -> u16 {
        self.ring_slots
    }

    /// Validates and appends one descriptor's buffer.
    pub(crate) fn append(
        &mut self,
        area: &GrantedArea<'_>,
        addr: u64,
        len: u32,
        writable: bool,
    ) -> Result<()> {
        if !writable && self.writable_len > 0 {
            return Err(Error::DirectionOrder);
        }
        if !writable && self.count > 0 && self.segments[self.count - 1].writable {
            return Err(Error::DirectionOrder);
        }
        let offset = area.translate(addr, len)?;
        if len == 0 {
            return Ok(());
        }
        // §2.7.5.2: no chain is longer than 2^32 bytes in total.
        if self.readable_len + self.writable_len + u64::from(len) > MAX_CHAIN_BYTES {
            return Err(Error::ChainTooLong);
        }
        let slot = self
            .segments
            .get_mut(self.count)
            .ok_or(Error::ChainTooLong)?;
        *slot = Segment {
            offset,
            len,
            writable,
        };
        self.count += 1;
        if writable {
            self.writable_len += u64::from(len);
        } else {
            self.readable_len += u64::from(len);
        }
        Ok(())
    }

    /// The head index (split) or buffer id (packed) the driver will see in the used element.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The validated segments, readable ones first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.count]
    }

    /// Total bytes the device may read.
    pub fn readable_len(&self) -> u64 {
        self.readable_len
    }

    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.writable_len
    }

    /// A cursor over the device-readable bytes.
    pub fn reader<'c, 'a>(&'c self, area: &'c GrantedArea<'a>) -> ChainReader<'c, 'a> {
        ChainReader {
            chain: self,
            area,
            segment: 0,
            position: 0,
        }
    }

    /// A cursor over the device-writable bytes.
    pub fn writer<'c, 'a>(&'c self, area: &'c GrantedArea<'a>) -> ChainWriter<'c, 'a> {
        let first = self
            .segments()
            .iter()
            .position(|s| s.writable)
            .unwrap_or(self.count);
        ChainWriter {
            chain: self,
            area,
            segment: first,
            position: 0,
            written: 0,
        }
    }
}

/// Reads the device-readable part of a chain in order.
#[derive(Debug)]
pub struct ChainReader<'c, 'a> {
    chain: &'c Chain,
    area: &'c GrantedArea<'a>,
    segment: usize,
    position: u32,
}

impl ChainReader<'_, '_> {
    /// Fills `out` completely, or fails with `ShortRead` if the readable part is shorter.
    pub fn read_exact(&mut self, out: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < out.len() {
            let segment = match self.chain.segments().get(self.segment) {
                Some(s) if !s.writable => *s,
                _ => return Err(Error::ShortRead),
            };
            let available = (segment.len - self.position) as usize;
            let take = available.min(out.len() - done);
            self.area.memory().read_bytes(
                segment.offset + self.position as usize,
                &mut out[done..done + take],
            )?;
            done += take;
            self.position += take as u32;
            if self.position == segment.len {
                self.segment += 1;
                self.position = 0;
            }
        }
        Ok(())
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        let rest: u64 = self.chain.segments()[self.segment.min(self.chain.count)..]
            .iter()
            .filter(|s| !s.writable)
            .map(|s| u64::from(s.len))
            .sum();
        rest - u64::from(self.position)
    }
}

/// Writes into the device-writable part of a chain in order.
#[derive(Debug)]
pub struct ChainWriter<'c, 'a> {
    chain: &'c Chain,
    area: &'c GrantedArea<'a>,
    segment: usize,
    position: u32,
    written: u32,
}

impl ChainWriter<'_, '_> {
    /// Writes all of `data`, or fails with `NotWritable` if the writable part is too short
    /// (in which case nothing past the writable buffers was touched).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let total = u64::from(self.written) + data.len() as u64;
        // `written` is reported in a 32-bit used-element field.
        if total > self.chain.writable_len() || total > u64::from(u32::MAX) {
            return Err(Error::NotWritable);
        }
        let mut done = 0;
        while done < data.len() {
            let segment = match self.chain.segments().get(self.segment) {
                Some(s) if s.writable => *s,
                _ => return Err(Error::NotWritable),
            };
            let available = (segment.len - self.position) as usize;
            let take = available.min(data.len() - done);
            self.area.memory().write_bytes(
                segment.offset + self.position as usize,
                &data[done..done + take],
            )?;
            done += take;
            self.position += take as u32;
            self.written += take as u32;
            if self.position == segment.len {
                self.segment += 1;
                self.position = 0;
            }
        }
        Ok(())
    }

    /// Bytes written so far: the `written` to report when pushing the chain.
    pub fn written(&self) -> u32 {
        self.written
    }
}

#[cfg(test)]
mod outstanding_tests {
    use alloc::collections::VecDeque;

    use super::*;

    /// A queue whose device says whatever the test wants.
    #[derive(Default)]
    struct Scripted {
        next_token: u16,
        submit_error: Option<Error>,
        used: VecDeque<Result<Option<Completion>>>,
    }

    impl DriverQueue for Scripted {
        fn submit(&mut self, _: &[Buffer], _: &[Buffer]) -> Result<Token> {
            if let Some(e) = self.submit_error {
                return Err(e);
            }
            self.next_token += 1;
            Ok(Token(self.next_token - 1))
        }
        fn should_notify(&mut self) -> Result<bool> {
            Ok(true)
        }
        fn poll_used(&mut self) -> Result<Option<Completion>> {
            self.used.pop_front().unwrap_or(Ok(None))
        }
        fn disable_interrupts(&mut self) -> Result<()> {
            Ok(())
        }
        fn enable_interrupts(&mut self) -> Result<bool> {
            Ok(false)
        }
        fn free_descriptors(&self) -> usize {
            4
        }
        fn addresses(&self) -> QueueAddresses {
            QueueAddresses {
                desc: 0,
                driver: 0,
                device: 0,
            }
        }
        fn size(&self) -> u16 {
            4
        }
    }

    fn done(token: u16) -> Result<Option<Completion>> {
        Ok(Some(Completion {
            token: Token(token),
            written: 0,
        }))
    }

    #[test]
    fn completions_count_only_for_outstanding_tokens_once() {
        let mut queue = Scripted::default();
        let mut out = Outstanding::<4>::new();
        assert_eq!(out.submit(&mut queue, 7, &[], &[]), Ok(Token(0)));
        assert_eq!(out.submit(&mut queue, 2, &[], &[]), Ok(Token(1)));
        // A token never handed out, one beyond the queue, the second twice.
        queue
            .used
            .extend([done(3), done(9), done(1), done(1), done(0)]);
        assert_eq!(out.next(&mut queue).map(|(s, _)| s), Some(2));
        assert_eq!(out.next(&mut queue).map(|(s, _)| s), Some(7));
        assert_eq!(out.next(&mut queue), None);
        assert!(!out.is_broken());
    }

    #[test]
    fn a_ring_violation_breaks_the_queue_for_good() {
        let mut queue = Scripted::default();
        let mut out = Outstanding::<4>::new();
        out.submit(&mut queue, 0, &[], &[]).unwrap();
        queue.used.extend([Err(Error::BadUsedId), done(0)]);
        assert_eq!(out.next(&mut queue), None);
        assert!(out.is_broken());
        assert_eq!(out.next(&mut queue), None, "not read again");
        assert_eq!(
            out.submit(&mut queue, 1, &[], &[]),
            Err(Error::DeviceNeedsReset)
        );
    }

    #[test]
    fn a_full_queue_is_not_a_broken_one() {
        let mut queue = Scripted {
            submit_error: Some(Error::QueueFull),
            ..Scripted::default()
        };
        let mut out = Outstanding::<4>::new();
        assert_eq!(out.submit(&mut queue, 0, &[], &[]), Err(Error::QueueFull));
        assert!(!out.is_broken());
        queue.submit_error = Some(Error::OutOfBounds);
        assert_eq!(out.submit(&mut queue, 0, &[], &[]), Err(Error::OutOfBounds));
        assert!(out.is_broken());
    }
}
