//! Service load balancing: eBPF programs that translate Service addresses
//! at the socket (connect, sendmsg, recvmsg, getpeername), the maps that
//! tell them where to, and the reconciler that keeps those maps equal to
//! the Services and EndpointSlices in the agent's cache.

mod balancer;
mod datapath;
mod desired;
mod dump;
mod maps;
mod service_table;
mod stale_sockets;

pub use balancer::Balancer;
pub use datapath::{Datapath, DatapathError, PIN_DIR, mount_bpffs};
pub use dump::dump;
pub use maps::{BpfLbMaps, LbMapError, LbMaps, MapContents, RecordingMaps};
pub use service_table::{
    BackendAddr, Frontend, FrontendSpec, Programmed, Protocol, ServiceTable, ServiceTableError,
};
pub use stale_sockets::{BackgroundReaper, NetlinkReaper, SocketReaper, in_background};
