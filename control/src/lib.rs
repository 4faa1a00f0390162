//! capstan control: the Kubernetes API, the store, the scheduler and the
//! controllers. The binary in main.rs wires them together.

pub mod api;
pub mod bootstrap;
pub mod clock;
pub mod controllers;
pub mod errors;
pub mod events;
pub mod informer;
pub mod labels;
pub mod local_api;
pub mod pki;
pub mod registry;
pub mod scheduler;
pub mod service;
pub mod store;
