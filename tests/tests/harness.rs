//! The harness itself: test hosts reach each other and nothing else, and
//! nothing of an instance outlives it, whether it ends, panics or dies.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use capstan_agent::cgroup::Hierarchies;
use capstan_tests::{Netns, TestNet, artifacts, netns, sweep_leftovers};

/// Everything named after instance `id` that still exists.
fn remains(id: &str) -> Vec<String> {
    let mut found: Vec<String> = netns::ip(&["netns", "list"])
        .unwrap()
        .lines()
        .filter(|line| line.starts_with(&format!("cst-{id}-")))
        .map(|line| format!("netns {line}"))
        .collect();
    let hierarchies = Hierarchies::detect().unwrap();
    let dirs = hierarchies
        .dirs(&format!("capstan-test/{id}"))
        .into_iter()
        .chain([
            Path::new("/run/capstan-test").join(id),
            Path::new("/var/lib/capstan-test").join(id),
        ]);
    found.extend(dirs.filter(|d| d.exists()).map(|d| d.display().to_string()));
    found
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn hosts_reach_each_other_and_have_no_route_out() {
    let net = TestNet::new(2).unwrap();
    let (h1, h2) = (net.host(1), net.host(2));
    let listener = h2
        .netns()
        .run(|| TcpListener::bind("198.18.0.2:7000"))
        .unwrap()
        .unwrap();
    let sent = h1
        .netns()
        .run(|| -> std::io::Result<()> {
            TcpStream::connect("198.18.0.2:7000")?.write_all(b"over the test bridge")
        })
        .unwrap();
    sent.unwrap();
    let (mut stream, peer) = listener.accept().unwrap();
    let mut received = String::new();
    stream.read_to_string(&mut received).unwrap();
    assert_eq!(received, "over the test bridge");
    assert_eq!(peer.ip(), h1.address());

    for host in [h1, h2] {
        let routes = host.netns().ip(&["route", "show"]).unwrap();
        assert!(!routes.contains("default"), "{}: {routes}", host.name());
    }
    let unreachable = h1
        .netns()
        .run(|| TcpStream::connect("192.0.2.1:80").map(drop))
        .unwrap();
    assert!(
        unreachable.is_err(),
        "a test host reached an outside address"
    );
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn teardown_removes_hosts_daemons_processes_and_mounts() {
    let mut net = TestNet::new(2).unwrap();
    let id = net.instance().id().to_owned();
    let containerd_pid = net.host_mut(1).start_containerd().unwrap().pid();
    let _pod = net.pod_network(1).unwrap();
    let mut sleeper = net.host(2).command("sleep").unwrap();
    let mut sleeper = sleeper.arg("600").stdin(Stdio::null()).spawn().unwrap();
    assert!(remains(&id).len() >= 6, "{:?}", remains(&id));

    drop(net);

    assert_eq!(remains(&id), Vec::<String>::new());
    assert!(!Path::new(&format!("/proc/{containerd_pid}")).exists());
    assert_killed(&mut sleeper);
}

/// `child` was killed by SIGKILL (teardown's doing), not left running.
fn assert_killed(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let status = loop {
        match child.try_wait().unwrap() {
            Some(status) => break status,
            None if Instant::now() > deadline => panic!("pid {} still runs", child.id()),
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn teardown_runs_when_a_test_panics() {
    let id = std::panic::catch_unwind(|| {
        let net = TestNet::new(1).unwrap();
        let id = net.instance().id().to_owned();
        assert!(!remains(&id).is_empty());
        std::panic::panic_any(id);
    })
    .unwrap_err()
    .downcast::<String>()
    .unwrap();
    assert_eq!(remains(&id), Vec::<String>::new());
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn leftovers_of_a_dead_run_are_swept() {
    // A process that has exited stands for a test run killed mid-way.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let id = format!("{}-0", dead.id());
    let netns = Netns::create(&format!("cst-{id}-h1")).unwrap();
    std::fs::create_dir_all(format!("/run/capstan-test/{id}/h1")).unwrap();
    let cgroup = format!("capstan-test/{id}/h1-procs");
    let mut orphan = std::process::Command::new(artifacts::testapp().unwrap());
    capstan_tests::process::place(&mut orphan, Some(&netns), Some(&cgroup)).unwrap();
    let mut orphan = orphan
        .args(["serve"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::mem::forget(netns);
    assert!(remains(&id).len() >= 3, "{:?}", remains(&id));

    sweep_leftovers();

    assert_eq!(remains(&id), Vec::<String>::new());
    assert_killed(&mut orphan);
}
