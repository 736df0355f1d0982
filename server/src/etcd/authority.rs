//! Repairs the `:authority` of HTTP/2 requests on the client port before h2 sees them.
//!
//! etcd's Go clients send authorities h2 refuses: etcdctl 3.4 dials a member named by URL as
//! `passthrough:///http://host:port` (`endpoint status`, `defrag`, `move-leader`, ...), so its
//! `:authority` is `http://host:port`; clientv3 3.5.0 sends `#initially=[...]`. h2 resets such a
//! stream with PROTOCOL_ERROR, while etcd's Go server ignores the value. [`AuthorityRepair`]
//! sits between the socket and the HTTP server and drops an `:authority` that is not a valid
//! authority (the request then addresses its path alone, which is all gRPC routes on).
//!
//! Clients use one authority per connection, so only the first header block of a connection
//! is decoded: if its authority is valid (or absent), the rest of the connection goes through
//! untouched and costs nothing more. Otherwise the field is dropped, and from then on every
//! block is decoded (mirroring the client's HPACK dynamic table) and re-encoded as literals
//! that never touch the server's table, so the server's table (frozen at that point) can never
//! disagree with what the client meant. Frames other than headers stream through unbuffered;
//! a connection that does not open with the HTTP/2 preface (HTTP/1: the JSON gateway,
//! `/metrics`) is passed through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest header block accepted (Go's HTTP server allows 1 MiB of headers).
const HEADER_BLOCK_BYTES_MAX: usize = 1 << 20;
/// The largest decoded header list accepted (Go's HTTP server allows 1 MiB of headers).
const HEADER_LIST_BYTES_MAX: usize = 1 << 20;
/// Frames written toward the server stay within HTTP/2's initial maximum frame size.
const FRAME_PAYLOAD_BYTES_MAX: usize = 16_384;
/// The server's HPACK table size (HTTP/2's default; the server does not change it).
const HPACK_TABLE_BYTES: usize = 4096;
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Still reading the first bytes: HTTP/2 or not?
    Preface,
    /// HTTP/2 frames, before the first header block is known to need no repair.
    Frames,
    /// HTTP/2 frames after a block was re-encoded: every later block is re-encoded too.
    Rewriting,
    /// Not HTTP/2, or HTTP/2 needing no repair: bytes go through untouched.
    Plain,
}

/// A client connection whose HTTP/2 request headers are repaired on the way in.
pub struct AuthorityRepair<S> {
    inner: S,
    phase: Phase,
    /// Bytes read from the socket, not yet processed.
    raw: BytesMut,
    /// Processed bytes, not yet handed to the server.
    out: BytesMut,
    /// Payload bytes of the current pass-through frame still to copy.
    passing: usize,
    /// A header block being collected: its raw frames and its fragment.
    block: Option<Block>,
    decoder: fluke_hpack::Decoder<'static>,
    eof: bool,
}

struct Block {
    stream_id: u32,
    flags: u8,
    /// The HEADERS frame's priority fields, if it had them.
    priority: Option<[u8; 5]>,
    raw: BytesMut,
    fragment: Vec<u8>,
}

impl<S> AuthorityRepair<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S) -> Self {
        let mut decoder = fluke_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_BYTES);
        AuthorityRepair {
            inner,
            phase: Phase::Preface,
            raw: BytesMut::new(),
            out: BytesMut::new(),
            passing: 0,
            block: None,
            decoder,
            eof: false,
        }
    }

    /// Moves what can be processed from `raw` to `out`.
    fn process(&mut self) -> io::Result<()> {
        if self.phase == Phase::Preface {
            let n = self.raw.len().min(PREFACE.len());
            if self.raw[..n] != PREFACE[..n] {
                self.phase = Phase::Plain;
            } else if n == PREFACE.len() {
                self.out.put(self.raw.split_to(n));
                self.phase = Phase::Frames;
            } else if !self.eof {
                return Ok(());
            }
        }
        if self.phase == Phase::Plain {
            self.out.put(self.raw.split());
            return Ok(());
        }
        loop {
            if self.passing > 0 {
                let n = self.passing.min(self.raw.len());
                self.out.put(self.raw.split_to(n));
                self.passing -= n;
                if self.passing > 0 {
                    return Ok(());
                }
            }
            if self.raw.len() < FRAME_HEADER_BYTES {
                return Ok(());
            }
            let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
            let kind = self.raw[3];
            if kind != HEADERS && kind != CONTINUATION {
                if self.block.is_some() {
                    return Err(invalid("a header block interrupted by another frame"));
                }
                self.out.put(self.raw.split_to(FRAME_HEADER_BYTES));
                self.passing = len;
                continue;
            }
            let pending = self.block.as_ref().map_or(0, |b| b.fragment.len());
            if pending + len > HEADER_BLOCK_BYTES_MAX {
                return Err(invalid("header block too large"));
            }
            if self.raw.len() < FRAME_HEADER_BYTES + len {
                return Ok(());
            }
            let frame = self.raw.split_to(FRAME_HEADER_BYTES + len);
            self.header_frame(frame)?;
            if self.phase == Phase::Plain {
                self.out.put(self.raw.split());
                return Ok(());
            }
        }
    }

    /// Takes one HEADERS or CONTINUATION frame (complete, header included).
    fn header_frame(&mut self, frame: BytesMut) -> io::Result<()> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & !(1 << 31);
        let payload = &frame[FRAME_HEADER_BYTES..];
        let mut block = if kind == HEADERS {
            if self.block.is_some() {
                return Err(invalid("HEADERS inside a header block"));
            }
            let mut rest = payload;
            let mut pad = 0;
            if flags & PADDED != 0 {
                let (&p, r) = rest.split_first().ok_or_else(|| invalid("short HEADERS"))?;
                pad = p as usize;
                rest = r;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                if rest.len() < 5 {
                    return Err(invalid("short HEADERS"));
                }
                let mut p = [0u8; 5];
                p.copy_from_slice(&rest[..5]);
                priority = Some(p);
                rest = &rest[5..];
            }
            if pad > rest.len() {
                return Err(invalid("HEADERS padding longer than the frame"));
            }
            Block {
                stream_id,
                flags,
                priority,
                raw: BytesMut::new(),
                fragment: rest[..rest.len() - pad].to_vec(),
            }
        } else {
            let mut b = self
                .block
                .take()
                .ok_or_else(|| invalid("CONTINUATION without HEADERS"))?;
            if b.stream_id != stream_id {
                return Err(invalid("CONTINUATION on another stream"));
            }
            b.fragment.extend_from_slice(payload);
            b
        };
        block.raw.put(&frame[..]);
        if flags & END_HEADERS == 0 {
            self.block = Some(block);
            return Ok(());
        }
        self.finish(block)
    }

    /// Decodes a complete header block and emits it, as it came or re-encoded.
    fn finish(&mut self, block: Block) -> io::Result<()> {
        // Pseudo-header fields come first, so by the first regular field it is known whether
        // this block needs repair; only then (or once rewriting) are all fields kept.
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut repair = false;
        let mut complete = true;
        // Decoded size as HTTP/2 counts it (RFC 9113 §6.5.2): a small block can name large
        // table entries many times over.
        let mut list_bytes = 0usize;
        let rewriting = self.phase == Phase::Rewriting;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                list_bytes += name.len() + value.len() + 32;
                let bad = &name[..] == b":authority"
                    && http::uri::Authority::try_from(&value[..]).is_err();
                repair |= bad;
                if !rewriting && !repair && name.first() != Some(&b':') {
                    complete = false;
                }
                if complete && !bad && list_bytes <= HEADER_LIST_BYTES_MAX {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| invalid(&format!("undecodable header block: {e:?}")))?;
        if list_bytes > HEADER_LIST_BYTES_MAX {
            return Err(invalid("header list too large"));
        }
        let reencode = rewriting || (repair && complete);
        if !reencode {
            // As it came, and so is the rest of the connection (a misplaced bad authority
            // included: the server refuses that block on its own).
            self.out.put(block.raw);
            self.phase = Phase::Plain;
            return Ok(());
        }
        self.phase = Phase::Rewriting;
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for (name, value) in &fields {
            // A literal field without indexing, with a new name; both strings raw (H = 0).
            encoded.push(0x00);
            put_string(&mut encoded, name);
            put_string(&mut encoded, value);
        }
        let mut first = true;
        let mut rest = &encoded[..];
        loop {
            let room = FRAME_PAYLOAD_BYTES_MAX - if first { 5 } else { 0 };
            let n = rest.len().min(room);
            let last = n == rest.len();
            let mut flags = if last { END_HEADERS } else { 0 };
            let mut head = Vec::new();
            if first {
                flags |= block.flags & END_STREAM;
                if let Some(p) = block.priority {
                    flags |= PRIORITY;
                    head.extend_from_slice(&p);
                }
            }
            let kind = if first { HEADERS } else { CONTINUATION };
            let len = (head.len() + n) as u32;
            self.out.put_slice(&len.to_be_bytes()[1..]);
            self.out.put_u8(kind);
            self.out.put_u8(flags);
            self.out.put_u32(block.stream_id);
            self.out.put_slice(&head);
            self.out.put_slice(&rest[..n]);
            rest = &rest[n..];
            first = false;
            if last {
                return Ok(());
            }
        }
    }
}

/// An HPACK string literal without Huffman coding (RFC 7541 §5.2): its length as a 7-bit
/// prefixed integer (§5.1), then its octets.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    const PREFIX_MAX: usize = 127;
    let mut n = s.len();
    if n < PREFIX_MAX {
        out.push(n as u8);
        out.extend_from_slice(s);
        return;
    }
    out.push(PREFIX_MAX as u8);
    n -= PREFIX_MAX;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
    out.extend_from_slice(s);
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRepair<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.phase == Phase::Plain {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            this.raw.reserve(READ_CHUNK_BYTES);
            let start = this.raw.len();
            this.raw.resize(start + READ_CHUNK_BYTES, 0);
            let mut rb = ReadBuf::new(&mut this.raw[start..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let got = rb.filled().len();
            this.raw.truncate(start + got);
            ready!(polled)?;
            if got == 0 {
                this.eof = true;
                // Whatever is left (a cut-off frame) goes on for the server to judge.
                this.process()?;
                this.out.put(this.raw.split());
                continue;
            }
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRepair<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    /// Says no, so h2 copies data frames of up to 1 KiB into its write buffer and the answers
    /// a connection has queued leave in one write. Told of vectored writes, h2 keeps each
    /// frame of 256 bytes or more apart and writes its buffer out before taking another: one
    /// write per range answer carrying a 256-byte value.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityRepair<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream_id.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn request(authority: &str, extra: &[(&str, &str)]) -> Fields {
        let mut h = vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (b":path".to_vec(), b"/etcdserverpb.KV/Range".to_vec()),
            (b":authority".to_vec(), authority.as_bytes().to_vec()),
        ];
        h.extend(
            extra
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())),
        );
        h
    }

    async fn through(input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        AuthorityRepair::new(input).read_to_end(&mut out).await?;
        Ok(out)
    }

    /// The header blocks of the frames in `bytes` (after the preface), decoded in order, and
    /// every DATA payload.
    fn decode_frames(bytes: &[u8]) -> (Vec<Fields>, Vec<Vec<u8>>) {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut decoder = fluke_hpack::Decoder::new();
        let (mut blocks, mut data) = (Vec::new(), Vec::new());
        let mut fragment = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len];
            match kind {
                HEADERS | CONTINUATION => {
                    let skip = if kind == HEADERS && flags & PRIORITY != 0 {
                        5
                    } else {
                        0
                    };
                    assert_eq!(flags & PADDED, 0);
                    fragment.extend_from_slice(&payload[skip..]);
                    if flags & END_HEADERS != 0 {
                        blocks.push(decoder.decode(&fragment).unwrap());
                        fragment.clear();
                    }
                }
                0x0 => data.push(payload.to_vec()),
                _ => {}
            }
            rest = &rest[FRAME_HEADER_BYTES + len..];
        }
        (blocks, data)
    }

    #[tokio::test]
    async fn bad_authorities_are_dropped_and_later_blocks_still_decode() {
        let mut enc = fluke_hpack::Encoder::new();
        let mut block = |h: &Fields| enc.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
        let bad = request("http://127.0.0.1:2379", &[("x-trace", "one")]);
        // References the dynamic-table entry the first block added.
        let good = request("127.0.0.1:2379", &[("x-trace", "one")]);
        let later = request("127.0.0.1:2379", &[("x-trace", "one"), ("x-new", "two")]);
        let huge = request("#initially=[http://a:1]", &[("x-big", &"v".repeat(40_000))]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS
        // The bad block split over HEADERS (padded, with priority) and a CONTINUATION.
        let b = block(&bad);
        let mut headers = vec![2u8]; // pad length
        headers.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
        headers.extend_from_slice(&b[..3]);
        headers.extend_from_slice(&[0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY, 1, &headers));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &b[3..]));
        input.extend(frame(0x0, END_STREAM, 1, b"body one"));
        input.extend(frame(HEADERS, END_HEADERS, 3, &block(&good)));
        input.extend(frame(0x0, END_STREAM, 3, b"body two"));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &block(&later)));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 7, &block(&huge)));

        let out = through(&input).await.unwrap();
        let (blocks, data) = decode_frames(&out);
        let without_authority = |h: &Fields| -> Fields {
            h.iter()
                .filter(|(n, _)| n != b":authority")
                .cloned()
                .collect()
        };
        assert_eq!(
            blocks,
            vec![
                without_authority(&bad),
                good.clone(),
                later.clone(),
                without_authority(&huge)
            ]
        );
        assert_eq!(data, vec![b"body one".to_vec(), b"body two".to_vec()]);
    }

    #[tokio::test]
    async fn a_connection_opening_with_a_valid_authority_goes_through_untouched() {
        let mut enc = fluke_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        for (id, authority) in [(1, "127.0.0.1:2379"), (3, "http://127.0.0.1:2379")] {
            let h = request(authority, &[]);
            let b = enc.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
            input.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &b));
        }
        assert_eq!(through(&input).await.unwrap(), input);
    }

    #[tokio::test]
    async fn anything_but_http2_goes_through_untouched() {
        let http1 = b"GET /metrics HTTP/1.1\r\nHost: http://x\r\n\r\n".to_vec();
        assert_eq!(through(&http1).await.unwrap(), http1);
        let short = b"PRI * HTTP".to_vec();
        assert_eq!(through(&short).await.unwrap(), short);
    }

    #[tokio::test]
    async fn hostile_frames_get_an_error_never_a_panic() {
        let with = |frames: &[u8]| [PREFACE, frames].concat();
        let huge = frame(HEADERS, 0, 1, &vec![0; HEADER_BLOCK_BYTES_MAX + 1]);
        let orphan = frame(CONTINUATION, END_HEADERS, 1, &[0x82]);
        let mut interrupted = frame(HEADERS, 0, 1, &[0x82]);
        interrupted.extend(frame(0x0, 0, 1, b"x"));
        let garbage = frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        );
        let bad_pad = frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82]);
        // One 4 KiB table entry named 600 times: 2.4 MiB decoded from a 4 KiB block.
        let mut bomb = vec![0x40, 1, b'x', 0x7f];
        bomb.push(((4000 - 127) % 128) as u8 | 0x80);
        bomb.push(((4000 - 127) / 128) as u8);
        bomb.extend(std::iter::repeat_n(b'v', 4000));
        bomb.extend(std::iter::repeat_n(0xbe, 600)); // indexed: the newest dynamic entry (62)
        let bomb = frame(HEADERS, END_HEADERS, 1, &bomb);
        let e = through(&with(&bomb)).await.unwrap_err();
        assert_eq!(e.to_string(), "header list too large");
        for input in [huge, orphan, interrupted, garbage, bad_pad] {
            assert!(through(&with(&input)).await.is_err());
        }
        // Random bytes after the preface: whatever happens, no panic.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for len in [1usize, 9, 50, 4000] {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = through(&with(&junk)).await;
        }
        // A frame cut off at the end is passed on for the server to refuse.
        let cut = with(&frame(0x0, 0, 1, b"abc")[..10]);
        assert_eq!(through(&cut).await.unwrap(), cut);
    }
}
