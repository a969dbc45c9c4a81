//! The PaymentIntent status machine, one path per test.

use crate::common::{Api, start};

#[tokio::test]
async fn manual_capture_authorises_then_captures_part() {
    let emu = start().await;
    let api = Api::new(&emu);
    let confirmed = api.authorised(5000, "pm_card_visa").await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    let pi = &confirmed.json;
    assert_eq!(pi["status"], "requires_capture");
    assert_eq!(pi["amount_capturable"], 5000);
    assert!(pi["payment_method"].as_str().unwrap().starts_with("pm_"));
    assert!(pi["latest_charge"].as_str().unwrap().starts_with("ch_"));

    let too_much = api
        .post(
            &format!("/v1/payment_intents/{}/capture", confirmed.id()),
            "amount_to_capture=5001",
        )
        .await;
    assert_eq!(too_much.status, 400);
    assert_eq!(too_much.json["error"]["code"], "amount_too_large");

    let captured = api
        .post(
            &format!("/v1/payment_intents/{}/capture", confirmed.id()),
            "amount_to_capture=3000",
        )
        .await;
    assert_eq!(captured.json["status"], "succeeded");
    assert_eq!(captured.json["amount_received"], 3000);
    assert_eq!(captured.json["amount_capturable"], 0);

    // Terminal: neither capture nor cancel applies any more.
    for op in ["capture", "cancel"] {
        let again = api
            .post(&format!("/v1/payment_intents/{}/{op}", confirmed.id()), "")
            .await;
        assert_eq!(again.status, 400, "{op}");
        assert_eq!(
            again.json["error"]["code"],
            "payment_intent_unexpected_state"
        );
        assert_eq!(again.json["error"]["payment_intent"]["status"], "succeeded");
    }
}

#[tokio::test]
async fn automatic_capture_succeeds_on_confirm() {
    let emu = start().await;
    let api = Api::new(&emu);
    let res = api
        .post(
            "/v1/payment_intents",
            "amount=1200&currency=usd&payment_method=pm_card_visa&confirm=true&automatic_payment_methods[enabled]=true&automatic_payment_methods[allow_redirects]=never",
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.json["status"], "succeeded");
    assert_eq!(res.json["capture_method"], "automatic_async");
    assert_eq!(res.json["amount_received"], 1200);
    assert_eq!(
        res.json["automatic_payment_methods"]["allow_redirects"],
        "never"
    );
}

#[tokio::test]
async fn declines_answer_402_and_leave_the_intent_retryable() {
    let emu = start().await;
    let api = Api::new(&emu);
    for (pm, decline) in [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_insufficientFunds", "insufficient_funds"),
    ] {
        let res = api.authorised(700, pm).await;
        assert_eq!(res.status, 402, "{}", res.body);
        let e = &res.json["error"];
        assert_eq!(e["type"], "card_error");
        assert_eq!(e["code"], "card_declined");
        assert_eq!(e["decline_code"], decline);
        assert_eq!(e["payment_intent"]["status"], "requires_payment_method");
        assert_eq!(
            e["payment_intent"]["last_payment_error"]["decline_code"],
            decline
        );
        assert!(e["payment_intent"]["payment_method"].is_null());

        // A new card on the same intent works.
        let id = e["payment_intent"]["id"].as_str().unwrap();
        let retry = api
            .post(
                &format!("/v1/payment_intents/{id}/confirm"),
                "payment_method=pm_card_visa",
            )
            .await;
        assert_eq!(retry.json["status"], "requires_capture");
        assert!(retry.json["last_payment_error"].is_null());
    }
}

#[tokio::test]
async fn cancel_from_any_open_state_records_the_reason() {
    let emu = start().await;
    let api = Api::new(&emu);
    let fresh = api
        .post("/v1/payment_intents", "amount=100&currency=eur")
        .await;
    let authorised = api.authorised(200, "pm_card_visa").await;
    let action = api.authorised(300, "pm_card_authenticationRequired").await;
    for id in [fresh.id(), authorised.id(), action.id()] {
        let res = api
            .post(
                &format!("/v1/payment_intents/{id}/cancel"),
                "cancellation_reason=requested_by_customer",
            )
            .await;
        assert_eq!(res.json["status"], "canceled", "{}", res.body);
        assert_eq!(res.json["cancellation_reason"], "requested_by_customer");
        assert_eq!(res.json["amount_capturable"], 0);
        assert!(res.json["canceled_at"].is_i64());
    }
    let confirm = api
        .post(
            &format!("/v1/payment_intents/{}/confirm", fresh.id()),
            "payment_method=pm_card_visa",
        )
        .await;
    assert_eq!(confirm.status, 400);
    assert_eq!(
        confirm.json["error"]["code"],
        "payment_intent_unexpected_state"
    );
}

#[tokio::test]
async fn requires_action_settles_through_the_control_api() {
    let emu = start().await;
    let api = Api::new(&emu);
    let control = emu.control();
    for pm in [
        "pm_card_authenticationRequired",
        "pm_card_threeDSecure2Required",
    ] {
        let pending = api.authorised(800, pm).await;
        assert_eq!(pending.status, 200);
        assert_eq!(pending.json["status"], "requires_action");
        assert_eq!(pending.json["next_action"]["type"], "use_stripe_sdk");
        let done = control
            .action(&pending.id(), berth_stripe_emulator::ActionOutcome::Succeed)
            .await
            .unwrap();
        assert_eq!(done["status"], "requires_capture");
        assert!(done["next_action"].is_null());
    }
    let pending = api.authorised(900, "pm_card_authenticationRequired").await;
    let failed = control
        .action(&pending.id(), berth_stripe_emulator::ActionOutcome::Fail)
        .await
        .unwrap();
    assert_eq!(failed["status"], "requires_payment_method");
    assert_eq!(
        failed["last_payment_error"]["code"],
        "payment_intent_authentication_failure"
    );
    // Only a requires_action intent takes an outcome.
    let again = control
        .action(&pending.id(), berth_stripe_emulator::ActionOutcome::Succeed)
        .await;
    assert!(matches!(
        again,
        Err(berth_stripe_emulator::ControlError::Status { status: 400, .. })
    ));

    let events = api
        .get("/v1/events?type=payment_intent.requires_action")
        .await;
    assert_eq!(events.json["data"].as_array().unwrap().len(), 3);
    let failures = api
        .get("/v1/events?type=payment_intent.payment_failed")
        .await;
    assert_eq!(failures.json["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_uncaptured_authorisation_expires() {
    let emu = start().await;
    let api = Api::new(&emu);
    let authorised = api.authorised(1500, "pm_card_visa").await;
    let expired = emu.control().expire(&authorised.id()).await.unwrap();
    assert_eq!(expired["status"], "canceled");
    assert_eq!(expired["cancellation_reason"], "automatic");
    let capture = api
        .post(
            &format!("/v1/payment_intents/{}/capture", authorised.id()),
            "",
        )
        .await;
    assert_eq!(
        capture.json["error"]["code"],
        "payment_intent_unexpected_state"
    );
    let events = api.get("/v1/events?type=payment_intent.canceled").await;
    let event = &events.json["data"][0];
    assert_eq!(event["data"]["object"]["cancellation_reason"], "automatic");
    // Stripe's own automatic events have no request.
    assert!(event["request"]["id"].is_null());
    // A fresh intent has nothing to expire.
    let fresh = api
        .post("/v1/payment_intents", "amount=100&currency=eur")
        .await;
    assert!(emu.control().expire(&fresh.id()).await.is_err());
}

#[tokio::test]
async fn stripe_js_confirms_with_the_publishable_key_and_client_secret() {
    let emu = start().await;
    let api = Api::new(&emu);
    let browser = Api::with_key(&emu, "pk_test_berth");
    let created = api
        .post(
            "/v1/payment_intents",
            "amount=100&currency=eur&capture_method=manual",
        )
        .await;
    let secret = created.json["client_secret"].as_str().unwrap().to_owned();
    let path = format!("/v1/payment_intents/{}/confirm", created.id());

    let without = browser.post(&path, "payment_method=pm_card_visa").await;
    assert_eq!(without.status, 400);
    let wrong = browser
        .post(&path, "payment_method=pm_card_visa&client_secret=nope")
        .await;
    assert_eq!(wrong.status, 400);
    let ok = browser
        .post(
            &path,
            &format!("payment_method=pm_card_visa&client_secret={secret}"),
        )
        .await;
    assert_eq!(ok.json["status"], "requires_capture", "{}", ok.body);
    let read = browser
        .get(&format!(
            "/v1/payment_intents/{}?client_secret={secret}",
            created.id()
        ))
        .await;
    assert_eq!(read.status, 200);
    // Everything else needs the secret key.
    let capture = browser
        .post(&format!("/v1/payment_intents/{}/capture", created.id()), "")
        .await;
    assert_eq!(capture.status, 401);
    assert_eq!(capture.json["error"]["code"], "secret_key_required");
}

#[tokio::test]
async fn lists_page_newest_first_and_search_matches_metadata_and_status() {
    let emu = start().await;
    let api = Api::new(&emu);
    let mut ids = Vec::new();
    for i in 0..5 {
        let res = api
            .post(
                "/v1/payment_intents",
                &format!(
                    "amount={}&currency=eur&metadata[booking_id]=b-{}",
                    100 + i,
                    i % 2
                ),
            )
            .await;
        ids.push(res.id());
    }
    let first = api.get("/v1/payment_intents?limit=2").await;
    let page: Vec<&str> = first.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, [ids[4].as_str(), ids[3].as_str()]);
    assert_eq!(first.json["has_more"], true);
    let next = api
        .get(&format!(
            "/v1/payment_intents?limit=2&starting_after={}",
            ids[3]
        ))
        .await;
    assert_eq!(next.json["data"][0]["id"], ids[2].as_str());
    let back = api
        .get(&format!(
            "/v1/payment_intents?limit=2&ending_before={}",
            ids[2]
        ))
        .await;
    assert_eq!(back.json["data"][0]["id"], ids[4].as_str());
    assert_eq!(back.json["has_more"], false);
    let now = chrono::Utc::now().timestamp();
    let created = api
        .get(&format!(
            "/v1/payment_intents?created[gte]={}&created[lte]={}",
            now - 60,
            now + 60
        ))
        .await;
    assert_eq!(created.json["data"].as_array().unwrap().len(), 5);
    let none = api
        .get(&format!("/v1/payment_intents?created[gt]={}", now + 60))
        .await;
    assert_eq!(none.json["data"].as_array().unwrap().len(), 0);

    let q = |query: &str| format!("/v1/payment_intents/search?query={}", urlencode(query));
    let hits = api.get(&q("metadata['booking_id']:'b-0'")).await;
    assert_eq!(hits.json["object"], "search_result");
    assert_eq!(hits.json["data"].as_array().unwrap().len(), 3);
    let both = api
        .get(&q(
            "metadata['booking_id']:'b-1' AND status:'requires_payment_method'",
        ))
        .await;
    assert_eq!(both.json["data"].as_array().unwrap().len(), 2);
    let bad = api.get(&q("amount>5")).await;
    assert_eq!(bad.status, 400);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
