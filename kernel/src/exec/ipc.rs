//! The IPC system calls: call/recv/reply on channels, notify/wait/poll on notifications,
//! lookup of granted objects, region and DMA information, and what a partition's restart or
//! stop does to the calls it takes part in. See docs/ipc.md.

use abi::{ObjectKind, RecvResult, SysError, Sysno};
use kcore::sched::{PartitionId, ThreadId};

use super::{Blocked, CallState, Exec, MAX_CHANNELS, Partition};
use crate::arch::mm::AddressSpace;
use crate::arch::{self, TrapFrame};
use crate::uaccess::{UserSlice, check, check_two, copy_between, copy_in, copy_out};

/// What an IPC system call did.
pub(super) enum Ipc {
    /// Finished; the caller continues with this result.
    Done(Result<usize, SysError>),
    /// Finished, and another thread became ready: pick again.
    DoneSwitch(Result<usize, SysError>),
    /// The caller blocked; its result is set when it wakes.
    Blocked,
    /// The caller blocked and made this partition's thread ready (a call delivered to its
    /// waiting server, a reply to its waiting client): run it at once if the scheduler agrees.
    HandOff(usize),
}

/// The partitions `a` and `b` (distinct, both loaded), for copying between them.
fn pair(exec: &Exec, a: usize, b: usize) -> Option<(&Partition, &Partition)> {
    Some((exec.partitions[a].as_ref()?, exec.partitions[b].as_ref()?))
}

/// The caller's address space (a caller always exists: it is the current partition).
fn space_of(exec: &Exec, caller: usize) -> &AddressSpace {
    &exec.partitions[caller]
        .as_ref()
        .expect("the caller exists")
        .space
}

/// Copies an information record out to the caller's buffer; returns its length.
pub(super) fn write_out(
    exec: &Exec,
    caller: usize,
    ptr: usize,
    len: usize,
    record: &[u8],
) -> Result<usize, SysError> {
    copy_out(space_of(exec, caller), UserSlice::new(ptr, len), record).map(|()| record.len())
}

/// Wakes partition `index`'s thread with `result` as its syscall's return value.
pub(super) fn wake(exec: &mut Exec, index: usize, result: Result<usize, SysError>) {
    if let Some(p) = exec.partitions[index].as_mut() {
        arch::context::set_return(index, result.unwrap_or_else(SysError::encode));
        p.blocked = Blocked::Nothing;
    }
    let _ = exec.sched_mut().make_ready(ThreadId(index as u16));
}

/// Delivers the pending call on `channel` into the server's `buf`; returns the recv result.
fn deliver(exec: &mut Exec, channel: usize, buf: UserSlice) -> Result<usize, SysError> {
    let c = exec.channels[channel]
        .as_ref()
        .ok_or(SysError::BadArgument)?;
    let CallState::Pending { message } = c.state else {
        return Err(SysError::BadArgument);
    };
    // The client's message was checked when it called; the server's buffer when it received.
    let len = if message.len == 0 || buf.len == 0 {
        // Nothing to copy (and nothing left to check: both ranges passed `check`).
        0
    } else {
        let (client, server) = pair(exec, c.client, c.server).ok_or(SysError::PeerStopped)?;
        copy_between(&client.space, message, &server.space, buf)?
    };
    if let Some(c) = exec.channels[channel].as_mut() {
        c.state = CallState::Serving;
    }
    exec.pending &= !(1 << channel);
    Ok(RecvResult {
        channel: channel as u32,
        len: len as u32,
    }
    .encode())
}

/// A pending call on one of `server`'s channels, lowest channel first.
fn pending_for(exec: &Exec, server: usize) -> Option<usize> {
    let calls = exec.pending & exec.serves[server];
    (calls != 0).then(|| calls.trailing_zeros() as usize)
}

fn recv(exec: &mut Exec, caller: usize, buf: UserSlice) -> Ipc {
    if exec.serves[caller] == 0 {
        return Ipc::Done(Err(SysError::NotGranted));
    }
    let p = exec.partitions[caller].as_mut().expect("the caller exists");
    if let Err(e) = check(&p.space, buf, true) {
        return Ipc::Done(Err(e));
    }
    if let Some(channel) = pending_for(exec, caller) {
        return Ipc::Done(deliver(exec, channel, buf));
    }
    let p = exec.partitions[caller].as_mut().expect("the caller exists");
    p.blocked = Blocked::Recv { buf };
    let _ = exec.sched_mut().block(ThreadId(caller as u16));
    Ipc::Blocked
}

/// Answers the call served on `channel`; returns the client, which it made ready.
fn reply(
    exec: &mut Exec,
    caller: usize,
    channel: usize,
    message: UserSlice,
) -> Result<usize, SysError> {
    let c = exec
        .channels
        .get(channel)
        .and_then(Option::as_ref)
        .ok_or(SysError::BadArgument)?;
    if c.server != caller {
        return Err(SysError::NotGranted);
    }
    if message.len > c.message_size {
        return Err(SysError::BadArgument);
    }
    let client = c.client;
    match c.state {
        CallState::Serving => {}
        CallState::ClientGone(e) => {
            exec.channels[channel]
                .as_mut()
                .expect("checked above")
                .state = CallState::Idle;
            return Err(e);
        }
        _ => return Err(SysError::BadArgument), // no call to answer
    }
    let server_space = space_of(exec, caller);
    check(server_space, message, false)?;
    let Some(Blocked::Call { reply, .. }) = exec.partitions[client].as_ref().map(|p| p.blocked)
    else {
        return Err(SysError::PeerStopped);
    };
    let copied = if message.len == 0 || reply.len == 0 {
        // Nothing to copy; both ranges passed `check` (the reply buffer when the client called).
        Ok(0)
    } else {
        let (server, client_p) = pair(exec, caller, client).ok_or(SysError::PeerStopped)?;
        copy_between(&server.space, message, &client_p.space, reply)
    };
    exec.channels[channel]
        .as_mut()
        .expect("checked above")
        .state = CallState::Idle;
    wake(exec, client, copied);
    Ok(client)
}

/// The IPC system calls: call/recv/reply on channels, notify/wait/poll, lookup.
pub(super) fn ipc(exec: &mut Exec, caller: usize, call: Sysno, a: [usize; 5]) -> Ipc {
    match call {
        Sysno::Call => {
            let (channel, message, reply) =
                (a[0], UserSlice::new(a[1], a[2]), UserSlice::new(a[3], a[4]));
            let Some(c) = exec.channels.get(channel).and_then(Option::as_ref) else {
                return Ipc::Done(Err(SysError::BadArgument));
            };
            if c.client != caller {
                return Ipc::Done(Err(SysError::NotGranted));
            }
            if message.len > c.message_size {
                return Ipc::Done(Err(SysError::BadArgument));
            }
            let (server, seen) = (c.server, c.server_generation_seen);
            let server_id = PartitionId(server as u8);
            if exec.sched().is_stopped(server_id) || exec.partitions[server].is_none() {
                return Ipc::Done(Err(SysError::PeerStopped));
            }
            let generation = exec.health.generation(server_id).unwrap_or(0);
            if generation != seen {
                exec.channels[channel]
                    .as_mut()
                    .expect("checked above")
                    .server_generation_seen = generation;
                return Ipc::Done(Err(SysError::PeerRestarted));
            }
            let p = exec.partitions[caller].as_ref().expect("the caller exists");
            let reply = UserSlice {
                len: reply.len.min(c.message_size),
                ..reply
            };
            if let Err(e) =
                check(&p.space, message, false).and_then(|()| check(&p.space, reply, true))
            {
                return Ipc::Done(Err(e));
            }
            let waiting = match exec.partitions[server].as_ref().map(|p| p.blocked) {
                Some(Blocked::Recv { buf }) => Some(buf),
                _ => None,
            };
            exec.partitions[caller]
                .as_mut()
                .expect("the caller exists")
                .blocked = Blocked::Call { channel, reply };
            let _ = exec.sched_mut().block(ThreadId(caller as u16));
            let c = exec.channels[channel].as_mut().expect("checked above");
            match waiting {
                // The server waits and nothing is to be copied: the call is received at once,
                // exactly as `deliver` would receive it (both slices passed `check`).
                Some(buf) if message.len == 0 || buf.len == 0 => {
                    c.state = CallState::Serving;
                    let result = RecvResult {
                        channel: channel as u32,
                        len: 0,
                    }
                    .encode();
                    wake(exec, server, Ok(result));
                    Ipc::HandOff(server)
                }
                Some(buf) => {
                    c.state = CallState::Pending { message };
                    exec.pending |= 1 << channel;
                    let result = deliver(exec, channel, buf);
                    wake(exec, server, result);
                    Ipc::HandOff(server)
                }
                None => {
                    c.state = CallState::Pending { message };
                    exec.pending |= 1 << channel;
                    Ipc::Blocked
                }
            }
        }
        Sysno::Recv => recv(exec, caller, UserSlice::new(a[0], a[1])),
        Sysno::Reply => match reply(exec, caller, a[0], UserSlice::new(a[1], a[2])) {
            Ok(_) => Ipc::DoneSwitch(Ok(0)),
            Err(e) => Ipc::Done(Err(e)),
        },
        Sysno::ReplyRecv => match reply(exec, caller, a[0], UserSlice::new(a[1], a[2])) {
            // The reply woke the client, which may outrank the server: decide again.
            Ok(client) => match recv(exec, caller, UserSlice::new(a[3], a[4])) {
                Ipc::Done(result) => Ipc::DoneSwitch(result),
                // The server waits now: the client is the one to run, if nothing outranks it.
                Ipc::Blocked => Ipc::HandOff(client),
                other => other,
            },
            Err(e) => Ipc::Done(Err(e)),
        },
        Sysno::Notify => {
            let Some(n) = exec.notifications.get(a[0]).and_then(Option::as_ref) else {
                return Ipc::Done(Err(SysError::BadArgument));
            };
            if n.senders & (1 << caller) == 0 {
                return Ipc::Done(Err(SysError::NotGranted));
            }
            let (receiver, bit) = (n.receiver, 1u64 << n.bit);
            let Some(r) = exec.partitions[receiver].as_mut() else {
                return Ipc::Done(Err(SysError::PeerStopped));
            };
            r.notifications |= bit;
            if let Blocked::Wait { mask } = r.blocked
                && r.notifications & mask != 0
            {
                let bits = r.notifications & mask;
                r.notifications &= !bits;
                wake(exec, receiver, Ok(bits as usize));
                return Ipc::DoneSwitch(Ok(0));
            }
            Ipc::Done(Ok(0))
        }
        Sysno::Wait | Sysno::Poll => {
            let mask = a[0] as u64;
            let receivable = exec
                .notifications
                .iter()
                .flatten()
                .filter(|n| n.receiver == caller)
                .fold(0u64, |m, n| m | 1 << n.bit)
                | super::devices::irq_bits_of(exec, caller);
            if mask & receivable == 0 {
                // Waiting for bits nobody can ever raise would block forever.
                return Ipc::Done(Err(SysError::BadArgument));
            }
            let p = exec.partitions[caller].as_mut().expect("the caller exists");
            let bits = p.notifications & mask;
            if bits != 0 || call == Sysno::Poll {
                p.notifications &= !bits;
                return Ipc::Done(Ok(bits as usize));
            }
            p.blocked = Blocked::Wait { mask };
            let _ = exec.sched_mut().block(ThreadId(caller as u16));
            Ipc::Blocked
        }
        Sysno::Lookup => Ipc::Done(lookup(exec, caller, a[0], UserSlice::new(a[1], a[2]))),
        Sysno::DmaInfo => {
            let Some(d) = exec.dma.get(a[0]).and_then(Option::as_ref) else {
                return Ipc::Done(Err(SysError::BadArgument));
            };
            if d.owner != caller {
                return Ipc::Done(Err(SysError::NotGranted));
            }
            let info = abi::DmaInfo {
                address: d.address,
                phys: d.phys,
                size: d.size,
            };
            Ipc::Done(write_out(exec, caller, a[1], a[2], &info.to_bytes()))
        }
        Sysno::RegionInfo => {
            let Some(r) = exec.regions.get(a[0]).and_then(Option::as_ref) else {
                return Ipc::Done(Err(SysError::BadArgument));
            };
            let Some(writable) = r.access(caller) else {
                return Ipc::Done(Err(SysError::NotGranted));
            };
            let info = abi::RegionInfo {
                address: r.address,
                size: r.size,
                writable,
                phys: r.phys_for(caller),
            };
            Ipc::Done(write_out(exec, caller, a[1], a[2], &info.to_bytes()))
        }
        _ => Ipc::Done(Err(SysError::UnknownSyscall)),
    }
}

/// The index of a channel or notification by name, if the caller takes part in it.
fn lookup(exec: &Exec, caller: usize, kind: usize, name: UserSlice) -> Result<usize, SysError> {
    let mut buf = [0u8; kcore::image::NAME_LEN];
    if name.len > buf.len() {
        return Err(SysError::BadArgument);
    }
    let space = space_of(exec, caller);
    let n = copy_in(space, name, &mut buf)?;
    let name = core::str::from_utf8(&buf[..n]).map_err(|_| SysError::BadArgument)?;
    let (index, granted) = if kind == ObjectKind::Channel as usize {
        let i = exec
            .channels
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.name == name))
            .ok_or(SysError::BadArgument)?;
        let c = exec.channels[i].as_ref().expect("found above");
        (i, c.client == caller || c.server == caller)
    } else if kind == ObjectKind::Notification as usize {
        let i = exec
            .notifications
            .iter()
            .position(|x| x.as_ref().is_some_and(|x| x.name == name))
            .ok_or(SysError::BadArgument)?;
        let x = exec.notifications[i].as_ref().expect("found above");
        (i, x.receiver == caller || x.senders & (1 << caller) != 0)
    } else if kind == ObjectKind::DmaRegion as usize {
        let i = exec
            .dma
            .iter()
            .position(|d| d.as_ref().is_some_and(|d| d.name == name))
            .ok_or(SysError::BadArgument)?;
        (
            i,
            exec.dma[i].as_ref().expect("found above").owner == caller,
        )
    } else if kind == ObjectKind::SharedRegion as usize {
        let i = exec
            .regions
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.name == name))
            .ok_or(SysError::BadArgument)?;
        (
            i,
            exec.regions[i]
                .as_ref()
                .expect("found above")
                .access(caller)
                .is_some(),
        )
    } else if kind == ObjectKind::Device as usize {
        super::devices::find(exec, caller, name).ok_or(SysError::BadArgument)?
    } else {
        return Err(SysError::BadArgument);
    };
    if granted {
        Ok(index)
    } else {
        Err(SysError::NotGranted)
    }
}

/// Partition `index` restarted or stopped: every call it was part of ends. Its clients blocked
/// in a call are released with `error`; calls it made are abandoned, so its servers' replies
/// report `error`; its own blocked state and notification word are gone.
pub(super) fn release_peers(exec: &mut Exec, index: usize, error: SysError) {
    for channel in 0..MAX_CHANNELS {
        let Some(c) = exec.channels[channel].as_mut() else {
            continue;
        };
        let busy = !matches!(c.state, CallState::Idle);
        if (c.server == index || c.client == index) && busy {
            // Whatever happens below, the channel's call is no longer pending.
            exec.pending &= !(1 << channel);
        }
        if c.server == index && busy && !matches!(c.state, CallState::ClientGone(_)) {
            let client = c.client;
            c.state = CallState::Idle;
            if error == SysError::PeerRestarted {
                c.server_generation_seen = c.server_generation_seen.wrapping_add(1);
            }
            wake(exec, client, Err(error));
        } else if c.client == index && busy {
            c.state = match c.state {
                CallState::Serving => CallState::ClientGone(error),
                _ => CallState::Idle,
            };
        }
    }
    if let Some(p) = exec.partitions[index].as_mut() {
        p.blocked = Blocked::Nothing;
        p.notifications = 0;
    }
}

/// What a fast path ([`fast_call`], [`fast_reply_recv`]) did.
pub(super) enum Fast {
    /// Not the common case; nothing was changed: take the generic path, which decides every
    /// case (the errors included).
    NotTaken,
    /// Done: the CPU was handed to the woken partition.
    Done,
    /// The call's effects are done, but the scheduler would not hand the CPU over: dispatch.
    Dispatch,
}

/// The common case of `call`, looking each table up once: the caller is the channel's client,
/// the message fits, the server is loaded, running and of the generation the client saw,
/// both slices pass `check` and the server waits in `recv`. Its effects are exactly those of the generic path (`ipc`'s
/// `Sysno::Call` with a waiting server, then [`Exec::hand_off`](super::Exec)); any other case
/// is left to that path before anything changes.
pub(super) fn fast_call(
    exec: &mut Exec,
    frame: &TrapFrame,
    caller: usize,
    a: [usize; 5],
    now: u64,
) -> Fast {
    let Exec {
        partitions,
        channels,
        sched,
        health,
        pending,
        ..
    } = exec;
    let (channel, message, reply) = (a[0], UserSlice::new(a[1], a[2]), UserSlice::new(a[3], a[4]));
    let Some(Some(c)) = channels.get_mut(channel) else {
        return Fast::NotTaken;
    };
    if c.client != caller || message.len > c.message_size {
        return Fast::NotTaken;
    }
    let server = c.server;
    let server_id = PartitionId(server as u8);
    let Some(sched) = sched.as_mut() else {
        return Fast::NotTaken;
    };
    if sched.is_stopped(server_id)
        || health.generation(server_id).unwrap_or(0) != c.server_generation_seen
    {
        return Fast::NotTaken;
    }
    let Ok([Some(client_p), Some(server_p)]) = partitions.get_disjoint_mut([caller, server]) else {
        return Fast::NotTaken;
    };
    let Blocked::Recv { buf } = server_p.blocked else {
        return Fast::NotTaken;
    };
    let reply = UserSlice {
        len: reply.len.min(c.message_size),
        ..reply
    };
    if check_two(&client_p.space, (message, false), (reply, true)).is_err() {
        return Fast::NotTaken;
    }
    // The generic path's effects, in its order: the client blocks, the call is received at
    // once (as `deliver` receives it: both slices passed `check`, the server's when it
    // received), the server wakes with the recv result.
    client_p.blocked = Blocked::Call { channel, reply };
    let copied = if message.len == 0 || buf.len == 0 {
        Ok(0)
    } else {
        copy_between(&client_p.space, message, &server_p.space, buf)
    };
    let result = match copied {
        Ok(len) => {
            c.state = CallState::Serving;
            RecvResult {
                channel: channel as u32,
                len: len as u32,
            }
            .encode()
        }
        Err(e) => {
            // As `deliver` leaves it: the call stays pending.
            c.state = CallState::Pending { message };
            *pending |= 1 << channel;
            e.encode()
        }
    };
    arch::context::set_return(server, result);
    server_p.blocked = Blocked::Nothing;
    // `block(caller)`, `make_ready(server)`, then the hand-off test, in one call.
    match sched.block_and_hand_off(ThreadId(caller as u16), ThreadId(server as u16), now) {
        Some(next_event_ns) => {
            arch::context::save(caller, frame);
            exec.enter(now, server, next_event_ns);
            Fast::Done
        }
        None => Fast::Dispatch,
    }
}

/// The common case of `reply_recv`, looking each table up once: the caller serves the channel
/// and owes its reply, the reply fits, the client waits in `call`, both slices pass `check`
/// and no other call is pending for the server, so it blocks in `recv`. Its effects are exactly those of the generic path
/// (`reply`, then `recv` blocking, then [`Exec::hand_off`](super::Exec) to the client); any
/// other case is left to that path before anything changes.
pub(super) fn fast_reply_recv(
    exec: &mut Exec,
    frame: &TrapFrame,
    caller: usize,
    a: [usize; 5],
    now: u64,
) -> Fast {
    let Exec {
        partitions,
        channels,
        sched,
        pending,
        serves,
        ..
    } = exec;
    let (channel, message, buf) = (a[0], UserSlice::new(a[1], a[2]), UserSlice::new(a[3], a[4]));
    let Some(Some(c)) = channels.get_mut(channel) else {
        return Fast::NotTaken;
    };
    if c.server != caller || message.len > c.message_size || c.state != CallState::Serving {
        return Fast::NotTaken;
    }
    if serves.get(caller).is_none_or(|s| *pending & s != 0) {
        return Fast::NotTaken;
    }
    let client = c.client;
    let Some(sched) = sched.as_mut() else {
        return Fast::NotTaken;
    };
    let Ok([Some(server_p), Some(client_p)]) = partitions.get_disjoint_mut([caller, client]) else {
        return Fast::NotTaken;
    };
    let Blocked::Call { reply, .. } = client_p.blocked else {
        return Fast::NotTaken;
    };
    if check_two(&server_p.space, (message, false), (buf, true)).is_err() {
        return Fast::NotTaken;
    }
    // The generic path's effects, in its order: the reply is copied (the reply buffer passed
    // `check` when the client called), the call ends and the client wakes with the reply's
    // length, then the server blocks in `recv`.
    let copied = if message.len == 0 || reply.len == 0 {
        Ok(0)
    } else {
        copy_between(&server_p.space, message, &client_p.space, reply)
    };
    c.state = CallState::Idle;
    arch::context::set_return(client, copied.unwrap_or_else(SysError::encode));
    client_p.blocked = Blocked::Nothing;
    server_p.blocked = Blocked::Recv { buf };
    // `make_ready(client)` and `block(server)` (distinct threads: their order does not
    // matter), then the hand-off test, in one call.
    match sched.block_and_hand_off(ThreadId(caller as u16), ThreadId(client as u16), now) {
        Some(next_event_ns) => {
            arch::context::save(caller, frame);
            exec.enter(now, client, next_event_ns);
            Fast::Done
        }
        None => Fast::Dispatch,
    }
}
