//! The binary: flags, the readiness line, webhooks to a flagged endpoint.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use stripe_webhook::Webhook;

use crate::common::{Receiver, SECRET};

#[tokio::test]
async fn the_binary_prints_its_address_and_serves() {
    let receiver = Receiver::start().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-stripe-emulator"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--api-key",
            "sk_test_proc",
            "--seed",
            "3",
        ])
        .args([
            "--webhook-url",
            &receiver.url,
            "--webhook-secret",
            SECRET,
            "--webhook-secret",
            "whsec_old",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");

    let res = reqwest::Client::new()
        .post(format!("{base}/v1/payment_intents"))
        .bearer_auth("sk_test_proc")
        .form(&[("amount", "100"), ("currency", "eur")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got = receiver.wait_for(1).await;
    Webhook::construct_event(&got[0].body, &got[0].signature, SECRET).unwrap();
    Webhook::construct_event(&got[0].body, &got[0].signature, "whsec_old").unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}
