//! capstan's node agent: runs the pods bound to its node on containerd,
//! balances Service traffic in the kernel with eBPF, serves cluster DNS and
//! exports container metrics. service.rs assembles these; the binary in
//! main.rs parses its flags.

pub mod cache;
pub mod cgroup;
pub mod dns;
pub mod events;
pub mod lb;
pub mod logs;
pub mod network;
pub mod node;
pub mod pod;
pub mod runtime;
pub mod server;
pub mod service;
