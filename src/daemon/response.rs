//! GitHub's whole answer, as the cache keeps it for the proxy: the status,
//! the end-to-end headers that describe the answer, and the body bytes as
//! GitHub sent them.
//!
//! An entry of a plain GET ([`Operation::Api`](crate::core::Operation::Api):
//! `/github/<path>` and the `gh_api` tool) holds its response in this
//! envelope as the entry's body, so the proxy can replay what GitHub said
//! (content type, every `Link` rel, `ETag`, `Last-Modified`,
//! `X-GitHub-Media-Type`, OAuth scopes, …) instead of re-encoding it. The
//! entries of the other tools hold the JSON body alone.
//!
//! Encoding (all integers big-endian):
//! ```text
//! 0x01 'G' 'H' 'R' 0x01 | status u16 | header count u16 |
//!   per header: name length u16, name (lowercase ASCII), value length u32, value |
//! body (the rest)
//! ```
//! The first byte can never start a JSON text, so an entry stored by a
//! daemon that kept only the body (plain JSON) is read as such
//! ([`Response::decode`] never fails: anything that is not an envelope is a
//! JSON body). Decoding is bounds-checked and total on arbitrary bytes.
//!
//! What is absent: hop-by-hop and per-exchange headers (`Connection`,
//! `Transfer-Encoding`, `Content-Length`, `Date`, `Set-Cookie`,
//! `X-GitHub-Request-Id`, the `X-RateLimit-*` family, which the proxy
//! writes from the daemon's current knowledge instead).

use bytes::{BufMut, Bytes, BytesMut};

const MAGIC: &[u8; 5] = b"\x01GHR\x01";

/// GitHub's response headers worth replaying: they describe the answer,
/// not the exchange.
pub const KEPT_HEADERS: [&str; 14] = [
    "content-type",
    "link",
    "etag",
    "last-modified",
    "location",
    "cache-control",
    "vary",
    "content-disposition",
    "x-github-media-type",
    "x-oauth-scopes",
    "x-accepted-oauth-scopes",
    "x-accepted-github-permissions",
    "x-github-api-version-selected",
    "x-poll-interval",
];

/// Longest header value kept (GitHub's are far shorter).
pub const MAX_HEADER_VALUE: usize = 16 * 1024;

/// A response: status, kept headers (lowercase names), body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Kept headers, in GitHub's order.
    pub headers: Vec<(String, Bytes)>,
    /// The body, as GitHub sent it.
    pub body: Bytes,
}

impl Response {
    /// Keeps the [`KEPT_HEADERS`] of `headers` (values over
    /// [`MAX_HEADER_VALUE`] dropped).
    pub fn from_parts(status: u16, headers: &reqwest::header::HeaderMap, body: Bytes) -> Response {
        let headers = headers
            .iter()
            .filter(|(name, value)| KEPT_HEADERS.contains(&name.as_str()) && value.len() <= MAX_HEADER_VALUE)
            .map(|(name, value)| (name.as_str().to_string(), Bytes::copy_from_slice(value.as_bytes())))
            .collect();
        Response { status, headers, body }
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| &v[..])
    }

    /// The envelope bytes (module docs).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(
            MAGIC.len() + 4 + self.headers.iter().map(|(n, v)| 6 + n.len() + v.len()).sum::<usize>() + self.body.len(),
        );
        out.put_slice(MAGIC);
        out.put_u16(self.status);
        let headers: Vec<_> = self
            .headers
            .iter()
            .filter(|(n, v)| n.len() <= u16::MAX as usize && v.len() <= MAX_HEADER_VALUE)
            .take(u16::MAX as usize)
            .collect();
        out.put_u16(headers.len() as u16);
        for (name, value) in headers {
            out.put_u16(name.len() as u16);
            out.put_slice(name.as_bytes());
            out.put_u32(value.len() as u32);
            out.put_slice(value);
        }
        out.put_slice(&self.body);
        out.freeze()
    }

    /// Reads an entry body: an envelope, or else a plain JSON body with
    /// `status` (module docs). Total: never panics, never fails.
    pub fn decode(status: u16, bytes: &Bytes) -> Response {
        Self::decode_envelope(bytes).unwrap_or_else(|| Response {
            status,
            headers: vec![(
                "content-type".into(),
                Bytes::from_static(b"application/json; charset=utf-8"),
            )],
            body: bytes.clone(),
        })
    }

    /// An envelope, or `None` when `bytes` is not a well-formed one.
    pub fn decode_envelope(bytes: &Bytes) -> Option<Response> {
        let mut at = bytes.strip_prefix(MAGIC.as_slice())?;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, rest) = (at.get(..n)?, at.get(n..)?);
            at = rest;
            Some(head)
        };
        let u16_at = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
        let status = u16_at(take(2)?);
        let count = u16_at(take(2)?) as usize;
        let mut headers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let name_len = u16_at(take(2)?) as usize;
            let name = std::str::from_utf8(take(name_len)?).ok()?.to_string();
            let len = take(4)?;
            let value_len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if value_len > MAX_HEADER_VALUE {
                return None;
            }
            let value = take(value_len)?;
            // A view into the stored bytes, not a copy (every cached answer
            // is decoded again to be replayed).
            let start = value.as_ptr() as usize - bytes.as_ptr() as usize;
            headers.push((name, bytes.slice(start..start + value_len)));
        }
        let body_start = bytes.len() - at.len();
        Some(Response {
            status,
            headers,
            body: bytes.slice(body_start..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_plain_json_bodies() {
        let r = Response {
            status: 200,
            headers: vec![
                (
                    "content-type".into(),
                    Bytes::from_static(b"application/vnd.github.diff; charset=utf-8"),
                ),
                (
                    "link".into(),
                    Bytes::from_static(b"<https://api.github.com/x?page=2>; rel=\"next\""),
                ),
            ],
            body: Bytes::from_static(b"diff --git a/x b/x\n"),
        };
        let bytes = r.encode();
        assert_eq!(Response::decode(500, &bytes), r);
        let plain = Bytes::from_static(b"{\"id\":1}");
        let legacy = Response::decode(404, &plain);
        assert_eq!((legacy.status, &legacy.body), (404, &plain));
        assert_eq!(
            legacy.header("content-type"),
            Some(&b"application/json; charset=utf-8"[..])
        );
    }

    #[test]
    fn truncated_or_damaged_envelopes_read_as_bodies() {
        let r = Response {
            status: 201,
            headers: vec![("etag".into(), Bytes::from_static(b"\"x\""))],
            body: Bytes::from_static(b"[]"),
        };
        let bytes = r.encode();
        for cut in 0..bytes.len() {
            let part = bytes.slice(..cut);
            let _ = Response::decode(200, &part);
        }
        let mut huge = BytesMut::from(&MAGIC[..]);
        huge.put_u16(200);
        huge.put_u16(1);
        huge.put_u16(1);
        huge.put_slice(b"x");
        huge.put_u32(u32::MAX);
        assert_eq!(Response::decode_envelope(&huge.freeze()), None);
    }
}
