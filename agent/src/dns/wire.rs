//! The DNS message format (RFC 1035, EDNS0 of RFC 6891) for what the
//! cluster zone answers: one question in, its answer out. Parsing never
//! trusts a length or a pointer: a bad packet is an error (FORMERR or
//! NOTIMP for the caller to send back) or, when not even a header can be
//! read, dropped. Answers are written into a caller's buffer, truncated
//! (TC) at the client's UDP size so it asks again over TCP.

use super::answer::{Outcome, RData, Record, RecordType};

const HEADER: usize = 12;
const CLASS_IN: u16 = 1;
const TYPE_OPT: u16 = 41;
/// Labels of 63 bytes at most, names of 255 (RFC 1035 2.3.4).
const MAX_LABEL: usize = 63;
const MAX_NAME: usize = 255;
/// What a client without EDNS takes over UDP.
pub const CLASSIC_UDP: usize = 512;
/// The largest UDP answer sent, whatever a client offers (the DNS flag
/// day's advice, which avoids fragments).
const MAX_UDP: usize = 1232;

/// Response codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// A query as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// The header's flags as sent (RD among them is echoed).
    flags: u16,
    /// The question's name, lower case, without the final dot.
    pub name: String,
    /// The question as sent (its case kept), for echoing it.
    question: Vec<u8>,
    pub qtype: u16,
    /// The UDP payload size the client takes (512 without EDNS).
    pub udp_size: usize,
    pub edns: bool,
}

/// Why a packet got no answer from the zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Not even a header: drop it.
    Unreadable,
    /// Answer with this code (and the id of `id`).
    Reply { id: u16, flags: u16, rcode: Rcode },
}

impl Query {
    pub fn record_type(&self) -> RecordType {
        match self.qtype {
            1 => RecordType::A,
            28 => RecordType::Aaaa,
            5 => RecordType::Cname,
            33 => RecordType::Srv,
            12 => RecordType::Ptr,
            16 => RecordType::Txt,
            6 => RecordType::Soa,
            2 => RecordType::Ns,
            251 | 252 => RecordType::Transfer,
            other => RecordType::Other(other),
        }
    }
}

/// Reads a query: a header with QR clear, opcode QUERY, one question of
/// class IN, and at most an OPT record besides.
pub fn parse_query(packet: &[u8]) -> Result<Query, WireError> {
    let header = packet.get(..HEADER).ok_or(WireError::Unreadable)?;
    let word = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let (id, flags) = (word(0), word(2));
    let reply = |rcode| WireError::Reply { id, flags, rcode };
    if flags & 0x8000 != 0 {
        // A response sent to us: never answer one (no loops).
        return Err(WireError::Unreadable);
    }
    if (flags >> 11) & 0xf != 0 {
        return Err(reply(Rcode::NotImp));
    }
    let (questions, answers, authority, additional) = (word(4), word(6), word(8), word(10));
    if questions != 1 || answers != 0 || authority != 0 {
        return Err(reply(Rcode::FormErr));
    }
    let (name, after_name) = read_name(packet, HEADER).ok_or(reply(Rcode::FormErr))?;
    let fixed = packet
        .get(after_name..after_name + 4)
        .ok_or(reply(Rcode::FormErr))?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    let question = packet[HEADER..after_name + 4].to_vec();
    if qclass != CLASS_IN {
        return Err(reply(Rcode::NotImp));
    }
    let mut query = Query {
        id,
        flags,
        name,
        question,
        qtype,
        udp_size: CLASSIC_UDP,
        edns: false,
    };
    let mut at = after_name + 4;
    for _ in 0..additional {
        let (_, after) = read_name(packet, at).ok_or(reply(Rcode::FormErr))?;
        let fixed = packet.get(after..after + 10).ok_or(reply(Rcode::FormErr))?;
        let kind = u16::from_be_bytes([fixed[0], fixed[1]]);
        let length = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        if kind == TYPE_OPT {
            if query.edns {
                return Err(reply(Rcode::FormErr));
            }
            query.edns = true;
            let offered = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
            query.udp_size = offered.clamp(CLASSIC_UDP, MAX_UDP);
        }
        at = after + 10 + length;
        if at > packet.len() {
            return Err(reply(Rcode::FormErr));
        }
    }
    Ok(query)
}

/// The name at `at`, lower case and without the final dot, and where the
/// record goes on after it. Pointers may only point backwards, so a loop
/// cannot be followed.
fn read_name(packet: &[u8], at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut position = at;
    let mut resume = None;
    let mut wire_length = 0;
    loop {
        let length = *packet.get(position)?;
        match length & 0xc0 {
            0x00 if length == 0 => {
                return Some((name, resume.unwrap_or(position + 1)));
            }
            0x00 => {
                let length = usize::from(length);
                let label = packet.get(position + 1..position + 1 + length)?;
                wire_length += length + 1;
                if length > MAX_LABEL || wire_length > MAX_NAME {
                    return None;
                }
                if !name.is_empty() {
                    name.push('.');
                }
                for &byte in label {
                    if byte == b'.' || !byte.is_ascii_graphic() {
                        return None;
                    }
                    name.push(char::from(byte.to_ascii_lowercase()));
                }
                position += 1 + length;
            }
            0xc0 => {
                let low = *packet.get(position + 1)?;
                let target = usize::from(u16::from_be_bytes([length & 0x3f, low]));
                if target >= position {
                    return None;
                }
                resume.get_or_insert(position + 2);
                position = target;
            }
            _ => return None,
        }
    }
}

/// The zone's reply to `query`, written into `out`: `outcome`'s records,
/// or for NODATA and NXDOMAIN the zone's SOA (made by `soa`) as authority; REFUSED for
/// what the zone does not answer (forwarding happens before). Over UDP
/// (`udp`), an answer larger than the client takes is cut to the header
/// and question with TC set, so the client asks again over TCP.
pub fn write_reply(
    query: &Query,
    outcome: &Outcome,
    soa: impl FnOnce() -> Record,
    udp: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    // The SOA is made only for the answers that carry it.
    let (rcode, answers, authority): (Rcode, &[Record], Option<Record>) = match outcome {
        Outcome::Records(records) => (Rcode::NoError, records, None),
        Outcome::NoData => (Rcode::NoError, &[], Some(soa())),
        Outcome::NxDomain => (Rcode::NxDomain, &[], Some(soa())),
        Outcome::Refused | Outcome::Forward => (Rcode::Refused, &[], None),
    };
    write_header(query.id, query.flags, rcode, true, out);
    out.extend_from_slice(&query.question);
    for record in answers {
        write_record(record, query, out);
    }
    if let Some(soa) = &authority {
        write_record(soa, query, out);
    }
    let counts = [
        1,
        answers.len() as u16,
        u16::from(authority.is_some()),
        u16::from(query.edns),
    ];
    for (slot, count) in counts.into_iter().enumerate() {
        out[4 + 2 * slot..6 + 2 * slot].copy_from_slice(&count.to_be_bytes());
    }
    if query.edns {
        write_opt(out);
    }
    if udp && out.len() > query.udp_size {
        out.truncate(HEADER + query.question.len());
        out[2] |= 0x02;
        out[6..12].fill(0);
        if query.edns {
            out[11] = 1;
            write_opt(out);
        }
    }
}

/// A reply to `query` carrying only `rcode` and its question.
pub fn write_rcode(query: &Query, rcode: Rcode, out: &mut Vec<u8>) {
    out.clear();
    write_header(query.id, query.flags, rcode, false, out);
    out.extend_from_slice(&query.question);
    out[5] = 1;
}

/// A reply carrying only `rcode`, for a query the zone could not read.
pub fn write_error(id: u16, flags: u16, rcode: Rcode, out: &mut Vec<u8>) {
    out.clear();
    write_header(id, flags, rcode, false, out);
}

fn write_header(id: u16, flags: u16, rcode: Rcode, authoritative: bool, out: &mut Vec<u8>) {
    // QR, the opcode and RD as asked, RA: the node resolves for its pods.
    let mut reply = 0x8000 | (flags & 0x7900) | 0x0080 | rcode as u16;
    if authoritative {
        reply |= 0x0400;
    }
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// An OPT record offering the size this server takes.
fn write_opt(out: &mut Vec<u8>) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&(MAX_UDP as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
}

fn write_record(record: &Record, query: &Query, out: &mut Vec<u8>) {
    if record.name == query.name {
        // A pointer to the question's name, right after the header.
        out.extend_from_slice(&[0xc0, HEADER as u8]);
    } else {
        write_name(&record.name, out);
    }
    let kind: u16 = match record.data {
        RData::A(_) => 1,
        RData::Aaaa(_) => 28,
        RData::Cname(_) => 5,
        RData::Srv { .. } => 33,
        RData::Ptr(_) => 12,
        RData::Txt(_) => 16,
        RData::Soa { .. } => 6,
        RData::Ns(_) => 2,
    };
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    let length_at = out.len();
    out.extend_from_slice(&[0, 0]);
    match &record.data {
        RData::A(address) => out.extend_from_slice(&address.octets()),
        RData::Aaaa(address) => out.extend_from_slice(&address.octets()),
        RData::Cname(target) | RData::Ptr(target) | RData::Ns(target) => write_name(target, out),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            for number in [priority, weight, port] {
                out.extend_from_slice(&number.to_be_bytes());
            }
            write_name(target, out);
        }
        RData::Txt(text) => {
            for chunk in text.as_bytes().chunks(255) {
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
            }
        }
        RData::Soa {
            primary,
            mailbox,
            serial,
            minimum,
        } => {
            write_name(primary, out);
            write_name(mailbox, out);
            // Serial, refresh, retry, expire as CoreDNS sets them; the
            // minimum is the negative-caching TTL.
            for number in [*serial, 7200, 1800, 86_400, *minimum] {
                out.extend_from_slice(&number.to_be_bytes());
            }
        }
    }
    let length = (out.len() - length_at - 2) as u16;
    out[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
}

/// `name` (no final dot) in labels. Names come from the zone's own
/// objects, which the API validated as DNS labels.
fn write_name(name: &str, out: &mut Vec<u8>) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let label = &label.as_bytes()[..label.len().min(MAX_LABEL)];
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
