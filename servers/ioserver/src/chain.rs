//! Copies between a validated chain's buffers (in the client's data area) and the server's
//! memory. A chain's segments were checked against the data area when it was popped; these
//! copies only walk them.

use virtio::dma::DmaRegion;
use virtio::queue::{Chain, GrantedArea};

/// Walks the segments of `chain` in one direction (`writable` or readable) from byte `offset`
/// of that part, calling `each(area_offset, position, len)` for `len` bytes in all; fails
/// with `OutOfBounds` if that part is shorter than `offset + len`.
pub fn walk(
    chain: &Chain,
    writable: bool,
    offset: u64,
    len: usize,
    mut each: impl FnMut(usize, usize, usize) -> virtio::Result<()>,
) -> virtio::Result<()> {
    let mut skip = offset;
    let mut done = 0usize;
    for segment in chain.segments().iter().filter(|s| s.writable == writable) {
        if done == len {
            break;
        }
        let seg_len = u64::from(segment.len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let take = ((seg_len - skip) as usize).min(len - done);
        each(segment.offset + skip as usize, done, take)?;
        done += take;
        skip = 0;
    }
    if done == len {
        Ok(())
    } else {
        Err(virtio::Error::OutOfBounds)
    }
}

/// Copies the chain's device-readable bytes from `offset` into `out`, as many as there are
/// (at most `out.len()`); how many.
pub fn read_readable(
    chain: &Chain,
    area: &GrantedArea<'_>,
    offset: u64,
    out: &mut [u8],
) -> virtio::Result<usize> {
    let n = chain
        .readable_len()
        .saturating_sub(offset)
        .min(out.len() as u64) as usize;
    walk(chain, false, offset, n, |at, pos, len| {
        area.memory().read_bytes(at, &mut out[pos..pos + len])
    })?;
    Ok(n)
}

/// Writes `bytes` into the chain's device-writable part at `offset`; fails if they do not fit.
pub fn write_writable(
    chain: &Chain,
    area: &GrantedArea<'_>,
    offset: u64,
    bytes: &[u8],
) -> virtio::Result<()> {
    walk(chain, true, offset, bytes.len(), |at, pos, n| {
        area.memory().write_bytes(at, &bytes[pos..pos + n])
    })
}

/// Copies `len` bytes of the chain's readable part from `offset` into `dst` from 0 (client
/// memory straight into server memory: both are shared memory, accessed only through
/// volatile copies).
pub fn copy_from_chain(
    chain: &Chain,
    area: &GrantedArea<'_>,
    offset: u64,
    dst: &DmaRegion<'_>,
    len: usize,
) -> virtio::Result<()> {
    walk(chain, false, offset, len, |at, pos, n| {
        dst.copy_from_region(pos, area.memory(), at, n)
    })
}

/// Copies `len` bytes of `src` from 0 into the chain's writable part from `offset`.
pub fn copy_into_chain(
    chain: &Chain,
    area: &GrantedArea<'_>,
    offset: u64,
    src: &DmaRegion<'_>,
    len: usize,
) -> virtio::Result<()> {
    walk(chain, true, offset, len, |at, pos, n| {
        area.memory().copy_from_region(at, src, pos, n)
    })
}
