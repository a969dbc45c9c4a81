//! A real SMTP server for tests: PyPI `aiosmtpd` writing every message to a
//! Maildir. Installed once into a cached virtualenv:
//!
//! ```sh
//! python3 -m venv ~/.cache/berth/smtp-venv
//! ~/.cache/berth/smtp-venv/bin/pip install aiosmtpd==1.4.6
//! ~/.cache/berth/smtp-venv/bin/python -m aiosmtpd -n -l 127.0.0.1:2525 \
//!     -c aiosmtpd.handlers.Mailbox /tmp/maildir
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

pub struct SmtpSink {
    pub port: u16,
    pub maildir: PathBuf,
    child: Child,
}

static INSTALL: Mutex<()> = Mutex::new(());

fn venv() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache/berth/smtp-venv")
}

fn python() -> PathBuf {
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let venv = venv();
    let python = venv.join("bin/python");
    let installed = python.exists()
        && Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !installed {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for the SMTP sink");
        assert!(status.success(), "cannot create {}", venv.display());
        let status = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "aiosmtpd==1.4.6"])
            .status()
            .expect("pip");
        assert!(status.success(), "cannot install aiosmtpd");
    }
    python
}

impl SmtpSink {
    pub fn start() -> Self {
        Self::start_on(super::free_port())
    }

    /// On a given port: a test that first has senders fail against the
    /// port (nothing listening) and then brings the server up.
    pub fn start_on(port: u16) -> Self {
        let python = python();
        let maildir =
            std::env::temp_dir().join(format!("berth-maildir-{}", uuid::Uuid::new_v4().simple()));
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start aiosmtpd");
        super::wait_for_port(port, "aiosmtpd");
        Self {
            port,
            maildir,
            child,
        }
    }

    /// Raw RFC 5322 messages received so far (oldest first).
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = ["new", "cur"]
            .iter()
            .flat_map(|d| read_dir(&self.maildir.join(d)))
            .collect();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
            .into_iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// Waits (up to 20 s) for the `n`th message (1-based) and returns all
    /// so far. Reminder tests wait here for messages due ~11 s after setup.
    pub async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..200 {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "expected {n} message(s) in the SMTP sink, got {}",
            self.messages().len()
        );
    }
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

/// The decoded text body of a raw message (handles quoted-printable soft
/// line breaks, which lettre uses for long lines).
pub fn body(raw: &str) -> String {
    let (_, body) = raw
        .split_once("\r\n\r\n")
        .or_else(|| raw.split_once("\n\n"))
        .unwrap_or(("", raw));
    // Undo quoted-printable soft line breaks and `=3D` only when the
    // transport chose that encoding (in any part): in plain text a token that begins
    // with `3D` would lose it (`token=3Dab…` read as `token=ab…`).
    if !raw
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: quoted-printable")
    {
        return body.to_owned();
    }
    body.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

/// Extracts `token=<value>` from a message body.
pub fn token_from(raw: &str) -> String {
    let body = body(raw);
    let start = body.find("token=").expect("no token in the message") + "token=".len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}
