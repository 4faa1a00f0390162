use super::*;

/// A query as a stub resolver sends it, with an OPT record when `edns`
/// names a UDP size.
fn packet(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100_u16.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    write_name(name, &mut out);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let Some(size) = edns {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    out
}

fn soa() -> Record {
    Record {
        name: "cluster.local".into(),
        ttl: 5,
        data: RData::Soa {
            primary: "ns.dns.cluster.local".into(),
            mailbox: "hostmaster.cluster.local".into(),
            serial: 9,
            minimum: 5,
        },
    }
}

fn a_records(name: &str, n: u8) -> Outcome {
    Outcome::Records(
        (1..=n)
            .map(|i| Record {
                name: name.into(),
                ttl: 5,
                data: RData::A(std::net::Ipv4Addr::new(10, 244, 0, i)),
            })
            .collect(),
    )
}

fn word(packet: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([packet[at], packet[at + 1]])
}

#[test]
fn a_query_is_read_with_its_name_folded_and_its_edns_size() {
    let query = parse_query(&packet(7, "Web.Default.SVC.cluster.local", 1, Some(4096))).unwrap();
    assert_eq!(query.id, 7);
    assert_eq!(query.name, "web.default.svc.cluster.local");
    assert_eq!(query.record_type(), RecordType::A);
    assert!(query.edns);
    assert_eq!(query.udp_size, 1232, "capped to avoid fragments");
    let classic = parse_query(&packet(8, "a.b", 28, None)).unwrap();
    assert_eq!((classic.udp_size, classic.edns), (512, false));
}

#[test]
fn an_answer_points_back_at_the_question_and_echoes_it_as_sent() {
    let sent = packet(0x1234, "Web.default.svc.cluster.local", 1, Some(1232));
    let query = parse_query(&sent).unwrap();
    let mut out = Vec::new();
    write_reply(&query, &a_records(&query.name, 1), soa, true, &mut out);
    assert_eq!(word(&out, 0), 0x1234);
    let flags = word(&out, 2);
    assert_eq!(flags & 0x8000, 0x8000, "a response");
    assert_eq!(flags & 0x0400, 0x0400, "authoritative");
    assert_eq!(flags & 0x0100, 0x0100, "RD echoed");
    assert_eq!(flags & 0x000f, 0, "NOERROR");
    assert_eq!(
        [word(&out, 4), word(&out, 6), word(&out, 8), word(&out, 10)],
        [1, 1, 0, 1]
    );
    let question_end = HEADER + query.question.len();
    assert_eq!(&out[HEADER..question_end], &sent[HEADER..question_end]);
    let answer = &out[question_end..question_end + 16];
    assert_eq!(
        answer,
        [0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 244, 0, 1]
    );
}

#[test]
fn nodata_and_nxdomain_carry_the_zone_soa() {
    let query = parse_query(&packet(1, "missing.default.svc.cluster.local", 1, None)).unwrap();
    let mut out = Vec::new();
    write_reply(&query, &Outcome::NxDomain, soa, true, &mut out);
    assert_eq!(word(&out, 2) & 0x000f, Rcode::NxDomain as u16);
    assert_eq!([word(&out, 6), word(&out, 8)], [0, 1]);
    write_reply(&query, &Outcome::NoData, soa, true, &mut out);
    assert_eq!(word(&out, 2) & 0x000f, 0);
    assert_eq!([word(&out, 6), word(&out, 8)], [0, 1]);
    // The SOA's type sits after its name.
    let at = HEADER + query.question.len();
    let after_name = at + 2 + "cluster.local".len();
    assert_eq!(word(&out, after_name), 6);
}

#[test]
fn an_answer_too_large_for_udp_is_truncated_for_tcp() {
    let query = parse_query(&packet(1, "db.default.svc.cluster.local", 1, None)).unwrap();
    let mut out = Vec::new();
    write_reply(&query, &a_records(&query.name, 40), soa, true, &mut out);
    assert_eq!(word(&out, 2) & 0x0200, 0x0200, "TC");
    assert_eq!(word(&out, 6), 0);
    assert_eq!(out.len(), HEADER + query.question.len());
    write_reply(&query, &a_records(&query.name, 40), soa, false, &mut out);
    assert_eq!(word(&out, 6), 40, "over TCP, all of it");
}

#[test]
fn bad_packets_get_formerr_notimp_or_nothing() {
    let good = packet(5, "web.default.svc.cluster.local", 1, None);
    assert_eq!(parse_query(&good[..5]), Err(WireError::Unreadable));
    let code = |packet: &[u8]| match parse_query(packet) {
        Err(WireError::Reply { rcode, .. }) => Some(rcode),
        _ => None,
    };
    let mut two_questions = good.clone();
    two_questions[5] = 2;
    assert_eq!(code(&two_questions), Some(Rcode::FormErr));
    let mut notify = good.clone();
    notify[2] |= 4 << 3;
    assert_eq!(code(&notify), Some(Rcode::NotImp));
    let mut chaos = good.clone();
    let class_at = chaos.len() - 1;
    chaos[class_at] = 3;
    assert_eq!(code(&chaos), Some(Rcode::NotImp));
    let mut response = good.clone();
    response[2] |= 0x80;
    assert_eq!(parse_query(&response), Err(WireError::Unreadable));
    // A name that points at itself.
    let mut looping = good[..HEADER].to_vec();
    looping.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(code(&looping), Some(Rcode::FormErr));
    assert_eq!(code(&good[..good.len() - 2]), Some(Rcode::FormErr));
}

#[test]
fn random_and_mutated_packets_never_panic() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let good = packet(5, "web.default.svc.cluster.local", 33, Some(1232));
    let mut out = Vec::new();
    for round in 0..50_000 {
        let packet: Vec<u8> = if round % 2 == 0 {
            let len = (next() % 64) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut mutated = good.clone();
            for _ in 0..=(next() % 4) {
                let at = (next() as usize) % mutated.len();
                mutated[at] = next() as u8;
            }
            mutated.truncate(HEADER + (next() as usize) % (mutated.len() - HEADER + 1));
            mutated
        };
        match parse_query(&packet) {
            Ok(query) => {
                write_reply(&query, &a_records(&query.name, 3), soa, true, &mut out);
                assert!(out.len() <= query.udp_size);
            }
            Err(WireError::Reply { id, flags, rcode }) => write_error(id, flags, rcode, &mut out),
            Err(WireError::Unreadable) => {}
        }
    }
}
