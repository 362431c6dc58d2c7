//! Graceful shutdown (SIGTERM/SIGINT): stop accepting, let transactions in flight
//! finish, tell idle sessions 421.

mod support;

use std::time::Duration;

use support::{Client, Sink, gateway_to, testdata};

#[tokio::test]
async fn transaction_in_flight_finishes_and_idle_sessions_get_421() {
    let sink = Sink::start().await;
    sink.set(|b| b.data_delay = Duration::from_millis(800));
    let (_dir, mut gw) = gateway_to(&sink, "").await;

    let mut idle = Client::connect(gw.outbound).await;
    idle.cmd_expect("EHLO idle.test", 250).await;

    let addr = gw.outbound;
    let in_flight = tokio::spawn(async move {
        let mut client = Client::connect(addr).await;
        client
            .send_mail("a@example.com", &["b@example.org"], &testdata("plain.eml"))
            .await
    });
    // Let the message reach the next hop, which is slow to answer.
    sink.wait_for_connections(1, Duration::from_secs(10)).await;
    let stopped = gw.begin_stop();

    let idle_reply = idle.reply().await;
    assert_eq!(
        (idle_reply.code, idle_reply.status()),
        (421, "4.3.0"),
        "{idle_reply:?}"
    );
    assert!(idle.is_closed().await);

    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.code, 250,
        "the transaction in flight completes: {reply:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("shutdown completes")
        .unwrap();
    assert_eq!(sink.received().len(), 1);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
}
