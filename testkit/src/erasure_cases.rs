//! Conformance cases for the key store of crypto-shredding ([`flext_ports::KeyStore`]).
//! Re-exported from [`crate::cases`].

use std::sync::Arc;

use flext_domain::ErrorCode;
use flext_ports::KeyStore;
use tokio::sync::Barrier;

use crate::Harness;

/// Racing creators of one key agree on one; a forgotten key is gone with every key linked
/// to it (and only those); names are checked.
pub async fn data_keys_are_created_once_and_forgotten_with_their_dependents<H: Harness>(h: H) -> H {
    let store = h.store();
    assert_eq!(store.data_key("subject:a").await.expect("read"), None);
    let start = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            store
                .create_data_key("subject:a", vec![i; 72])
                .await
                .expect("create")
        }));
    }
    let mut agreed = Vec::new();
    for t in tasks {
        agreed.push(t.await.expect("task"));
    }
    agreed.dedup();
    assert_eq!(agreed.len(), 1, "every creator got the one stored key");
    assert_eq!(
        store.data_key("subject:a").await.expect("read"),
        Some(agreed[0].clone())
    );
    for name in ["stream:a-1", "stream:a-2", "stream:b-1", "subject:b"] {
        store
            .create_data_key(name, name.as_bytes().to_vec())
            .await
            .expect("create");
    }
    store
        .link_data_key("subject:a", "stream:a-1")
        .await
        .expect("link");
    store
        .link_data_key("subject:a", "stream:a-2")
        .await
        .expect("link");
    store
        .link_data_key("subject:a", "stream:a-2")
        .await
        .expect("linking twice is fine");
    store
        .link_data_key("subject:b", "stream:b-1")
        .await
        .expect("link");
    assert_eq!(store.forget_data_key("subject:a").await.expect("forget"), 3);
    for gone in ["subject:a", "stream:a-1", "stream:a-2"] {
        assert_eq!(store.data_key(gone).await.expect("read"), None, "{gone}");
    }
    for kept in ["subject:b", "stream:b-1"] {
        assert!(
            store.data_key(kept).await.expect("read").is_some(),
            "{kept}"
        );
    }
    assert_eq!(store.forget_data_key("subject:a").await.expect("again"), 0);
    // A subject created again after being forgotten gets a new key.
    let again = store
        .create_data_key("subject:a", vec![9; 72])
        .await
        .expect("create");
    assert_eq!(again, vec![9; 72]);
    for bad in [String::new(), "x".repeat(1025)] {
        let e = store.data_key(&bad).await.expect_err("bad name");
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
        assert_eq!(e.reason(), "INVALID_KEY_NAME", "{e}");
    }
    h
}
