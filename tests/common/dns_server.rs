//! A small authoritative DNS server over UDP for the discovery tests: a
//! fake of the world's DNS, answering A, AAAA and TXT questions from a
//! zone the test changes while it runs.
//!
//! It speaks enough of RFC 1035 for a stub resolver: one question per
//! query; the answer echoes the question and gives the zone's records of
//! that type (TTL 1 s, names compressed to the question's); a name not in
//! the zone is NXDOMAIN; a known name without records of the type is an
//! empty NOERROR. EDNS (the OPT record resolvers add) is ignored, which
//! RFC 6891 allows. Every query is counted.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub enum Record {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Txt(String),
}

impl Record {
    fn qtype(&self) -> u16 {
        match self {
            Record::A(_) => 1,
            Record::Aaaa(_) => 28,
            Record::Txt(_) => 16,
        }
    }

    fn rdata(&self) -> Vec<u8> {
        match self {
            Record::A(ip) => ip.octets().to_vec(),
            Record::Aaaa(ip) => ip.octets().to_vec(),
            // character-strings of at most 255 bytes each.
            Record::Txt(text) => text
                .as_bytes()
                .chunks(255)
                .flat_map(|c| std::iter::once(c.len() as u8).chain(c.iter().copied()))
                .collect(),
        }
    }
}

/// Lower-case name without the final dot → its records.
pub type Zone = Arc<Mutex<HashMap<String, Vec<Record>>>>;

pub struct DnsServer {
    pub addr: SocketAddr,
    pub zone: Zone,
    pub queries: Arc<AtomicU64>,
}

impl DnsServer {
    /// Serves `zone` on `addr` (e.g. 127.0.0.1:53 inside a network
    /// namespace) from a task on the current runtime.
    pub async fn start(addr: &str) -> std::io::Result<DnsServer> {
        let socket = tokio::net::UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        let zone: Zone = Arc::default();
        let queries = Arc::new(AtomicU64::new(0));
        let (z, q) = (zone.clone(), queries.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                q.fetch_add(1, Ordering::SeqCst);
                let answer = { answer(&buf[..n], &z.lock().unwrap()) };
                if let Some(answer) = answer {
                    let _ = socket.send_to(&answer, from).await;
                }
            }
        });
        Ok(DnsServer { addr, zone, queries })
    }

    /// Replaces the records of `name`.
    pub fn set(&self, name: &str, records: Vec<Record>) {
        self.zone.lock().unwrap().insert(name.to_ascii_lowercase(), records);
    }
}

/// The response to one query, or None for bytes that are not one.
fn answer(query: &[u8], zone: &HashMap<String, Vec<Record>>) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    // The question: labels, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let question = query.get(12..question_end)?;
    let name = labels.join(".");
    let (rcode, records): (u8, Vec<&Record>) = match zone.get(&name) {
        None => (3, Vec::new()),
        Some(rs) => (0, rs.iter().filter(|r| r.qtype() == qtype).collect()),
    };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]);
    // QR, opcode 0, AA, RD as asked; RA; the rcode.
    out.push(0x84 | (query[2] & 0x01));
    out.push(0x80 | rcode);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for r in records {
        out.extend_from_slice(&[0xC0, 0x0C]);
        out.extend_from_slice(&r.qtype().to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&1u32.to_be_bytes());
        let rdata = r.rdata();
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}
