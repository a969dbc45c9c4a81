#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The user service end to end over HTTP, on a real PostgreSQL (own
//! database per test), Redis (when `REDIS_URL` is set), a real SMTP server
//! (aiosmtpd), a real OpenID provider (oauth2-mock-server) and a
//! Twilio-shaped SMS sink.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use berth_runtime::auth::{RemoteJwksOptions, Verifier};
use berth_user::{
    Limits, MemoryMailer, MemorySms, OidcProviderConfig, PasswordParams, SigningKeySource,
    SmtpConfig, SmtpSecurity, TwilioConfig, UserConfig, Users,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::db::{TestDb, redis_url};
use support::sms::SmsSink;
use support::smtp::{SmtpSink, token_from};

const PASSWORD: &str = "correct horse battery";

/// Cheap argon2id parameters so debug-build tests stay fast; production
/// defaults are exercised by `default_password_parameters_hash_and_verify`.
fn test_config() -> UserConfig {
    UserConfig {
        issuer: "https://auth.berth.test".into(),
        // Redis counters outlive a test run: a fresh namespace per server.
        redis_prefix: format!("berth:user-test:{}:", uuid::Uuid::new_v4().simple()),
        password: PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        ..UserConfig::default()
    }
}

struct Server {
    base: String,
    users: Users,
    http: reqwest::Client,
    db: Option<TestDb>,
}

impl Server {
    /// Binds first so the address can go into the config (OIDC redirect).
    async fn bind() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        (listener, base)
    }

    async fn start_with(
        listener: tokio::net::TcpListener,
        base: String,
        db: Option<TestDb>,
        url: &str,
        redis: Option<&str>,
        config: UserConfig,
        mailer: Option<Arc<dyn berth_user::MailSender>>,
    ) -> Self {
        let users = match mailer {
            Some(mailer) => {
                Users::connect_with(url, redis, config, mailer, Arc::new(MemorySms::default()))
                    .await
                    .unwrap()
            }
            None => Users::connect(url, redis, config).await.unwrap(),
        };
        let app = users.rest_routes();
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Self {
            base,
            users,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            db,
        }
    }

    async fn start(config: UserConfig) -> Self {
        let db = TestDb::create("user_test").await;
        let (listener, base) = Self::bind().await;
        let url = db.url.clone();
        Self::start_with(
            listener,
            base,
            Some(db),
            &url,
            redis_url().as_deref(),
            config,
            None,
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn signup(&self, email: &str) -> Value {
        let (s, body) = self
            .post(
                "/v1/auth/signup",
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        body
    }

    async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await
    }

    async fn me(&self, access: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .get(format!("{}/v1/me", self.base))
                .bearer_auth(access),
        )
        .await
    }

    async fn finish(self) {
        drop(self.users);
        if let Some(db) = self.db {
            db.drop_now().await;
        }
    }
}

fn smtp_config(sink: &SmtpSink) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: sink.port,
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "Berth <no-reply@berth.test>".into(),
    }
}

#[tokio::test]
async fn signup_verifies_email_over_smtp_then_login_refresh_logout() {
    let sink = SmtpSink::start();
    let server = Server::start(UserConfig {
        smtp: Some(smtp_config(&sink)),
        ..test_config()
    })
    .await;

    let account = server.signup("Ada@Example.test").await;
    assert_eq!(account["email"], "ada@example.test");
    assert_eq!(account["email_verified"], false);
    assert_eq!(account["roles"], json!(["customer"]));

    // The verification mail went through the real SMTP server.
    let mail = sink.wait_for(1).await.remove(0);
    assert!(mail.contains("To: ada@example.test"), "{mail}");
    assert!(
        mail.contains("Subject: Confirm your email address"),
        "{mail}"
    );

    // Unverified accounts may log in and ask for another mail.
    let (s, early) = server.login("ada@example.test", PASSWORD).await;
    assert_eq!(s, StatusCode::OK);
    let early_access = early["access_token"].as_str().unwrap().to_owned();
    let resend = |access: String| {
        server.send(
            server
                .http
                .post(format!("{}/v1/me/email/verification", server.base))
                .bearer_auth(access),
        )
    };
    assert_eq!(resend(early_access.clone()).await.0, StatusCode::ACCEPTED);
    let mail = sink.wait_for(2).await.remove(1);
    let token = token_from(&mail);
    let (s, _) = server
        .post("/v1/auth/email/verify", json!({"token": token}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // Single use.
    let (s, body) = server
        .post("/v1/auth/email/verify", json!({"token": token}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(resend(early_access).await.0, StatusCode::CONFLICT);

    let (s, tokens) = server.login("ada@example.test", PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap();
    let (s, me) = server.me(access).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["email_verified"], true);

    // Wrong password: 401 problem+json.
    let (s, p) = server.login("ada@example.test", "wrong password!").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(p["type"], "https://berth.dev/problems/unauthorized");

    // Refresh rotates.
    let r1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (s, t2) = server
        .post("/v1/auth/refresh", json!({"refresh_token": r1}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let r2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);

    // Logout revokes.
    let (s, _) = server
        .post("/v1/auth/logout", json!({"refresh_token": r2}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = server
        .post("/v1/auth/refresh", json!({"refresh_token": r2}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Duplicate sign-up.
    let (s, _) = server
        .post(
            "/v1/auth/signup",
            json!({"email": "ada@example.test", "password": PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    server.finish().await;
}

#[tokio::test]
async fn refresh_token_reuse_revokes_the_family() {
    let server = Server::start(test_config()).await;
    server.signup("bob@example.test").await;
    let (_, t1) = server.login("bob@example.test", PASSWORD).await;
    let r1 = t1["refresh_token"].as_str().unwrap().to_owned();
    // A second, independent session (another family) must survive.
    let (_, other) = server.login("bob@example.test", PASSWORD).await;

    let (s, t2) = server
        .post("/v1/auth/refresh", json!({"refresh_token": r1}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let r2 = t2["refresh_token"].as_str().unwrap().to_owned();

    // The attacker replays r1: refused, and the legitimate r2 dies too.
    let (s, _) = server
        .post("/v1/auth/refresh", json!({"refresh_token": r1}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = server
        .post("/v1/auth/refresh", json!({"refresh_token": r2}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the whole family is revoked");

    let (s, _) = server
        .post(
            "/v1/auth/refresh",
            json!({"refresh_token": other["refresh_token"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "other families are untouched");
    let (s, _) = server
        .post("/v1/auth/refresh", json!({"refresh_token": "made-up"}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    server.finish().await;
}

/// Throttle counters live in Redis across test runs: use fresh identities.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn random_phone_digits() -> String {
    format!("{:06}", rand::random::<u32>() % 1_000_000)
}

async fn brute_force(server: &Server) {
    let email = format!("{}@example.test", unique("carol"));
    server.signup(&email).await;
    for _ in 0..5 {
        let (s, _) = server.login(&email, "not the password").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let resp = server
        .http
        .post(format!("{}/v1/auth/login", server.base))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "locked even with the right password"
    );
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "https://berth.dev/problems/rate-limited");
}

#[tokio::test]
async fn brute_force_on_an_account_is_throttled() {
    let server = Server::start(test_config()).await;
    brute_force(&server).await;
    server.finish().await;
}

#[tokio::test]
async fn brute_force_is_throttled_in_memory_without_redis() {
    let db = TestDb::create("user_test").await;
    let (listener, base) = Server::bind().await;
    let url = db.url.clone();
    let server =
        Server::start_with(listener, base, Some(db), &url, None, test_config(), None).await;
    brute_force(&server).await;
    server.finish().await;
}

#[tokio::test]
async fn brute_force_from_one_address_is_throttled() {
    let server = Server::start(UserConfig {
        limits: Limits {
            login_per_address: 3,
            ..Limits::default()
        },
        ..test_config()
    })
    .await;
    // Unique per run: Redis counters outlive the test.
    let ip = format!(
        "2001:db8::{:x}:{:x}:{:x}",
        rand::random::<u16>(),
        rand::random::<u16>(),
        rand::random::<u16>()
    );
    let run = unique("nobody");
    for i in 0..3 {
        let resp = server
            .http
            .post(format!("{}/v1/auth/login", server.base))
            .header("x-forwarded-for", &ip)
            .json(&json!({"email": format!("{run}-{i}@example.test"), "password": "whatever123"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = server
        .http
        .post(format!("{}/v1/auth/login", server.base))
        .header("x-forwarded-for", &ip)
        .json(&json!({"email": format!("{run}-x@example.test"), "password": "whatever123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    server.finish().await;
}

#[tokio::test]
async fn password_reset_over_smtp_is_single_use_and_revokes_sessions() {
    let sink = SmtpSink::start();
    let server = Server::start(UserConfig {
        smtp: Some(smtp_config(&sink)),
        ..test_config()
    })
    .await;
    server.signup("dan@example.test").await;
    sink.wait_for(1).await;
    let (_, session) = server.login("dan@example.test", PASSWORD).await;

    // Unknown emails get the same answer and no mail.
    let (s, _) = server
        .post(
            "/v1/auth/password/forgot",
            json!({"email": "ghost@example.test"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = server
        .post(
            "/v1/auth/password/forgot",
            json!({"email": "dan@example.test"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let messages = sink.wait_for(2).await;
    assert_eq!(messages.len(), 2);
    let mail = &messages[1];
    assert!(mail.contains("Reset your password"), "{mail}");
    let token = token_from(mail);

    let new_password = "a brand new passphrase";
    let (s, _) = server
        .post(
            "/v1/auth/password/reset",
            json!({"token": token, "password": new_password}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = server
        .post(
            "/v1/auth/password/reset",
            json!({"token": token, "password": "yet another passphrase"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "reset tokens are single use");

    assert_eq!(
        server.login("dan@example.test", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.login("dan@example.test", new_password).await.0,
        StatusCode::OK
    );
    let (s, _) = server
        .post(
            "/v1/auth/refresh",
            json!({"refresh_token": session["refresh_token"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "old sessions are revoked");
    server.finish().await;
}

async fn otp_server(sink: &SmsSink, limits: Limits) -> Server {
    Server::start(UserConfig {
        sms: Some(TwilioConfig {
            base_url: sink.base_url.clone(),
            account_sid: "AC123".into(),
            auth_token: "sms-secret".into(),
            from: "+15005550006".into(),
        }),
        limits,
        ..test_config()
    })
    .await
}

#[tokio::test]
async fn phone_otp_login_through_the_sms_provider() {
    let sink = SmsSink::start().await;
    let server = otp_server(&sink, Limits::default()).await;
    let digits = random_phone_digits();
    let phone = format!("+447700{digits}");
    let phone = phone.as_str();
    let (s, _) = server
        .post(
            "/v1/auth/phone/start",
            json!({"phone": format!("+44 7700 {digits}")}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let sent = sink.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].account_sid, "AC123");
    assert_eq!(sent[0].to, phone);
    assert_eq!(sent[0].from, "+15005550006");
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("AC123:sms-secret");
    assert_eq!(
        sent[0].authorization.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
    let code = sink.last_code(phone);

    // Resend is throttled.
    let (s, _) = server
        .post("/v1/auth/phone/start", json!({"phone": phone}))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);

    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (s, _) = server
        .post(
            "/v1/auth/phone/verify",
            json!({"phone": phone, "code": wrong}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, tokens) = server
        .post(
            "/v1/auth/phone/verify",
            json!({"phone": phone, "code": code}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    let (_, me) = server.me(tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(me["phone"], phone);
    assert_eq!(me["phone_verified"], true);
    // Other services (booking: where texts go) learn the verified phone
    // from the token.
    let payload = tokens["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["phone_number"], phone);
    // Codes are single use.
    let (s, _) = server
        .post(
            "/v1/auth/phone/verify",
            json!({"phone": phone, "code": code}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    server.finish().await;
}

#[tokio::test]
async fn otp_attempts_are_limited() {
    let sink = SmsSink::start().await;
    let server = otp_server(&sink, Limits::default()).await;
    let phone = format!("+1500555{}", random_phone_digits());
    let phone = phone.as_str();
    server
        .post("/v1/auth/phone/start", json!({"phone": phone}))
        .await;
    let code = sink.last_code(phone);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let (s, _) = server
            .post(
                "/v1/auth/phone/verify",
                json!({"phone": phone, "code": wrong}),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // The right code no longer works for this challenge.
    let (s, _) = server
        .post(
            "/v1/auth/phone/verify",
            json!({"phone": phone, "code": code}),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    server.finish().await;
}

#[tokio::test]
async fn oidc_login_with_pkce_links_by_verified_email() {
    let provider = support::oidc::OidcProvider::start("erin@example.test", true);
    let db = TestDb::create("user_test").await;
    let (listener, base) = Server::bind().await;
    let url = db.url.clone();
    let config = UserConfig {
        oidc_providers: vec![OidcProviderConfig {
            name: "mock".into(),
            issuer_url: provider.issuer.clone(),
            client_id: "berth-client".into(),
            client_secret: Some("berth-secret".into()),
            redirect_url: format!("{base}/v1/auth/oidc/mock/callback"),
            scopes: vec![],
        }],
        ..test_config()
    };
    let server = Server::start_with(
        listener,
        base,
        Some(db),
        &url,
        redis_url().as_deref(),
        config,
        None,
    )
    .await;
    // A verified local account with the same email exists already.
    server
        .users
        .ensure_demo_user("erin@example.test", PASSWORD)
        .await
        .unwrap();
    let (_, local) = server.login("erin@example.test", PASSWORD).await;
    let (_, local_me) = server.me(local["access_token"].as_str().unwrap()).await;

    let login = || async {
        // Our start → provider /authorize (auto-login) → our callback.
        let r = server
            .http
            .get(format!("{}/v1/auth/oidc/mock/start", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let authorize = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(authorize.starts_with(&provider.issuer));
        assert!(authorize.contains("code_challenge_method=S256"));
        assert!(authorize.contains("nonce="));
        let r = server.http.get(&authorize).send().await.unwrap();
        assert!(r.status().is_redirection(), "{}", r.status());
        let callback = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(callback.starts_with(&server.base), "{callback}");
        (
            callback.clone(),
            server.send(server.http.get(&callback)).await,
        )
    };
    let (callback, (s, tokens)) = login().await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    let (_, me) = server.me(tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(me["id"], local_me["id"], "linked to the existing account");

    // The state is single use: replaying the callback fails.
    let (s, _) = server.send(server.http.get(&callback)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A forged state fails.
    let forged = callback.replace("state=", "state=x");
    let (s, _) = server.send(server.http.get(&forged)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Second login: found through the linked identity.
    let (_, (s, tokens)) = login().await;
    assert_eq!(s, StatusCode::OK);
    let (_, me) = server.me(tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(me["id"], local_me["id"]);
    server.finish().await;
    drop(provider);
}

#[tokio::test]
async fn oidc_does_not_link_to_an_unverified_local_account() {
    let provider = support::oidc::OidcProvider::start("frank@example.test", true);
    let db = TestDb::create("user_test").await;
    let (listener, base) = Server::bind().await;
    let url = db.url.clone();
    let config = UserConfig {
        oidc_providers: vec![OidcProviderConfig {
            name: "mock".into(),
            issuer_url: provider.issuer.clone(),
            client_id: "berth-client".into(),
            client_secret: Some("berth-secret".into()),
            redirect_url: format!("{base}/v1/auth/oidc/mock/callback"),
            scopes: vec![],
        }],
        ..test_config()
    };
    let server = Server::start_with(listener, base, Some(db), &url, None, config, None).await;
    // Someone pre-registered the address without verifying it.
    server.signup("frank@example.test").await;
    let r = server
        .http
        .get(format!("{}/v1/auth/oidc/mock/start", server.base))
        .send()
        .await
        .unwrap();
    let authorize = r.headers()["location"].to_str().unwrap().to_owned();
    let r = server.http.get(&authorize).send().await.unwrap();
    let callback = r.headers()["location"].to_str().unwrap().to_owned();
    let (s, body) = server.send(server.http.get(&callback)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    server.finish().await;
}

#[tokio::test]
async fn me_patch_and_delete_removes_personal_data() {
    let server = Server::start(test_config()).await;
    let account = server.signup("gina@example.test").await;
    let (_, tokens) = server.login("gina@example.test", PASSWORD).await;
    let access = tokens["access_token"].as_str().unwrap();

    let (s, me) = server
        .send(
            server
                .http
                .patch(format!("{}/v1/me", server.base))
                .bearer_auth(access)
                .json(&json!({"display_name": "Gina"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["display_name"], "Gina");
    let (s, _) = server
        .send(
            server
                .http
                .patch(format!("{}/v1/me", server.base))
                .bearer_auth(access)
                .json(&json!({"roles": ["admin"]})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "roles are not self-service"
    );

    let (s, _) = server
        .send(
            server
                .http
                .delete(format!("{}/v1/me", server.base))
                .bearer_auth(access),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(server.me(access).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        server.login("gina@example.test", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, _) = server
        .post(
            "/v1/auth/refresh",
            json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Nothing about the account is left in the database.
    let db = server.db.as_ref().unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let id = account["id"].as_str().unwrap();
    for (table, column) in [
        ("users.accounts", "id"),
        ("users.refresh_tokens", "account_id"),
        ("users.one_time_tokens", "account_id"),
        ("users.oidc_identities", "account_id"),
    ] {
        let n: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {column} = $1"))
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users.accounts WHERE email = 'gina@example.test'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(n, 0);
    // ...but the booking service is told, exactly once.
    let types: Vec<String> =
        sqlx::query_scalar("SELECT type FROM users.account_events WHERE account_id = $1")
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(types, ["account.deleted"]);
    pool.close().await;
    server.finish().await;
}

#[tokio::test]
async fn roles_are_admin_only_and_flow_into_tokens() {
    let server = Server::start(test_config()).await;
    let target = server.signup("hal@example.test").await;
    let id = target["id"].as_str().unwrap();
    let (_, customer) = server.login("hal@example.test", PASSWORD).await;
    let path = format!("{}/v1/users/{id}/roles", server.base);

    let (s, _) = server
        .send(server.http.put(&path).json(&json!({"roles": ["staff"]})))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = server
        .send(
            server
                .http
                .put(&path)
                .bearer_auth(customer["access_token"].as_str().unwrap())
                .json(&json!({"roles": ["admin"]})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    server
        .users
        .ensure_demo_user("admin@example.test", PASSWORD)
        .await
        .unwrap();
    let (_, admin) = server.login("admin@example.test", PASSWORD).await;
    let admin_access = admin["access_token"].as_str().unwrap();
    let (s, _) = server
        .send(
            server
                .http
                .put(&path)
                .bearer_auth(admin_access)
                .json(&json!({"roles": ["superuser"]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = server
        .send(
            server
                .http
                .put(&path)
                .bearer_auth(admin_access)
                .json(&json!({"roles": ["customer", "staff"]})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, t) = server.login("hal@example.test", PASSWORD).await;
    let p = server
        .users
        .verifier()
        .verify(t["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(p.roles, vec!["customer", "staff"]);
    server.finish().await;
}

#[tokio::test]
async fn access_tokens_verify_against_the_served_jwks_across_rotation() {
    let server = Server::start(test_config()).await;
    server.signup("ivy@example.test").await;
    let (_, before) = server.login("ivy@example.test", PASSWORD).await;
    let old_access = before["access_token"].as_str().unwrap().to_owned();

    let header = jsonwebtoken::decode_header(&old_access).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let old_kid = header.kid.unwrap();

    let remote = Verifier::from_jwks_url(
        "https://auth.berth.test",
        "berth",
        &format!("{}/.well-known/jwks.json", server.base),
        RemoteJwksOptions {
            min_refetch: Duration::ZERO,
            ..RemoteJwksOptions::default()
        },
    );
    let p = remote.verify(&old_access).await.unwrap();
    assert_eq!(p.roles, vec!["customer"]);

    server
        .users
        .rotate_signing_key(&SigningKeySource::Generate)
        .unwrap();
    let (_, jwks) = server
        .send(
            server
                .http
                .get(format!("{}/.well-known/jwks.json", server.base)),
        )
        .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&old_kid.as_str()));
    for key in jwks["keys"].as_array().unwrap() {
        assert!(key.get("d").is_none(), "no private material in the JWKS");
    }

    let (_, after) = server.login("ivy@example.test", PASSWORD).await;
    let new_access = after["access_token"].as_str().unwrap();
    assert_ne!(
        jsonwebtoken::decode_header(new_access)
            .unwrap()
            .kid
            .unwrap(),
        old_kid
    );
    // Both verify during the rotation (the remote verifier refetches on the new kid).
    remote.verify(new_access).await.unwrap();
    remote.verify(&old_access).await.unwrap();
    assert_eq!(server.me(&old_access).await.0, StatusCode::OK);

    server.users.retire_previous_keys();
    assert_eq!(server.me(&old_access).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(server.me(new_access).await.0, StatusCode::OK);
    server.finish().await;
}

#[tokio::test]
async fn configured_pem_key_signs_tokens() {
    let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGLHXNlBvV6Db5B/9Io5LICd5z6IYxj+cAF+PW858hhS\n-----END PRIVATE KEY-----\n";
    let server = Server::start(UserConfig {
        signing_key: SigningKeySource::Pem(pem.into()),
        ..test_config()
    })
    .await;
    let (_, jwks) = server
        .send(
            server
                .http
                .get(format!("{}/.well-known/jwks.json", server.base)),
        )
        .await;
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    server.finish().await;
}

#[tokio::test]
async fn sqlite_backend_serves_the_same_api() {
    let path =
        std::env::temp_dir().join(format!("berth-user-{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let (listener, base) = Server::bind().await;
    let mailer = MemoryMailer::default();
    let server = Server::start_with(
        listener,
        base,
        None,
        &url,
        None,
        test_config(),
        Some(Arc::new(mailer.clone())),
    )
    .await;
    server.signup("jo@example.test").await;
    let token = support::smtp::token_from(&format!("\n\n{}", mailer.messages()[0].body));
    let (s, _) = server
        .post("/v1/auth/email/verify", json!({"token": token}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, tokens) = server.login("jo@example.test", PASSWORD).await;
    assert_eq!(s, StatusCode::OK);
    let (s, t2) = server
        .post(
            "/v1/auth/refresh",
            json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, me) = server.me(t2["access_token"].as_str().unwrap()).await;
    assert_eq!(me["email_verified"], true);
    let (s, _) = server
        .post(
            "/v1/auth/refresh",
            json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    server.users.check_ready().await.unwrap();
    server.finish().await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn ready_check_and_validation() {
    let server = Server::start(test_config()).await;
    server.users.check_ready().await.unwrap();
    let (s, p) = server
        .post(
            "/v1/auth/signup",
            json!({"email": "x@example.test", "password": "short"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["type"], "https://berth.dev/problems/validation");
    let (s, _) = server
        .post(
            "/v1/auth/signup",
            json!({"email": "not-an-email", "password": PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    server.finish().await;
}

#[tokio::test]
async fn default_password_parameters_hash_and_verify() {
    // The production argon2id parameters (19 MiB, t=2, p=1) end to end.
    let server = Server::start(UserConfig::default()).await;
    server.signup("kim@example.test").await;
    assert_eq!(
        server.login("kim@example.test", PASSWORD).await.0,
        StatusCode::OK
    );
    let db = server.db.as_ref().unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let hash: String = sqlx::query_scalar(
        "SELECT password_hash FROM users.accounts WHERE email = 'kim@example.test'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    pool.close().await;
    server.finish().await;
}
