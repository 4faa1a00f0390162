//! The client subcommands: DNS lookups, a TCP round trip and UDP
//! exchanges.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket},
    time::Duration,
};

use anyhow::Context;

pub fn dns_lookup(name: &str) -> anyhow::Result<()> {
    // Port 0: only the address part matters; getaddrinfo does the lookup.
    let addresses = (name, 0)
        .to_socket_addrs()
        .with_context(|| format!("looking up {name}"))?;
    let mut found = false;
    for address in addresses {
        println!("{}", address.ip());
        found = true;
    }
    anyhow::ensure!(found, "{name} has no addresses");
    Ok(())
}

/// Prints `peer=<address the socket is connected to>` and `reply=<line>`.
/// With `hold`, the connection is then kept open until it ends, and how it
/// ended is printed: `closed=eof` or `closed=error: <why>`.
pub fn connect(
    address: SocketAddr,
    send: &str,
    timeout: Duration,
    hold: bool,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    println!("peer={}", stream.peer_addr()?);
    writeln!(stream, "{send}")?;
    let mut reader = BufReader::new(stream);
    let mut reply = String::new();
    reader.read_line(&mut reply).context("reading the reply")?;
    println!("reply={}", reply.trim_end());
    if hold {
        reader.get_ref().set_read_timeout(None)?;
        let mut rest = Vec::new();
        match reader.read_to_end(&mut rest) {
            Ok(_) => println!("closed=eof"),
            Err(err) => println!("closed=error: {err}"),
        }
    }
    Ok(())
}

/// `count` exchanges on one socket, `interval` apart. A reply that does
/// not come within `timeout` prints `timeout` and the exchanges go on, so
/// a caller can watch one long-lived socket recover; a connected socket
/// that fails is connected again.
pub fn udp(
    address: SocketAddr,
    send: &str,
    connected: bool,
    count: u32,
    interval: Duration,
    timeout: Duration,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.set_read_timeout(Some(timeout))?;
    if connected {
        socket
            .connect(address)
            .with_context(|| format!("connecting to {address}"))?;
        println!("peer={}", socket.peer_addr()?);
    }
    let mut buf = vec![0; 64 << 10];
    let mut answered = 0;
    for n in 0..count {
        if n > 0 {
            std::thread::sleep(interval);
        }
        let sent = if connected {
            socket.send(send.as_bytes())
        } else {
            socket.send_to(send.as_bytes(), address)
        };
        if let Err(err) = sent {
            println!("error={err}");
            reconnect(&socket, address, connected);
            continue;
        }
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                answered += 1;
                println!(
                    "from={from} reply={}",
                    String::from_utf8_lossy(&buf[..len]).trim_end()
                );
            }
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                println!("timeout");
            }
            Err(err) => {
                println!("error={err}");
                reconnect(&socket, address, connected);
            }
        }
        std::io::stdout().flush()?;
    }
    anyhow::ensure!(answered > 0, "no reply from {address}");
    Ok(())
}

/// As a resolver does when its connected socket fails (the datapath
/// destroyed it because its backend left): connect the same socket again.
fn reconnect(socket: &UdpSocket, address: SocketAddr, connected: bool) {
    if connected && socket.connect(address).is_ok() {
        println!("reconnected");
    }
}

/// `count` GETs, each on its own connection (so each is balanced anew);
/// fails if any fails, after printing every answer.
pub fn get(address: SocketAddr, path: &str, count: u32, timeout: Duration) -> anyhow::Result<()> {
    let mut failed = 0;
    for _ in 0..count {
        match get_once(address, path, timeout) {
            Ok(body) => println!("{}", body.trim_end()),
            Err(err) => {
                failed += 1;
                println!("error={err:#}");
            }
        }
    }
    std::io::stdout().flush()?;
    anyhow::ensure!(
        failed == 0,
        "{failed} of {count} requests to {address} failed"
    );
    Ok(())
}

fn get_once(address: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of the response's head")?;
    let status = head.lines().next().unwrap_or_default();
    anyhow::ensure!(status.contains(" 200 "), "{status}");
    Ok(body.to_owned())
}
