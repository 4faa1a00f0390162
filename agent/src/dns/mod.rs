//! Cluster DNS in the agent, to the Kubernetes DNS specification: the
//! zone as a snapshot of the agent's cache (`zone`), where a name falls in
//! it (`names`), the answer to a question (`answer`), and the message
//! format (`wire`), the UDP and TCP servers over a replaceable snapshot
//! (`server`), and the snapshot's upkeep from the watch cache (`builder`).
//! The servers listen on the node's pod gateway; the kube-dns Service's
//! address reaches them through the Service datapath, node-local. Names
//! outside the zone go to the upstream resolvers (`forward`).

pub mod answer;
pub mod builder;
pub mod forward;
pub mod names;
pub mod server;
pub mod wire;
pub mod zone;

pub use answer::{Authority, Outcome, RData, Record, RecordType};
pub use forward::Forwarder;
pub use server::{Answerer, Handled, ZoneHandle, serve_tcp, serve_udp};
pub use zone::Zone;
