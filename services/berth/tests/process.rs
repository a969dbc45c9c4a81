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
            .args(["serve", "notification"])
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
    assert_eq!(doc["service.name"], "notification");
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
