//! Container logs: the node's collector that writes them in the CRI format
//! from each container's pipes, the agent's client of it, the reader that
//! renders them as `kubectl logs` asks, and the routes through which the
//! agent's server hands them to control.

mod client;
pub mod collector;
mod format;
mod reader;
pub mod routes;
mod stream;

pub use client::{Collector, ContainerLogs, LogsError};
pub use reader::{LogOptions, render};
