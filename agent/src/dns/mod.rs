//! Cluster DNS in the agent, to the Kubernetes DNS specification: the
//! zone as a snapshot of the agent's cache (`zone`), where a name falls in
//! it (`names`), the answer to a question (`answer`), and the message
//! format (`wire`). The servers and the forwarding to upstream resolvers
//! build on these.

pub mod answer;
pub mod names;
pub mod wire;
pub mod zone;

pub use answer::{Authority, Outcome, RData, Record, RecordType};
pub use zone::Zone;
