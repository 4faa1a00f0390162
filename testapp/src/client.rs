//! The client subcommands: DNS lookups and a TCP round trip.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
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
pub fn connect(address: SocketAddr, send: &str, timeout: Duration) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    println!("peer={}", stream.peer_addr()?);
    writeln!(stream, "{send}")?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .context("reading the reply")?;
    println!("reply={}", reply.trim_end());
    Ok(())
}
