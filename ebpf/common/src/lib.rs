//! Map keys and values shared by the eBPF programs and the agent.
//!
//! Every type here crosses the user/kernel boundary byte for byte, so each is
//! `#[repr(C)]` with explicit padding (the kernel compares keys as raw bytes:
//! uninitialised padding would make equal keys differ) and a size assertion.
//! Addresses and ports are kept in network byte order, as the kernel hands
//! them to cgroup sock_addr programs, so the datapath never converts.
//!
//! The layout follows the socket-level load balancer proven by Cilium: a
//! service frontend is stored once per backend slot. Slot 0 is the master
//! entry holding the number of backends; slots 1..=count hold backend ids.
#![no_std]

use core::mem::size_of;

/// Name of the map from [`ServiceKey`] to [`ServiceValue`].
pub const SERVICES_MAP: &str = "SERVICES";
/// Name of the map from backend id to [`Backend`].
pub const BACKENDS_MAP: &str = "BACKENDS";
/// Name of the cgroup connect4 program.
pub const CONNECT4_PROGRAM: &str = "capstan_connect4";

/// Capacity of [`SERVICES_MAP`]: frontends times their backend slots.
pub const MAX_SERVICE_SLOTS: u32 = 262_144;
/// Capacity of [`BACKENDS_MAP`].
pub const MAX_BACKENDS: u32 = 131_072;

/// IP protocol numbers as the kernel reports them in `bpf_sock_addr.protocol`.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// One slot of a service frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Virtual IPv4 address, network byte order.
    pub address: u32,
    /// Virtual port, network byte order.
    pub port: u16,
    /// 0 for the master entry, 1..=count for backends.
    pub backend_slot: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<ServiceKey>() == 12);

impl ServiceKey {
    pub const fn new(address: u32, port: u16, protocol: u8, backend_slot: u16) -> Self {
        Self {
            address,
            port,
            backend_slot,
            protocol,
            _pad: [0; 3],
        }
    }
}

/// Master entry (slot 0): `count` backends. Backend slot: `backend_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceValue {
    pub backend_id: u32,
    pub count: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<ServiceValue>() == 8);

impl ServiceValue {
    pub const fn master(count: u16) -> Self {
        Self {
            backend_id: 0,
            count,
            _pad: [0; 2],
        }
    }

    pub const fn slot(backend_id: u32) -> Self {
        Self {
            backend_id,
            count: 0,
            _pad: [0; 2],
        }
    }
}

/// Where a connection to a frontend is sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    /// IPv4 address, network byte order.
    pub address: u32,
    /// Port, network byte order.
    pub port: u16,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<Backend>() == 8);

impl Backend {
    pub const fn new(address: u32, port: u16) -> Self {
        Self {
            address,
            port,
            _pad: [0; 2],
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data: repr(C), no padding the compiler adds, every bit
    // pattern valid.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::Backend {}
}
