//! What the node reports about itself, read from the host: cpu, memory and
//! disk capacity, kernel and OS, machine and boot ids.

use std::{collections::BTreeMap, path::Path};

use k8s_openapi::{api::core::v1::NodeSystemInfo, apimachinery::pkg::api::resource::Quantity};

/// Memory the kubelet keeps back by default (its eviction threshold).
const RESERVED_MEMORY_KI: u64 = 100 * 1024;
/// Share of ephemeral storage allocatable (the kubelet evicts at 10% free).
const ALLOCATABLE_STORAGE_PERCENT: u64 = 90;

/// The node's resources: capacity and what pods may be given.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    pub capacity: BTreeMap<String, Quantity>,
    pub allocatable: BTreeMap<String, Quantity>,
}

/// Capacity and allocatable of this host for `max_pods` pods, ephemeral
/// storage measured on the filesystem of `data_dir`.
pub fn resources(max_pods: u32, data_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_ki = meminfo_total_ki().unwrap_or(0);
    let storage = nix::sys::statvfs::statvfs(data_dir)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(0);
    let q = |s: String| Quantity(s);
    let capacity = BTreeMap::from([
        ("cpu".to_owned(), q(cpus.to_string())),
        ("memory".to_owned(), q(format!("{memory_ki}Ki"))),
        ("pods".to_owned(), q(max_pods.to_string())),
        (
            "ephemeral-storage".to_owned(),
            q(format!("{}Ki", storage / 1024)),
        ),
    ]);
    let allocatable = BTreeMap::from([
        ("cpu".to_owned(), q(cpus.to_string())),
        (
            "memory".to_owned(),
            q(format!(
                "{}Ki",
                memory_ki.saturating_sub(RESERVED_MEMORY_KI)
            )),
        ),
        ("pods".to_owned(), q(max_pods.to_string())),
        (
            "ephemeral-storage".to_owned(),
            q((storage / 100 * ALLOCATABLE_STORAGE_PERCENT).to_string()),
        ),
    ]);
    Resources {
        capacity,
        allocatable,
    }
}

fn meminfo_total_ki() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// PRETTY_NAME of /etc/os-release.
fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".to_owned())
}

/// The IPv4 address of the interface the default route leaves by, else
/// the first non-loopback IPv4 address of the host.
pub fn default_address() -> Option<std::net::Ipv4Addr> {
    let routes = std::fs::read_to_string("/proc/self/net/route").unwrap_or_default();
    let default_interface = routes.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let interface = fields.next()?;
        (fields.next()? == "00000000").then(|| interface.to_owned())
    });
    let addresses: Vec<(String, std::net::Ipv4Addr)> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|ifaddr| {
            let ip = ifaddr.address?.as_sockaddr_in()?.ip();
            (!ip.is_loopback()).then_some((ifaddr.interface_name, ip))
        })
        .collect();
    addresses
        .iter()
        .find(|(name, _)| Some(name) == default_interface.as_ref())
        .or_else(|| addresses.first())
        .map(|(_, ip)| *ip)
}

/// The OCI/Go name of this machine's architecture.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// nodeInfo: versions and ids.
pub fn system_info(containerd_version: &str) -> NodeSystemInfo {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    NodeSystemInfo {
        architecture: architecture().to_owned(),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        container_runtime_version: format!("containerd://{containerd_version}"),
        kernel_version: kernel,
        kube_proxy_version: String::new(),
        kubelet_version: agent_version(),
        machine_id: read_trimmed("/etc/machine-id"),
        operating_system: "linux".to_owned(),
        os_image: os_image(),
        system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
        swap: None,
    }
}

/// The Kubernetes version whose API the agent speaks, with capstan's own
/// as build metadata.
pub fn agent_version() -> String {
    format!("v1.33.0+capstan-{}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_reports_resources_and_versions() {
        let resources = resources(110, Path::new("/"));
        assert_eq!(resources.capacity["pods"].0, "110");
        assert!(resources.capacity["memory"].0.ends_with("Ki"));
        assert_ne!(resources.capacity["cpu"].0, "0");
        let info = system_info("1.6.20");
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
        assert_eq!(info.operating_system, "linux");
        assert!(!info.kernel_version.is_empty());
        assert!(info.kubelet_version.starts_with("v1.33.0+capstan-"));
    }
}
