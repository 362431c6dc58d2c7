//! The spool's promise, checked with a real `kill -9` of the `sealgate` binary: once the
//! client has heard `250`, a copy the next hop had refused for now is on disk, and it
//! arrives exactly once after a restart.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use sealgate::config::SpoolConfig;
use sealgate::spool::Spool;
use support::cli::{Serve, Setup};
use support::{Client, Sink, split_received, testdata};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_copy_survives_kill_9_and_arrives_exactly_once() {
    // The next hop takes one recipient now and refuses the other for the moment, so the
    // transaction ends half delivered: the rest must go to the spool before the 250.
    let sink = Sink::start().await;
    let refusing = sink.refuse_for_now("later@example.org", Duration::ZERO);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let setup = Setup::new(
        |dir| {
            format!(
                "data_dir = \"{data}\"\n\
                 [inbound]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"{hop}\"\n\
                 [outbound]\nlisten = \"127.0.0.1:{port}\"\nnext_hop = \"{hop}\"\n\
                 [spool]\nfirst_retry = \"200ms\"\nmax_retry = \"1s\"\n",
                data = dir.join("data").display(),
                hop = sink.addr,
            )
        },
        Duration::from_secs(20),
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();

    let mut gateway = Serve::start(&setup);
    let mut client = Client::connect(addr).await;
    let message = testdata("plain.eml");
    let reply = client
        .send_mail(
            "alice@example.com",
            &["now@example.org", "later@example.org"],
            &message,
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].recipients, ["now@example.org"]);

    // A crash right after the 250: no shutdown, no flush on the way out.
    gateway.kill9();
    refusing.store(false, Ordering::SeqCst);

    let mut gateway = Serve::start(&setup);
    let got = sink.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[1].recipients, ["later@example.org"]);
    assert_eq!(
        split_received(&got[1].data).1,
        message,
        "the spooled copy is the message"
    );
    // Once the gateway has stopped, it can deliver nothing more: what the sink has is
    // all it delivered, and the spool it leaves on disk must be empty, or the next
    // start would deliver the copy again.
    assert_eq!(gateway.sigterm(), Some(0), "{}", gateway.log());
    assert_eq!(sink.received().len(), 2, "exactly once");
    let db = sealgate::store::open(&setup.data_dir).expect("the stopped gateway's database");
    let spool = Spool::open(&db, SpoolConfig::default()).unwrap();
    assert!(spool.is_empty(), "still spooled: {:?}", spool.entries());
}
