//! Map keys and values shared by the eBPF programs and the agent.
//!
//! Every type here crosses the user/kernel boundary byte for byte, so each is
//! `#[repr(C)]` with explicit padding (the kernel compares keys as raw bytes:
//! uninitialised padding would make equal keys differ) and a size assertion.
//! Addresses and ports are kept in network byte order, as the kernel hands
//! them to cgroup sock_addr programs, so the datapath never converts.
//!
//! The layout follows the socket-level load balancer proven by Cilium, with
//! one change that makes a backend set switch atomically: a frontend's
//! slots are keyed by the frontend's id *and a revision*. The agent writes
//! a new revision's slots in full, then flips the frontend to that
//! revision in one map update, then deletes the old revision's slots; a
//! connect reads the frontend once and only ever sees one whole set.
#![no_std]

use core::mem::size_of;

/// Map from [`FrontendKey`] to [`FrontendValue`].
pub const FRONTENDS_MAP: &str = "FRONTENDS";
/// Map from [`SlotKey`] to a backend id.
pub const SLOTS_MAP: &str = "SLOTS";
/// Map from backend id to [`Ipv4Endpoint`].
pub const BACKENDS_MAP: &str = "BACKENDS";
/// LRU map from [`ReverseKey`] to the [`Ipv4Endpoint`] of the Service.
pub const REVERSE_MAP: &str = "REVERSE";
/// LRU map from [`AffinityKey`] to [`AffinityValue`].
pub const AFFINITY_MAP: &str = "AFFINITY";
/// Map from [`FrontendBackendKey`] to 1: the backends of each frontend with
/// session affinity, so a remembered backend that left is not reused.
pub const AFFINITY_MATCH_MAP: &str = "AFFINITY_MATCH";
/// Map from frontend id to [`FrontendStats`].
pub const STATS_MAP: &str = "STATS";
/// Per-CPU map from [`FrontendBackendKey`] to the connects and datagrams
/// that frontend sent to that backend.
pub const BACKEND_STATS_MAP: &str = "BACKEND_STATS";

/// The programs, by the names the loader finds them under.
pub const CONNECT4_PROGRAM: &str = "capstan_connect4";
pub const SENDMSG4_PROGRAM: &str = "capstan_sendmsg4";
pub const RECVMSG4_PROGRAM: &str = "capstan_recvmsg4";
pub const GETPEERNAME4_PROGRAM: &str = "capstan_getpeername4";

/// Capacity of [`FRONTENDS_MAP`] and [`STATS_MAP`].
pub const MAX_FRONTENDS: u32 = 65_536;
/// Capacity of [`SLOTS_MAP`]: every frontend's backend slots, with room
/// for a second revision of each while it is being switched.
pub const MAX_SLOTS: u32 = 524_288;
/// Capacity of [`BACKENDS_MAP`].
pub const MAX_BACKENDS: u32 = 131_072;
/// Capacity of [`REVERSE_MAP`]: sockets whose peer was translated.
pub const MAX_REVERSE: u32 = 262_144;
/// Capacity of [`AFFINITY_MAP`].
pub const MAX_AFFINITY: u32 = 65_536;
/// Capacity of [`AFFINITY_MATCH_MAP`].
pub const MAX_AFFINITY_MATCH: u32 = 131_072;
/// Capacity of [`BACKEND_STATS_MAP`]: a count for every backend of every
/// frontend, as many as one revision of all the slots.
pub const MAX_BACKEND_STATS: u32 = MAX_SLOTS / 2;

/// IP protocol numbers as the kernel reports them in `bpf_sock_addr.protocol`.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// [`FrontendKey::scope`] of a ClusterIP. NodePort and external addresses
/// get scopes of their own, so one address and port can mean different
/// Services to different clients.
pub const SCOPE_CLUSTER: u8 = 0;

/// A Service address clients connect to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    /// IPv4 address, network byte order.
    pub address: u32,
    /// Port, network byte order.
    pub port: u16,
    pub protocol: u8,
    pub scope: u8,
}
const _: () = assert!(size_of::<FrontendKey>() == 8);

impl FrontendKey {
    pub const fn new(address: u32, port: u16, protocol: u8, scope: u8) -> Self {
        Self {
            address,
            port,
            protocol,
            scope,
        }
    }
}

/// What a frontend forwards to: `count` backends in the slots of
/// (`id`, `revision`). A count of 0 refuses connects (ECONNREFUSED).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendValue {
    /// Stable for the frontend's life; keys its slots, affinity and stats.
    pub id: u32,
    pub count: u16,
    pub revision: u16,
    /// ClientIP session affinity's timeout; 0 for none.
    pub affinity_timeout_secs: u32,
    pub _pad: [u8; 4],
}
const _: () = assert!(size_of::<FrontendValue>() == 16);

impl FrontendValue {
    pub const fn new(id: u32, count: u16, revision: u16, affinity_timeout_secs: u32) -> Self {
        Self {
            id,
            count,
            revision,
            affinity_timeout_secs,
            _pad: [0; 4],
        }
    }
}

/// Slot `slot` (1..=count) of revision `revision` of frontend `frontend`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub frontend: u32,
    pub revision: u16,
    pub slot: u16,
}
const _: () = assert!(size_of::<SlotKey>() == 8);

impl SlotKey {
    pub const fn new(frontend: u32, revision: u16, slot: u16) -> Self {
        Self {
            frontend,
            revision,
            slot,
        }
    }
}

/// An IPv4 address and port, both in network byte order: a backend in
/// [`BACKENDS_MAP`], the Service address a reply is shown as in
/// [`REVERSE_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Endpoint {
    pub address: u32,
    pub port: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<Ipv4Endpoint>() == 8);

impl Ipv4Endpoint {
    pub const fn new(address: u32, port: u16) -> Self {
        Self {
            address,
            port,
            _pad: [0; 2],
        }
    }
}

/// A translated peer of one socket: the socket (its cookie, and its
/// network namespace's, so cookies never collide across namespaces) and
/// the backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReverseKey {
    pub cookie: u64,
    pub netns: u64,
    pub backend: Ipv4Endpoint,
}
const _: () = assert!(size_of::<ReverseKey>() == 24);

impl ReverseKey {
    pub const fn new(cookie: u64, netns: u64, address: u32, port: u16) -> Self {
        Self {
            cookie,
            netns,
            backend: Ipv4Endpoint::new(address, port),
        }
    }
}

/// A client of a frontend with session affinity. The client is its
/// network namespace: a pod's namespace holds one pod IP, the host's the
/// node's addresses, so it stands for the client IP before the socket has
/// a source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityKey {
    pub netns: u64,
    pub frontend: u32,
    pub _pad: [u8; 4],
}
const _: () = assert!(size_of::<AffinityKey>() == 16);

impl AffinityKey {
    pub const fn new(netns: u64, frontend: u32) -> Self {
        Self {
            netns,
            frontend,
            _pad: [0; 4],
        }
    }
}

/// The backend a client was last sent to, and when (CLOCK_MONOTONIC ns).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityValue {
    pub backend: u32,
    pub _pad: [u8; 4],
    pub last_used_ns: u64,
}
const _: () = assert!(size_of::<AffinityValue>() == 16);

impl AffinityValue {
    pub const fn new(backend: u32, last_used_ns: u64) -> Self {
        Self {
            backend,
            _pad: [0; 4],
            last_used_ns,
        }
    }
}

/// Backend `backend` of frontend `frontend`: in [`AFFINITY_MATCH_MAP`],
/// that it currently serves it; in [`BACKEND_STATS_MAP`], what it got.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendBackendKey {
    pub frontend: u32,
    pub backend: u32,
}
const _: () = assert!(size_of::<FrontendBackendKey>() == 8);

/// What the programs counted for one frontend since it was created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendStats {
    /// Connects and datagrams sent on to a backend.
    pub translated: u64,
    /// Connects and datagrams refused for want of a backend.
    pub refused: u64,
}
const _: () = assert!(size_of::<FrontendStats>() == 16);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data: repr(C), no padding the compiler adds, every bit
    // pattern valid.
    unsafe impl aya::Pod for super::FrontendKey {}
    unsafe impl aya::Pod for super::FrontendValue {}
    unsafe impl aya::Pod for super::SlotKey {}
    unsafe impl aya::Pod for super::Ipv4Endpoint {}
    unsafe impl aya::Pod for super::ReverseKey {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::AffinityValue {}
    unsafe impl aya::Pod for super::FrontendBackendKey {}
    unsafe impl aya::Pod for super::FrontendStats {}
}
