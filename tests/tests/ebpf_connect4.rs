//! The agent's eBPF datapath on the real kernel: attached to a cgroup, it
//! sends that cgroup's connects and datagrams to a service address on to
//! a backend and shows the service address as the peer and the source of
//! replies, refuses connects to a service with no backend, leaves other
//! processes alone, and stops when detached. TCP connections translated to
//! a backend that left are destroyed when the reaper is told to.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener},
    process::Output,
    sync::mpsc,
    thread,
};

use capstan_agent::{
    cgroup::Hierarchies,
    lb::{
        BackendAddr, BpfLbMaps, Datapath, Frontend, FrontendSpec, NetlinkReaper, PIN_DIR, Protocol,
        ServiceTable, SocketReaper, mount_bpffs,
    },
};
use capstan_ebpf_common::{
    CONNECT4_PROGRAM, GETPEERNAME4_PROGRAM, RECVMSG4_PROGRAM, REVERSE_MAP, SENDMSG4_PROGRAM,
};
use capstan_tests::{TestHost, TestNet, artifacts};

const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 100);
const SERVICE: &str = "10.96.0.100:80";
/// One test at a time: the check that a dropped datapath unloads its
/// programs finds programs by name, and would see another test's.
static ONE_DATAPATH: std::sync::Mutex<()> = std::sync::Mutex::new(());

const PROGRAMS: [&str; 4] = [
    CONNECT4_PROGRAM,
    SENDMSG4_PROGRAM,
    RECVMSG4_PROGRAM,
    GETPEERNAME4_PROGRAM,
];

/// A backend on `host` that answers each line with its own address and
/// reports (local, peer) of every connection it accepts.
fn backend(host: &TestHost, port: u16, accepted: mpsc::Sender<(SocketAddr, SocketAddr)>) {
    let address = SocketAddr::from((host.address(), port));
    let listener = host
        .netns()
        .run(move || TcpListener::bind(address))
        .unwrap()
        .unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
                continue;
            };
            if accepted.send((local, peer)).is_err() {
                return;
            }
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_ok() {
                let _ = writeln!(stream, "{} got {}", local, line.trim());
            }
        }
    });
}

/// `testapp connect SERVICE` from `host`, in cgroup `cgroup`.
fn connect_from(host: &TestHost, cgroup: &str) -> Output {
    host.command_in_cgroup(artifacts::testapp().unwrap(), cgroup)
        .unwrap()
        .args(["connect", SERVICE, "--send", "ping", "--timeout-secs", "2"])
        .output()
        .unwrap()
}

/// The datapath on a bpffs of `net`'s instance, attached to a new cgroup
/// `name` of it; host 1's service addresses go nowhere without it, as the
/// agent's blackhole route makes sure.
fn attached(net: &TestNet, name: &str) -> (Datapath, ServiceTable<BpfLbMaps>, String) {
    net.host(1)
        .netns()
        .ip(&["route", "add", "blackhole", "10.96.0.0/12"])
        .unwrap();
    let bpffs = net.instance().run_dir("bpffs");
    mount_bpffs(&bpffs).unwrap();
    let mut datapath = Datapath::load(&bpffs.join(PIN_DIR)).unwrap();
    let services = ServiceTable::adopt(datapath.take_maps().unwrap(), 16).unwrap();
    let cgroup = net.instance().cgroup(name);
    let unified = Hierarchies::detect().unwrap().unified;
    std::fs::create_dir_all(unified.join(&cgroup)).unwrap();
    datapath.attach(&unified.join(&cgroup)).unwrap();
    (datapath, services, cgroup)
}

fn spec(backends: &[BackendAddr]) -> FrontendSpec {
    FrontendSpec {
        backends: backends.iter().copied().collect(),
        affinity_timeout_secs: 0,
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn connect4_sends_a_cgroups_connects_to_the_mapped_backend() {
    let _alone = ONE_DATAPATH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let net = TestNet::new(2).unwrap();
    let (client, server) = (net.host(1), net.host(2));
    let (accepted_tx, accepted) = mpsc::channel();
    backend(server, 8080, accepted_tx.clone());
    backend(server, 8081, accepted_tx);
    let (mut datapath, mut services, translated) = attached(&net, "lb-translated");
    let untouched = net.instance().cgroup("lb-untouched");
    let frontend = Frontend::new(SERVICE_IP, 80, Protocol::Tcp);
    let first = BackendAddr(SocketAddrV4::new(server.address(), 8080));
    services.set(frontend, &spec(&[first])).unwrap();

    // Inside the cgroup: the connect reaches the backend, which sees its
    // own address as the destination and the client host as the source;
    // the client sees the service address as its peer.
    let inside = connect_from(client, &translated);
    assert!(inside.status.success(), "{inside:?}");
    assert_eq!(
        stdout(&inside),
        "peer=10.96.0.100:80\nreply=198.18.0.2:8080 got ping\n"
    );
    let (local, peer) = accepted.try_recv().unwrap();
    assert_eq!(local, SocketAddr::from(first.0));
    assert_eq!(peer.ip(), client.address());

    // Outside the cgroup: the service address goes nowhere.
    let outside = connect_from(client, &untouched);
    assert!(!outside.status.success(), "{outside:?}");
    assert!(accepted.try_recv().is_err());

    // Two backends: connects spread over both.
    let second = BackendAddr(SocketAddrV4::new(server.address(), 8081));
    services.set(frontend, &spec(&[first, second])).unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let output = connect_from(client, &translated);
        assert!(output.status.success(), "{output:?}");
        seen.insert(accepted.try_recv().unwrap().0.port());
    }
    assert_eq!(seen, BTreeSet::from([8080, 8081]));

    // No backend: refused at once, with the error a closed port gives.
    services.set(frontend, &spec(&[])).unwrap();
    let refused = connect_from(client, &translated);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Connection refused"),
        "{refused:?}"
    );

    // A frontend nobody connected to has no counters to delete: removing
    // it is no error, and frees its id and backends.
    let idle = Frontend::new(SERVICE_IP, 81, Protocol::Tcp);
    services.set(idle, &spec(&[first])).unwrap();
    services.remove(idle).unwrap();
    assert!(services.programmed(&idle).is_none());

    // Detached: the cgroup's connects go where they were addressed again.
    datapath.detach().unwrap();
    let detached = connect_from(client, &translated);
    assert!(!detached.status.success(), "{detached:?}");
    assert!(accepted.try_recv().is_err());

    // Dropped: the program is unloaded (the kernel keeps 15 bytes of name).
    drop(services);
    drop(datapath);
    let ours = |name: Option<&str>| name.is_some_and(|n| PROGRAMS.iter().any(|p| p.starts_with(n)));
    let loaded: Vec<_> = aya::programs::loaded_programs()
        .flatten()
        .filter(|program| ours(program.name_as_str()))
        .map(|program| program.id())
        .collect();
    assert!(loaded.is_empty(), "programs still loaded: {loaded:?}");
}

/// A UDP backend on `host` answering each datagram with its own port.
fn udp_backend(host: &TestHost, port: u16) {
    let address = SocketAddr::from((host.address(), port));
    let socket = host
        .netns()
        .run(move || std::net::UdpSocket::bind(address))
        .unwrap()
        .unwrap();
    thread::spawn(move || {
        let mut buf = [0; 512];
        while let Ok((_, peer)) = socket.recv_from(&mut buf) {
            if socket
                .send_to(format!("port {port}").as_bytes(), peer)
                .is_err()
            {
                return;
            }
        }
    });
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn udp_datagrams_reach_backends_and_replies_come_from_the_service() {
    let _alone = ONE_DATAPATH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let net = TestNet::new(2).unwrap();
    let (client, server) = (net.host(1), net.host(2));
    udp_backend(server, 5353);
    udp_backend(server, 5354);
    let (_datapath, mut services, cgroup) = attached(&net, "lb-udp");
    let frontend = Frontend::new(Ipv4Addr::new(10, 96, 0, 10), 53, Protocol::Udp);
    let backends: Vec<_> = [5353, 5354]
        .map(|port| BackendAddr(SocketAddrV4::new(server.address(), port)))
        .into();
    services.set(frontend, &spec(&backends)).unwrap();

    let udp = |connected: bool| {
        let mut command = client
            .command_in_cgroup(artifacts::testapp().unwrap(), &cgroup)
            .unwrap();
        command.args(["udp", "10.96.0.10:53", "--count", "30"]);
        if connected {
            command.arg("--connected");
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        stdout(&output)
    };

    // Unconnected: each sendto is balanced on its own; every reply reads
    // as coming from the service address.
    let unconnected = udp(false);
    let ports: BTreeSet<&str> = unconnected
        .lines()
        .map(|line| {
            line.strip_prefix("from=10.96.0.10:53 reply=")
                .unwrap_or_else(|| panic!("a reply not from the service: {line}"))
        })
        .collect();
    assert_eq!(ports, BTreeSet::from(["port 5353", "port 5354"]));

    // Connected: one backend for the socket's life, the service as peer.
    let connected = udp(true);
    let mut lines = connected.lines();
    assert_eq!(lines.next(), Some("peer=10.96.0.10:53"));
    let replies: BTreeSet<&str> = lines.collect();
    assert_eq!(replies.len(), 1, "{connected}");
    assert!(
        replies
            .iter()
            .all(|r| r.starts_with("from=10.96.0.10:53 reply=port 535")),
        "{connected}"
    );
}

/// A backend on `host` that answers a line with its address and then
/// keeps each connection open until the test ends.
fn holding_backend(host: &TestHost, port: u16) {
    let address = SocketAddr::from((host.address(), port));
    let listener = host
        .netns()
        .run(move || TcpListener::bind(address))
        .unwrap()
        .unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_ok() {
                let _ = writeln!(stream, "{port} got {}", line.trim());
            }
            held.push(stream);
        }
    });
}

/// `testapp connect <address> --hold` from `host` in `cgroup`: its output
/// lines as they come. The client is killed when the receiver's user drops
/// the returned child.
fn held_connection(
    host: &TestHost,
    cgroup: &str,
    address: &str,
) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = host
        .command_in_cgroup(artifacts::testapp().unwrap(), cgroup)
        .unwrap()
        .args(["connect", address, "--send", "ping", "--hold"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let wait = std::time::Duration::from_secs(5);
    for expected in ["peer=", "reply="] {
        let line = received.recv_timeout(wait).unwrap();
        assert!(line.starts_with(expected), "{address}: {line}");
    }
    (child, received)
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn tcp_connections_to_a_removed_backend_are_destroyed_only_when_asked() {
    let _alone = ONE_DATAPATH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let net = TestNet::new(2).unwrap();
    let (client, server) = (net.host(1), net.host(2));
    holding_backend(server, 8080);
    holding_backend(server, 8081);
    let (mut datapath, mut services, cgroup) = attached(&net, "lb-tcp-reaped");
    let frontend = Frontend::new(SERVICE_IP, 80, Protocol::Tcp);
    let leaving = BackendAddr(SocketAddrV4::new(server.address(), 8080));
    let staying = BackendAddr(SocketAddrV4::new(server.address(), 8081));
    services.set(frontend, &spec(&[leaving])).unwrap();
    let (mut through_service, to_leaving) = held_connection(client, &cgroup, SERVICE);
    let (mut direct, to_pod) = held_connection(client, &cgroup, "198.18.0.2:8080");
    services.set(frontend, &spec(&[staying])).unwrap();
    let (mut through_new, to_staying) = held_connection(client, &cgroup, SERVICE);
    let gone = services.take_released();
    assert_eq!(gone, [leaving]);

    // The agent's default reaps connected UDP only: TCP stays up.
    let reverse = datapath.take_reverse_map().unwrap();
    let mut udp_only = NetlinkReaper::new(reverse, client.netns().name().to_owned(), false);
    udp_only.reap(&gone);
    let quiet = std::time::Duration::from_millis(500);
    assert!(
        to_leaving.recv_timeout(quiet).is_err(),
        "TCP reaped by default"
    );

    // --destroy-stale-tcp: the connection the datapath sent to the backend
    // that left is aborted at once; one to the backend that stays, and
    // one made to the backend's own address, are not.
    let pinned = net
        .instance()
        .run_dir("bpffs")
        .join(PIN_DIR)
        .join(REVERSE_MAP);
    let reverse = aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(
        aya::maps::MapData::from_pin(&pinned).unwrap(),
    ))
    .unwrap();
    let mut with_tcp = NetlinkReaper::new(reverse, client.netns().name().to_owned(), true);
    with_tcp.reap(&gone);
    let closed = to_leaving
        .recv_timeout(std::time::Duration::from_secs(2))
        .unwrap();
    assert!(
        closed.starts_with("closed=error") && closed.contains("abort"),
        "{closed}"
    );
    assert!(
        to_staying.recv_timeout(quiet).is_err(),
        "a live backend's connection reaped"
    );
    assert!(
        to_pod.recv_timeout(quiet).is_err(),
        "a direct connection reaped"
    );
    for child in [&mut through_service, &mut direct, &mut through_new] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
