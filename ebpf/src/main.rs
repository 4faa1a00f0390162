//! capstan's eBPF programs: socket-level Service load balancing.
//!
//! - `connect4` (TCP, connected UDP) and `sendmsg4` (unconnected UDP) run
//!   when a process in the attached cgroup addresses an IPv4 socket. A
//!   Service frontend is rewritten to one of its backends, so packets carry
//!   the backend's address from the first one and no per-packet NAT is
//!   needed. A frontend with no backend refuses with ECONNREFUSED.
//! - `recvmsg4` and `getpeername4` show the Service address again where
//!   the program sees the backend's: the source of a UDP reply, the peer of
//!   a connected socket. They find it in the reverse map the first two
//!   fill, keyed by socket.
#![no_std]
#![no_main]

use aya_ebpf::{
    cty::c_void,
    bindings::BPF_F_NO_PREALLOC,
    helpers::{
        bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns,
        bpf_set_retval,
    },
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, LruHashMap, PerCpuHashMap},
    programs::SockAddrContext,
};
use capstan_ebpf_common::{
    AffinityKey, FrontendBackendKey, AffinityValue, Ipv4Endpoint, FrontendKey, FrontendStats,
    FrontendValue, MAX_AFFINITY, MAX_AFFINITY_MATCH, MAX_BACKEND_STATS, MAX_BACKENDS,
    MAX_FRONTENDS, MAX_REVERSE,
    MAX_SLOTS, ReverseKey, SCOPE_CLUSTER, SlotKey,
};

/// Returned to the kernel to let the syscall proceed.
const ALLOW: i32 = 1;
/// Returned to fail the syscall with the error set by `bpf_set_retval`.
const DENY: i32 = 0;
const ECONNREFUSED: i32 = 111;
const NANOS_PER_SEC: u64 = 1_000_000_000;

// The maps only the agent writes take memory as entries are added, not
// for their whole capacity up front: a node with ten Services should not
// lock the memory of half a million slots.
#[map(name = "FRONTENDS")]
static FRONTENDS: HashMap<FrontendKey, FrontendValue> =
    HashMap::pinned(MAX_FRONTENDS, BPF_F_NO_PREALLOC);

#[map(name = "SLOTS")]
static SLOTS: HashMap<SlotKey, u32> = HashMap::pinned(MAX_SLOTS, BPF_F_NO_PREALLOC);

#[map(name = "BACKENDS")]
static BACKENDS: HashMap<u32, Ipv4Endpoint> = HashMap::pinned(MAX_BACKENDS, BPF_F_NO_PREALLOC);

#[map(name = "REVERSE")]
static REVERSE: LruHashMap<ReverseKey, Ipv4Endpoint> = LruHashMap::pinned(MAX_REVERSE, 0);

#[map(name = "AFFINITY")]
static AFFINITY: LruHashMap<AffinityKey, AffinityValue> = LruHashMap::pinned(MAX_AFFINITY, 0);

#[map(name = "AFFINITY_MATCH")]
static AFFINITY_MATCH: HashMap<FrontendBackendKey, u32> =
    HashMap::pinned(MAX_AFFINITY_MATCH, BPF_F_NO_PREALLOC);

/// Per CPU, so counting needs no atomics; entries are allocated as
/// frontends first count, not for the map's whole capacity on every CPU.
#[map(name = "STATS")]
static STATS: PerCpuHashMap<u32, FrontendStats> =
    PerCpuHashMap::pinned(MAX_FRONTENDS, BPF_F_NO_PREALLOC);

/// As STATS, one count per backend of each frontend; the agent deletes a
/// count when its backend leaves the frontend.
#[map(name = "BACKEND_STATS")]
static BACKEND_STATS: PerCpuHashMap<FrontendBackendKey, u64> =
    PerCpuHashMap::pinned(MAX_BACKEND_STATS, BPF_F_NO_PREALLOC);

/// Why a socket call was not sent on to a backend.
enum Miss {
    /// Not a frontend, or one caught between revisions: the call goes
    /// where it was addressed, as if the program were not there.
    PassThrough,
    /// A frontend with no backend.
    Refuse,
}

#[cgroup_sock_addr(connect4)]
pub fn capstan_connect4(ctx: SockAddrContext) -> i32 {
    translate(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn capstan_sendmsg4(ctx: SockAddrContext) -> i32 {
    translate(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn capstan_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn capstan_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    ALLOW
}

fn translate(ctx: &SockAddrContext) -> i32 {
    match try_translate(ctx) {
        Ok(()) | Err(Miss::PassThrough) => ALLOW,
        Err(Miss::Refuse) => {
            // SAFETY: connect4 and sendmsg4 may set the syscall's error.
            unsafe { bpf_set_retval(-ECONNREFUSED) };
            DENY
        }
    }
}

fn try_translate(ctx: &SockAddrContext) -> Result<(), Miss> {
    // SAFETY: the kernel passes a valid bpf_sock_addr for this program type.
    let sock_addr = unsafe { &mut *ctx.sock_addr };
    let address = sock_addr.user_ip4;
    // user_port holds the port in network byte order in its low 16 bits.
    let port = sock_addr.user_port as u16;
    let key = FrontendKey::new(address, port, sock_addr.protocol as u8, SCOPE_CLUSTER);
    // SAFETY: the value is copied out before the map can change under us.
    let frontend = *unsafe { FRONTENDS.get(&key) }.ok_or(Miss::PassThrough)?;
    if frontend.count == 0 {
        count(frontend.id, |stats| &mut stats.refused);
        return Err(Miss::Refuse);
    }
    let raw = ctx.sock_addr.cast::<c_void>();
    // SAFETY: both helpers take the program's context.
    let netns = unsafe { bpf_get_netns_cookie(raw) };
    let (backend_id, backend) = match choose(&frontend, netns) {
        Some(found) => found,
        // The frontend switched revisions between our two reads, and the
        // old revision's slots are gone: read it once more.
        None => {
            // SAFETY: as above.
            let again = *unsafe { FRONTENDS.get(&key) }.ok_or(Miss::PassThrough)?;
            choose(&again, netns).ok_or(Miss::PassThrough)?
        }
    };

    sock_addr.user_ip4 = backend.address;
    sock_addr.user_port = u32::from(backend.port);
    count(frontend.id, |stats| &mut stats.translated);
    count_backend(FrontendBackendKey {
        frontend: frontend.id,
        backend: backend_id,
    });

    // SAFETY: as above.
    let cookie = unsafe { bpf_get_socket_cookie(raw) };
    let reverse = ReverseKey::new(cookie, netns, backend.address, backend.port);
    // An unconnected UDP socket may talk to many frontends: each of its
    // backends gets an entry. A full LRU evicts the oldest.
    let _ = REVERSE.insert(&reverse, &Ipv4Endpoint::new(address, port), 0);
    if frontend.affinity_timeout_secs > 0 {
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        let _ = AFFINITY.insert(
            &AffinityKey::new(netns, frontend.id),
            &AffinityValue::new(backend_id, now),
            0,
        );
    }
    Ok(())
}

/// The backend for one connect: the client's remembered one while its
/// affinity lasts and the backend still serves, else one at random.
fn choose(frontend: &FrontendValue, netns: u64) -> Option<(u32, Ipv4Endpoint)> {
    if frontend.count == 0 {
        return None;
    }
    if frontend.affinity_timeout_secs > 0 {
        if let Some(found) = remembered(frontend, netns) {
            return Some(found);
        }
    }
    // SAFETY: helper without arguments.
    let pick = unsafe { bpf_get_prandom_u32() } % u32::from(frontend.count);
    let slot = SlotKey::new(frontend.id, frontend.revision, pick as u16 + 1);
    // SAFETY: copied out at once.
    let backend_id = *unsafe { SLOTS.get(&slot) }?;
    // SAFETY: as above.
    let backend = *unsafe { BACKENDS.get(&backend_id) }?;
    Some((backend_id, backend))
}

fn remembered(frontend: &FrontendValue, netns: u64) -> Option<(u32, Ipv4Endpoint)> {
    // SAFETY: copied out at once.
    let last = *unsafe { AFFINITY.get(&AffinityKey::new(netns, frontend.id)) }?;
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let timeout = u64::from(frontend.affinity_timeout_secs) * NANOS_PER_SEC;
    if now.saturating_sub(last.last_used_ns) > timeout {
        return None;
    }
    let serving = FrontendBackendKey {
        frontend: frontend.id,
        backend: last.backend,
    };
    // SAFETY: only presence is read.
    unsafe { AFFINITY_MATCH.get(&serving) }?;
    // SAFETY: copied out at once.
    let backend = *unsafe { BACKENDS.get(&last.backend) }?;
    Some((last.backend, backend))
}

/// Adds one to a counter of frontend `id` on this CPU, creating its entry
/// on first use.
fn count(id: u32, counter: impl Fn(&mut FrontendStats) -> &mut u64) {
    if let Some(stats) = STATS.get_ptr_mut(&id) {
        // SAFETY: a live map value of this CPU's, which no other CPU writes,
        // and the program is not preempted on it.
        *counter(unsafe { &mut *stats }) += 1;
        return;
    }
    let mut first = FrontendStats::default();
    *counter(&mut first) = 1;
    let _ = STATS.insert(&id, &first, 0);
}

/// Adds one to what `key`'s backend got from its frontend on this CPU.
fn count_backend(key: FrontendBackendKey) {
    if let Some(count) = BACKEND_STATS.get_ptr_mut(&key) {
        // SAFETY: as in `count`.
        unsafe { *count += 1 };
        return;
    }
    let _ = BACKEND_STATS.insert(&key, &1, 0);
}

/// Shows the frontend instead of the backend the socket was sent to.
fn reverse(ctx: &SockAddrContext) {
    // SAFETY: the kernel passes a valid bpf_sock_addr for this program type.
    let sock_addr = unsafe { &mut *ctx.sock_addr };
    let raw = ctx.sock_addr.cast::<c_void>();
    // SAFETY: both helpers take the program's context.
    let (cookie, netns) = unsafe { (bpf_get_socket_cookie(raw), bpf_get_netns_cookie(raw)) };
    let key = ReverseKey::new(
        cookie,
        netns,
        sock_addr.user_ip4,
        sock_addr.user_port as u16,
    );
    // SAFETY: copied out at once.
    if let Some(frontend) = unsafe { REVERSE.get(&key) }.copied() {
        sock_addr.user_ip4 = frontend.address;
        sock_addr.user_port = u32::from(frontend.port);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
