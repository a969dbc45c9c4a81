#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Secrets never reach the logs: every flow runs with TRACE logging captured
//! into a buffer, which is then searched for each password, code and token.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use berth_user::{
    MemoryMailer, PasswordParams, SmsSender, TwilioConfig, TwilioSms, UserConfig, Users,
};
use serde_json::{Value, json};
use support::db::{TestDb, redis_url};
use support::sms::SmsSink;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Occurrences of `digits` not embedded in a longer run of digits.
fn contains_code(haystack: &str, digits: &str) -> bool {
    haystack.match_indices(digits).any(|(i, _)| {
        let before = haystack[..i].chars().next_back();
        let after = haystack[i + digits.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

async fn post(http: &reqwest::Client, base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = http
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn passwords_codes_and_tokens_never_appear_in_logs() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .without_time()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    let db = TestDb::create("user_test").await;
    let sink = SmsSink::start().await;
    let mailer = MemoryMailer::default();
    let sms_token = "twilio-auth-token-secret";
    let sms: Arc<dyn SmsSender> = Arc::new(TwilioSms::new(TwilioConfig {
        base_url: sink.base_url.clone(),
        account_sid: "AC999".into(),
        auth_token: sms_token.into(),
        from: "+15005550006".into(),
    }));
    let users = Users::connect_with(
        &db.url,
        redis_url().as_deref(),
        UserConfig {
            password: PasswordParams {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            code_pepper: Some("pepper-secret-value".into()),
            ..UserConfig::default()
        },
        Arc::new(mailer.clone()),
        sms,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = users.rest_routes();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let http = reqwest::Client::new();

    let email = format!("{}@example.test", uuid::Uuid::new_v4().simple());
    let password = "Pa55word-Secret-One";
    let wrong_password = "Wr0ng-Secret-Guess";
    let new_password = "N3w-Pa55word-Secret";
    let mut secrets: Vec<String> = vec![
        password.into(),
        wrong_password.into(),
        new_password.into(),
        sms_token.into(),
        "pepper-secret-value".into(),
    ];

    assert_eq!(
        post(
            &http,
            &base,
            "/v1/auth/signup",
            json!({"email": email, "password": password})
        )
        .await
        .0,
        201
    );
    let verify = support::smtp::token_from(&format!("\n\n{}", mailer.messages()[0].body));
    secrets.push(verify.clone());
    assert_eq!(
        post(
            &http,
            &base,
            "/v1/auth/email/verify",
            json!({"token": verify})
        )
        .await
        .0,
        204
    );
    assert_eq!(
        post(
            &http,
            &base,
            "/v1/auth/login",
            json!({"email": email, "password": wrong_password})
        )
        .await
        .0,
        401
    );
    let (s, tokens) = post(
        &http,
        &base,
        "/v1/auth/login",
        json!({"email": email, "password": password}),
    )
    .await;
    assert_eq!(s, 200);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    secrets.push(access.clone());
    secrets.push(refresh.clone());
    let (s, t2) = post(
        &http,
        &base,
        "/v1/auth/refresh",
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(s, 200);
    secrets.push(t2["refresh_token"].as_str().unwrap().to_owned());
    secrets.push(t2["access_token"].as_str().unwrap().to_owned());
    // Reuse (logged as a security event — without the token).
    assert_eq!(
        post(
            &http,
            &base,
            "/v1/auth/refresh",
            json!({"refresh_token": refresh})
        )
        .await
        .0,
        401
    );
    // A bad bearer token on /v1/me.
    let r = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(format!("{access}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    assert_eq!(
        post(
            &http,
            &base,
            "/v1/auth/password/forgot",
            json!({"email": email})
        )
        .await
        .0,
        202
    );
    let reset = support::smtp::token_from(&format!("\n\n{}", mailer.messages()[1].body));
    secrets.push(reset.clone());
    assert_eq!(
        post(
            &http,
            &base,
            "/v1/auth/password/reset",
            json!({"token": reset, "password": new_password})
        )
        .await
        .0,
        204
    );

    let phone = format!("+1555{:07}", rand::random::<u32>() % 10_000_000);
    assert_eq!(
        post(
            &http,
            &base,
            "/v1/auth/phone/start",
            json!({"phone": phone})
        )
        .await
        .0,
        202
    );
    let code = sink.last_code(&phone);
    let wrong_code = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(
        post(
            &http,
            &base,
            "/v1/auth/phone/verify",
            json!({"phone": phone, "code": wrong_code})
        )
        .await
        .0,
        401
    );
    let (s, phone_tokens) = post(
        &http,
        &base,
        "/v1/auth/phone/verify",
        json!({"phone": phone, "code": code}),
    )
    .await;
    assert_eq!(s, 200);
    secrets.push(phone_tokens["access_token"].as_str().unwrap().to_owned());
    secrets.push(phone_tokens["refresh_token"].as_str().unwrap().to_owned());

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    // The capture works and covers these flows.
    assert!(
        logs.contains("password login"),
        "log capture is not working"
    );
    assert!(logs.contains("family revoked"));
    assert!(logs.contains("phone code sent"));
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret leaked into the logs"
        );
        // Token fragments (e.g. a JWT signature) must not appear either.
        if let Some(sig) = secret.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(
                !logs.contains(sig),
                "a token signature leaked into the logs"
            );
        }
    }
    assert!(!contains_code(&logs, &code), "the OTP leaked into the logs");
    assert!(
        !contains_code(&logs, wrong_code),
        "a guessed OTP leaked into the logs"
    );
    drop(users);
    db.drop_now().await;
}
