//! Cluster DNS in the agent, to the Kubernetes DNS specification: the
//! zone as a snapshot of the agent's cache (`zone`), where a name falls in
//! it (`names`), the answer to a question (`answer`), and the message
//! format (`wire`), and the UDP and TCP servers over a replaceable
//! snapshot (`server`). Forwarding to upstream resolvers, the snapshot's
//! builder over the watch cache and the kube-dns Service come next.

pub mod answer;
pub mod names;
pub mod server;
pub mod wire;
pub mod zone;

pub use answer::{Authority, Outcome, RData, Record, RecordType};
pub use server::{Answerer, ZoneHandle, serve_tcp, serve_udp};
pub use zone::Zone;
