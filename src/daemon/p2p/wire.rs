//! The wire format of `/ghcache/entry/1` (entries, counters, peer and
//! member lists, acks of fleet-wide invalidations): one length-prefixed
//! frame per message.
//!
//! ```text
//! frame    = len:u32be payload[len]            len <= MAX_FRAME
//! payload  = version:u8 (=1) tag:u8 fields...
//! string   = len:u16be utf8[len]               (bytes: len:u32be raw[len])
//! ```
//!
//! The decoders ([`decode_request`], [`decode_response`]) are pure
//! functions of a byte slice, so they are property-tested and fuzzed
//! without a network: every input either decodes or is an error, never a
//! panic, and nothing is allocated beyond the input's own size. Reading a
//! frame ([`read_frame`]) checks the length prefix *before* allocating, so
//! an oversized or lying prefix costs nothing; the caller closes the stream
//! on any error.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted or sent (an entry body plus its metadata).
pub const MAX_FRAME: usize = 8 << 20;
/// Longest key, path, query string, ETag or error text on the wire.
pub const MAX_STRING: usize = 4096;
/// Most query pairs in a request.
pub const MAX_QUERY: usize = 32;
/// Most peers in a peer-exchange answer, and addresses per peer.
pub const MAX_PEERS: usize = 64;
/// Most members in a member-view answer (a joining node of a larger fleet
/// learns the rest from announcements).
pub const MAX_MEMBERS: usize = 4096;
/// Most addresses per peer in a peer-exchange answer.
pub const MAX_ADDRS: usize = 8;

const VERSION: u8 = 1;

/// How a list read merges pages (mirrors `upstream::Shape`, whose field
/// names are static).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireShape {
    /// One object.
    Single,
    /// A JSON array per page.
    Array,
    /// `{"workflow_runs": [...]}` pages.
    WorkflowRuns,
    /// `{"runners": [...]}` pages.
    Runners,
}

/// A request from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// "Give me this entry": the canonical key and how to fetch it.
    Entry {
        /// Canonical cache key text.
        key: String,
        /// Path below the API root.
        path: String,
        /// Query pairs.
        query: Vec<(String, String)>,
        /// Page merging.
        shape: WireShape,
        /// Most items (lists).
        limit: Option<u32>,
    },
    /// "Your counters, please."
    Stats,
    /// "Which peers do you know?"
    Peers,
    /// "Which members are in your view?" (a joining node asks)
    Members,
    /// "I applied your fleet-wide invalidation `id`": a member's ack, sent
    /// to the origin directly (answered with [`Response::Acked`]). A node
    /// that does not know the tag closes the stream; the member then acks
    /// on gossipsub instead.
    Ack {
        /// The invalidation's id, as the origin published it.
        id: u64,
        /// The member's epoch once it applied it.
        epoch: u64,
    },
}

/// A peer's counters (also the counters of a fleet announcement,
/// `gossip::Counters`, hence serde).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatsReply {
    /// Lookups.
    pub lookups: u64,
    /// Fresh hits.
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// GitHub requests that cost quota.
    pub api_calls: u64,
    /// Requests GitHub did not have to answer.
    pub api_calls_saved: u64,
    /// Entries received from peers.
    pub peer_hits: u64,
    /// Entries in the cache.
    pub entries: u64,
    /// Peers it is connected to.
    pub peers: u64,
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The entry.
    Entry {
        /// The key it answers (checked by the asker).
        key: String,
        /// HTTP status GitHub gave.
        status: u16,
        /// The ETag, if any.
        etag: Option<String>,
        /// Age at the owner, in ms.
        age_ms: u64,
        /// Freshness lifetime, in ms.
        ttl_ms: u64,
        /// Body.
        body: Vec<u8>,
    },
    /// The owner could not produce it (the asker fetches itself).
    Error(String),
    /// Counters.
    Stats(StatsReply),
    /// Known peers: (peer id bytes, listen addresses as bytes).
    Peers(Vec<(Vec<u8>, Vec<Vec<u8>>)>),
    /// The live members of a view, as `Peers` but up to [`MAX_MEMBERS`].
    Members(Vec<(Vec<u8>, Vec<Vec<u8>>)>),
    /// An [`Request::Ack`] was received.
    Acked,
}

/// A decoding error (the stream is closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad frame: {}", self.0)
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for io::Error {
    fn from(e: WireError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn string(&mut self) -> Result<String, WireError> {
        let n = self.u16()? as usize;
        if n > MAX_STRING {
            return Err(WireError("string too long"));
        }
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError("string not UTF-8"))
    }
    fn short_bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let n = self.u16()? as usize;
        if n > MAX_STRING {
            return Err(WireError("field too long"));
        }
        Ok(self.take(n)?.to_vec())
    }
    fn bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let n = self.u32()? as usize;
        if n > MAX_FRAME {
            return Err(WireError("body too long"));
        }
        Ok(self.take(n)?.to_vec())
    }
    /// A one-byte count, at most `max`.
    fn count(&mut self, max: usize, what: &'static str) -> Result<usize, WireError> {
        let n = self.u8()? as usize;
        if n > max {
            return Err(WireError(what));
        }
        Ok(n)
    }
    fn end(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError("trailing bytes"))
        }
    }
    fn header(&mut self) -> Result<u8, WireError> {
        if self.u8()? != VERSION {
            return Err(WireError("unknown version"));
        }
        self.u8()
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(tag: u8) -> Writer {
        Writer(vec![VERSION, tag])
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// Strings longer than [`MAX_STRING`] are refused by [`encode_request`]
    /// and [`encode_response`] before they get here.
    fn short_bytes(&mut self, s: &[u8]) {
        self.u16(s.len() as u16);
        self.0.extend_from_slice(s);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
}

fn check_len(s: &[u8]) -> Result<(), WireError> {
    if s.len() > MAX_STRING {
        Err(WireError("string too long"))
    } else {
        Ok(())
    }
}

/// Encodes a request payload (without the length prefix).
pub fn encode_request(req: &Request) -> Result<Vec<u8>, WireError> {
    Ok(match req {
        Request::Entry {
            key,
            path,
            query,
            shape,
            limit,
        } => {
            if query.len() > MAX_QUERY {
                return Err(WireError("too many query pairs"));
            }
            let mut w = Writer::new(1);
            check_len(key.as_bytes())?;
            check_len(path.as_bytes())?;
            w.short_bytes(key.as_bytes());
            w.short_bytes(path.as_bytes());
            w.0.push(query.len() as u8);
            for (k, v) in query {
                check_len(k.as_bytes())?;
                check_len(v.as_bytes())?;
                w.short_bytes(k.as_bytes());
                w.short_bytes(v.as_bytes());
            }
            w.0.push(match shape {
                WireShape::Single => 0,
                WireShape::Array => 1,
                WireShape::WorkflowRuns => 2,
                WireShape::Runners => 3,
            });
            w.u32(limit.map_or(0, |l| l.saturating_add(1)));
            w.0
        }
        Request::Stats => Writer::new(2).0,
        Request::Peers => Writer::new(3).0,
        Request::Members => Writer::new(4).0,
        Request::Ack { id, epoch } => {
            let mut w = Writer::new(5);
            w.u64(*id);
            w.u64(*epoch);
            w.0
        }
    })
}

/// Decodes a request payload. Pure; never panics.
pub fn decode_request(buf: &[u8]) -> Result<Request, WireError> {
    let mut r = Reader { buf };
    let req = match r.header()? {
        1 => {
            let key = r.string()?;
            let path = r.string()?;
            let n = r.count(MAX_QUERY, "too many query pairs")?;
            let mut query = Vec::with_capacity(n);
            for _ in 0..n {
                query.push((r.string()?, r.string()?));
            }
            let shape = match r.u8()? {
                0 => WireShape::Single,
                1 => WireShape::Array,
                2 => WireShape::WorkflowRuns,
                3 => WireShape::Runners,
                _ => return Err(WireError("unknown shape")),
            };
            let limit = match r.u32()? {
                0 => None,
                n => Some(n - 1),
            };
            Request::Entry {
                key,
                path,
                query,
                shape,
                limit,
            }
        }
        2 => Request::Stats,
        3 => Request::Peers,
        4 => Request::Members,
        5 => Request::Ack {
            id: r.u64()?,
            epoch: r.u64()?,
        },
        _ => return Err(WireError("unknown request")),
    };
    r.end()?;
    Ok(req)
}

/// Encodes a response payload (without the length prefix).
pub fn encode_response(res: &Response) -> Result<Vec<u8>, WireError> {
    Ok(match res {
        Response::Entry {
            key,
            status,
            etag,
            age_ms,
            ttl_ms,
            body,
        } => {
            let mut w = Writer::new(1);
            check_len(key.as_bytes())?;
            w.short_bytes(key.as_bytes());
            w.u16(*status);
            match etag {
                Some(t) => {
                    check_len(t.as_bytes())?;
                    w.0.push(1);
                    w.short_bytes(t.as_bytes());
                }
                None => w.0.push(0),
            }
            w.u64(*age_ms);
            w.u64(*ttl_ms);
            if body.len() > MAX_FRAME - MAX_STRING * 3 {
                return Err(WireError("body too long"));
            }
            w.bytes(body);
            w.0
        }
        Response::Error(msg) => {
            let mut w = Writer::new(2);
            let mut end = msg.len().min(MAX_STRING);
            while !msg.is_char_boundary(end) {
                end -= 1;
            }
            w.short_bytes(&msg.as_bytes()[..end]);
            w.0
        }
        Response::Stats(s) => {
            let mut w = Writer::new(3);
            for v in [
                s.lookups,
                s.hits,
                s.misses,
                s.api_calls,
                s.api_calls_saved,
                s.peer_hits,
                s.entries,
                s.peers,
            ] {
                w.u64(v);
            }
            w.0
        }
        Response::Peers(peers) => {
            let mut w = Writer::new(4);
            let peers = &peers[..peers.len().min(MAX_PEERS)];
            w.0.push(peers.len() as u8);
            encode_peer_list(&mut w, peers)?;
            w.0
        }
        Response::Members(members) => {
            let mut w = Writer::new(5);
            let members = &members[..members.len().min(MAX_MEMBERS)];
            w.0.extend_from_slice(&(members.len() as u16).to_be_bytes());
            encode_peer_list(&mut w, members)?;
            w.0
        }
        Response::Acked => Writer::new(6).0,
    })
}

/// One entry of a `Peers` or `Members` answer: a Peer ID's bytes and its
/// multiaddrs' bytes.
type PeerEntry = (Vec<u8>, Vec<Vec<u8>>);

/// The entries of a `Peers` or `Members` answer (after their count).
fn encode_peer_list(w: &mut Writer, peers: &[PeerEntry]) -> Result<(), WireError> {
    for (id, addrs) in peers {
        check_len(id)?;
        w.short_bytes(id);
        let addrs = &addrs[..addrs.len().min(MAX_ADDRS)];
        w.0.push(addrs.len() as u8);
        for a in addrs {
            check_len(a)?;
            w.short_bytes(a);
        }
    }
    Ok(())
}

/// `n` entries of a `Peers` or `Members` answer. Each takes at least 3
/// bytes, so what is reserved never exceeds the input's size.
fn decode_peer_list(r: &mut Reader, n: usize) -> Result<Vec<PeerEntry>, WireError> {
    let mut peers = Vec::with_capacity(n.min(r.buf.len() / 3));
    for _ in 0..n {
        let id = r.short_bytes()?;
        let m = r.count(MAX_ADDRS, "too many addresses")?;
        let mut addrs = Vec::with_capacity(m);
        for _ in 0..m {
            addrs.push(r.short_bytes()?);
        }
        peers.push((id, addrs));
    }
    Ok(peers)
}

/// Decodes a response payload. Pure; never panics.
pub fn decode_response(buf: &[u8]) -> Result<Response, WireError> {
    let mut r = Reader { buf };
    let res = match r.header()? {
        1 => {
            let key = r.string()?;
            let status = r.u16()?;
            let etag = match r.u8()? {
                0 => None,
                1 => Some(r.string()?),
                _ => return Err(WireError("bad etag flag")),
            };
            let age_ms = r.u64()?;
            let ttl_ms = r.u64()?;
            let body = r.bytes()?;
            Response::Entry {
                key,
                status,
                etag,
                age_ms,
                ttl_ms,
                body,
            }
        }
        2 => Response::Error(r.string()?),
        3 => {
            let mut v = [0u64; 8];
            for x in &mut v {
                *x = r.u64()?;
            }
            let [lookups, hits, misses, api_calls, api_calls_saved, peer_hits, entries, peers] = v;
            Response::Stats(StatsReply {
                lookups,
                hits,
                misses,
                api_calls,
                api_calls_saved,
                peer_hits,
                entries,
                peers,
            })
        }
        4 => {
            let n = r.count(MAX_PEERS, "too many peers")?;
            Response::Peers(decode_peer_list(&mut r, n)?)
        }
        5 => {
            let n = r.u16()? as usize;
            if n > MAX_MEMBERS {
                return Err(WireError("too many members"));
            }
            Response::Members(decode_peer_list(&mut r, n)?)
        }
        6 => Response::Acked,
        _ => return Err(WireError("unknown response")),
    };
    r.end()?;
    Ok(res)
}

/// Reads one frame: the length prefix is checked against `max` before
/// anything is allocated, and the body is read with `take`, so a peer that
/// lies about the length can make us hold at most `max` bytes.
pub async fn read_frame<T: AsyncRead + Unpin>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(WireError("frame too large").into());
    }
    let mut buf = Vec::new();
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(WireError("truncated frame").into());
    }
    Ok(buf)
}

/// Writes one frame and flushes.
pub async fn write_frame<T: AsyncWrite + Unpin>(io: &mut T, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(WireError("frame too large").into());
    }
    io.write_all(&(payload.len() as u32).to_be_bytes()).await?;
    io.write_all(payload).await?;
    io.flush().await?;
    io.close().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry_request() -> Request {
        Request::Entry {
            key: "repo:repo=o/r".into(),
            path: "/repos/o/r".into(),
            query: vec![("state".into(), "open".into())],
            shape: WireShape::Array,
            limit: Some(30),
        }
    }

    #[test]
    fn round_trips() {
        for req in [
            entry_request(),
            Request::Stats,
            Request::Peers,
            Request::Members,
            Request::Ack { id: u64::MAX, epoch: 7 },
        ] {
            assert_eq!(decode_request(&encode_request(&req).unwrap()).unwrap(), req);
        }
        let responses = [
            Response::Entry {
                key: "k:".into(),
                status: 200,
                etag: Some("W/\"x\"".into()),
                age_ms: 5,
                ttl_ms: 60_000,
                body: b"{}".to_vec(),
            },
            Response::Entry {
                key: "k:".into(),
                status: 404,
                etag: None,
                age_ms: 0,
                ttl_ms: 0,
                body: Vec::new(),
            },
            Response::Error("GitHub down".into()),
            Response::Stats(StatsReply {
                lookups: 1,
                hits: 2,
                misses: 3,
                api_calls: 4,
                api_calls_saved: 5,
                peer_hits: 6,
                entries: 7,
                peers: 8,
            }),
            Response::Peers(vec![(vec![1, 2], vec![vec![3], vec![4, 5]])]),
            Response::Members(vec![(vec![1, 2], vec![vec![3]]); MAX_PEERS * 2]),
            Response::Acked,
        ];
        for res in responses {
            assert_eq!(decode_response(&encode_response(&res).unwrap()).unwrap(), res);
        }
    }

    #[test]
    fn truncated_and_trailing_are_errors() {
        let full = encode_request(&entry_request()).unwrap();
        for n in 0..full.len() {
            assert!(decode_request(&full[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        let mut long = full.clone();
        long.push(0);
        assert!(decode_request(&long).is_err());
        let res = encode_response(&Response::Error("x".into())).unwrap();
        for n in 0..res.len() {
            assert!(decode_response(&res[..n]).is_err());
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_allocation() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&u32::MAX.to_be_bytes());
        wire.extend_from_slice(b"garbage");
        let mut io = futures::io::Cursor::new(wire);
        let err = futures::executor::block_on(read_frame(&mut io, MAX_FRAME)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A prefix promising more than arrives: truncated, not a hang.
        let mut wire = Vec::new();
        wire.extend_from_slice(&100u32.to_be_bytes());
        wire.extend_from_slice(b"short");
        let mut io = futures::io::Cursor::new(wire);
        assert!(futures::executor::block_on(read_frame(&mut io, MAX_FRAME)).is_err());
    }

    /// The fuzz target's committed seeds (`fuzz/corpus/wire`) are valid
    /// messages of every kind, so the fuzzer starts from each tag.
    #[test]
    fn the_fuzz_seeds_are_every_kind_of_message() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/wire");
        let (mut requests, mut responses) = (std::collections::HashSet::new(), std::collections::HashSet::new());
        for file in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            match (decode_request(&bytes), decode_response(&bytes)) {
                (Ok(req), Err(_)) => {
                    requests.insert(std::mem::discriminant(&req));
                }
                (Err(_), Ok(res)) => {
                    responses.insert(std::mem::discriminant(&res));
                }
                other => panic!("a seed that is not exactly one message: {other:?} {bytes:?}"),
            }
        }
        let ack = Request::Ack { id: 0, epoch: 0 };
        assert!(requests.contains(&std::mem::discriminant(&ack)), "no ack seed");
        assert!(
            responses.contains(&std::mem::discriminant(&Response::Acked)),
            "no acked seed"
        );
        assert_eq!((requests.len(), responses.len()), (5, 4), "seeds in {}", dir.display());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
        }

        #[test]
        fn valid_header_garbage_never_panics(tag in 0u8..8, rest in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = vec![VERSION, tag];
            bytes.extend(rest);
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
        }

        #[test]
        fn entry_requests_round_trip(key in "[a-z_]{1,20}:[a-z=&]{0,30}", path in "/[a-z/]{0,40}",
                                     q in proptest::collection::vec(("[a-z]{1,8}", "[a-z0-9]{0,8}"), 0..5),
                                     limit in proptest::option::of(0u32..5000)) {
            let req = Request::Entry { key, path, query: q, shape: WireShape::Runners, limit };
            prop_assert_eq!(decode_request(&encode_request(&req).unwrap()).unwrap(), req);
        }

        /// An ack is exactly 16 bytes after the header: any two u64s round
        /// trip, and a byte fewer or more is refused.
        #[test]
        fn acks_round_trip_and_are_exact(id in any::<u64>(), epoch in any::<u64>()) {
            let req = Request::Ack { id, epoch };
            let bytes = encode_request(&req).unwrap();
            prop_assert_eq!(bytes.len(), 2 + 16);
            prop_assert_eq!(decode_request(&bytes).unwrap(), req);
            prop_assert!(decode_request(&bytes[..bytes.len() - 1]).is_err());
            let mut long = bytes.clone();
            long.push(0);
            prop_assert!(decode_request(&long).is_err());
            let mut acked = encode_response(&Response::Acked).unwrap();
            prop_assert_eq!(decode_response(&acked).unwrap(), Response::Acked);
            acked.push(0);
            prop_assert!(decode_response(&acked).is_err());
        }
    }
}
