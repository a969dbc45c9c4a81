#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::response::Redirect;
use axum::routing::get;

use super::*;

#[test]
fn only_public_addresses_are_public() {
    for ip in [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "0.1.2.3",
        "255.255.255.255",
        "224.0.0.1",
        "100.64.0.1",
        "100.127.255.255",
        "240.0.0.1",
        "::",
        "::1",
        "::127.0.0.1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",
    ] {
        assert!(!is_public(ip.parse().unwrap()), "{ip} must not be public");
    }
    for ip in [
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.1",
        "172.32.0.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ] {
        assert!(is_public(ip.parse().unwrap()), "{ip} is public");
    }
}

fn check(raw: &str, allow_private: bool) -> Result<(), Refused> {
    check_url(&Url::parse(raw).unwrap(), allow_private)
}

#[test]
fn ip_literals_are_checked_in_every_spelling() {
    for raw in [
        "http://127.0.0.1/x.ics",
        "http://0x7f.1/",
        "http://2130706433/",
        "https://10.0.0.5:8443/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://[::ffff:7f00:1]/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
    ] {
        assert_eq!(check(raw, false), Err(Refused::Private), "{raw}");
        assert_eq!(check(raw, true), Ok(()), "{raw} allowed when asked");
    }
    assert_eq!(check("https://calendar.example.com/x.ics", false), Ok(()));
    assert_eq!(check("http://8.8.8.8/", false), Ok(()));
    assert!(matches!(
        check("ftp://example.com/x", true),
        Err(Refused::Scheme(_))
    ));
    assert!(matches!(
        check("file:///etc/passwd", false),
        Err(Refused::Scheme(_))
    ));
}

#[tokio::test]
async fn names_resolving_to_private_addresses_are_refused() {
    let url = Url::parse("http://localhost:9/x.ics").unwrap();
    assert_eq!(check_destination(&url, false).await, Err(Refused::Private));
    assert_eq!(check_destination(&url, true).await, Ok(()));
    let error = PublicOnly
        .resolve("localhost".parse().unwrap())
        .await
        .err()
        .unwrap();
    assert_eq!(error.downcast_ref::<Refused>(), Some(&Refused::Private));
}

/// Serves `/feed` (counting hits) and `/hop?to=URL` (a redirect).
async fn server(hits: Arc<AtomicUsize>) -> SocketAddr {
    #[derive(serde::Deserialize)]
    struct To {
        to: String,
    }
    let app = axum::Router::new()
        .route(
            "/feed",
            get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n" }
            }),
        )
        .route(
            "/hop",
            get(|q: axum::extract::Query<To>| async move { Redirect::temporary(&q.to) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The production client, except that the first hop (a local server
/// standing in for a public feed) is trusted: a redirect from it to a
/// private address, by IP or by name, must still be refused.
#[tokio::test]
async fn redirects_to_private_addresses_are_refused() {
    let (first_hits, target_hits) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
    let first = server(first_hits).await;
    let target = server(target_hits.clone()).await;
    let trusted = format!("127.0.0.1:{}", first.port());
    let check: Check = Arc::new(move |u: &Url| {
        if u.host_str().zip(u.port()).map(|(h, p)| format!("{h}:{p}")) == Some(trusted.clone()) {
            Ok(())
        } else {
            check_url(u, false)
        }
    });
    let client = client_with(check, true, &EgressOptions::default()).unwrap();
    let hop = |to: String| format!("http://{first}/hop?to={to}");

    let ok = client.get(hop(format!("http://{first}/feed"))).send().await;
    assert!(ok.unwrap().status().is_success(), "trusted hop works");
    for to in [
        format!("http://{target}/feed"),
        format!("http://localhost:{}/feed", target.port()),
        format!("http://[::ffff:127.0.0.1]:{}/feed", target.port()),
    ] {
        let error = client.get(hop(to.clone())).send().await.err().unwrap();
        assert_eq!(refusal(&error), Some(Refused::Private), "{to}: {error:?}");
    }
    assert_eq!(target_hits.load(Ordering::SeqCst), 0, "never reached");
}
