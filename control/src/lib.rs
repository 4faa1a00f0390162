//! capstan control: the Kubernetes API, the store, the scheduler and the
//! controllers. The binary in main.rs wires them together.

pub mod store;
