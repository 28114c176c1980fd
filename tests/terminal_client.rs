//! The terminal's ledger client against the real ledger binary, and against sockets that
//! misbehave on purpose: what a failure means for money (in doubt or not) is decided here.
#![allow(clippy::unwrap_used)]

mod common;

use cashless::protocol::api::Operation;
use cashless::terminal::client::{ClientError, LedgerClient};
use common::*;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn order(uid: &str, seq: i64) -> (Value, Operation) {
    let body = order_body(uid, seq, &[("beer-05", 1, 450)], "online");
    let op = Operation::Order(serde_json::from_value(body.clone()).unwrap());
    (body, op)
}

#[tokio::test]
async fn online_operations_feeds_and_batches_against_the_real_ledger() {
    let l = Ledger::start().await;
    let card = uid(1);
    l.fund(&card, 1000).await;
    let client = LedgerClient::new(&l.base_url, &l.bar_token, 1500).unwrap();

    let me = client.me().await.unwrap();
    assert_eq!((me.name.as_str(), me.kind.as_str()), ("bar-1", "bar"));

    let (_, op) = order(&card, 1);
    let first = client.post_operation(&op).await.unwrap();
    assert_eq!(
        (first.status, first.replayed),
        (201, false),
        "{}",
        first.body
    );
    assert_eq!(first.body["new_balance_cents"], 550);
    let again = client.post_operation(&op).await.unwrap();
    assert_eq!((again.status, again.replayed), (201, true));
    assert_eq!(again.body, first.body);

    let (_, declined) = order(&uid(9), 2);
    let answer = client.post_operation(&declined).await.unwrap();
    assert_eq!(
        (answer.status, answer.error_code()),
        (404, Some("CARD_NOT_FOUND"))
    );

    let page = client.card_feed("", 10).await.unwrap();
    assert_eq!(page.cards.len(), 1);
    assert_eq!(page.cards[0].balance_cents.get(), 550);
    let next = client.card_feed(&page.next_cursor, 10).await.unwrap();
    assert!(next.cards.is_empty());
    assert_eq!(next.next_cursor, page.next_cursor);

    let (catalog, etag) = client.catalog(None).await.unwrap().unwrap();
    assert_eq!(catalog["point_of_sale"], "Main Bar");
    assert!(
        client.catalog(Some(&etag)).await.unwrap().is_none(),
        "unchanged catalog: 304"
    );
    let staff = client.staff().await.unwrap();
    assert!(staff["staff"].as_array().unwrap().len() >= 3);

    let (mut offline, _) = order(&card, 3);
    offline["mode"] = "offline".into();
    offline["type"] = "order".into();
    let mut tagged_first = serde_json::to_value(match &op {
        Operation::Order(r) => r,
        _ => unreachable!(),
    })
    .unwrap();
    tagged_first["type"] = "order".into();
    let results = client.post_batch(&[tagged_first, offline]).await.unwrap();
    assert_eq!(
        results.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![201, 201]
    );
    assert_eq!(
        results[0].body, first.body,
        "a replay inside a batch returns the stored answer"
    );
    assert_eq!(l.balance(&card).await, 100);
}

/// A listener that does `behave` with each accepted connection.
async fn misbehaving<F, Fut>(behave: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            behave(stream).await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn failures_say_whether_the_attempt_is_in_doubt() {
    let (_, op) = order(&uid(1), 1);

    // Nothing listens: the request never left; not in doubt.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let client = LedgerClient::new(&format!("http://{addr}"), "clt_x", 500).unwrap();
    let err = client.post_operation(&op).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable(_)), "{err:?}");
    assert!(!err.is_in_doubt());

    // Accepts, reads, never answers: in doubt, after the timeout and not much later.
    let silent = misbehaving(|mut s| async move {
        let mut buf = vec![0u8; 65536];
        let _ = s.read(&mut buf).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    })
    .await;
    let client = LedgerClient::new(&silent, "clt_x", 300).unwrap();
    let started = std::time::Instant::now();
    let err = client.post_operation(&op).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
    assert!(err.is_in_doubt());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout was not applied"
    );

    // Reads the request, then cuts the connection: the ledger may have committed; in doubt.
    let cut = misbehaving(|mut s| async move {
        let mut buf = vec![0u8; 65536];
        let _ = s.read(&mut buf).await;
        drop(s);
    })
    .await;
    let client = LedgerClient::new(&cut, "clt_x", 1000).unwrap();
    let err = client.post_operation(&op).await.unwrap_err();
    assert!(matches!(err, ClientError::Broken(_)), "{err:?}");
    assert!(err.is_in_doubt());

    // Answers half a response: in doubt too.
    let half = misbehaving(|mut s| async move {
        let mut buf = vec![0u8; 65536];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"transaction_id\":")
            .await;
        drop(s);
    })
    .await;
    let client = LedgerClient::new(&half, "clt_x", 1000).unwrap();
    let err = client.post_operation(&op).await.unwrap_err();
    assert!(err.is_in_doubt(), "{err:?}");
}
