//! Container logs: the driver that writes them in the CRI format beside
//! each container, the reader that renders them as `kubectl logs` asks,
//! and the routes through which the agent's server hands them to control.

pub mod driver;
mod format;
mod reader;
pub mod routes;

pub use reader::{LogOptions, render};
