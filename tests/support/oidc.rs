//! A real OpenID Connect provider for tests: npm `oauth2-mock-server`,
//! started by `tests/support/oidc/start.mjs` (installed with `npm ci` on
//! first use; `node_modules` is cached in place).
//!
//! ```sh
//! (cd tests/support/oidc && npm ci)
//! OIDC_EMAIL=someone@example.test node tests/support/oidc/start.mjs
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

pub struct OidcProvider {
    pub issuer: String,
    child: Child,
}

static INSTALL: Mutex<()> = Mutex::new(());

impl OidcProvider {
    /// Starts a provider whose tokens carry `email` (verified or not).
    pub fn start(email: &str, email_verified: bool) -> Self {
        let dir = super::repo_root().join("tests/support/oidc");
        {
            let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
            if !dir.join("node_modules/oauth2-mock-server").exists() {
                let status = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&dir)
                    .status()
                    .expect("npm is needed for the OIDC provider");
                assert!(status.success(), "npm ci failed in {}", dir.display());
            }
        }
        let mut child = Command::new("node")
            .arg("start.mjs")
            .current_dir(&dir)
            .env("OIDC_PORT", "0")
            .env("OIDC_EMAIL", email)
            .env(
                "OIDC_EMAIL_VERIFIED",
                if email_verified { "true" } else { "false" },
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("node is needed for the OIDC provider");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let issuer = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("OIDC_ISSUER=") {
                        break url.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!("the OIDC provider exited before printing its issuer");
                }
            }
        };
        Self { issuer, child }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
