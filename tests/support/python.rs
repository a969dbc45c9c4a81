//! Python helpers for tests, each in its own cached virtualenv under
//! `~/.cache/berth/<name>`, made once and reused (idempotent: an existing
//! venv whose module imports is left as it is). The SMTP sink's
//! `smtp-venv` (see `smtp.rs`) is made the same way.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

static INSTALL: Mutex<()> = Mutex::new(());

/// `~/.cache/berth/<name>/bin/python`, with `requirement` installed
/// (checked by importing `module`).
pub fn venv_python(name: &str, requirement: &str, module: &str) -> PathBuf {
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let venv = home.join(".cache/berth").join(name);
    let python = venv.join("bin/python");
    let imports = || {
        python.exists()
            && Command::new(&python)
                .args(["-c", &format!("import {module}")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    };
    if !imports() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for the test helpers");
        assert!(status.success(), "cannot create {}", venv.display());
        let status = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", requirement])
            .status()
            .expect("pip");
        assert!(status.success(), "cannot install {requirement}");
        assert!(imports(), "{module} does not import after installing");
    }
    python
}
