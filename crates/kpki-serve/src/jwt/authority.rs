//! The `:authority` gRPC clients send on unix sockets, made acceptable to the HTTP/2 server.
//!
//! gRPC C-core (Python, C++, Ruby… since 1.57) and grpc-java send the socket path, often
//! percent-encoded (`%2Frun%2Fkpki%2Fjwt.sock`), as `:authority`; the HTTP/2 server (h2)
//! refuses any value that is not an RFC 3986 authority with `RST_STREAM(PROTOCOL_ERROR)`.
//! On the token signer's socket the authority means nothing (the peer is identified by its
//! uid), so this reader sits between the socket and the server: it follows the client's
//! frames, decodes each header block (HPACK, one decoder per connection, as the server's
//! would) and encodes it again for the server, with `localhost` in place of an
//! `:authority` that is not a valid authority (the value grpc-go and Kubernetes use on unix sockets). Every other frame,
//! and every header block with a valid authority, passes through byte for byte. Header
//! blocks are bounded ([`MAX_BLOCK`]); a block that does not decode ends the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest header block (all its fragments) accepted.
pub(crate) const MAX_BLOCK: usize = 64 * 1024;
/// Largest frame payload the server accepts (its default `SETTINGS_MAX_FRAME_SIZE`).
const MAX_FRAME: usize = 16_384;
/// What replaces an authority that is not one.
const LOCALHOST: &[u8] = b"localhost";

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Passing the connection preface (bytes of it left).
    Preface(usize),
    /// Reading a 9-byte frame header.
    FrameHeader,
    /// Passing the payload of a frame that is not a header block (bytes left).
    Pass(usize),
    /// Collecting the payload of a HEADERS or CONTINUATION frame.
    Block { kind: u8, flags: u8, len: usize },
}

/// A header block being collected: its stream, HEADERS flags, fragment.
struct Block {
    stream: u32,
    flags: u8,
    fragment: Vec<u8>,
}

/// The client-to-server byte stream with every header block's `:authority` made valid.
pub(crate) struct Rewriter {
    stage: Stage,
    pending: Vec<u8>,
    block: Option<Block>,
    decoder: fluke_hpack::Decoder<'static>,
    encoder: fluke_hpack::Encoder<'static>,
}

impl Default for Rewriter {
    fn default() -> Rewriter {
        Rewriter {
            stage: Stage::Preface(PREFACE.len()),
            pending: Vec::new(),
            block: None,
            decoder: {
                // The most the HTTP/2 server allows (its SETTINGS_HEADER_TABLE_SIZE): a
                // client cannot make the decoder keep more.
                let mut d = fluke_hpack::Decoder::new();
                d.set_max_allowed_table_size(4096);
                d
            },
            encoder: fluke_hpack::Encoder::new(),
        }
    }
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Rewriter {
    /// Takes `input` from the client; appends what the server should read to `out`.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        while !input.is_empty() {
            match self.stage {
                Stage::Preface(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.stage = if left == n {
                        Stage::FrameHeader
                    } else {
                        Stage::Preface(left - n)
                    };
                }
                Stage::Pass(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.stage = if left == n {
                        Stage::FrameHeader
                    } else {
                        Stage::Pass(left - n)
                    };
                }
                Stage::FrameHeader => {
                    let n = (9 - self.pending.len()).min(input.len());
                    self.pending.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.pending.len() == 9 {
                        self.frame_header(out)?;
                    }
                }
                Stage::Block { kind, flags, len } => {
                    let n = (9 + len - self.pending.len()).min(input.len());
                    self.pending.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.pending.len() == 9 + len {
                        let frame = std::mem::take(&mut self.pending);
                        self.stage = Stage::FrameHeader;
                        self.block_frame(kind, flags, frame, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A complete frame header is in `pending`: header blocks are collected, any other
    /// frame passes.
    fn frame_header(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let h = &self.pending;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        if self.block.is_some() && kind != CONTINUATION {
            return Err(invalid("a header block interrupted by another frame"));
        }
        if kind == HEADERS || kind == CONTINUATION {
            let collected = self.block.as_ref().map_or(0, |b| b.fragment.len());
            if len > MAX_FRAME || collected + len > MAX_BLOCK {
                return Err(invalid("header block larger than the server accepts"));
            }
            self.stage = Stage::Block { kind, flags, len };
        } else {
            out.append(&mut self.pending);
            self.stage = if len == 0 {
                Stage::FrameHeader
            } else {
                Stage::Pass(len)
            };
        }
        Ok(())
    }

    /// A whole HEADERS or CONTINUATION frame (header and payload).
    fn block_frame(
        &mut self,
        kind: u8,
        flags: u8,
        frame: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[9..];
        let fragment = if kind == HEADERS {
            let mut p = payload;
            let mut pad = 0;
            if flags & PADDED != 0 {
                let (&n, rest) = p
                    .split_first()
                    .ok_or_else(|| invalid("PADDED without a pad length"))?;
                pad = usize::from(n);
                p = rest;
            }
            if flags & PRIORITY != 0 {
                p = p
                    .get(5..)
                    .ok_or_else(|| invalid("PRIORITY fields cut short"))?;
            }
            p.get(
                ..p.len()
                    .checked_sub(pad)
                    .ok_or_else(|| invalid("padding longer than the frame"))?,
            )
            .ok_or_else(|| invalid("padding longer than the frame"))?
            .to_vec()
        } else {
            payload.to_vec()
        };
        let block = match (kind, self.block.take()) {
            (HEADERS, None) => Block {
                stream,
                flags,
                fragment,
            },
            (CONTINUATION, Some(mut b)) if b.stream == stream => {
                b.fragment.extend_from_slice(&fragment);
                b
            }
            _ => return Err(invalid("CONTINUATION out of place")),
        };
        if flags & END_HEADERS == 0 {
            self.block = Some(block);
            return Ok(());
        }
        self.finish(block, out)
    }

    /// A complete header block, decoded and encoded again for the server with `localhost`
    /// for an `:authority` that is not an authority. Every block is re-encoded (never passed
    /// as received): the server's HPACK table then follows this encoder's, never the
    /// client's, so the two cannot drift apart.
    fn finish(&mut self, block: Block, out: &mut Vec<u8>) -> io::Result<()> {
        let decoder = &mut self.decoder;
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoder.decode(&block.fragment)
        }));
        let mut headers = match decoded {
            Ok(Ok(headers)) => headers,
            Ok(Err(e)) => return Err(invalid(format!("header block does not decode: {e:?}"))),
            // fluke-hpack 0.3 panics (instead of failing) on a table size update whose
            // integer is truncated or overflows: such a block does not decode either, and
            // the connection ends with it (its decoder is never used again).
            Err(_) => {
                return Err(invalid(
                    "header block does not decode: malformed table size update",
                ));
            }
        };
        for (name, value) in headers.iter_mut() {
            if name.as_slice() == b":authority"
                && axum::http::uri::Authority::try_from(value.as_slice()).is_err()
            {
                *value = LOCALHOST.to_vec();
            }
        }
        let encoded = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut chunks = encoded.chunks(MAX_FRAME).peekable();
        let mut first = true;
        // An empty block is still one HEADERS frame.
        let empty: &[u8] = &[];
        let mut next = chunks.next().or(Some(empty));
        while let Some(chunk) = next {
            next = chunks.next();
            let kind = if first { HEADERS } else { CONTINUATION };
            let mut flags = if first { block.flags & END_STREAM } else { 0 };
            if next.is_none() {
                flags |= END_HEADERS;
            }
            let len = chunk.len();
            out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
            out.extend_from_slice(&block.stream.to_be_bytes());
            out.extend_from_slice(chunk);
            first = false;
        }
        Ok(())
    }
}

/// A stream whose reads pass through a [`Rewriter`]; writes pass unchanged.
pub(crate) struct FixAuthority<S> {
    inner: S,
    rewriter: Rewriter,
    out: Vec<u8>,
    at: usize,
    scratch: Box<[u8]>,
}

impl<S> FixAuthority<S> {
    /// `inner`, read through a fresh rewriter.
    pub(crate) fn new(inner: S) -> FixAuthority<S> {
        FixAuthority {
            inner,
            rewriter: Rewriter::default(),
            out: Vec::new(),
            at: 0,
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
        }
    }

    /// The stream underneath.
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.at < this.out.len() {
                let n = (this.out.len() - this.at).min(buf.remaining());
                buf.put_slice(&this.out[this.at..this.at + n]);
                this.at += n;
                if this.at == this.out.len() {
                    this.out.clear();
                    this.at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            if read.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            let filled = read.filled().len();
            this.rewriter.feed(&this.scratch[..filled], &mut this.out)?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Splits `bytes` into (kind, flags, stream, payload) frames after the preface.
    fn frames(bytes: &[u8]) -> Vec<Frame> {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            out.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        out
    }

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;
    /// A frame: kind, flags, stream, payload.
    type Frame = (u8, u8, u32, Vec<u8>);

    fn request(authority: &str) -> Headers {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/v1.ExternalJWTSigner/Metadata"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// A client's bytes: preface, SETTINGS, then per request a HEADERS block (the second
    /// padded and split over a CONTINUATION) and a DATA frame.
    fn client_bytes(authorities: &[&str]) -> Vec<u8> {
        let mut enc = fluke_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        for (i, a) in authorities.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            let h = request(a);
            let block = enc.encode(h.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
            if i % 2 == 0 {
                bytes.extend(frame(HEADERS, END_HEADERS, stream, &block));
            } else {
                let (one, two) = block.split_at(block.len() / 2);
                let mut padded = vec![3];
                padded.extend_from_slice(one);
                padded.extend_from_slice(&[0, 0, 0]);
                bytes.extend(frame(HEADERS, PADDED, stream, &padded));
                bytes.extend(frame(CONTINUATION, END_HEADERS, stream, two));
            }
            bytes.extend(frame(0x0, END_STREAM, stream, &[0, 0, 0, 0, 0]));
        }
        bytes
    }

    /// Runs `input` through a rewriter `step` bytes at a time; the server's view of each
    /// request's headers (decoded as a server would) and the other frames.
    fn through(input: &[u8], step: usize) -> (Vec<Headers>, Vec<Frame>) {
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            r.feed(chunk, &mut out).expect("valid input");
        }
        let mut dec = fluke_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut others = Vec::new();
        for f in frames(&out) {
            if f.0 == HEADERS {
                assert_eq!(f.1 & END_HEADERS, END_HEADERS);
                blocks.push(dec.decode(&f.3).expect("server decodes"));
            } else {
                others.push(f);
            }
        }
        (blocks, others)
    }

    #[test]
    fn invalid_authorities_become_localhost_and_everything_else_is_kept() {
        let authorities = [
            "%2Frun%2Fkpki%2Fjwt.sock",
            "localhost",
            "/run/kpki/jwt.sock",
            "kpki.example:443",
            "unix:/run/kpki/jwt.sock",
        ];
        let input = client_bytes(&authorities);
        for step in [1, 7, 64, input.len()] {
            let (blocks, others) = through(&input, step);
            assert_eq!(blocks.len(), authorities.len());
            for (got, sent) in blocks.iter().zip(authorities) {
                let want = if sent.contains('/') || sent.contains('%') {
                    "localhost"
                } else {
                    sent
                };
                assert_eq!(*got, request(want), "step {step}, sent {sent}");
            }
            // SETTINGS and the DATA frames pass unchanged.
            assert_eq!(others.len(), 1 + authorities.len());
            assert_eq!(others[0], (0x4, 0, 0, vec![0, 3, 0, 0, 0, 100]));
            assert!(
                others[1..]
                    .iter()
                    .all(|f| f.0 == 0 && f.1 == END_STREAM && f.3 == [0; 5])
            );
        }
    }

    #[test]
    fn bad_input_ends_the_connection() {
        let mut too_big = PREFACE.to_vec();
        too_big.extend(frame(HEADERS, 0, 1, &vec![0; MAX_FRAME]));
        for _ in 0..4 {
            too_big.extend(frame(CONTINUATION, 0, 1, &vec![0; MAX_FRAME]));
        }
        let mut interrupted = PREFACE.to_vec();
        interrupted.extend(frame(HEADERS, 0, 1, &[0x82]));
        interrupted.extend(frame(0x0, 0, 1, &[]));
        let mut garbage = PREFACE.to_vec();
        garbage.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]));
        let mut stray = PREFACE.to_vec();
        stray.extend(frame(CONTINUATION, END_HEADERS, 1, &[0x82]));
        // Table size updates whose integer is cut short or overflows (the HPACK decoder
        // panics on these; the rewriter must refuse them), and one above the 4,096 bytes the
        // server allows.
        let mut cut_update = PREFACE.to_vec();
        cut_update.extend(frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xff]));
        let mut huge_update = PREFACE.to_vec();
        huge_update.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[
                0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
        ));
        let mut large_table = PREFACE.to_vec();
        large_table.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0x3f, 0xe1, 0xff, 0x03, 0x82],
        ));
        for (name, input) in [
            ("too big", too_big),
            ("interrupted", interrupted),
            ("garbage", garbage),
            ("stray CONTINUATION", stray),
            ("cut table size update", cut_update),
            ("overflowing table size update", huge_update),
            ("table above the server's 4096 bytes", large_table),
        ] {
            let mut out = Vec::new();
            let result = Rewriter::default().feed(&input, &mut out);
            assert!(result.is_err(), "{name}");
        }
    }
}
