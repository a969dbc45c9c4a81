//! Contract check against stripe-mock (Stripe's OpenAPI-driven mock, which
//! validates every parameter against Stripe's spec): each request the
//! emulator serves in Berth's flow is sent, byte for byte, to stripe-mock
//! too, and both must answer 2xx. stripe-mock keeps no state, so the
//! emulator's ids are fine there.
//!
//! stripe-mock comes from the local stack (`scripts/stack up`, then
//! `eval "$(scripts/stack env)"`); without `STRIPE_MOCK_URL` this fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use berth_stripe_emulator::{API_VERSION, Config, Emulator, Running};
use serde_json::Value;

const EMULATOR_KEY: &str = "sk_test_berth";
const MOCK_KEY: &str = "sk_test_123";

fn mock_url() -> String {
    std::env::var("STRIPE_MOCK_URL").expect(
        "STRIPE_MOCK_URL is not set: run `scripts/stack up` and `eval \"$(scripts/stack env)\"`",
    )
}

struct Both {
    emulator: Running,
    mock: String,
    http: reqwest::Client,
    log: Vec<String>,
}

impl Both {
    /// Sends one request to both; both must accept it. Answers the emulator's JSON.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        form: &str,
        idempotency_key: Option<&str>,
    ) -> Value {
        let mut answers = Vec::new();
        for (base, key) in [
            (self.emulator.base_url.clone(), EMULATOR_KEY),
            (self.mock.clone(), MOCK_KEY),
        ] {
            let url = format!("{base}{path}");
            let mut req = match method {
                "GET" => self.http.get(url),
                _ => self
                    .http
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form.to_owned()),
            };
            req = req.bearer_auth(key).header("stripe-version", API_VERSION);
            if let Some(k) = idempotency_key {
                req = req.header("idempotency-key", k);
            }
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let body = res.text().await.unwrap();
            answers.push((status, body));
        }
        let [(emu_status, emu_body), (mock_status, mock_body)] =
            <[_; 2]>::try_from(answers).unwrap();
        let shown = if form.is_empty() {
            String::new()
        } else {
            format!(" {form}")
        };
        self.log.push(format!(
            "{method} {path}{shown} -> emulator {emu_status}, stripe-mock {mock_status}"
        ));
        assert!(
            (200..300).contains(&emu_status),
            "emulator refused {method} {path} {form}: {emu_body}"
        );
        assert!(
            (200..300).contains(&mock_status),
            "stripe-mock refused what the emulator accepts: {method} {path} {form}: {mock_body}"
        );
        serde_json::from_str(&emu_body).unwrap()
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn stripe_mock_accepts_every_request_of_the_flow() {
    let mut both = Both {
        emulator: Emulator::start(Config::default()).await.unwrap(),
        mock: mock_url(),
        http: reqwest::Client::new(),
        log: Vec::new(),
    };

    // Manual capture: create, confirm, capture, refund.
    let create = "amount=2000&currency=eur&capture_method=manual&description=Haircut&metadata[booking_id]=b-1&payment_method_types[]=card";
    let pi = both
        .send("POST", "/v1/payment_intents", create, Some("create-b-1"))
        .await;
    let pi = id(&pi);
    both.send(
        "POST",
        &format!("/v1/payment_intents/{pi}"),
        "metadata[hold_id]=h-1",
        None,
    )
    .await;
    let confirmed = both
        .send(
            "POST",
            &format!("/v1/payment_intents/{pi}/confirm"),
            "payment_method=pm_card_visa",
            None,
        )
        .await;
    assert_eq!(confirmed["status"], "requires_capture");
    let captured = both
        .send(
            "POST",
            &format!("/v1/payment_intents/{pi}/capture"),
            "amount_to_capture=2000",
            Some("capture-b-1"),
        )
        .await;
    assert_eq!(captured["status"], "succeeded");
    let refund = both
        .send(
            "POST",
            "/v1/refunds",
            &format!("payment_intent={pi}&amount=500&reason=requested_by_customer&metadata[booking_id]=b-1"),
            Some("refund-b-1"),
        )
        .await;
    let re = id(&refund);

    // API 2026-09-30's list parameter, automatic payment methods, create+confirm.
    let other = both
        .send("POST", "/v1/payment_intents", "amount=900&currency=eur&capture_method=manual&allowed_payment_method_types[]=card&metadata[booking_id]=b-2", None)
        .await;
    both.send(
        "POST",
        &format!("/v1/payment_intents/{}/cancel", id(&other)),
        "cancellation_reason=requested_by_customer",
        None,
    )
    .await;
    both.send(
        "POST",
        "/v1/payment_intents",
        "amount=1500&currency=usd&automatic_payment_methods[enabled]=true&automatic_payment_methods[allow_redirects]=never&payment_method=pm_card_visa&confirm=true",
        None,
    )
    .await;

    // Reads.
    both.send("GET", &format!("/v1/payment_intents/{pi}"), "", None)
        .await;
    both.send("GET", &format!("/v1/refunds/{re}"), "", None)
        .await;
    let now = chrono::Utc::now().timestamp();
    let list = both
        .send(
            "GET",
            &format!(
                "/v1/payment_intents?limit=2&created%5Bgte%5D={}",
                now - 3600
            ),
            "",
            None,
        )
        .await;
    let last = list["data"][1]["id"].as_str().unwrap().to_owned();
    both.send(
        "GET",
        &format!("/v1/payment_intents?limit=2&starting_after={last}"),
        "",
        None,
    )
    .await;
    both.send(
        "GET",
        &format!("/v1/refunds?payment_intent={pi}&limit=10"),
        "",
        None,
    )
    .await;
    let found = both
        .send(
            "GET",
            "/v1/payment_intents/search?query=metadata%5B%27booking_id%27%5D%3A%27b-1%27%20AND%20status%3A%27succeeded%27",
            "",
            None,
        )
        .await;
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    let events = both
        .send(
            "GET",
            "/v1/events?type=payment_intent.succeeded&limit=5",
            "",
            None,
        )
        .await;
    both.send(
        "GET",
        &format!("/v1/events/{}", id(&events["data"][0])),
        "",
        None,
    )
    .await;

    eprintln!("accepted by both:\n  {}", both.log.join("\n  "));
}

/// stripe-mock validates parameters like Stripe: what it refuses, the
/// emulator refuses too (so neither lets a malformed request through).
#[tokio::test]
async fn both_refuse_unknown_and_malformed_parameters() {
    let emulator = Emulator::start(Config::default()).await.unwrap();
    let http = reqwest::Client::new();
    for form in [
        "amount=100&currency=eur&colour=red",
        "amount=abc&currency=eur",
        "currency=eur&capture_method=later&amount=5",
    ] {
        for (base, key) in [
            (emulator.base_url.clone(), EMULATOR_KEY),
            (mock_url(), MOCK_KEY),
        ] {
            let res = http
                .post(format!("{base}/v1/payment_intents"))
                .bearer_auth(key)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 400, "{base} accepted {form}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(
                body["error"]["type"], "invalid_request_error",
                "{base}: {body}"
            );
        }
    }
}

/// Every field stripe-mock's fixtures carry (from Stripe's OpenAPI spec)
/// is in the emulator's objects too.
#[tokio::test]
async fn the_emulators_objects_have_every_field_of_stripes() {
    let emulator = Emulator::start(Config::default()).await.unwrap();
    let http = reqwest::Client::new();
    let get = |base: String, key: &'static str, path: String| {
        let http = http.clone();
        async move {
            let res = http
                .get(format!("{base}{path}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            res.json::<Value>().await.unwrap()
        }
    };
    let post = |path: &str, form: String| {
        http.post(format!("{}{path}", emulator.base_url))
            .bearer_auth(EMULATOR_KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    let pi: Value = post(
        "/v1/payment_intents",
        "amount=100&currency=eur&payment_method=pm_card_visa&confirm=true".into(),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let pi = id(&pi);
    let re: Value = post("/v1/refunds", format!("payment_intent={pi}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let re = id(&re);
    let events: Value = get(emulator.base_url.clone(), EMULATOR_KEY, "/v1/events".into()).await;
    let ev = id(&events["data"][0]);
    for (path, mock_path) in [
        (
            format!("/v1/payment_intents/{pi}"),
            "/v1/payment_intents/pi_1".to_owned(),
        ),
        (format!("/v1/refunds/{re}"), "/v1/refunds/re_1".to_owned()),
        (format!("/v1/events/{ev}"), "/v1/events/evt_1".to_owned()),
        ("/v1/payment_intents".into(), "/v1/payment_intents".into()),
        (
            "/v1/payment_intents/search?query=status:'succeeded'".into(),
            "/v1/payment_intents/search?query=status:'succeeded'".into(),
        ),
    ] {
        let ours = get(emulator.base_url.clone(), EMULATOR_KEY, path.clone()).await;
        let theirs = get(mock_url(), MOCK_KEY, mock_path).await;
        let ours = ours.as_object().unwrap();
        let missing: Vec<&String> = theirs
            .as_object()
            .unwrap()
            .keys()
            // Stripe returns a search's total_count only when expanded.
            .filter(|k| !ours.contains_key(*k) && k.as_str() != "total_count")
            .collect();
        assert!(missing.is_empty(), "{path} lacks {missing:?}");
    }
}
