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
/// The first piece a message is stored in while it arrives: most messages fit.
const FIRST_CHUNK: usize = 64 * 1024;
/// The largest piece.
const MAX_CHUNK: usize = 1024 * 1024;
/// Queued replies beyond this are written even if more input is waiting, so a client
/// that pipelines without reading cannot grow our memory.
const MAX_QUEUED_OUTPUT: usize = 16 * 1024;

/// How many bytes the piece that starts after `stored` bytes takes before the next one
/// starts (its room is this and two reads more: a read grows when bare line ends become
/// CRLF). Pieces grow with the message, up to
/// [`MAX_CHUNK`]: the part of each piece's last page that is not filled, and the next
/// piece's allocation header on the page after it, cost about a page of memory per
/// piece. With 64 KiB pieces throughout that was 6 % of a large message (one 25 MiB
/// message raised the peak RSS by 1.06× its size, where 1 MiB pieces give 1.00×).
fn chunk_len(stored: usize) -> usize {
    stored.clamp(FIRST_CHUNK, MAX_CHUNK)
}

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
        let mut current = Vec::with_capacity(chunk_len(0) + 2 * READ_BUFFER);
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
            } else if current.len() >= chunk_len(stored) {
                stored += current.len();
                let full = std::mem::replace(
                    &mut current,
                    Vec::with_capacity(chunk_len(stored) + 2 * READ_BUFFER),
                );
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

#[cfg(test)]
mod tests {
    use super::{Conn, Data, FIRST_CHUNK, Line, MAX_CHUNK, READ_BUFFER};
    use tokio::io::AsyncWriteExt;

    /// A message of `lines` lines of 78 characters, CRLF, as it is sent (no line
    /// starts with a dot, so it needs no stuffing), and the DATA that carries it.
    fn message(lines: usize) -> (Vec<u8>, Vec<u8>) {
        let line = format!("{}\r\n", "x".repeat(78));
        let message = line.repeat(lines).into_bytes();
        let mut data = message.clone();
        data.extend_from_slice(b".\r\nQUIT\r\n");
        (message, data)
    }

    /// A connection whose client has sent `input` and closed its side.
    async fn conn_with(input: Vec<u8>) -> Conn<tokio::io::DuplexStream> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            client.write_all(&input).await.unwrap();
            client.shutdown().await.unwrap();
        });
        Conn::new(server, std::time::Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_large_message_arrives_whole_in_pieces_that_grow() {
        let (message, data) = message(64 * 1024);
        let mut conn = conn_with(data).await;
        let Some(Data::Message {
            chunks,
            bare_line_ends,
        }) = conn.read_data(usize::MAX).await.unwrap()
        else {
            panic!("the message did not arrive");
        };
        assert_eq!(bare_line_ends, 0);
        assert_eq!(chunks.concat(), message);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert!(sizes[0] >= FIRST_CHUNK, "{sizes:?}");
        assert!(
            sizes.iter().all(|&s| s <= MAX_CHUNK + 2 * READ_BUFFER),
            "{sizes:?}"
        );
        // 5 MiB in 1 MiB pieces once they have grown, not in 80 pieces of 64 KiB.
        assert!(sizes.len() <= 12, "{} pieces: {sizes:?}", sizes.len());
        assert!(matches!(
            conn.read_line(512).await.unwrap(),
            Some(Line::Command(line)) if line == b"QUIT"
        ));
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_read_to_its_end_and_dropped() {
        let (_, data) = message(40 * 1024);
        let mut conn = conn_with(data).await;
        assert!(matches!(
            conn.read_data(1024 * 1024).await.unwrap(),
            Some(Data::TooBig)
        ));
        assert!(matches!(
            conn.read_line(512).await.unwrap(),
            Some(Line::Command(line)) if line == b"QUIT"
        ));
    }
}
