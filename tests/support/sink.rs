//! An in-process SMTP next hop for tests and benchmarks: it accepts mail on a loopback
//! port, records every transaction, and can be told to refuse, stall or hang up.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One transaction the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The MAIL command line as sent, without CRLF ("MAIL FROM:<a@b> SIZE=12").
    pub mail_line: String,
    /// The reverse path.
    pub mail_from: String,
    /// Recipients the sink accepted.
    pub recipients: Vec<String>,
    /// The message, dot-unstuffed, as it arrived.
    pub data: Vec<u8>,
}

/// How the sink answers. Change it at any time with [`Sink::set`].
#[derive(Clone)]
pub struct Behaviour {
    /// The reply to RCPT, per recipient address.
    pub rcpt_reply: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// The reply after the final dot.
    pub data_reply: String,
    /// Close the connection after the final dot, without a reply.
    pub hang_up_after_data: bool,
    /// Wait this long before answering the final dot.
    pub data_delay: Duration,
    /// Advertise PIPELINING.
    pub pipelining: bool,
    /// Close the connection right after answering the final dot (as a server that
    /// allows one transaction per connection, or that timed the client out, would).
    pub close_after_reply: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            rcpt_reply: Arc::new(|_| "250 2.1.5 OK".into()),
            data_reply: "250 2.0.0 queued".into(),
            hang_up_after_data: false,
            data_delay: Duration::ZERO,
            pipelining: true,
            close_after_reply: false,
        }
    }
}

#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    /// Every transaction accepted so far; a watch, so that a test waits for the next
    /// one instead of polling.
    received: watch::Sender<Vec<Received>>,
    behaviour: Arc<Mutex<Behaviour>>,
    /// How many connections were accepted so far.
    connections: watch::Sender<usize>,
}

impl Sink {
    /// Starts a sink on 127.0.0.1 on an ephemeral port.
    pub async fn start() -> Sink {
        Sink::start_on("127.0.0.1:0").await
    }

    /// Starts a sink on a given address (to bring a next hop "back" on its old port).
    pub async fn start_on(addr: &str) -> Sink {
        let listener = TcpListener::bind(addr).await.expect("sink bind");
        let sink = Sink {
            addr: listener.local_addr().unwrap(),
            received: watch::Sender::default(),
            behaviour: Arc::default(),
            connections: watch::Sender::default(),
        };
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                s.connections.send_modify(|n| *n += 1);
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.session(stream).await;
                });
            }
        });
        sink
    }

    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.behaviour.lock().unwrap());
    }

    /// Refuses `rcpt` for the moment (`451 4.2.0`, after `delay`) while the flag it
    /// returns is true; accepts every other recipient. Clear the flag to let it through.
    pub fn refuse_for_now(&self, rcpt: &'static str, delay: Duration) -> Arc<AtomicBool> {
        let refusing = Arc::new(AtomicBool::new(true));
        let flag = refusing.clone();
        self.set(move |b| {
            b.rcpt_reply = Arc::new(move |to: &str| {
                if to == rcpt && flag.load(Ordering::SeqCst) {
                    std::thread::sleep(delay);
                    "451 4.2.0 mailbox busy".into()
                } else {
                    "250 2.1.5 OK".into()
                }
            })
        });
        refusing
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.borrow().clone()
    }

    /// Waits until at least `count` transactions have arrived, or panics after `limit`.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Received> {
        let mut received = self.received.subscribe();
        match tokio::time::timeout(limit, received.wait_for(|got| got.len() >= count)).await {
            Ok(Ok(got)) => got.clone(),
            _ => panic!(
                "sink: expected {count} transactions within {limit:?}, got {}",
                self.received().len()
            ),
        }
    }

    /// How many connections the sink has accepted so far.
    pub fn connections(&self) -> usize {
        *self.connections.borrow()
    }

    /// Waits until the sink has accepted `count` connections, or panics after `limit`.
    pub async fn wait_for_connections(&self, count: usize, limit: Duration) {
        let mut connections = self.connections.subscribe();
        if tokio::time::timeout(limit, connections.wait_for(|n| *n >= count))
            .await
            .is_err()
        {
            panic!(
                "sink: expected {count} connections within {limit:?}, got {}",
                self.connections()
            );
        }
    }

    async fn session(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        write.write_all(b"220 sink.test ESMTP\r\n").await?;
        let mut mail_line = String::new();
        let mut recipients = Vec::new();
        let mut line = Vec::new();
        let mut pending = Vec::new();
        loop {
            line.clear();
            if read.read_until(b'\n', &mut line).await? == 0 {
                return Ok(());
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            let upper = text.to_ascii_uppercase();
            let behaviour = self.behaviour.lock().unwrap().clone();
            let reply = if upper.starts_with("EHLO") {
                let pipelining = if behaviour.pipelining {
                    "250-PIPELINING\r\n"
                } else {
                    ""
                };
                format!(
                    "250-sink.test\r\n{pipelining}250-SIZE 100000000\r\n250-8BITMIME\r\n250 SMTPUTF8"
                )
            } else if upper.starts_with("HELO") {
                "250 sink.test".into()
            } else if upper.starts_with("MAIL FROM:") {
                mail_line = text.clone();
                recipients.clear();
                "250 2.1.0 OK".into()
            } else if upper.starts_with("RCPT TO:") {
                let addr = between_brackets(&text);
                let reply = (behaviour.rcpt_reply)(&addr);
                if reply.starts_with('2') {
                    recipients.push(addr);
                }
                reply
            } else if upper == "DATA" {
                if recipients.is_empty() {
                    "554 5.5.1 no valid recipients".into()
                } else {
                    pending.extend_from_slice(b"354 go ahead\r\n");
                    write.write_all(&pending).await?;
                    pending.clear();
                    let data = read_data(&mut read).await?;
                    if behaviour.hang_up_after_data {
                        return Ok(());
                    }
                    tokio::time::sleep(behaviour.data_delay).await;
                    if behaviour.data_reply.starts_with('2') {
                        let got = Received {
                            mail_from: between_brackets(&mail_line),
                            mail_line: mail_line.clone(),
                            recipients: std::mem::take(&mut recipients),
                            data,
                        };
                        self.received.send_modify(|all| all.push(got));
                    }
                    if behaviour.close_after_reply {
                        write
                            .write_all(format!("{}\r\n", behaviour.data_reply).as_bytes())
                            .await?;
                        return Ok(());
                    }
                    behaviour.data_reply.clone()
                }
            } else if upper == "RSET" {
                recipients.clear();
                "250 2.0.0 OK".into()
            } else if upper == "QUIT" {
                pending.extend_from_slice(b"221 2.0.0 bye\r\n");
                write.write_all(&pending).await?;
                return Ok(());
            } else {
                "250 2.0.0 OK".into()
            };
            // Like a real server with PIPELINING: replies to a pipelined batch go out
            // together, once nothing more is waiting to be read.
            pending.extend_from_slice(format!("{reply}\r\n").as_bytes());
            if read.buffer().is_empty() {
                write.write_all(&pending).await?;
                pending.clear();
            }
        }
    }
}

fn between_brackets(text: &str) -> String {
    let start = text.find('<').map_or(0, |i| i + 1);
    let end = text.rfind('>').unwrap_or(text.len());
    text[start..end.max(start)].to_string()
}

async fn read_data(read: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(data);
        }
        let start = usize::from(line.starts_with(b"."));
        data.extend_from_slice(&line[start..]);
    }
}
