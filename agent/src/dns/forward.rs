//! Names outside the cluster zone, sent on to the node's upstream
//! resolvers (the host's /etc/resolv.conf, or `--dns-upstream`): the
//! client's query as it came, to each upstream in turn until one answers
//! within the timeout, its answer relayed as it came. When every upstream
//! fails the caller answers SERVFAIL at once.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// How long one upstream has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self { upstreams }
    }

    /// The nameservers of a resolv.conf, less `cluster_dns` (a host that
    /// points at the cluster DNS itself would make a loop).
    pub fn from_resolv_conf(text: &str, cluster_dns: IpAddr) -> Self {
        let upstreams = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("nameserver"))
            .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
            .filter(|ip| *ip != cluster_dns)
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        Self { upstreams }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// An upstream's answer to `query` (over TCP if `tcp`), or None when
    /// none answered.
    pub async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        for upstream in &self.upstreams {
            let asked = match tcp {
                true => tokio::time::timeout(UPSTREAM_TIMEOUT, over_tcp(*upstream, query)).await,
                false => tokio::time::timeout(UPSTREAM_TIMEOUT, over_udp(*upstream, query)).await,
            };
            match asked {
                Ok(Ok(answer)) if same_id(query, &answer) => return Some(answer),
                Ok(Ok(_)) => tracing::debug!(%upstream, "an upstream answered another query"),
                Ok(Err(err)) => tracing::debug!(%upstream, %err, "an upstream failed"),
                Err(_) => tracing::debug!(%upstream, "an upstream timed out"),
            }
        }
        None
    }
}

fn same_id(query: &[u8], answer: &[u8]) -> bool {
    query.len() >= 2 && answer.len() >= 12 && query[..2] == answer[..2]
}

async fn over_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut answer = vec![0_u8; 65_535];
    let length = socket.recv(&mut answer).await?;
    answer.truncate(length);
    Ok(answer)
}

async fn over_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let length = u16::try_from(query.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    stream.write_all(&length.to_be_bytes()).await?;
    stream.write_all(query).await?;
    let mut prefix = [0_u8; 2];
    stream.read_exact(&mut prefix).await?;
    let mut answer = vec![0_u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_the_hosts_nameservers_but_the_cluster_dns() {
        let forwarder = Forwarder::from_resolv_conf(
            "# resolv.conf\nsearch example.org\nnameserver 192.0.2.53\nnameserver 10.96.0.10\n nameserver fd00::53\nnameserver bogus\n",
            "10.96.0.10".parse().unwrap(),
        );
        assert_eq!(
            forwarder.upstreams(),
            [
                "192.0.2.53:53".parse().unwrap(),
                "[fd00::53]:53".parse().unwrap()
            ]
        );
    }

    #[tokio::test]
    async fn an_upstream_that_answers_is_relayed_and_a_dead_one_skipped() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut packet = [0_u8; 512];
            let (length, peer) = upstream.recv_from(&mut packet).await.unwrap();
            let mut answer = packet[..length].to_vec();
            answer[2] |= 0x80;
            upstream.send_to(&answer, peer).await.unwrap();
        });
        // A port nothing listens on refuses at once.
        let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dead_address = dead.local_addr().unwrap();
        drop(dead);
        let forwarder = Forwarder::new(vec![dead_address, address]);
        let query = [0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        let answer = forwarder.forward(&query, false).await.unwrap();
        assert_eq!(answer[..2], [0xab, 0xcd]);
        assert_eq!(answer[2] & 0x80, 0x80);
        assert!(
            Forwarder::new(vec![dead_address])
                .forward(&query, false)
                .await
                .is_none()
        );
    }
}
