//! The kinds capstan serves, one `Kind` implementation each.

pub mod apps;
pub mod cluster;
pub mod core;
pub mod history;
pub mod nodes;
pub mod pod_spec;
pub mod pods;
pub mod services;
