//! What the NATS tests share: the server's address and a reader of what a JetStream
//! stream holds.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use flext::application::relay_headers;
use flext_nats::JetStream;

/// `FLEXT_NATS_URL`, which `./scripts/test` sets to a NATS with JetStream it found or
/// started.
pub fn nats_url() -> String {
    std::env::var("FLEXT_NATS_URL").unwrap_or_else(|_| {
        panic!(
            "FLEXT_NATS_URL is not set: the NATS tests need a server with JetStream. Run \
             ./scripts/test, which finds or starts one, or set FLEXT_NATS_URL"
        )
    })
}

/// The path of this package's example `name`, which `cargo test` builds.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let bin = dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds the examples",
        bin.display()
    );
    bin
}

/// Waits (at most two minutes) until durable consumer `durable` of stream `stream` has
/// nothing pending and nothing awaiting its acknowledgement; whether it got there.
pub async fn until_consumer_settled(nats: &JetStream, stream: &str, durable: &str) -> bool {
    for _ in 0..1_200 {
        let info = nats
            .context()
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                durable, stream,
            )
            .await
            .expect("consumer")
            .get_info()
            .await
            .expect("info")
            .clone();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// What a stream of relayed `acct.moved` events holds.
pub struct Stored {
    /// Each event stream's `n`s, in the order JetStream stored them.
    pub by_stream: BTreeMap<String, Vec<u64>>,
    /// Every message id, in stored order.
    pub ids: Vec<String>,
    /// How many messages carry a correlation id.
    pub correlated: usize,
}

/// Reads every message of JetStream stream `name`, checking that each is a relayed
/// `acct.moved` event with its message id and position.
pub async fn stored(nats: &JetStream, name: &str) -> Stored {
    let stream = nats.context().get_stream(name).await.expect("stream");
    let count = stream.get_info().await.expect("info").state.messages;
    let mut out = Stored {
        by_stream: BTreeMap::new(),
        ids: Vec::new(),
        correlated: 0,
    };
    for seq in 1..=count {
        let m = stream.get_raw_message(seq).await.expect("message");
        let header = |k: &str| m.headers.get(k).map(|v| v.as_str().to_owned());
        out.ids.push(header("Nats-Msg-Id").expect("a message id"));
        assert_eq!(
            header(relay_headers::EVENT_TYPE).as_deref(),
            Some("acct.moved")
        );
        assert!(header(relay_headers::POSITION).is_some());
        if header(relay_headers::CORRELATION_ID).is_some() {
            out.correlated += 1;
        }
        let payload: serde_json::Value = serde_json::from_slice(&m.payload).expect("json");
        out.by_stream
            .entry(header(relay_headers::STREAM_ID).expect("a stream id"))
            .or_default()
            .push(payload["n"].as_u64().expect("n"));
    }
    out
}
