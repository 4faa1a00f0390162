//! The agent's eBPF datapath on the real kernel: connect4 attached to a
//! cgroup sends that cgroup's connects to a service address on to a
//! backend, leaves other processes alone, and stops when detached.

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
    lb::{BackendAddr, Datapath, Frontend, Protocol, ServiceTable, mount_bpffs},
};
use capstan_ebpf_common::CONNECT4_PROGRAM;
use capstan_tests::{TestHost, TestNet, artifacts};

const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 100);
const SERVICE: &str = "10.96.0.100:80";

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

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn connect4_sends_a_cgroups_connects_to_the_mapped_backend() {
    let net = TestNet::new(2).unwrap();
    let (client, server) = (net.host(1), net.host(2));
    let (accepted_tx, accepted) = mpsc::channel();
    backend(server, 8080, accepted_tx.clone());
    backend(server, 8081, accepted_tx);
    // As the agent does: a service address never leaves by a route.
    client
        .netns()
        .ip(&["route", "add", "blackhole", "10.96.0.0/12"])
        .unwrap();

    let bpffs = net.instance().run_dir("bpffs");
    mount_bpffs(&bpffs).unwrap();
    let mut datapath = Datapath::load(&bpffs.join("capstan")).unwrap();
    let mut services = ServiceTable::new(datapath.take_maps().unwrap());
    let frontend = Frontend::new(SERVICE_IP, 80, Protocol::Tcp);
    let first = BackendAddr(SocketAddrV4::new(server.address(), 8080));
    services.set_backends(frontend, &[first]).unwrap();

    let translated = net.instance().cgroup("lb-translated");
    let untouched = net.instance().cgroup("lb-untouched");
    let unified = Hierarchies::detect().unwrap().unified;
    std::fs::create_dir_all(unified.join(&translated)).unwrap();
    datapath.attach(&unified.join(&translated)).unwrap();

    // Inside the cgroup: the connect reaches the backend, which sees its
    // own address as the destination and the client host as the source.
    let inside = connect_from(client, &translated);
    assert!(inside.status.success(), "{inside:?}");
    assert_eq!(
        stdout(&inside),
        "peer=198.18.0.2:8080\nreply=198.18.0.2:8080 got ping\n"
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
    services.set_backends(frontend, &[first, second]).unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let output = connect_from(client, &translated);
        assert!(output.status.success(), "{output:?}");
        seen.insert(accepted.try_recv().unwrap().0.port());
    }
    assert_eq!(seen, BTreeSet::from([8080, 8081]));

    // Detached: the cgroup's connects go where they were addressed again.
    datapath.detach().unwrap();
    let detached = connect_from(client, &translated);
    assert!(!detached.status.success(), "{detached:?}");
    assert!(accepted.try_recv().is_err());

    // Dropped: the program is unloaded (the kernel keeps 15 bytes of name).
    drop(services);
    drop(datapath);
    let ours = |name: Option<&str>| name.is_some_and(|n| CONNECT4_PROGRAM.starts_with(n));
    let loaded: Vec<_> = aya::programs::loaded_programs()
        .flatten()
        .filter(|program| ours(program.name_as_str()))
        .map(|program| program.id())
        .collect();
    assert!(loaded.is_empty(), "programs still loaded: {loaded:?}");
}
