//! The DNS servers: one UDP socket and one TCP listener on the node's DNS
//! address, answering from the newest zone snapshot. A snapshot is
//! replaced whole (`ZoneHandle::publish`), so a query reads one
//! consistent zone however the cache changes meanwhile; the handle is
//! held only for the clone of an `Arc`.

use std::{
    io,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
};

use super::{
    answer::{Authority, Outcome, Record},
    forward::Forwarder,
    wire::{self, Query, Rcode, WireError},
    zone::Zone,
};

/// How long a TCP client may take between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The largest message over TCP (its length prefix is 16 bits).
const MAX_TCP: usize = 65_535;

/// The current zone, shared by the servers and the builder that
/// replaces it; none before the first is built.
#[derive(Debug, Default)]
pub struct ZoneHandle {
    current: RwLock<Option<Arc<Zone>>>,
}

impl ZoneHandle {
    pub fn publish(&self, zone: Zone) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::new(zone));
        }
    }

    pub fn current(&self) -> Option<Arc<Zone>> {
        self.current.read().ok().and_then(|zone| zone.clone())
    }
}

/// What answering needs: the zone's name, its TTL, its snapshot, and
/// where names outside it go.
#[derive(Debug)]
pub struct Answerer {
    pub domain: String,
    pub ttl: u32,
    pub zone: Arc<ZoneHandle>,
    pub forwarder: Forwarder,
}

/// What became of a packet.
#[derive(Debug)]
pub enum Handled {
    /// The reply is in the buffer.
    Reply,
    /// Nothing to send.
    Dropped,
    /// For the upstream resolvers.
    Forward(Query),
}

impl Answerer {
    /// The zone's reply to `packet` in `out`, or what else to do with it.
    pub fn reply(&self, packet: &[u8], udp: bool, out: &mut Vec<u8>) -> Handled {
        let query = match wire::parse_query(packet) {
            Ok(query) => query,
            Err(WireError::Unreadable) => return Handled::Dropped,
            Err(WireError::Reply { id, flags, rcode }) => {
                wire::write_error(id, flags, rcode, out);
                return Handled::Reply;
            }
        };
        let Some(zone) = self.zone.current() else {
            // Not listed yet: an answer now could deny what exists.
            wire::write_rcode(&query, Rcode::ServFail, out);
            return Handled::Reply;
        };
        let authority = Authority {
            domain: &self.domain,
            ttl: self.ttl,
            zone: &zone,
        };
        let outcome = authority.answer(&query.name, query.record_type());
        if outcome == Outcome::Forward {
            return Handled::Forward(query);
        }
        let soa = || Record {
            name: self.domain.clone(),
            ttl: self.ttl,
            data: authority.soa(),
        };
        wire::write_reply(&query, &outcome, soa, udp, out);
        Handled::Reply
    }

    /// An upstream's answer to `query` (sent as `packet`) in `out`, or
    /// SERVFAIL when none answered.
    pub async fn forward(&self, query: &Query, packet: &[u8], tcp: bool, out: &mut Vec<u8>) {
        match self.forwarder.forward(packet, tcp).await {
            Some(answer) => {
                out.clear();
                out.extend_from_slice(&answer);
            }
            None => wire::write_rcode(query, Rcode::ServFail, out),
        }
    }
}

/// Answers datagrams on `socket` until it fails; forwarded ones on tasks
/// of their own, so a slow upstream holds up no other query.
pub async fn serve_udp(socket: UdpSocket, answerer: Arc<Answerer>) -> io::Result<()> {
    let socket = Arc::new(socket);
    let mut packet = vec![0_u8; 65_535];
    let mut out = Vec::with_capacity(wire::CLASSIC_UDP);
    loop {
        let (length, peer) = socket.recv_from(&mut packet).await?;
        match answerer.reply(&packet[..length], true, &mut out) {
            // A client gone meanwhile is its own affair.
            Handled::Reply => {
                let _ = socket.send_to(&out, peer).await;
            }
            Handled::Dropped => {}
            Handled::Forward(query) => {
                let (socket, answerer) = (Arc::clone(&socket), Arc::clone(&answerer));
                let packet = packet[..length].to_vec();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    answerer.forward(&query, &packet, false, &mut out).await;
                    let _ = socket.send_to(&out, peer).await;
                });
            }
        }
    }
}

/// Serves each TCP client on a task of its own until `listener` fails.
pub async fn serve_tcp(listener: TcpListener, answerer: Arc<Answerer>) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let answerer = Arc::clone(&answerer);
        tokio::spawn(async move {
            let _ = serve_connection(stream, &answerer).await;
        });
    }
}

/// Length-prefixed queries on one connection, answered in order, until
/// the client closes it or stays idle.
async fn serve_connection(mut stream: TcpStream, answerer: &Answerer) -> io::Result<()> {
    let mut packet = vec![0_u8; MAX_TCP];
    let mut out = Vec::new();
    loop {
        let mut prefix = [0_u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut prefix)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(err)) => return Err(err),
            Err(_) => return Ok(()),
        }
        let length = usize::from(u16::from_be_bytes(prefix));
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet[..length]))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        match answerer.reply(&packet[..length], false, &mut out) {
            Handled::Reply => {}
            Handled::Dropped => return Ok(()),
            Handled::Forward(query) => {
                answerer
                    .forward(&query, &packet[..length], true, &mut out)
                    .await;
            }
        }
        let Ok(reply_length) = u16::try_from(out.len()) else {
            return Ok(());
        };
        stream.write_all(&reply_length.to_be_bytes()).await?;
        stream.write_all(&out).await?;
    }
}
