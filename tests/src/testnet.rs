//! Test hosts on a private network: a bridge per subnet in a "switch"
//! namespace, one namespace per host wired to its subnet's bridge by a
//! veth, a router namespace joining the subnets when there are several,
//! optionally a containerd per host, and pod networks routed between hosts
//! (host-gw, as capstan does).

use std::{net::Ipv4Addr, path::PathBuf, process::Command, time::Duration};

use anyhow::Context;
use capstan_agent::runtime::{ContainerdDaemon, DaemonConfig};

use crate::{Instance, Netns, process::place};

/// A private network of test hosts. Dropping it removes all of it.
#[derive(Debug)]
pub struct TestNet {
    // Field order is drop order: hosts and their daemons first, the
    // instance's sweep-style teardown last.
    hosts: Vec<TestHost>,
    pods: Vec<u8>,
    router: Option<Netns>,
    switch: Netns,
    instance: Instance,
}

/// One test host: a network namespace at 198.18.<subnet>.<n>.
#[derive(Debug)]
pub struct TestHost {
    containerd: Option<ContainerdDaemon>,
    netns: Netns,
    name: String,
    index: u8,
    address: Ipv4Addr,
    cgroup_base: String,
    run_dir: PathBuf,
    data_dir: PathBuf,
}

/// A network namespace with an address from its host's pod CIDR, reachable
/// from every test host.
#[derive(Debug)]
pub struct PodNetwork {
    pub netns: Netns,
    pub ip: Ipv4Addr,
}

impl TestNet {
    /// `hosts` test hosts on one subnet, h1 at 198.18.0.1 to hN at
    /// 198.18.0.N.
    pub fn new(hosts: u8) -> anyhow::Result<Self> {
        Self::on_subnets(&[hosts])
    }

    /// Test hosts on several subnets joined by a router: `subnets[s]`
    /// hosts on 198.18.<s>.0/24, numbered on from the subnet before (with
    /// `[2, 1]`, h1 at 198.18.0.1, h2 at 198.18.0.2, h3 at 198.18.1.3). The
    /// router is at 198.18.<s>.254 on each, and each host routes the other
    /// subnets through it, so their hosts are one hop away and never on
    /// link.
    pub fn on_subnets(subnets: &[u8]) -> anyhow::Result<Self> {
        crate::require_root();
        let instance = Instance::new();
        let switch = Netns::create(&instance.netns_name("sw"))?;
        let router = match subnets.len() {
            1 => None,
            _ => Some(Netns::create(&instance.netns_name("rt"))?),
        };
        let mut net = Self {
            hosts: Vec::new(),
            pods: vec![0; subnets.iter().map(|&n| usize::from(n)).sum()],
            router,
            switch,
            instance,
        };
        for subnet in 0..subnets.len() as u8 {
            net.add_subnet(subnet)?;
        }
        let mut index = 0;
        for (subnet, &hosts) in subnets.iter().enumerate() {
            for _ in 0..hosts {
                index += 1;
                let host = net.add_host(index, subnet as u8, subnets.len() as u8)?;
                net.hosts.push(host);
            }
        }
        Ok(net)
    }

    /// The switch's bridge of 198.18.<subnet>.0/24, and the router's leg
    /// on it.
    fn add_subnet(&self, subnet: u8) -> anyhow::Result<()> {
        let bridge = format!("br{subnet}");
        self.switch
            .ip(&["link", "add", &bridge, "type", "bridge"])?;
        self.switch.ip(&["link", "set", &bridge, "up"])?;
        if let Some(router) = &self.router {
            plug_as(
                router,
                &self.switch,
                &format!("rt{subnet}"),
                &bridge,
                &format!("eth{subnet}"),
            )?;
            let address = format!("{}/24", router_address(subnet));
            router.ip(&["addr", "add", &address, "dev", &format!("eth{subnet}")])?;
            router.ip(&["link", "set", &format!("eth{subnet}"), "up"])?;
            router.sysctl("net.ipv4.ip_forward", "1")?;
        }
        Ok(())
    }

    fn add_host(&self, index: u8, subnet: u8, subnets: u8) -> anyhow::Result<TestHost> {
        let name = format!("h{index}");
        let netns = Netns::create(&self.instance.netns_name(&name))?;
        plug(&netns, &self.switch, &name, &format!("br{subnet}"))?;
        let address = Ipv4Addr::new(198, 18, subnet, index);
        netns.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        for other in (0..subnets).filter(|&s| s != subnet) {
            netns.ip(&[
                "route",
                "add",
                &format!("198.18.{other}.0/24"),
                "via",
                &router_address(subnet).to_string(),
            ])?;
        }
        Ok(TestHost {
            containerd: None,
            netns,
            cgroup_base: self.instance.cgroup(&name),
            run_dir: self.instance.run_dir(&name),
            data_dir: self.instance.data_dir(&name),
            name,
            index,
            address,
        })
    }

    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// How many hosts there are.
    pub fn hosts(&self) -> u8 {
        self.hosts.len() as u8
    }

    /// Host `n`, counting from 1 as the names do.
    pub fn host(&self, n: u8) -> &TestHost {
        &self.hosts[usize::from(n) - 1]
    }

    pub fn host_mut(&mut self, n: u8) -> &mut TestHost {
        &mut self.hosts[usize::from(n) - 1]
    }

    /// A new pod network namespace on host `n`: an address from
    /// 10.244.<n>.0/24 on the host's bridge `cbr0`, a default route via the
    /// bridge, and routes to it from every other host.
    pub fn pod_network(&mut self, n: u8) -> anyhow::Result<PodNetwork> {
        let slot = &mut self.pods[usize::from(n) - 1];
        *slot += 1;
        let pod = *slot;
        let host = &self.hosts[usize::from(n) - 1];
        let gateway = Ipv4Addr::new(10, 244, n, 1);
        if pod == 1 {
            host.netns.ip(&["link", "add", "cbr0", "type", "bridge"])?;
            host.netns
                .ip(&["addr", "add", &format!("{gateway}/24"), "dev", "cbr0"])?;
            host.netns.ip(&["link", "set", "cbr0", "up"])?;
            host.netns.sysctl("net.ipv4.ip_forward", "1")?;
            for other in self.hosts.iter().filter(|h| h.index != n) {
                other.netns.ip(&[
                    "route",
                    "add",
                    &format!("10.244.{n}.0/24"),
                    "via",
                    &host.address.to_string(),
                ])?;
            }
        }
        let ip = Ipv4Addr::new(10, 244, n, pod + 1);
        let netns = Netns::create(&self.instance.netns_name(&format!("{}-pod{pod}", host.name)))?;
        plug(&netns, &host.netns, &format!("veth{pod}"), "cbr0")?;
        netns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        netns.ip(&["route", "add", "default", "via", &gateway.to_string()])?;
        Ok(PodNetwork { netns, ip })
    }
}

/// Gives `netns` an `eth0` whose peer, `port`, is attached to `bridge` in
/// `parent`.
fn plug(netns: &Netns, parent: &Netns, port: &str, bridge: &str) -> anyhow::Result<()> {
    plug_as(netns, parent, port, bridge, "eth0")
}

/// As [`plug`], the interface in `netns` named `name`.
fn plug_as(
    netns: &Netns,
    parent: &Netns,
    port: &str,
    bridge: &str,
    name: &str,
) -> anyhow::Result<()> {
    parent.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        name,
        "netns",
        netns.name(),
    ])?;
    parent.ip(&["link", "set", port, "master", bridge, "up"])?;
    Ok(())
}

/// The router's address on 198.18.<subnet>.0/24.
fn router_address(subnet: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, subnet, 254)
}

impl TestHost {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Starts this host's own containerd, inside its network namespace.
    pub fn start_containerd(&mut self) -> anyhow::Result<&ContainerdDaemon> {
        let config = DaemonConfig::new(
            self.data_dir.join("containerd"),
            self.run_dir.join("containerd"),
        );
        let mut command = config.command()?;
        place(
            &mut command,
            Some(&self.netns),
            Some(&self.cgroup("containerd")),
        )?;
        let daemon = ContainerdDaemon::spawn(config, command, Duration::from_secs(30))
            .with_context(|| format!("containerd of {}", self.name))?;
        Ok(self.containerd.insert(daemon))
    }

    /// Stops this host's containerd (its shims, and so its containers,
    /// keep running, as after a containerd crash).
    pub fn stop_containerd(&mut self) {
        self.containerd = None;
    }

    /// The socket of this host's containerd ([`Self::start_containerd`]).
    pub fn containerd_socket(&self) -> anyhow::Result<PathBuf> {
        let daemon = self
            .containerd
            .as_ref()
            .with_context(|| format!("{} has no containerd: call start_containerd", self.name))?;
        Ok(daemon.config().socket())
    }

    /// A cgroup (v2, relative to the root) of this host: `<base>/<suffix>`,
    /// inside the instance so teardown removes it.
    pub fn cgroup(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.cgroup_base)
    }

    /// The cgroup every process of this host is below, as a machine's root
    /// cgroup is for a real host: where its Service datapath attaches.
    pub fn cgroup_subtree(&self) -> &str {
        &self.cgroup_base
    }

    /// The prefix an agent on this host names pod network namespaces
    /// with, inside the instance so teardown removes them.
    pub fn pod_netns_prefix(&self) -> String {
        format!("{}-pod-", self.netns.name())
    }

    /// A cgroup path for a container of this host (an OCI spec's
    /// cgroupsPath), inside the instance so teardown removes it.
    pub fn container_cgroup(&self, container: &str) -> String {
        format!("/{}/{container}", self.cgroup_base)
    }

    /// `program` set to start in the network namespace of the pod with
    /// uid `pod_uid` (as the agent of this host made it), in a cgroup
    /// beside that host's pods, so the Service datapath applies to it as
    /// to the pod's own processes.
    pub fn pod_command(
        &self,
        pod_uid: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> anyhow::Result<Command> {
        let path = std::path::Path::new("/run/netns")
            .join(format!("{}{pod_uid}", self.pod_netns_prefix()));
        let netns = std::fs::File::open(&path)
            .with_context(|| format!("opening the pod's network namespace {}", path.display()))?;
        let mut command = Command::new(program);
        let cgroup = format!("{}/test-clients", self.cgroup("pods"));
        crate::process::place_in(&mut command, Some(netns), Some(&cgroup))?;
        Ok(command)
    }

    /// A directory of this host for a test's files, created on demand.
    pub fn run_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.run_dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// A directory of this host for persistent state, created on demand.
    pub fn data_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.data_dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// `program` set to start inside this host, in a cgroup of its own.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> anyhow::Result<Command> {
        self.command_in_cgroup(program, &self.cgroup("procs"))
    }

    /// `program` set to start inside this host, in cgroup `cgroup` (a v2
    /// path, relative to the root; created if missing).
    pub fn command_in_cgroup(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        cgroup: &str,
    ) -> anyhow::Result<Command> {
        let mut command = Command::new(program);
        place(&mut command, Some(&self.netns), Some(cgroup))?;
        Ok(command)
    }
}
