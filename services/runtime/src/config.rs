//! Configuration from an optional TOML file and `BERTH_*` environment variables.
//!
//! Precedence: defaults < file < environment. Nested keys use `__` in the
//! environment (`BERTH_SHUTDOWN__DRAIN_TIMEOUT=20s`). Everything is validated at
//! start-up so a pod with bad settings fails immediately, naming the setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::resilience::DependencySettings;

/// Environment variable naming the optional config file.
pub const CONFIG_FILE_ENV: &str = "BERTH_CONFIG";

/// `BERTH_*` variables that belong to tools (the config file name, the local
/// stack, `berth dev` flags), not to service settings. Every other `BERTH_*`
/// variable must be a known setting, so typos fail at start-up.
const TOOLING_ENV: &[&str] = &["CONFIG", "STACK_DIR", "CLUSTER", "DEV_ADDR", "DEV_DATA"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration: setting `{setting}` {problem}")]
    Invalid { setting: String, problem: String },
    #[error("configuration file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    pub(crate) fn invalid(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// ECS JSON when stdout is not a terminal, readable text when it is.
    #[default]
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Time between turning unready and closing the listener, so load
    /// balancers stop routing here first.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// Longest time in-flight requests get to finish after the listener closes.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub log_format: LogFormat,
    /// `tracing` filter directives, e.g. `info,berth_booking=debug`.
    pub log: String,
    pub max_body_bytes: usize,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub shutdown: ShutdownConfig,
    /// Per-downstream resilience settings; re-read from the file at run time.
    pub dependencies: BTreeMap<String, DependencySettings>,
    /// Service-specific settings, validated by each service.
    pub service: toml::Table,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            log_format: LogFormat::Auto,
            log: "info".to_owned(),
            max_body_bytes: 64 * 1024,
            database_url: None,
            redis_url: None,
            shutdown: ShutdownConfig::default(),
            dependencies: BTreeMap::new(),
            service: toml::Table::new(),
        }
    }
}

impl RuntimeConfig {
    /// Loads from `BERTH_CONFIG` (if set) and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from);
        Self::load_from(file.as_deref(), Env::prefixed("BERTH_").split("__"))
    }

    /// Loads with an explicit file and environment provider (tests use this).
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        if let Some(path) = file {
            // A named file that is missing is an error, not a silent default.
            std::fs::metadata(path).map_err(|source| ConfigError::File {
                path: path.to_owned(),
                source,
            })?;
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = env.ignore(TOOLING_ENV);
        let config: Self = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(&e)))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                "max_body_bytes",
                "must be greater than 0",
            ));
        }
        if self.shutdown.drain_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "shutdown.drain_timeout",
                "must be greater than 0 (e.g. \"20s\")",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| ConfigError::invalid("log", format!("is not a valid filter: {e}")))?;
        for (name, settings) in &self.dependencies {
            settings.validate().map_err(|problem| {
                ConfigError::invalid(format!("dependencies.{name}.{}", problem.0), problem.1)
            })?;
        }
        Ok(())
    }
}

/// Figment's own message already names the key and its source; we only make
/// sure every error in a chain is reported.
fn describe_figment_error(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| {
                    let mut s = m.name.to_string();
                    if let Some(src) = &m.source {
                        s.push_str(&format!(" ({src})"));
                    }
                    s
                })
                .unwrap_or_default();
            if key.is_empty() {
                format!("{} [{source}]", e.kind)
            } else {
                format!("setting `{key}`: {} [{source}]", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A provider that matches nothing, so tests never see the real environment.
    fn no_env() -> Env {
        Env::prefixed("BERTH_TEST_NEVER_SET_").split("__")
    }

    #[test]
    fn defaults_are_valid() {
        let c = RuntimeConfig::load_from(None, no_env()).unwrap();
        assert_eq!(c.http_addr.port(), 8080);
        assert_eq!(c.shutdown.drain_timeout, Duration::from_secs(20));
    }

    #[test]
    fn file_values_apply_and_bad_values_name_the_setting() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "http_addr = \"127.0.0.1:7000\"\n[shutdown]\ndrain_timeout = \"5s\""
        )
        .unwrap();
        let c = RuntimeConfig::load_from(Some(f.path()), no_env()).unwrap();
        assert_eq!(c.http_addr.port(), 7000);
        assert_eq!(c.shutdown.drain_timeout, Duration::from_secs(5));

        let mut bad = tempfile::NamedTempFile::new().unwrap();
        writeln!(bad, "http_addr = \"not an address\"").unwrap();
        let err = RuntimeConfig::load_from(Some(bad.path()), no_env()).unwrap_err();
        assert!(err.to_string().contains("http_addr"), "{err}");

        let mut zero = tempfile::NamedTempFile::new().unwrap();
        writeln!(zero, "[shutdown]\ndrain_timeout = \"0s\"").unwrap();
        let err = RuntimeConfig::load_from(Some(zero.path()), no_env()).unwrap_err();
        assert!(err.to_string().contains("shutdown.drain_timeout"), "{err}");

        let mut unknown = tempfile::NamedTempFile::new().unwrap();
        writeln!(unknown, "htp_addr = \"127.0.0.1:1\"").unwrap();
        let err = RuntimeConfig::load_from(Some(unknown.path()), no_env()).unwrap_err();
        assert!(err.to_string().contains("htp_addr"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn environment_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "http_addr = \"127.0.0.1:7000\"")?;
            jail.set_env("BERTH_HTTP_ADDR", "127.0.0.1:7001");
            jail.set_env("BERTH_SHUTDOWN__DRAIN_TIMEOUT", "3s");
            let c = RuntimeConfig::load_from(
                Some(Path::new("c.toml")),
                Env::prefixed("BERTH_").split("__"),
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(c.http_addr.port(), 7001);
            assert_eq!(c.shutdown.drain_timeout, Duration::from_secs(3));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn tooling_variables_are_not_settings_but_typos_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BERTH_STACK_DIR", "/tmp/stack");
            jail.set_env("BERTH_DEV_ADDR", "127.0.0.1:1");
            RuntimeConfig::load_from(None, Env::prefixed("BERTH_").split("__"))
                .map_err(|e| e.to_string())?;
            jail.set_env("BERTH_HTP_ADDR", "127.0.0.1:1");
            let err =
                RuntimeConfig::load_from(None, Env::prefixed("BERTH_").split("__")).unwrap_err();
            assert!(err.to_string().contains("htp_addr"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = RuntimeConfig::load_from(Some(Path::new("/nonexistent/berth.toml")), no_env())
            .unwrap_err();
        assert!(matches!(err, ConfigError::File { .. }));
    }

    #[test]
    fn invalid_dependency_settings_name_the_dependency() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "[dependencies.availability.breaker]\nfailure_rate_threshold = 1.5"
        )
        .unwrap();
        let err = RuntimeConfig::load_from(Some(f.path()), no_env()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("dependencies.availability.breaker.failure_rate_threshold"),
            "{msg}"
        );
    }
}
