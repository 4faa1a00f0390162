//! Cluster DNS in the agent, to the Kubernetes DNS specification: the
//! zone as a snapshot of the agent's cache (`zone`), where a name falls in
//! it (`names`), and the answer to a question (`answer`). The wire codec,
//! the servers and the forwarding to upstream resolvers build on these.

pub mod answer;
pub mod names;
pub mod zone;

pub use answer::{Authority, Outcome, RData, Record, RecordType};
pub use zone::Zone;
