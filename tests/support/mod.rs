//! Test helpers shared by service integration tests: a throw-away
//! PostgreSQL database, a real SMTP sink (PyPI `aiosmtpd`), a real OpenID
//! Connect provider (npm `oauth2-mock-server`), a Twilio-shaped SMS sink and
//! a webhook receiver verifying with PyPI `standardwebhooks`.
//!
//! Include from an integration test with
//! `#[path = "../../../tests/support/mod.rs"] mod support;`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod db;
pub mod oidc;
pub mod python;
pub mod sms;
pub mod smtp;
pub mod webhooks;

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("tests/support/mod.rs").exists() {
        assert!(dir.pop(), "cannot find the repository root");
    }
    dir
}

/// A free TCP port on 127.0.0.1 (best effort: the port is released first).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not start listening on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The cache directory for helper installs (`~/.cache/berth/test-support`).
pub fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = home.join(".cache/berth/test-support");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
