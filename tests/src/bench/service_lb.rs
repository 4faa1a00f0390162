//! `cargo xtask bench service-lb`: the cost of a Service on the connect
//! path, capstan's eBPF datapath beside kube-proxy's two modes and a direct
//! connect in the same run, and how fast an API change reaches the
//! datapath.
//!
//! - Connects: a client on one test host opens and closes (RST) TCP
//!   connections to the *last* of 1, 1,000 and 10,000 Services (10
//!   backends each, on a second host), one at a time (the direct client
//!   takes the ten backends in turn): (a) through
//!   capstan's eBPF datapath, (b) through iptables rules as kube-proxy
//!   writes them (KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP with statistic
//!   and DNAT, masquerade marks), (c) through nftables verdict maps as
//!   kube-proxy's nftables mode writes them, (d) to a backend directly.
//!   Each mode has its own host, so no mode's rules are in another's way;
//!   rounds alternate the modes and the medians are reported. Ratios and
//!   latency differences to direct are taken within each round (the
//!   modes run back to back) and their median reported, so a noisy
//!   neighbour slowing one round does not skew the comparison.
//! - Programming: control and a release agent with 10,000 Services and
//!   their EndpointSlices; 100 times, one slice is updated through the API
//!   and the pinned frontend map is polled until its revision changes.
//! - The agent's resident memory and the datapath maps' locked memory with
//!   10,000 Services programmed.

use std::{
    collections::BTreeMap,
    io::Write,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::{AsFd, AsRawFd},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use capstan_agent::{
    cgroup::Hierarchies,
    lb::{
        BackendAddr, Datapath, Frontend, FrontendSpec, PIN_DIR, Protocol, ServiceTable, mount_bpffs,
    },
};
use capstan_ebpf_common::{
    FRONTENDS_MAP, FrontendKey, FrontendValue, MAX_FRONTENDS, SCOPE_CLUSTER,
};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};

use super::{control_process::rss_mb, in_parallel, median, millis, percentile};
use crate::{TestHost, TestNet, cluster::TestCluster};

const SCALES: [usize; 3] = [1, 1_000, 10_000];
const BACKENDS: u16 = 10;
const BACKEND_PORT: u16 = 9000;
const CONNECTS: usize = 2_000;
const ROUNDS: usize = 9;
const PROGRAM_UPDATES: usize = 100;
const MODES: [&str; 4] = ["ebpf", "iptables", "nft", "direct"];

/// The ClusterIP of Service `i`: 10.96.1.0 onwards.
fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 1, 0)) + i as u32)
}

fn backend(host: &TestHost, n: u16) -> SocketAddrV4 {
    SocketAddrV4::new(host.address(), BACKEND_PORT + n)
}

/// Connects/s and latencies of one client run.
#[derive(Debug, Clone, Copy)]
struct Measured {
    per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// `capstan-bench connect-loop <address>[,<address>...] <count>`: run
/// inside a test host by the benchmark, taking the addresses in turn;
/// prints `per_s= p50_us= p99_us=`.
pub fn connect_loop(addresses: &str, count: usize) -> anyhow::Result<()> {
    let addresses: Vec<SocketAddr> = addresses
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let mut samples = Vec::with_capacity(count);
    let started = Instant::now();
    for address in addresses.iter().cycle().take(count) {
        let at = Instant::now();
        let stream = TcpStream::connect_timeout(address, Duration::from_secs(2))
            .with_context(|| format!("connecting to {address}"))?;
        samples.push(at.elapsed());
        reset_on_close(&stream);
    }
    let per_s = count as f64 / started.elapsed().as_secs_f64();
    let p50 = percentile(&mut samples, 50.0);
    let p99 = percentile(&mut samples, 99.0);
    println!(
        "per_s={per_s:.0} p50_us={:.1} p99_us={:.1}",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    std::io::stdout().flush()?;
    Ok(())
}

/// SO_LINGER 0: close with RST, so no TIME_WAIT piles up across
/// thousands of connects.
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and an option value of the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Runs the connect loop on `host` (in `cgroup`) against `targets`.
fn measure(host: &TestHost, cgroup: &str, targets: &[SocketAddrV4]) -> anyhow::Result<Measured> {
    let list: Vec<String> = targets.iter().map(ToString::to_string).collect();
    let target = list.join(",");
    let output = host
        .command_in_cgroup(std::env::current_exe()?, cgroup)?
        .args(["connect-loop", &target, &CONNECTS.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        bail!("the client on {} failed against {target}", host.name());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |key: &str| -> anyhow::Result<f64> {
        text.split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .context("a field of the client's report")?
            .parse()
            .context("a number in the client's report")
    };
    Ok(Measured {
        per_s: field("per_s=")?,
        p50_us: field("p50_us=")?,
        p99_us: field("p99_us=")?,
    })
}

/// Listeners on `host` for every backend port, closing what they accept.
fn serve_backends(host: &TestHost) -> anyhow::Result<()> {
    for n in 0..BACKENDS {
        let address = backend(host, n);
        let listener = host
            .netns()
            .run(move || TcpListener::bind(address))
            .context("the namespace thread")??;
        // A deep accept queue: a full one drops SYNs (a 1 s retransmit).
        // SAFETY: listen() again on a listening socket only resizes it.
        unsafe { libc::listen(listener.as_raw_fd(), 4096) };
        std::thread::spawn(move || {
            // The client closes first, with RST; closing here first would
            // leave TIME_WAIT entries that a reused client port runs into
            // (a 1 s SYN retransmit), the test bed's cost, not a mode's.
            for mut stream in listener.incoming().flatten() {
                let _ = std::io::Read::read(&mut stream, &mut [0; 1]);
            }
        });
    }
    Ok(())
}

/// kube-proxy's iptables mode for services `0..n`, as iptables-restore
/// input.
fn iptables_rules(n: usize, server: &TestHost) -> String {
    let mut chains = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
    );
    let mut rules = String::from(
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
    );
    for i in 0..n {
        let ip = vip(i);
        let svc = format!("KUBE-SVC-{i:012X}");
        chains.push_str(&format!(":{svc} - [0:0]\n"));
        rules.push_str(&format!(
            "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"bench/svc-{i}:http cluster IP\" -m tcp --dport 80 -j {svc}\n\
             -A {svc} ! -s 10.244.0.0/16 -d {ip}/32 -p tcp -m comment --comment \"bench/svc-{i}:http cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ\n"
        ));
        for b in 0..BACKENDS {
            let sep = format!("KUBE-SEP-{i:08X}{b:04X}");
            let to = backend(server, b);
            chains.push_str(&format!(":{sep} - [0:0]\n"));
            let left = BACKENDS - b;
            if left > 1 {
                rules.push_str(&format!(
                    "-A {svc} -m comment --comment \"bench/svc-{i}:http -> {to}\" -m statistic --mode random --probability {:.11} -j {sep}\n",
                    1.0 / f64::from(left)
                ));
            } else {
                rules.push_str(&format!(
                    "-A {svc} -m comment --comment \"bench/svc-{i}:http -> {to}\" -j {sep}\n"
                ));
            }
            rules.push_str(&format!(
                "-A {sep} -s {}/32 -m comment --comment \"bench/svc-{i}:http\" -j KUBE-MARK-MASQ\n\
                 -A {sep} -p tcp -m comment --comment \"bench/svc-{i}:http\" -m tcp -j DNAT --to-destination {to}\n",
                to.ip()
            ));
        }
    }
    chains + &rules + "COMMIT\n"
}

/// kube-proxy's nftables mode for services `0..n`, as `nft -f` input.
fn nft_rules(n: usize, server: &TestHost) -> String {
    let chain = |name: &str, body: &[&str]| format!("chain {name} {{\n{}\n}}\n", body.join("\n"));
    let mut out = String::from("table ip kube-proxy {\n");
    out.push_str("map service-ips {\ntype ipv4_addr . inet_proto . inet_service : verdict\n}\n");
    out.push_str(&chain(
        "services",
        &["ip daddr . meta l4proto . th dport vmap @service-ips"],
    ));
    out.push_str(&chain(
        "nat-output",
        &[
            "type nat hook output priority -100; policy accept;",
            "jump services",
        ],
    ));
    out.push_str(&chain(
        "mark-for-masquerade",
        &["meta mark set meta mark or 0x4000"],
    ));
    out.push_str(&chain(
        "masquerading",
        &[
            "meta mark & 0x4000 == 0 return",
            "meta mark set meta mark xor 0x4000",
            "masquerade fully-random",
        ],
    ));
    out.push_str(&chain(
        "nat-postrouting",
        &[
            "type nat hook postrouting priority 100; policy accept;",
            "jump masquerading",
        ],
    ));
    let mut elements = Vec::with_capacity(n);
    for i in 0..n {
        let ip = vip(i);
        let service = format!("service-{i:08X}-bench/svc-{i}/tcp/http");
        let mut verdicts = Vec::new();
        for b in 0..BACKENDS {
            let to = backend(server, b);
            let endpoint = format!(
                "endpoint-{i:08X}{b:04X}-bench/svc-{i}/tcp/http__{}/{}",
                to.ip(),
                to.port()
            );
            out.push_str(&chain(
                &endpoint,
                &[
                    &format!("ip saddr {} jump mark-for-masquerade", to.ip()),
                    &format!("meta l4proto tcp dnat to {to}"),
                ],
            ));
            verdicts.push(format!("{b} : goto {endpoint}"));
        }
        out.push_str(&chain(
            &service,
            &[
                &format!(
                    "ip daddr {ip} tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade"
                ),
                &format!(
                    "numgen random mod {BACKENDS} vmap {{ {} }}",
                    verdicts.join(", ")
                ),
            ],
        ));
        elements.push(format!("{ip} . tcp . 80 : goto {service}"));
    }
    out.push_str("}\n");
    for chunk in elements.chunks(1_000) {
        out.push_str(&format!(
            "add element ip kube-proxy service-ips {{ {} }}\n",
            chunk.join(" , ")
        ));
    }
    out
}

/// Feeds `input` to `program args` run in `host`.
fn feed(host: &TestHost, program: &str, args: &[&str], input: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = host
        .command(program)?
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    if !child.wait()?.success() {
        bail!("{program} {} refused the rules", args.join(" "));
    }
    Ok(started.elapsed())
}

/// One mode at one scale beside direct.
struct Compared {
    /// Median over rounds of connects/s over direct's in the same round.
    ratio: f64,
    /// Median over rounds of p50 less direct's in the same round.
    p50_delta_us: f64,
}

/// The four modes at each scale.
type Results = BTreeMap<(usize, &'static str), Compared>;

fn connects() -> anyhow::Result<Results> {
    // h1: eBPF and direct; h2: the backends; h3: iptables; h4: nftables.
    let net = TestNet::new(4)?;
    let (ebpf_host, server, ipt_host, nft_host) =
        (net.host(1), net.host(2), net.host(3), net.host(4));
    serve_backends(server)?;
    ebpf_host
        .netns()
        .ip(&["route", "add", "blackhole", "10.96.0.0/12"])?;
    for host in [ipt_host, nft_host] {
        // As on a kube-proxy node: the Service network is routable, so
        // connects reach the NAT hook.
        host.netns()
            .ip(&["route", "add", "10.96.0.0/12", "dev", "eth0"])?;
    }
    let bpffs = net.instance().run_dir("bpffs");
    mount_bpffs(&bpffs)?;
    let mut datapath = Datapath::load(&bpffs.join(PIN_DIR))?;
    let mut table = ServiceTable::adopt(datapath.take_maps()?, MAX_FRONTENDS)?;
    let cgroup = net.instance().cgroup("lb-bench");
    let plain = net.instance().cgroup("lb-bench-direct");
    let unified = Hierarchies::detect()?.unified;
    std::fs::create_dir_all(unified.join(&cgroup))?;
    datapath.attach(&unified.join(&cgroup))?;
    let spec = FrontendSpec {
        backends: (0..BACKENDS)
            .map(|b| BackendAddr(backend(server, b)))
            .collect(),
        affinity_timeout_secs: 0,
    };

    let direct: Vec<SocketAddrV4> = (0..BACKENDS).map(|b| backend(server, b)).collect();
    let mut results = Results::new();
    let mut programmed = 0;
    for scale in SCALES {
        let started = Instant::now();
        for i in programmed..scale {
            table.set(Frontend::new(vip(i), 80, Protocol::Tcp), &spec)?;
        }
        programmed = scale;
        let ebpf_took = started.elapsed();
        let ipt_took = feed(
            ipt_host,
            "iptables-restore",
            &[],
            &iptables_rules(scale, server),
        )?;
        let nft_took = feed(nft_host, "nft", &["-f", "-"], &nft_rules(scale, server))?;
        println!(
            "{scale} services programmed: ebpf {:.0} ms, iptables-restore {:.0} ms, nft {:.0} ms",
            millis(ebpf_took),
            millis(ipt_took),
            millis(nft_took)
        );
        let last = SocketAddrV4::new(vip(scale - 1), 80);
        let mut samples: BTreeMap<&str, Vec<Measured>> = BTreeMap::new();
        for _ in 0..ROUNDS {
            for mode in MODES {
                let measured = match mode {
                    "ebpf" => measure(ebpf_host, &cgroup, &[last])?,
                    "iptables" => measure(ipt_host, &ipt_host.cgroup("procs"), &[last])?,
                    "nft" => measure(nft_host, &nft_host.cgroup("procs"), &[last])?,
                    // The same ten backends the Services spread over.
                    _ => measure(ebpf_host, &plain, &direct)?,
                };
                samples.entry(mode).or_default().push(measured);
            }
        }
        let direct_runs = samples.get("direct").cloned().unwrap_or_default();
        for (mode, runs) in samples {
            let pick =
                |f: fn(&Measured) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
            let m = Measured {
                per_s: pick(|m| m.per_s),
                p50_us: pick(|m| m.p50_us),
                p99_us: pick(|m| m.p99_us),
            };
            let paired = |f: fn(&Measured, &Measured) -> f64| {
                median(
                    &mut runs
                        .iter()
                        .zip(&direct_runs)
                        .map(|(run, direct)| f(run, direct))
                        .collect::<Vec<_>>(),
                )
            };
            let compared = Compared {
                ratio: paired(|run, direct| run.per_s / direct.per_s),
                p50_delta_us: paired(|run, direct| run.p50_us - direct.p50_us),
            };
            println!(
                "{scale:>6} services  {mode:<8} {:>8.0} connects/s  p50 {:>6.1} us  p99 {:>7.1} us  {:.2}x direct, p50 {:+.1} us",
                m.per_s, m.p50_us, m.p99_us, compared.ratio, compared.p50_delta_us
            );
            results.insert((scale, mode), compared);
        }
        // The next scale's rules replace these whole, as a resync does
        // (iptables-restore replaces the nat table on its own).
        feed(
            nft_host,
            "nft",
            &["delete", "table", "ip", "kube-proxy"],
            "",
        )?;
    }
    drop(table);
    datapath.detach()?;
    Ok(results)
}

/// What the programming half measured.
struct Programming {
    p50_ms: f64,
    p99_ms: f64,
    agent_rss_mb: f64,
    maps_mb: f64,
}

fn service(i: usize) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": format!("svc-{i}") },
        "spec": { "clusterIP": vip(i).to_string(), "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] },
    }))?)
}

fn slice(i: usize, generation: usize) -> anyhow::Result<EndpointSlice> {
    let endpoints: Vec<_> = (0..BACKENDS)
        .map(|b| {
            let last = (usize::from(b) + generation) % 250 + 2;
            serde_json::json!({ "addresses": [format!("10.244.{}.{last}", i % 200)], "conditions": { "ready": true } })
        })
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": format!("svc-{i}-1"), "labels": { "kubernetes.io/service-name": format!("svc-{i}") } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
        "endpoints": endpoints,
    }))?)
}

/// The pinned frontend map of the agent on `host`.
fn frontend_map(
    host: &TestHost,
) -> anyhow::Result<aya::maps::HashMap<aya::maps::MapData, FrontendKey, FrontendValue>> {
    let pin = host.run_dir("bpf")?.join(PIN_DIR).join(FRONTENDS_MAP);
    let data =
        aya::maps::MapData::from_pin(&pin).with_context(|| format!("opening {}", pin.display()))?;
    Ok(aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data))?)
}

fn frontend_key(i: usize) -> FrontendKey {
    FrontendKey::new(u32::from(vip(i)).to_be(), 80_u16.to_be(), 6, SCOPE_CLUSTER)
}

/// Locked memory of the maps pinned in `dir`, from their fdinfo.
fn maps_memlock_mb(dir: &Path) -> anyhow::Result<f64> {
    let mut bytes = 0_u64;
    for entry in std::fs::read_dir(dir)?.flatten() {
        if !entry.file_type()?.is_file() {
            continue;
        }
        let Ok(map) = aya::maps::MapData::from_pin(entry.path()) else {
            continue;
        };
        let fd = map.fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
        bytes += info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(bytes as f64 / (1 << 20) as f64)
}

fn programming() -> anyhow::Result<Programming> {
    let count = *SCALES.last().unwrap_or(&1);
    TestCluster::try_run(TestNet::new(1)?, async move |cluster: &mut TestCluster| {
        let services: Api<Service> = Api::namespaced(cluster.client(), "default");
        let slices: Api<EndpointSlice> = Api::namespaced(cluster.client(), "default");
        let started = Instant::now();
        in_parallel(16, count, move |i| {
            let (services, slices) = (services.clone(), slices.clone());
            async move {
                services
                    .create(&PostParams::default(), &service(i)?)
                    .await?;
                slices.create(&PostParams::default(), &slice(i, 0)?).await?;
                anyhow::Ok(())
            }
        })
        .await?;
        println!(
            "{count} Services and slices created in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let host = cluster.net.host(1);
        let frontends = frontend_map(host)?;
        cluster
            .eventually(
                Duration::from_secs(300),
                "every Service programmed",
                || async { (frontends.keys().flatten().count() > count).then_some(()) },
            )
            .await?;
        println!(
            "all programmed {:.1} s after the first create",
            started.elapsed().as_secs_f64()
        );

        let slices: Api<EndpointSlice> = Api::namespaced(cluster.client(), "default");
        let mut latencies = Vec::with_capacity(PROGRAM_UPDATES);
        for update in 0..PROGRAM_UPDATES {
            let i = (update * 97) % count;
            let key = frontend_key(i);
            let before = frontends.get(&key, 0)?.revision;
            let patch = serde_json::json!({ "endpoints": slice(i, update + 1)?.endpoints });
            let at = Instant::now();
            slices
                .patch(
                    &format!("svc-{i}-1"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            loop {
                if frontends.get(&key, 0)?.revision != before {
                    break;
                }
                if at.elapsed() > Duration::from_secs(10) {
                    bail!("update {update} of svc-{i} not programmed in 10 s");
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            latencies.push(at.elapsed());
        }
        let agent = cluster.agent_pids()[0].context("the agent is not running")?;
        Ok(Programming {
            p50_ms: millis(percentile(&mut latencies, 50.0)),
            p99_ms: millis(percentile(&mut latencies, 99.0)),
            agent_rss_mb: rss_mb(agent)?,
            maps_mb: maps_memlock_mb(&host.run_dir("bpf")?.join(PIN_DIR))?,
        })
    })
}

pub fn run() -> anyhow::Result<()> {
    let results = connects()?;
    let programmed = programming()?;
    println!(
        "programming at {} Services: p50 {:.1} ms, p99 {:.1} ms; agent RSS {:.1} MB, maps {:.1} MB locked",
        SCALES[2],
        programmed.p50_ms,
        programmed.p99_ms,
        programmed.agent_rss_mb,
        programmed.maps_mb
    );
    let at_10k = |mode| results.get(&(SCALES[2], mode));
    let ratio = |mode| at_10k(mode).map_or(f64::NAN, |c| c.ratio);
    let ebpf_delta = at_10k("ebpf").map_or(f64::NAN, |c| c.p50_delta_us);
    println!("ebpf p50 at 10k is {ebpf_delta:+.1} us from direct (median of the rounds)");
    println!(
        "bench service-lb: ebpf_ratio_10k={:.2} iptables_ratio_10k={:.2} nft_ratio_10k={:.2} ebpf_p50_delta_us_10k={:.1} program_p50_ms={:.1} program_p99_ms={:.1} agent_rss_10k_mb={:.1} maps_10k_mb={:.1}",
        ratio("ebpf"),
        ratio("iptables"),
        ratio("nft"),
        ebpf_delta,
        programmed.p50_ms,
        programmed.p99_ms,
        programmed.agent_rss_mb,
        programmed.maps_mb
    );
    Ok(())
}
