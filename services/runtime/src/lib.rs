//! Shared service runtime, written once and used by every Berth service:
//! configuration, ECS logs with trace ids, Prometheus metrics, health,
//! graceful shutdown, outbound resilience, problem+json errors, gRPC plumbing,
//! PostgreSQL pool settings, Redis stream appends, the egress (SSRF) guard.

pub mod any_db;
pub mod auth;
pub mod batch;
pub mod client;
pub mod config;
pub mod egress;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod phone;
pub mod postgres;
pub mod problem;
pub mod replicas;
pub mod resilience;
pub mod server;
pub mod stream;
pub mod telemetry;
pub mod trace;

pub use config::{ConfigError, LogFormat, RuntimeConfig};
pub use health::Health;
pub use metrics::Metrics;
pub use problem::{Json, Path, Problem, Query};
pub use server::{Runtime, RuntimeError};
