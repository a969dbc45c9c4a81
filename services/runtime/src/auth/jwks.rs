//! Where verification keys come from: an in-process keyset or a JWKS
//! fetched over HTTP and cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Mutex;

use super::AuthError;

/// A keyset shared in-process; the issuer swaps it on key rotation.
#[derive(Clone)]
pub struct SharedJwks(Arc<ArcSwap<JwkSet>>);

impl SharedJwks {
    pub fn new(keys: JwkSet) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(keys)))
    }

    pub fn get(&self) -> Arc<JwkSet> {
        self.0.load_full()
    }

    pub fn set(&self, keys: JwkSet) {
        self.0.store(Arc::new(keys));
    }
}

impl std::fmt::Debug for SharedJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedJwks")
            .field("keys", &self.get().keys.len())
            .finish()
    }
}

/// Settings of a JWKS fetched over HTTP.
#[derive(Debug, Clone)]
pub struct RemoteJwksOptions {
    /// Keys older than this are refetched before use.
    pub max_age: Duration,
    /// Minimum time between two fetches (also when a `kid` is unknown), so
    /// tokens with random key ids cannot hammer the issuer.
    pub min_refetch: Duration,
    pub timeout: Duration,
}

impl Default for RemoteJwksOptions {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(600),
            min_refetch: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

pub(super) struct RemoteJwks {
    pub(super) url: String,
    pub(super) client: reqwest::Client,
    pub(super) options: RemoteJwksOptions,
    pub(super) keys: ArcSwap<JwkSet>,
    /// Time of the last fetch attempt; the lock also serialises fetches.
    pub(super) last_fetch: Mutex<Option<Instant>>,
    pub(super) fetched_at: ArcSwap<Option<Instant>>,
}

impl RemoteJwks {
    /// Fetches the keyset unless one was fetched less than `min_refetch` ago.
    pub(super) async fn refresh(&self, force: bool) -> Result<(), AuthError> {
        let mut last = self.last_fetch.lock().await;
        if let Some(at) = *last {
            let fresh = at.elapsed() < self.options.min_refetch;
            if fresh || (!force && at.elapsed() < self.options.max_age) {
                return Ok(());
            }
        }
        *last = Some(Instant::now());
        let fetched = async {
            self.client
                .get(&self.url)
                .timeout(self.options.timeout)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        }
        .await;
        match fetched {
            Ok(keys) => {
                self.keys.store(Arc::new(keys));
                self.fetched_at.store(Arc::new(Some(Instant::now())));
                Ok(())
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "cannot fetch JWKS");
                if self.fetched_at.load().is_some() {
                    Ok(())
                } else {
                    Err(AuthError::KeysUnavailable)
                }
            }
        }
    }
}
