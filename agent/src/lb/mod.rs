//! Service load balancing: eBPF programs that translate service addresses
//! when a socket connects, and the maps that tell them where to.

mod datapath;
mod service_table;

pub use datapath::{AyaLbMaps, Datapath, DatapathError, mount_bpffs};
pub use service_table::{BackendAddr, Frontend, LbMapError, LbMaps, Protocol, ServiceTable};
