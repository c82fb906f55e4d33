//! Access to partition memory from the kernel, through checked user pointers.
//!
//! Like Hubris's `USlice`, a [`UserSlice`] is only an allegation made by a partition: an
//! address and a length. It becomes usable only by [`copy_in`]/[`copy_out`], which check
//! every page it spans against the partition's own page tables (present, user-accessible and,
//! for writes, writable), reject lengths that wrap or reach the kernel half, and then copy
//! through the kernel's direct map, by the frames the page tables report ([`UserFrames`]:
//! partition memory, never a kernel object), whose accessors check the bounds once more. A bad pointer is the caller's fault: `BadPointer`.

use abi::{SysError, USER_TOP};
use kcore::mem::PAGE_SIZE;

use crate::arch::UserFrames;
use crate::arch::mm::AddressSpace;

/// One page's worth of a checked slice: the frame of partition memory and the offset in it.
type Piece = (UserFrames, usize);

/// A partition's claim that `len` bytes at `addr` are its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSlice {
    pub addr: u64,
    pub len: usize,
}

impl UserSlice {
    /// The claim a syscall's pointer and length arguments make.
    pub fn new(addr: usize, len: usize) -> Self {
        Self {
            addr: addr as u64,
            len,
        }
    }

    /// Checks the range arithmetic alone: no wrap, entirely below the user top.
    fn end(&self) -> Result<u64, SysError> {
        let end = self
            .addr
            .checked_add(self.len as u64)
            .ok_or(SysError::BadPointer)?;
        if end > USER_TOP {
            return Err(SysError::BadPointer);
        }
        Ok(end)
    }
}

/// Checks every page `slice` spans, copying nothing: present and user-accessible (and writable
/// if `write`), so a failure is found before any byte is copied.
#[inline]
pub fn check(space: &AddressSpace, slice: UserSlice, write: bool) -> Result<(), SysError> {
    let end = slice.end()?;
    if slice.len == 0 {
        // An empty slice names no memory (Rust gives empty slices dangling pointers).
        return Ok(());
    }
    let mut page = slice.addr & !(PAGE_SIZE - 1);
    while page < end {
        let (_, _, perm) = space.translate(page).ok_or(SysError::BadPointer)?;
        if write && !perm.write {
            return Err(SysError::BadPointer);
        }
        page += PAGE_SIZE;
    }
    Ok(())
}

/// [`check`] of two slices of one space, `(slice, write)` each, the first first: one call
/// for the IPC fast paths, which check a message and a buffer on every call.
#[inline(never)]
pub fn check_two(
    space: &AddressSpace,
    a: (UserSlice, bool),
    b: (UserSlice, bool),
) -> Result<(), SysError> {
    check(space, a.0, a.1)?;
    check(space, b.0, b.1)
}

/// Visits the physical pieces of an already checked `slice`: `f(piece, offset, len)`, where
/// `piece` is the frame and the offset in it of the bytes at `offset` in the slice.
fn visit_pieces(
    space: &AddressSpace,
    slice: UserSlice,
    mut f: impl FnMut(Piece, usize, usize),
) -> Result<(), SysError> {
    let end = slice.end()?;
    let mut at = slice.addr;
    while at < end {
        let in_page = (PAGE_SIZE - at % PAGE_SIZE).min(end - at) as usize;
        let (frame, in_frame, _) = space.translate(at).ok_or(SysError::BadPointer)?;
        f((frame, in_frame), (at - slice.addr) as usize, in_page);
        at += in_page as u64;
    }
    Ok(())
}

/// Visits the physical pieces of `slice` after checking all of it; `f(piece, offset, len)`.
fn for_each_piece(
    space: &AddressSpace,
    slice: UserSlice,
    write: bool,
    f: impl FnMut(Piece, usize, usize),
) -> Result<(), SysError> {
    check(space, slice, write)?;
    visit_pieces(space, slice, f)
}

/// Copies `slice` (at most `buf.len()` bytes of it) into `buf`; returns the bytes copied.
/// The whole claimed range must be sane (no wrap, below the user top); only the pages of the
/// bytes copied are checked, so the work is bounded by `buf`, not by the claim.
pub fn copy_in(space: &AddressSpace, slice: UserSlice, buf: &mut [u8]) -> Result<usize, SysError> {
    slice.end()?;
    let slice = UserSlice {
        len: slice.len.min(buf.len()),
        ..slice
    };
    for_each_piece(space, slice, false, |(frame, at), offset, len| {
        frame.read(at, &mut buf[offset..offset + len]);
    })?;
    Ok(slice.len)
}

/// Copies `data` into the partition's memory at `slice` (which must be at least as long).
pub fn copy_out(space: &AddressSpace, slice: UserSlice, data: &[u8]) -> Result<(), SysError> {
    slice.end()?;
    if slice.len < data.len() {
        return Err(SysError::BadArgument);
    }
    let slice = UserSlice {
        len: data.len(),
        ..slice
    };
    for_each_piece(space, slice, true, |(frame, at), offset, len| {
        frame.write(at, &data[offset..offset + len]);
    })
}

/// Copies `src` in one partition's memory to `dst` in another's, at most `dst.len` bytes;
/// returns the bytes copied. Both ranges are checked completely before any byte moves, and
/// the copy goes through a small kernel buffer, so no partition memory is ever aliased.
pub fn copy_between(
    from: &AddressSpace,
    src: UserSlice,
    to: &AddressSpace,
    dst: UserSlice,
) -> Result<usize, SysError> {
    let len = src.len.min(dst.len);
    let (src, dst) = (UserSlice { len, ..src }, UserSlice { len, ..dst });
    if len == 0 {
        // Nothing to check but the range arithmetic, nothing to copy (a 0-byte message).
        src.end()?;
        dst.end()?;
        return Ok(0);
    }
    check(from, src, false)?;
    check(to, dst, true)?;
    let mut bounce = [0u8; 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(bounce.len());
        let piece = |s: UserSlice| UserSlice {
            addr: s.addr + done as u64,
            len: n,
        };
        // Both ranges were checked above; the pieces only need translating.
        visit_pieces(from, piece(src), |(frame, at), offset, len| {
            frame.read(at, &mut bounce[offset..offset + len]);
        })?;
        visit_pieces(to, piece(dst), |(frame, at), offset, len| {
            frame.write(at, &bounce[offset..offset + len]);
        })?;
        done += n;
    }
    Ok(len)
}
