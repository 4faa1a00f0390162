//! capstan's node agent: runs the pods bound to its node on containerd,
//! balances Service traffic in the kernel with eBPF, serves cluster DNS and
//! exports container metrics. The binary in main.rs wires these together.

pub mod cgroup;
pub mod lb;
pub mod logs;
pub mod network;
pub mod node;
pub mod pod;
pub mod runtime;
