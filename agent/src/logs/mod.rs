//! Container logs: the driver that writes them in the CRI format beside
//! each container, the reader that renders them as `kubectl logs` asks,
//! and the agent's HTTPS server that hands them to control.

pub mod driver;
mod format;
mod reader;
pub mod server;
pub mod tls;

pub use reader::{LogOptions, render};
