//! Stale sockets: a connected UDP socket keeps the backend its connect()
//! was translated to, so when that backend goes, the socket would talk
//! to nothing forever (Cilium's users still meet this with DNS clients).
//! When a backend leaves the datapath, the sockets translated to it are
//! destroyed (netlink SOCK_DESTROY, as `ss -K` does): the application
//! sees ECONNABORTED at once and connects again, to a live backend. TCP
//! connections are destroyed too when the agent is told to
//! (`--destroy-stale-tcp`): the peer gets a reset, and a client blocked on
//! a backend that vanished without one stops waiting for it.
//!
//! Only sockets the datapath translated are touched: one whose entry in
//! the reverse map (its cookie, its network namespace's cookie, the
//! backend) exists. A client that talks to a pod by its own address keeps
//! its socket. Every network namespace of the node is visited: the
//! host's and each pod's.

use std::{
    fs::File,
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, MapData};
use capstan_ebpf_common::{Ipv4Endpoint, PROTO_TCP, PROTO_UDP, ReverseKey};

use super::service_table::BackendAddr;

/// Destroys translated sockets whose peer is one of `gone`.
pub trait SocketReaper: Send + std::fmt::Debug {
    /// Failures are logged, not fatal: the next removal tries again.
    fn reap(&mut self, gone: &[BackendAddr]);
}

/// Runs `reaper` on a thread of its own and hands it the work: visiting
/// every pod's namespace takes a thread and a few syscalls each, which the
/// balancer must not wait for before programming the next change.
pub fn in_background(mut reaper: impl SocketReaper + 'static) -> BackgroundReaper {
    let (work, queue) = std::sync::mpsc::channel::<Vec<BackendAddr>>();
    std::thread::spawn(move || {
        while let Ok(mut gone) = queue.recv() {
            // A burst is reaped in one visit of the namespaces.
            while let Ok(more) = queue.try_recv() {
                gone.extend(more);
            }
            reaper.reap(&gone);
        }
    });
    BackgroundReaper { work }
}

/// The handle [`in_background`] returns; dropping it ends the thread.
#[derive(Debug)]
pub struct BackgroundReaper {
    work: std::sync::mpsc::Sender<Vec<BackendAddr>>,
}

impl SocketReaper for BackgroundReaper {
    fn reap(&mut self, gone: &[BackendAddr]) {
        if !gone.is_empty() {
            let _ = self.work.send(gone.to_vec());
        }
    }
}

/// The real reaper, over netlink in each network namespace of the node.
pub struct NetlinkReaper {
    reverse: HashMap<MapData, ReverseKey, Ipv4Endpoint>,
    /// Pod network namespaces are pinned as /run/netns/<prefix><uid>.
    netns_prefix: String,
    /// The IP protocols whose sockets are destroyed: UDP, and TCP if asked.
    protocols: Vec<u8>,
}

impl std::fmt::Debug for NetlinkReaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkReaper")
            .field("netns_prefix", &self.netns_prefix)
            .field("protocols", &self.protocols)
            .finish_non_exhaustive()
    }
}

impl NetlinkReaper {
    /// A reaper of connected UDP sockets, and of TCP ones if `tcp`, in the
    /// agent's namespace and those pinned under `netns_prefix`.
    pub fn new(
        reverse: HashMap<MapData, ReverseKey, Ipv4Endpoint>,
        netns_prefix: String,
        tcp: bool,
    ) -> Self {
        let mut protocols = vec![PROTO_UDP];
        if tcp {
            protocols.push(PROTO_TCP);
        }
        Self {
            reverse,
            netns_prefix,
            protocols,
        }
    }

    fn namespaces(&self) -> Vec<PathBuf> {
        let mut all = vec![PathBuf::from("/proc/self/ns/net")];
        all.extend(
            crate::network::pinned_network_namespaces()
                .into_iter()
                .filter(|name| name.starts_with(&self.netns_prefix))
                .map(|name| Path::new("/run/netns").join(name)),
        );
        all
    }

    fn reap_in(&self, netns: &Path, gone: &[BackendAddr]) -> io::Result<usize> {
        let diag = SockDiag::open_in(netns)?;
        let netns_cookie = diag.netns_cookie()?;
        let mut destroyed = 0;
        let mut sockets = Vec::new();
        for &protocol in &self.protocols {
            sockets.extend(diag.sockets(protocol)?);
        }
        for socket in sockets {
            let peer = BackendAddr(std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::from(u32::from_be(socket.dst)),
                u16::from_be(socket.dport),
            ));
            if !gone.contains(&peer) {
                continue;
            }
            let key = ReverseKey::new(socket.cookie, netns_cookie, socket.dst, socket.dport);
            if self.reverse.get(&key, 0).is_err() {
                continue;
            }
            diag.destroy(&socket)?;
            destroyed += 1;
        }
        Ok(destroyed)
    }
}

impl SocketReaper for NetlinkReaper {
    fn reap(&mut self, gone: &[BackendAddr]) {
        if gone.is_empty() {
            return;
        }
        let mut destroyed = 0;
        for netns in self.namespaces() {
            match self.reap_in(&netns, gone) {
                Ok(n) => destroyed += n,
                // A pod being torn down may take its namespace with it.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => tracing::warn!(
                    netns = %netns.display(), %err,
                    "destroying sockets connected to removed backends"
                ),
            }
        }
        if destroyed > 0 {
            tracing::info!(
                destroyed,
                backends = gone.len(),
                "stale service sockets destroyed"
            );
        }
    }
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const SO_NETNS_COOKIE: libc::c_int = 71;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// `struct inet_diag_sockid`: addresses and ports in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct DiagRequest {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// `struct nlmsghdr` followed by a request.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Message {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    request: DiagRequest,
}
const _: () = assert!(size_of::<SockId>() == 48);
const _: () = assert!(size_of::<Message>() == 16 + 56);

/// One IPv4 socket as the kernel lists it.
struct DiagSocket {
    protocol: u8,
    id: SockId,
    dst: u32,
    dport: u16,
    cookie: u64,
}

/// A NETLINK_SOCK_DIAG socket bound to one network namespace.
struct SockDiag {
    fd: OwnedFd,
}

impl SockDiag {
    /// Opens the socket on a thread that entered `netns`: a netlink
    /// socket belongs to the namespace it was made in, wherever it is used.
    fn open_in(netns: &Path) -> io::Result<Self> {
        let file = File::open(netns)?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
                    // SAFETY: plain syscall; the descriptor is owned at once.
                    let fd = unsafe {
                        libc::socket(
                            libc::AF_NETLINK,
                            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                            libc::NETLINK_SOCK_DIAG,
                        )
                    };
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // SAFETY: a descriptor we just opened and nothing else owns.
                    Ok(Self {
                        fd: unsafe { OwnedFd::from_raw_fd(fd) },
                    })
                })
                .join()
                .map_err(|_| io::Error::other("the namespace thread panicked"))?
        })
    }

    fn netns_cookie(&self) -> io::Result<u64> {
        let mut cookie: u64 = 0;
        let mut len = size_of::<u64>() as libc::socklen_t;
        // SAFETY: the buffer and its length are valid for the call.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&raw mut cookie).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cookie)
    }

    fn send(&self, message: &Message) -> io::Result<()> {
        // SAFETY: `message` is plain old data of the length given.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                (message as *const Message).cast(),
                size_of::<Message>(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn receive(&self, buffer: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the buffer is valid for its length.
        let got = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(got as usize)
    }

    fn request(kind: u16, flags: u16, protocol: u8, id: SockId) -> Message {
        Message {
            len: size_of::<Message>() as u32,
            kind,
            flags,
            seq: 1,
            pid: 0,
            request: DiagRequest {
                family: libc::AF_INET as u8,
                protocol,
                states: u32::MAX,
                id,
                ..DiagRequest::default()
            },
        }
    }

    /// Every IPv4 socket of `protocol` in the namespace.
    fn sockets(&self, protocol: u8) -> io::Result<Vec<DiagSocket>> {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        self.send(&Self::request(
            SOCK_DIAG_BY_FAMILY,
            flags,
            protocol,
            SockId::default(),
        ))?;
        let mut sockets = Vec::new();
        let mut buffer = vec![0_u8; 64 << 10];
        loop {
            let got = self.receive(&mut buffer)?;
            let mut at = 0;
            while at + 16 <= got {
                let header = &buffer[at..];
                let len = u32::from_ne_bytes(header[0..4].try_into().unwrap_or_default()) as usize;
                let kind = u16::from_ne_bytes(header[4..6].try_into().unwrap_or_default());
                if len < 16 || at + len > got {
                    return Err(io::Error::other("a truncated sock_diag message"));
                }
                match kind {
                    NLMSG_DONE => return Ok(sockets),
                    NLMSG_ERROR => return Err(netlink_error(&header[16..len])),
                    _ => {}
                }
                // struct inet_diag_msg: family, state, timer, retrans, then
                // the socket id.
                if let Some(id) = header.get(16 + 4..16 + 4 + size_of::<SockId>()) {
                    // SAFETY: `id` holds exactly a SockId's bytes, and every
                    // bit pattern is a valid SockId.
                    let id: SockId = unsafe { std::ptr::read_unaligned(id.as_ptr().cast()) };
                    sockets.push(DiagSocket {
                        protocol,
                        dst: id.dst[0],
                        dport: id.dport,
                        cookie: u64::from(id.cookie[0]) | (u64::from(id.cookie[1]) << 32),
                        id,
                    });
                }
                at += (len + 3) & !3;
            }
        }
    }

    fn destroy(&self, socket: &DiagSocket) -> io::Result<()> {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        self.send(&Self::request(
            SOCK_DESTROY,
            flags,
            socket.protocol,
            socket.id,
        ))?;
        let mut buffer = [0_u8; 512];
        let got = self.receive(&mut buffer)?;
        let kind = buffer.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
        match kind {
            Some(NLMSG_ERROR) if got >= 20 => {
                let error = netlink_error(&buffer[16..got]);
                match error.raw_os_error() {
                    // Gone meanwhile: the end state is the same.
                    Some(0) | Some(libc::ENOENT) => Ok(()),
                    _ => Err(error),
                }
            }
            _ => Ok(()),
        }
    }
}

/// The error of an NLMSG_ERROR message (0 for an acknowledgement).
fn netlink_error(body: &[u8]) -> io::Error {
    let code = body
        .get(0..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(-libc::EPROTO);
    io::Error::from_raw_os_error(-code)
}
