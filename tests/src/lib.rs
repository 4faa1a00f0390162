//! The end-to-end test harness: **test hosts** made of network namespaces on
//! a private bridge, each able to run its own containerd, all of it torn
//! down on drop (panics included) and swept at start if a crashed run left
//! any behind.
//!
//! Every kernel object a harness instance makes is named after its instance
//! id, `<pid>-<n>`: network namespaces `cst-<id>-*`, cgroups
//! `capstan-test/<id>`, directories `/run/capstan-test/<id>` and
//! `/var/lib/capstan-test/<id>`. Instances therefore never share state and
//! tests may run in parallel; the sweep removes only what belongs to
//! processes that no longer exist.
//!
//! Addresses: test hosts get 198.18.0.<n>/24 (RFC 2544's range for network
//! tests, never routed on the internet); pod networks on host n use
//! 10.244.<n>.0/24. No namespace has a route out of the machine.

pub mod agent;
pub mod artifacts;
pub mod bench;
pub mod cluster;
pub mod control;
pub mod etcd;
mod instance;
pub mod netns;
pub mod process;
pub mod registry;
pub mod store_conformance;
mod sweep;
mod testnet;

pub use instance::Instance;
pub use netns::Netns;
pub use sweep::sweep_leftovers;
pub use testnet::{PodNetwork, TestHost, TestNet};

/// End-to-end tests need root: say so instead of failing obscurely.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "end-to-end tests need root (they make namespaces, cgroups and BPF programs); \
         run them with `cargo xtask test` as root"
    );
}
