//! The real binary: serves, answers health and metrics, exits 0 on SIGTERM,
//! and refuses bad configuration with a message naming the setting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child if the test fails before it exits by itself.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(url).await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never became ready");
}

#[tokio::test]
async fn serve_answers_and_exits_zero_on_sigterm() {
    let port = free_port();
    let mut guard = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            // Payments off: a service that needs no database to be ready.
            .args(["serve", "payment"])
            .env("BERTH_SERVICE__PAYMENTS__PROVIDER", "none")
            .env("BERTH_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("BERTH_LOG_FORMAT", "json")
            .env("BERTH_SHUTDOWN__DRAIN_TIMEOUT", "5s")
            .env_remove("BERTH_CONFIG")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/readyz")).await;
    assert_eq!(
        reqwest::get(format!("{base}/livez"))
            .await
            .unwrap()
            .status(),
        200
    );

    let missing = reqwest::get(format!("{base}/v1/nothing")).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );

    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("berth_http_requests_total"), "{metrics}");
    assert!(metrics.contains("process_resident_memory_bytes"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));

    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut logs).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("serving"))
        .expect("startup log line");
    let doc: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(doc["service.name"], "payment");
    assert!(doc["@timestamp"].is_string());
}

#[test]
fn bad_configuration_names_the_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "user"])
        .env("BERTH_SHUTDOWN__DRAIN_TIMEOUT", "soon")
        .env_remove("BERTH_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("shutdown.drain_timeout"), "{stderr}");
}

/// The README's first command, end to end: `berth dev` seeds the demo, the
/// demo user logs in through the real user service, books the next free
/// slot with its token; anonymous booking is refused, a second booking of
/// the slot conflicts.
#[tokio::test]
async fn dev_books_the_demo_slot_as_the_demo_user() {
    let port = free_port();
    let data = std::env::temp_dir().join(format!("berth-dev-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let _guard = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["dev", "--addr", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data)
            .env("BERTH_LOG", "warn")
            .env_remove("BERTH_CONFIG")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/readyz")).await;
    let client = reqwest::Client::new();

    let login: serde_json::Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"email": "demo@berth.dev", "password": "demo-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().expect("access token");

    let get = |path: String| {
        let client = client.clone();
        async move {
            let r = client.get(path).send().await.unwrap();
            r.json::<serde_json::Value>().await.unwrap()
        }
    };

    // One document for every service in the process, served beside them.
    let document = get(format!("{base}/openapi.json")).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/v1/auth/login", "/v1/bookings", "/v1/resources/{id}/slots"] {
        assert!(document["paths"].get(path).is_some(), "{path} undocumented");
    }
    let resources = get(format!("{base}/v1/resources")).await;
    let resource = resources["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "Demo room")
        .expect("demo resource")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let types = get(format!("{base}/v1/resources/{resource}/appointment-types")).await;
    let kind = types[0]["id"].as_str().unwrap().to_owned();
    let slots = get(format!("{base}/v1/resources/{resource}/slots?type={kind}")).await;
    let start = slots["slots"][0]["start_utc"].as_str().unwrap().to_owned();
    let body =
        serde_json::json!({"resource_id": resource, "appointment_type_id": kind, "start": start});

    let book = |bearer: Option<String>| {
        let request = client
            .post(format!("{base}/v1/bookings"))
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body);
        let request = match bearer {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { request.send().await.unwrap() }
    };
    let anonymous = book(None).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );
    let booked = book(Some(token.to_owned())).await;
    assert_eq!(booked.status(), 201);
    let again = book(Some(token.to_owned())).await;
    assert_eq!(again.status(), 409);
    let _ = std::fs::remove_dir_all(&data);
}
