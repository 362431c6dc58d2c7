//! The buffered connection under an SMTP session: command lines in, DATA in, replies
//! out. Bytes only; what they mean is `session.rs`'s business.
//!
//! Every read is bounded: a command line by `max_line_length`, DATA by the message size
//! limit (the rest of an over-size message is drained, not stored). Replies are queued
//! and written when the client has nothing more pipelined, so a pipelined batch of
//! commands gets its replies in one write (RFC 2920).

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::data::DataDecoder;
use super::reply::Reply;

/// Bytes read from the socket at a time, per connection.
const READ_BUFFER: usize = 8 * 1024;
/// Size of the pieces a message is stored in while it arrives.
const CHUNK: usize = 64 * 1024;
/// Queued replies beyond this are written even if more input is waiting, so a client
/// that pipelines without reading cannot grow our memory.
const MAX_QUEUED_OUTPUT: usize = 16 * 1024;

/// One command line, or the news that it was too long (and has been skipped).
pub enum Line {
    /// The line without its line end.
    Command(Vec<u8>),
    TooLong,
}

/// The body of a DATA command.
pub enum Data {
    /// The message, dot-unstuffed, in pieces, every line ending in CRLF; and how many
    /// bare CRs and LFs were turned into CRLF on the way.
    Message {
        chunks: Vec<Bytes>,
        bare_line_ends: usize,
    },
    /// Larger than allowed; it was read to its end and thrown away.
    TooBig,
}

pub struct Conn<S> {
    reader: BufReader<S>,
    out: Vec<u8>,
    /// How long a write may wait for a client that does not read.
    write_timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S, write_timeout: Duration) -> Conn<S> {
        Conn {
            reader: BufReader::with_capacity(READ_BUFFER, stream),
            out: Vec::with_capacity(512),
            write_timeout,
        }
    }

    /// Queues a reply; it is written before the next read that would wait.
    pub fn queue(&mut self, reply: &Reply) {
        reply.write_to(&mut self.out);
    }

    /// Writes the queued replies. A client that does not take them within the write
    /// timeout is given up on: the error ends the session, so nothing is sent twice.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let stream = self.reader.get_mut();
            let write = async {
                stream.write_all(&self.out).await?;
                stream.flush().await
            };
            tokio::time::timeout(self.write_timeout, write)
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "client does not read its replies",
                    )
                })??;
            self.out.clear();
        }
        Ok(())
    }

    /// Whether the client has already sent bytes we have not read.
    pub fn has_pending_input(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// The stream, for the TLS handshake. Input already buffered is dropped: after
    /// STARTTLS, anything sent in clear must not be taken as if it came over TLS
    /// (RFC 3207 §4.2, the command-injection attack).
    pub fn into_inner(self) -> S {
        self.reader.into_inner()
    }

    /// Fills the read buffer, writing queued replies first if we are about to wait.
    /// An empty slice means the client closed its side.
    async fn fill(&mut self) -> std::io::Result<&[u8]> {
        if self.reader.buffer().is_empty() || self.out.len() > MAX_QUEUED_OUTPUT {
            self.flush().await?;
        }
        self.reader.fill_buf().await
    }

    /// Reads one command line of at most `max` bytes including its line end. `None`
    /// means the client closed the connection.
    pub async fn read_line(&mut self, max: usize) -> std::io::Result<Option<Line>> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let buf = self.fill().await?;
            if buf.is_empty() {
                return Ok(None);
            }
            let (piece, end) = match memchr::memchr(b'\n', buf) {
                Some(pos) => (&buf[..=pos], true),
                None => (buf, false),
            };
            let used = piece.len();
            if !too_long && line.len() + used <= max {
                line.extend_from_slice(piece);
            } else {
                too_long = true;
                line.clear();
            }
            self.reader.consume(used);
            if end {
                if too_long {
                    return Ok(Some(Line::TooLong));
                }
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                return Ok(Some(Line::Command(line)));
            }
        }
    }

    /// Reads DATA up to the terminating `CRLF.CRLF` (and nothing else: see
    /// [`DataDecoder`]), keeping at most `max` bytes. `None` means the client closed
    /// the connection before the end.
    pub async fn read_data(&mut self, max: usize) -> std::io::Result<Option<Data>> {
        let mut decoder = DataDecoder::default();
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut stored = 0;
        let mut too_big = false;
        let mut current = Vec::with_capacity(CHUNK + 2 * READ_BUFFER);
        loop {
            let buf = self.fill().await?;
            if buf.is_empty() {
                return Ok(None);
            }
            let ended = decoder.decode(buf, &mut current);
            let used = ended.unwrap_or(buf.len());
            self.reader.consume(used);
            if stored + current.len() > max {
                // Past the limit the rest is read to its end and thrown away, so that
                // the client's next command is found and the 552 goes to the right
                // place.
                too_big = true;
                chunks = Vec::new();
                current.clear();
            } else if current.len() >= CHUNK {
                let full =
                    std::mem::replace(&mut current, Vec::with_capacity(CHUNK + 2 * READ_BUFFER));
                stored += full.len();
                chunks.push(Bytes::from(full));
            }
            if ended.is_some() {
                if too_big {
                    return Ok(Some(Data::TooBig));
                }
                chunks.push(Bytes::from(current));
                return Ok(Some(Data::Message {
                    chunks,
                    bare_line_ends: decoder.bare_line_ends(),
                }));
            }
        }
    }
}
