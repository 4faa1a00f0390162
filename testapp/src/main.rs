//! capstan-testapp: the program in capstan's test images, in the spirit of
//! Kubernetes' agnhost. Built statically (musl) so it runs in an image that
//! holds nothing else, and so its DNS lookups use musl's resolver, which
//! reads /etc/resolv.conf (search list, ndots) as a pod's programs do.

mod client;
mod serve;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "capstan-testapp", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP, TCP echo and UDP echo until killed.
    Serve(serve::Ports),
    /// Resolve a name as a program in this container would; prints one
    /// address per line, exits 1 if the name does not resolve.
    DnsLookup { name: String },
    /// Open a TCP connection, send a line, print the peer and the reply.
    Connect {
        address: SocketAddr,
        #[arg(long, default_value = "hello")]
        send: String,
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
        /// Then keep the connection until it ends; print how it did.
        #[arg(long)]
        hold: bool,
    },
    /// HTTP GET `path` from `address` `count` times, a new connection each
    /// time; prints each response's body (or `error=<why>`) on a line.
    Get {
        address: SocketAddr,
        #[arg(default_value = "/hostname")]
        path: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 2)]
        timeout_secs: u64,
    },
    /// Send datagrams from one UDP socket and print who answered each:
    /// `from=<source> reply=<text>` per reply (or `timeout`), after
    /// `peer=<address>` when the socket is connected.
    Udp {
        address: SocketAddr,
        #[arg(long, default_value = "hostname")]
        send: String,
        /// connect() the socket first, instead of sendto() each time.
        #[arg(long)]
        connected: bool,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
        #[arg(long, default_value_t = 2)]
        timeout_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Serve(ports) => serve::run(ports),
        Command::DnsLookup { name } => client::dns_lookup(&name),
        Command::Connect {
            address,
            send,
            timeout_secs,
            hold,
        } => client::connect(
            address,
            &send,
            std::time::Duration::from_secs(timeout_secs),
            hold,
        ),
        Command::Get {
            address,
            path,
            count,
            timeout_secs,
        } => client::get(
            address,
            &path,
            count,
            std::time::Duration::from_secs(timeout_secs),
        ),
        Command::Udp {
            address,
            send,
            connected,
            count,
            interval_ms,
            timeout_secs,
        } => client::udp(
            address,
            &send,
            connected,
            count,
            std::time::Duration::from_millis(interval_ms),
            std::time::Duration::from_secs(timeout_secs),
        ),
    }
}
