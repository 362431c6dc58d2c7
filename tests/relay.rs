//! The relay: what the next hop receives, and what the client hears back.

mod support;

use std::time::Duration;

use support::{Client, Sink, gateway_to, split_received, testdata};

#[tokio::test]
async fn passes_samples_byte_for_byte_with_one_received_header() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    for (i, name) in ["plain.eml", "dots.eml", "utf8.eml", "multipart.eml"]
        .iter()
        .enumerate()
    {
        let original = testdata(name);
        let mut client = Client::connect(gw.outbound).await;
        let reply = client
            .send_mail("alice@example.com", &["bob@example.org"], &original)
            .await;
        assert_eq!(reply.code, 250, "{name}: {reply:?}");
        client.quit().await;
        let got = sink.wait_for(i + 1, Duration::from_secs(10)).await;
        let (received, rest) = split_received(&got[i].data);
        assert_eq!(rest, original, "{name} changed on the way");
        assert!(received.contains("sealgate, outbound"), "{received}");
        assert!(received.contains("gw.test"), "{received}");
    }
}
