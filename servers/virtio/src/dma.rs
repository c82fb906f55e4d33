//! Shared memory and device registers: the crate's only `unsafe` code.
//!
//! A [`DmaRegion`] is a window onto memory that another agent (a device, or a partition on the
//! other side of a channel) reads and writes concurrently. Fields (`u8`..`u64`) are accessed
//! as single, naturally aligned relaxed atomic loads and stores: the peer never sees them torn,
//! and in the Rust memory model the ring code's fences (`crate::barrier`) synchronise through
//! them, which Miri checks in the threaded ring tests. Bulk buffer contents are copied with
//! volatile accesses (8 bytes at a time where aligned); they are ordered by those fences and the
//! index/flag fields around them. Ordering itself is not provided here: the ring code places the barriers the
//! specification requires, each citing its section.
//!
//! [`MmioRegisters`] is the volatile implementation of
//! [`RegisterAccess`](crate::transport::RegisterAccess) for memory-mapped device registers.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use crate::{Error, Result};

/// A view of shared memory: `len` bytes at a host pointer, which the other side knows as
/// `bus_base` onwards (a physical/bus address for hardware, an offset for a shared region).
#[derive(Clone, Copy)]
pub struct DmaRegion<'a> {
    base: NonNull<u8>,
    len: usize,
    bus_base: u64,
    _memory: PhantomData<&'a [core::cell::UnsafeCell<u8>]>,
}

impl core::fmt::Debug for DmaRegion<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DmaRegion")
            .field("len", &self.len)
            .field("bus_base", &self.bus_base)
            .finish()
    }
}

// SAFETY: a DmaRegion only ever performs volatile or atomic accesses to memory that is, by
// construction, shared with another agent; moving the view to another thread adds nothing the
// concurrent peer does not already do.
unsafe impl Send for DmaRegion<'_> {}
// SAFETY: as for Send: all accesses through `&DmaRegion` are volatile/atomic and the contents
// are treated as untrusted, racy data, so sharing the view between threads is sound.
unsafe impl Sync for DmaRegion<'_> {}

impl<'a> DmaRegion<'a> {
    /// Wraps `len` bytes at `base`, known to the peer as bus addresses `bus_base..`.
    ///
    /// # Safety
    /// `base..base+len` must be valid for reads and writes for `'a`, and must not be accessed
    /// through Rust references (only through `DmaRegion`s or by the peer) during `'a`.
    pub unsafe fn new(base: *mut u8, len: usize, bus_base: u64) -> Result<Self> {
        let base = NonNull::new(base).ok_or(Error::OutOfBounds)?;
        if (base.as_ptr() as usize).checked_add(len).is_none() {
            return Err(Error::OutOfBounds);
        }
        Ok(Self {
            base,
            len,
            bus_base,
            _memory: PhantomData,
        })
    }

    /// Size of the region in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address the peer uses for byte `offset` of this region.
    pub fn bus_address(&self, offset: usize) -> u64 {
        self.bus_base.wrapping_add(offset as u64)
    }

    /// The bus address of byte 0.
    pub fn bus_base(&self) -> u64 {
        self.bus_base
    }

    /// The same memory, known to the peer under another base address (e.g. 0 for a data area
    /// whose buffers are named by offset).
    pub fn rebased(&self, bus_base: u64) -> Self {
        Self { bus_base, ..*self }
    }

    /// The sub-window `offset..offset+len`, keeping bus addresses consistent.
    pub fn subregion(&self, offset: usize, len: usize) -> Result<Self> {
        self.check(offset, len)?;
        // SAFETY: `check` proved offset+len <= self.len, so the new base stays inside (or one
        // past the end of) the allocation `new`'s caller vouched for.
        let base = unsafe { self.base.add(offset) };
        Ok(Self {
            base,
            len,
            bus_base: self.bus_base.wrapping_add(offset as u64),
            _memory: PhantomData,
        })
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::OutOfBounds),
        }
    }

    fn checked_field<T>(&self, offset: usize) -> Result<*mut T> {
        let size = core::mem::size_of::<T>();
        self.check(offset, size)?;
        // SAFETY: in bounds by `check`.
        let ptr = unsafe { self.base.as_ptr().add(offset) };
        if !(ptr as usize).is_multiple_of(core::mem::align_of::<T>()) {
            return Err(Error::Misaligned);
        }
        Ok(ptr.cast())
    }

    /// Reads a `u8` at `offset`.
    pub fn read_u8(&self, offset: usize) -> Result<u8> {
        let ptr = self.checked_field::<u8>(offset)?;
        // SAFETY: in bounds (checked_field), valid for 'a (contract of `new`); AtomicU8 has the
        // layout of u8 and tolerates the peer's concurrent accesses.
        Ok(unsafe { AtomicU8::from_ptr(ptr) }.load(Ordering::Relaxed))
    }

    /// Reads a little-endian `u16` at `offset` in one access.
    pub fn read_u16(&self, offset: usize) -> Result<u16> {
        let ptr = self.checked_field::<u16>(offset)?;
        // SAFETY: in bounds and aligned (checked_field), valid for 'a (contract of `new`);
        // AtomicU16 has the layout of u16 and tolerates the peer's concurrent accesses.
        Ok(u16::from_le(
            unsafe { AtomicU16::from_ptr(ptr) }.load(Ordering::Relaxed),
        ))
    }

    /// Reads a little-endian `u32` at `offset` in one access.
    pub fn read_u32(&self, offset: usize) -> Result<u32> {
        let ptr = self.checked_field::<u32>(offset)?;
        // SAFETY: in bounds and aligned (checked_field), valid for 'a (contract of `new`);
        // AtomicU32 has the layout of u32 and tolerates the peer's concurrent accesses.
        Ok(u32::from_le(
            unsafe { AtomicU32::from_ptr(ptr) }.load(Ordering::Relaxed),
        ))
    }

    /// Reads a little-endian `u64` at `offset` in one access.
    pub fn read_u64(&self, offset: usize) -> Result<u64> {
        let ptr = self.checked_field::<u64>(offset)?;
        // SAFETY: in bounds and aligned (checked_field), valid for 'a (contract of `new`);
        // AtomicU64 has the layout of u64 and tolerates the peer's concurrent accesses.
        Ok(u64::from_le(
            unsafe { AtomicU64::from_ptr(ptr) }.load(Ordering::Relaxed),
        ))
    }

    /// Writes a `u8` at `offset`.
    pub fn write_u8(&self, offset: usize, value: u8) -> Result<()> {
        let ptr = self.checked_field::<u8>(offset)?;
        // SAFETY: in bounds (checked_field), valid for 'a (contract of `new`); AtomicU8 has the
        // layout of u8 and tolerates the peer's concurrent accesses.
        unsafe { AtomicU8::from_ptr(ptr) }.store(value, Ordering::Relaxed);
        Ok(())
    }

    /// Writes a little-endian `u16` at `offset` in one access.
    pub fn write_u16(&self, offset: usize, value: u16) -> Result<()> {
        let ptr = self.checked_field::<u16>(offset)?;
        // SAFETY: in bounds and aligned (checked_field), valid for 'a (contract of `new`);
        // AtomicU16 has the layout of u16 and tolerates the peer's concurrent accesses.
        unsafe { AtomicU16::from_ptr(ptr) }.store(value.to_le(), Ordering::Relaxed);
        Ok(())
    }

    /// Writes a little-endian `u32` at `offset` in one access.
    pub fn write_u32(&self, offset: usize, value: u32) -> Result<()> {
        let ptr = self.checked_field::<u32>(offset)?;
        // SAFETY: in bounds and aligned (checked_field), valid for 'a (contract of `new`);
        // AtomicU32 has the layout of u32 and tolerates the peer's concurrent accesses.
        unsafe { AtomicU32::from_ptr(ptr) }.store(value.to_le(), Ordering::Relaxed);
        Ok(())
    }

    /// Writes a little-endian `u64` at `offset` in one access.
    pub fn write_u64(&self, offset: usize, value: u64) -> Result<()> {
        let ptr = self.checked_field::<u64>(offset)?;
        // SAFETY: in bounds and aligned (checked_field), valid for 'a (contract of `new`);
        // AtomicU64 has the layout of u64 and tolerates the peer's concurrent accesses.
        unsafe { AtomicU64::from_ptr(ptr) }.store(value.to_le(), Ordering::Relaxed);
        Ok(())
    }

    /// Copies `out.len()` bytes starting at `offset` out of the region.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check(offset, out.len())?;
        let mut done = 0;
        while done < out.len() {
            // SAFETY: offset+done < offset+out.len() <= self.len by `check`.
            let src = unsafe { self.base.as_ptr().add(offset + done) };
            if (src as usize).is_multiple_of(8) && out.len() - done >= 8 {
                // SAFETY: src is 8-aligned and src..src+8 is in bounds (checked above and by
                // `check`); validity is the contract of `new`.
                let word = unsafe { src.cast::<u64>().read_volatile() };
                out[done..done + 8].copy_from_slice(&word.to_ne_bytes());
                done += 8;
            } else {
                // SAFETY: src is in bounds (see above).
                out[done] = unsafe { src.read_volatile() };
                done += 1;
            }
        }
        Ok(())
    }

    /// Copies `data` into the region starting at `offset`.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        let mut done = 0;
        while done < data.len() {
            // SAFETY: offset+done < offset+data.len() <= self.len by `check`.
            let dst = unsafe { self.base.as_ptr().add(offset + done) };
            if (dst as usize).is_multiple_of(8) && data.len() - done >= 8 {
                let mut word = [0u8; 8];
                word.copy_from_slice(&data[done..done + 8]);
                // SAFETY: dst is 8-aligned and dst..dst+8 is in bounds (checked above and by
                // `check`); validity is the contract of `new`.
                unsafe { dst.cast::<u64>().write_volatile(u64::from_ne_bytes(word)) };
                done += 8;
            } else {
                // SAFETY: dst is in bounds (see above).
                unsafe { dst.write_volatile(data[done]) };
                done += 1;
            }
        }
        Ok(())
    }

    /// Copies `len` bytes of `src` from `src_offset` into this region at `offset`, directly
    /// (no intermediate buffer), with volatile accesses on both sides: 8 bytes at a time, 64
    /// per loop iteration, where both sides are equally aligned. An I/O server's bounce copies
    /// between a client's shared region and its DMA memory go through here.
    pub fn copy_from_region(
        &self,
        offset: usize,
        src: &DmaRegion<'_>,
        src_offset: usize,
        len: usize,
    ) -> Result<()> {
        self.check(offset, len)?;
        src.check(src_offset, len)?;
        // SAFETY: both ranges are in bounds of their regions by `check`; validity is the
        // contract of `new` for each region.
        let (dst, from) = unsafe {
            (
                self.base.as_ptr().add(offset),
                src.base.as_ptr().add(src_offset).cast_const(),
            )
        };
        let mut done = 0;
        if (dst as usize) % 8 == (from as usize) % 8 {
            while done < len && !(dst as usize + done).is_multiple_of(8) {
                // SAFETY: done < len: in bounds on both sides.
                unsafe { dst.add(done).write_volatile(from.add(done).read_volatile()) };
                done += 1;
            }
            while len - done >= 64 {
                // SAFETY: both sides are 8-aligned at `done` (equal alignment, checked above)
                // and done+64 <= len: in bounds on both sides.
                unsafe {
                    let d = dst.add(done).cast::<u64>();
                    let f = from.add(done).cast::<u64>();
                    let w = [
                        f.read_volatile(),
                        f.add(1).read_volatile(),
                        f.add(2).read_volatile(),
                        f.add(3).read_volatile(),
                        f.add(4).read_volatile(),
                        f.add(5).read_volatile(),
                        f.add(6).read_volatile(),
                        f.add(7).read_volatile(),
                    ];
                    d.write_volatile(w[0]);
                    d.add(1).write_volatile(w[1]);
                    d.add(2).write_volatile(w[2]);
                    d.add(3).write_volatile(w[3]);
                    d.add(4).write_volatile(w[4]);
                    d.add(5).write_volatile(w[5]);
                    d.add(6).write_volatile(w[6]);
                    d.add(7).write_volatile(w[7]);
                }
                done += 64;
            }
            while len - done >= 8 {
                // SAFETY: 8-aligned on both sides and in bounds, as above.
                unsafe {
                    dst.add(done)
                        .cast::<u64>()
                        .write_volatile(from.add(done).cast::<u64>().read_volatile())
                };
                done += 8;
            }
        }
        while done < len {
            // SAFETY: done < len: in bounds on both sides.
            unsafe { dst.add(done).write_volatile(from.add(done).read_volatile()) };
            done += 1;
        }
        Ok(())
    }

    /// Sets `len` bytes from `offset` to `value`.
    pub fn fill(&self, offset: usize, len: usize, value: u8) -> Result<()> {
        self.check(offset, len)?;
        let word = u64::from_ne_bytes([value; 8]);
        let mut done = 0;
        while done < len {
            // SAFETY: offset+done < offset+len <= self.len by `check`.
            let dst = unsafe { self.base.as_ptr().add(offset + done) };
            if (dst as usize).is_multiple_of(8) && len - done >= 8 {
                // SAFETY: dst is 8-aligned and dst..dst+8 is in bounds; validity is the
                // contract of `new`.
                unsafe { dst.cast::<u64>().write_volatile(word) };
                done += 8;
            } else {
                // SAFETY: dst is in bounds (see above).
                unsafe { dst.write_volatile(value) };
                done += 1;
            }
        }
        Ok(())
    }

    fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32> {
        let ptr = self.checked_field::<u32>(offset)?;
        // SAFETY: aligned and in bounds (checked_field), valid for 'a (contract of `new`);
        // AtomicU32 has the layout of u32 and tolerates concurrent access by the peer.
        Ok(unsafe { AtomicU32::from_ptr(ptr) })
    }

    /// Atomically ORs `bits` into the little-endian `u32` at `offset`; returns the old value.
    /// Used for doorbell bitmaps both sides set concurrently.
    pub fn fetch_or_u32(&self, offset: usize, bits: u32) -> Result<u32> {
        Ok(u32::from_le(
            self.atomic_u32(offset)?
                .fetch_or(bits.to_le(), Ordering::AcqRel),
        ))
    }

    /// Atomically replaces the little-endian `u32` at `offset`; returns the old value.
    pub fn swap_u32(&self, offset: usize, value: u32) -> Result<u32> {
        Ok(u32::from_le(
            self.atomic_u32(offset)?
                .swap(value.to_le(), Ordering::AcqRel),
        ))
    }
}

/// Heap memory standing in for DMA memory: for tests, benchmarks and simulated devices.
#[cfg(feature = "alloc")]
pub struct OwnedDma {
    ptr: NonNull<u8>,
    layout: core::alloc::Layout,
}

#[cfg(feature = "alloc")]
impl core::fmt::Debug for OwnedDma {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OwnedDma")
            .field("len", &self.layout.size())
            .finish()
    }
}

// SAFETY: OwnedDma owns its allocation and only hands out DmaRegion views, whose accesses are
// atomic or volatile (see the impls for DmaRegion); dropping it from another thread is fine.
#[cfg(feature = "alloc")]
unsafe impl Send for OwnedDma {}
// SAFETY: `&OwnedDma` only allows creating DmaRegion views, which are Sync.
#[cfg(feature = "alloc")]
unsafe impl Sync for OwnedDma {}

#[cfg(feature = "alloc")]
impl OwnedDma {
    /// Allocates `len` zeroed bytes, page aligned.
    pub fn new(len: usize) -> Self {
        let layout = core::alloc::Layout::from_size_align(len.max(1), 4096)
            .unwrap_or_else(|_| alloc::alloc::handle_alloc_error(core::alloc::Layout::new::<u8>()));
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::alloc::handle_alloc_error(layout));
        Self { ptr, layout }
    }

    /// A view of the whole allocation, whose byte 0 the peer knows as `bus_base`.
    pub fn region(&self, bus_base: u64) -> DmaRegion<'_> {
        DmaRegion {
            base: self.ptr,
            len: self.layout.size(),
            bus_base,
            _memory: PhantomData,
        }
    }
}

#[cfg(feature = "alloc")]
impl Drop for OwnedDma {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this exact layout; every DmaRegion borrowed from self
        // has ended, as `region` ties them to `&self`.
        unsafe { alloc::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Memory-mapped device registers, accessed with volatile loads and stores.
pub struct MmioRegisters {
    base: NonNull<u8>,
    len: usize,
}

impl core::fmt::Debug for MmioRegisters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MmioRegisters")
            .field("len", &self.len)
            .finish()
    }
}

impl MmioRegisters {
    /// Wraps `len` bytes of device registers mapped at `base`.
    ///
    /// # Safety
    /// `base..base+len` must be a mapping of device registers (uncached, or cached where the
    /// platform makes that coherent) that stays mapped while the value lives.
    pub unsafe fn new(base: *mut u8, len: usize) -> Result<Self> {
        let base = NonNull::new(base).ok_or(Error::OutOfBounds)?;
        Ok(Self { base, len })
    }

    /// A pointer to a naturally aligned in-bounds register, or `None`: out-of-range register
    /// accesses read as all-ones and drop writes, as a bus would for an absent register.
    fn register<T>(&self, offset: usize) -> Option<*mut T> {
        let size = core::mem::size_of::<T>();
        if offset.checked_add(size)? > self.len || !offset.is_multiple_of(size) {
            return None;
        }
        // SAFETY: offset+size <= len, inside the mapping vouched for by `new`.
        Some(unsafe { self.base.as_ptr().add(offset) }.cast())
    }
}

impl crate::transport::RegisterAccess for MmioRegisters {
    fn read_u8(&mut self, offset: usize) -> u8 {
        match self.register::<u8>(offset) {
            // SAFETY: in bounds of the register mapping (register()).
            Some(ptr) => unsafe { ptr.read_volatile() },
            None => u8::MAX,
        }
    }
    fn read_u16(&mut self, offset: usize) -> u16 {
        match self.register::<u16>(offset) {
            // SAFETY: in bounds and aligned (register()).
            Some(ptr) => u16::from_le(unsafe { ptr.read_volatile() }),
            None => u16::MAX,
        }
    }
    fn read_u32(&mut self, offset: usize) -> u32 {
        match self.register::<u32>(offset) {
            // SAFETY: in bounds and aligned (register()).
            Some(ptr) => u32::from_le(unsafe { ptr.read_volatile() }),
            None => u32::MAX,
        }
    }
    fn write_u8(&mut self, offset: usize, value: u8) {
        if let Some(ptr) = self.register::<u8>(offset) {
            // SAFETY: in bounds (register()).
            unsafe { ptr.write_volatile(value) }
        }
    }
    fn write_u16(&mut self, offset: usize, value: u16) {
        if let Some(ptr) = self.register::<u16>(offset) {
            // SAFETY: in bounds and aligned (register()).
            unsafe { ptr.write_volatile(value.to_le()) }
        }
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        if let Some(ptr) = self.register::<u32>(offset) {
            // SAFETY: in bounds and aligned (register()).
            unsafe { ptr.write_volatile(value.to_le()) }
        }
    }
}
