//! What booking events do not carry: the resource's name and time zone and
//! the appointment type's name, from availability's public API
//! (`GET /v1/resources/{id}`, `GET /v1/appointment-types/{id}`): over HTTP
//! under `berth serve`, through availability's router in process under
//! `berth dev`. Answers are cached for a minute; a rename shows up after that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use http_body_util::BodyExt;
use serde::Deserialize;
use tower::ServiceExt;
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(5);

/// A resource as a message shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ResourceInfo {
    pub name: String,
    /// IANA zone (e.g. `Europe/Berlin`).
    pub time_zone: String,
    /// The staff account managing it (who may read its delivery log).
    #[serde(default)]
    pub owner_id: String,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

/// One `GET` of availability's public API: `Ok(None)` on 404.
#[async_trait]
pub trait Fetch: Send + Sync + 'static {
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, String>;
}

/// Availability over HTTP (`service.availability_url`), through the
/// runtime's client: timeout, retries of these safe GETs, and a circuit
/// breaker, all from the dependency's settings.
pub struct HttpFetch {
    base: String,
    client: berth_runtime::client::HttpClient,
}

impl HttpFetch {
    pub fn new(base: &str, dependency: Arc<berth_runtime::resilience::Dependency>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client: berth_runtime::client::http_client(dependency),
        }
    }
}

#[async_trait]
impl Fetch for HttpFetch {
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        let request = http::Request::get(format!("{}{path}", self.base))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| format!("availability unreachable: {e}"))?;
        let status = response.status();
        let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| "availability's answer took too long".to_owned())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        answer(status, body.to_vec())
    }
}

/// Availability's router in this process (`berth dev`).
pub struct RouterFetch {
    router: Router,
}

impl RouterFetch {
    pub fn new(router: Router) -> Self {
        Self { router }
    }
}

#[async_trait]
impl Fetch for RouterFetch {
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        let request = http::Request::get(path)
            .body(axum::body::Body::empty())
            .map_err(|e| e.to_string())?;
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        answer(status, body.to_vec())
    }
}

fn answer(status: http::StatusCode, body: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    match status {
        s if s.is_success() => Ok(Some(body)),
        http::StatusCode::NOT_FOUND => Ok(None),
        s => Err(format!("availability answered {s}")),
    }
}

type Cached<T> = quick_cache::sync::Cache<Uuid, (Instant, Option<T>)>;

/// Resource and appointment-type facts, cached.
#[derive(Clone)]
pub struct Directory {
    fetch: Arc<dyn Fetch>,
    resources: Arc<Cached<ResourceInfo>>,
    types: Arc<Cached<String>>,
}

impl Directory {
    pub fn new(fetch: Arc<dyn Fetch>) -> Self {
        Self {
            fetch,
            resources: Arc::new(quick_cache::sync::Cache::new(10_000)),
            types: Arc::new(quick_cache::sync::Cache::new(10_000)),
        }
    }

    /// `None`: the resource is gone (the message then says less).
    pub async fn resource(&self, id: Uuid) -> Result<Option<ResourceInfo>, String> {
        lookup(
            &self.resources,
            &*self.fetch,
            id,
            &format!("/v1/resources/{id}"),
            |b| serde_json::from_slice::<ResourceInfo>(b),
        )
        .await
    }

    pub async fn appointment_type(&self, id: Uuid) -> Result<Option<String>, String> {
        lookup(
            &self.types,
            &*self.fetch,
            id,
            &format!("/v1/appointment-types/{id}"),
            |b| serde_json::from_slice::<Named>(b).map(|n| n.name),
        )
        .await
    }
}

async fn lookup<T: Clone>(
    cache: &Cached<T>,
    fetch: &dyn Fetch,
    id: Uuid,
    path: &str,
    parse: impl Fn(&[u8]) -> Result<T, serde_json::Error>,
) -> Result<Option<T>, String> {
    if let Some((at, value)) = cache.get(&id)
        && at.elapsed() < TTL
    {
        return Ok(value);
    }
    let value = match fetch.get(path).await? {
        Some(body) => Some(parse(&body).map_err(|e| format!("{path}: {e}"))?),
        None => None,
    };
    cache.insert(id, (Instant::now(), value.clone()));
    Ok(value)
}
