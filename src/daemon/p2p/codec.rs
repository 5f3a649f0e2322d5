//! The request-response codec of [`PROTOCOL`](super::PROTOCOL).
//!
//! Invariants: a request frame is at most [`MAX_REQUEST_FRAME`] and must
//! arrive whole within the read timeout; a response at most
//! [`wire::MAX_FRAME`]; length prefixes are checked before allocating
//! ([`wire::read_frame`]). Every refused inbound request is counted.

use std::io;
use std::time::Duration;

use libp2p::request_response;
use libp2p::StreamProtocol;

use super::metrics::P2pMetrics;
use super::wire;
use crate::sync::{Ordering, StdArc as Arc};

/// The codec of [`PROTOCOL`]: one frame each way ([`wire`]). Counts
/// inbound requests it refuses (request-response reports no event for
/// them: the stream is just closed).
///
/// A request must arrive whole within `read_timeout` (at most 10 s), and
/// request-response bounds each whole inbound exchange by the request
/// timeout: a slow-loris stream is dropped (`tests/p2p_hostile.rs`).
#[derive(Clone)]
pub struct Codec {
    pub(super) metrics: Arc<P2pMetrics>,
    pub(super) read_timeout: Duration,
}

/// Concurrent request-response streams per connection, both directions
/// together. Bounds memory: inbound requests are at most
/// [`MAX_REQUEST_FRAME`] each.
pub const MAX_STREAMS: usize = 256;

/// Largest request frame (a key and a path with a few parameters).
pub const MAX_REQUEST_FRAME: usize = 64 * 1024;

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = wire::Request;
    type Response = wire::Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<wire::Request>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let result = match tokio::time::timeout(self.read_timeout, wire::read_frame(io, MAX_REQUEST_FRAME)).await {
            Ok(Ok(frame)) => wire::decode_request(&frame).map_err(io::Error::from),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "request not received in time")),
        };
        if let Err(e) = &result {
            self.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "bad inbound request; stream closed");
        }
        result
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<wire::Response>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let frame = wire::read_frame(io, wire::MAX_FRAME).await?;
        Ok(wire::decode_response(&frame)?)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: wire::Request) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        let payload = wire::encode_request(&req)?;
        wire::write_frame(io, &payload).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: wire::Response) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        let payload = wire::encode_response(&res)?;
        wire::write_frame(io, &payload).await
    }
}
