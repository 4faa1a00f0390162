//! capstan's eBPF programs: socket-level Service load balancing.
//!
//! `connect4` runs when a process in the attached cgroup calls connect() on
//! an IPv4 socket. If the destination is a service frontend it rewrites the
//! destination to one of the frontend's backends, chosen at random, so the
//! packets carry the backend address from the first SYN and no per-packet
//! NAT is needed.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::bpf_get_prandom_u32,
    macros::{cgroup_sock_addr, map},
    maps::HashMap,
    programs::SockAddrContext,
};
use capstan_ebpf_common::{Backend, MAX_BACKENDS, MAX_SERVICE_SLOTS, ServiceKey, ServiceValue};

/// Returned to the kernel to let the syscall proceed.
const ALLOW: i32 = 1;

#[map(name = "SERVICES")]
static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(MAX_SERVICE_SLOTS, 0);

#[map(name = "BACKENDS")]
static BACKENDS: HashMap<u32, Backend> = HashMap::pinned(MAX_BACKENDS, 0);

#[cgroup_sock_addr(connect4)]
pub fn capstan_connect4(ctx: SockAddrContext) -> i32 {
    // Never refuse a connect we cannot translate: fall through to the
    // original destination, as if the program were not there.
    let _ = try_connect4(&ctx);
    ALLOW
}

fn try_connect4(ctx: &SockAddrContext) -> Result<(), ()> {
    // SAFETY: the kernel passes a valid bpf_sock_addr for this program type.
    let sock_addr = unsafe { &mut *ctx.sock_addr };
    let address = sock_addr.user_ip4;
    // user_port holds the port in network byte order in its low 16 bits.
    let port = sock_addr.user_port as u16;
    let protocol = sock_addr.protocol as u8;

    let master = ServiceKey::new(address, port, protocol, 0);
    // SAFETY: the value is copied out before the map can change under us.
    let count = unsafe { SERVICES.get(&master) }.ok_or(())?.count;
    if count == 0 {
        return Err(());
    }
    // SAFETY: helper without arguments.
    let slot = (unsafe { bpf_get_prandom_u32() } % u32::from(count)) as u16 + 1;
    let slot_key = ServiceKey::new(address, port, protocol, slot);
    // SAFETY: as above.
    let backend_id = unsafe { SERVICES.get(&slot_key) }.ok_or(())?.backend_id;
    // SAFETY: as above.
    let backend = unsafe { BACKENDS.get(&backend_id) }.ok_or(())?;

    sock_addr.user_ip4 = backend.address;
    sock_addr.user_port = u32::from(backend.port);
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
