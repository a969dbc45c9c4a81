//! Reading a Redis stream in a consumer group, shared by every service that
//! consumes another's events.
//!
//! Replicas share the work (one group, one consumer name per process). An
//! entry is acknowledged only once its handler says it is done; a failed
//! one stays pending and is retried with backoff, and entries left pending
//! by a consumer that died are claimed after `claim_idle`. Redis outages are
//! retried with backoff; the consumer never gives up, and after every
//! (re)connect it first re-reads the entries pending on its own name (Redis
//! may have delivered them on the connection that was lost). The group is
//! created from the stream's start, so events published before the service
//! first ran are not missed. Handlers must be idempotent: delivery is
//! at-least-once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::REDIS_TIMEOUT;

const BATCH: usize = 50;
/// How long one XREADGROUP waits for new entries.
const BLOCK: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const CLAIM_EVERY: Duration = Duration::from_secs(60);

/// What a handler made of one entry.
#[derive(Debug)]
pub enum Handled {
    /// Handled (or deliberately skipped): acknowledge it.
    Done,
    /// Not this time (e.g. the database is down): keep it pending, retry.
    Retry(String),
}

type HandlerFuture = Pin<Box<dyn Future<Output = Handled> + Send>>;
type Handler = Arc<dyn Fn(StreamId) -> HandlerFuture + Send + Sync>;

/// A consumer of one stream in one group.
pub struct GroupConsumer {
    client: redis::Client,
    stream: String,
    group: String,
    /// Unique per process, so each replica owns its pending entries.
    name: String,
    /// An entry pending this long belongs to a consumer that died.
    claim_idle: Duration,
    handler: Handler,
    /// Dropped after any Redis error; the next pass reconnects.
    connection: Option<MultiplexedConnection>,
    /// When our failed (still pending) entries are retried next.
    retry_pending_at: Option<Instant>,
    handler_backoff: Duration,
    next_claim: Instant,
}

impl GroupConsumer {
    pub fn new<F, Fut>(
        client: redis::Client,
        stream: impl Into<String>,
        group: impl Into<String>,
        claim_idle: Duration,
        handler: F,
    ) -> Self
    where
        F: Fn(StreamId) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Handled> + Send + 'static,
    {
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        Self {
            client,
            stream: stream.into(),
            group: group.into(),
            name: format!("{host}-{}", uuid_like()),
            claim_idle,
            handler: Arc::new(move |entry| Box::pin(handler(entry))),
            connection: None,
            retry_pending_at: None,
            handler_backoff: BACKOFF_MIN,
            next_claim: Instant::now(),
        }
    }

    /// Consumes until `stop`.
    pub fn spawn(self, stop: CancellationToken) {
        tokio::spawn(self.run(stop));
    }

    async fn run(mut self, stop: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        while !stop.is_cancelled() {
            match self.pass(&stop).await {
                Ok(()) => backoff = BACKOFF_MIN,
                Err(error) => {
                    tracing::warn!(%error, group = %self.group, "stream consumer: Redis failed; will retry");
                    self.connection = None;
                    if !pause(&stop, backoff).await {
                        break;
                    }
                    backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, String> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        let mut connection = timed(
            "connect",
            REDIS_TIMEOUT,
            self.client.get_multiplexed_async_connection(),
        )
        .await?;
        let created: redis::RedisResult<()> = match tokio::time::timeout(
            REDIS_TIMEOUT,
            connection.xgroup_create_mkstream(&self.stream, &self.group, "0"),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => return Err("XGROUP CREATE: Redis did not answer in time".into()),
        };
        match created {
            Ok(()) => {}
            Err(error) if error.code() == Some("BUSYGROUP") => {}
            Err(error) => return Err(format!("XGROUP CREATE: {error}")),
        }
        self.connection = Some(connection.clone());
        // Entries delivered on a lost connection (or before a restart) are
        // pending on our name and `>` will not return them: read those first.
        self.retry_pending_at = Some(Instant::now());
        Ok(connection)
    }

    async fn pass(&mut self, stop: &CancellationToken) -> Result<(), String> {
        let mut connection = self.connection().await?;
        if self.retry_pending_at.is_some_and(|at| Instant::now() >= at) {
            self.retry_pending(&mut connection, stop).await?;
        }
        if Instant::now() >= self.next_claim {
            self.claim_abandoned(&mut connection, stop).await?;
            self.next_claim = Instant::now() + CLAIM_EVERY;
        }
        let options = StreamReadOptions::default()
            .group(&self.group, &self.name)
            .count(BATCH)
            .block(usize::try_from(BLOCK.as_millis()).unwrap_or(1000));
        let keys = [&self.stream];
        let read =
            connection.xread_options::<_, _, Option<StreamReadReply>>(&keys, &[">"], &options);
        let reply = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            reply = timed("XREADGROUP", BLOCK + REDIS_TIMEOUT, read) => reply?,
        };
        let entries = entries(reply);
        self.handle(&mut connection, entries, stop).await
    }

    /// Re-reads our own pending entries (those whose handling failed).
    async fn retry_pending(
        &mut self,
        connection: &mut MultiplexedConnection,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        self.retry_pending_at = None;
        let options = StreamReadOptions::default()
            .group(&self.group, &self.name)
            .count(BATCH);
        let mut after = "0".to_owned();
        loop {
            let reply = timed(
                "XREADGROUP pending",
                REDIS_TIMEOUT,
                connection.xread_options::<_, _, Option<StreamReadReply>>(
                    &[&self.stream],
                    &[&after],
                    &options,
                ),
            )
            .await?;
            let entries = entries(reply);
            let Some(last) = entries.last() else {
                return Ok(());
            };
            after = last.id.clone();
            self.handle(connection, entries, stop).await?;
        }
    }

    /// Takes over entries another consumer left pending too long (it died).
    async fn claim_abandoned(
        &mut self,
        connection: &mut MultiplexedConnection,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let idle = usize::try_from(self.claim_idle.as_millis()).unwrap_or(usize::MAX);
        let mut start = "0-0".to_owned();
        loop {
            let reply: StreamAutoClaimReply = timed(
                "XAUTOCLAIM",
                REDIS_TIMEOUT,
                connection.xautoclaim_options(
                    &self.stream,
                    &self.group,
                    &self.name,
                    idle,
                    &start,
                    StreamAutoClaimOptions::default().count(BATCH),
                ),
            )
            .await?;
            self.handle(connection, reply.claimed, stop).await?;
            if reply.next_stream_id == "0-0" {
                return Ok(());
            }
            start = reply.next_stream_id;
        }
    }

    /// Handles entries in order and acknowledges the ones that are done. A
    /// failed one stays pending and is retried after a growing delay.
    async fn handle(
        &mut self,
        connection: &mut MultiplexedConnection,
        entries: Vec<StreamId>,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let mut done = Vec::with_capacity(entries.len());
        let mut failed = false;
        for entry in entries {
            let id = entry.id.clone();
            match (self.handler)(entry).await {
                Handled::Done => done.push(id),
                Handled::Retry(error) => {
                    tracing::warn!(entry = %id, group = %self.group, %error, "handling a stream entry failed; will retry");
                    failed = true;
                }
            }
        }
        if !done.is_empty() {
            timed(
                "XACK",
                REDIS_TIMEOUT,
                connection.xack::<_, _, _, ()>(&self.stream, &self.group, &done),
            )
            .await?;
        }
        if failed {
            let delay = self.handler_backoff;
            self.retry_pending_at = Some(Instant::now() + delay);
            self.handler_backoff = delay.saturating_mul(2).min(BACKOFF_MAX);
            // Most failures are the database being down: do not race through
            // new entries meanwhile.
            pause(stop, delay).await;
        } else if self.retry_pending_at.is_none() {
            self.handler_backoff = BACKOFF_MIN;
        }
        Ok(())
    }
}

/// A process-unique suffix for the consumer name.
fn uuid_like() -> String {
    format!("{:016x}{:08x}", rand::random::<u64>(), std::process::id())
}

async fn timed<T>(
    what: &str,
    limit: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| format!("{what}: Redis did not answer in time"))?
        .map_err(|e| format!("{what}: {e}"))
}

/// Sleeps `every` unless stopped first; returns false once stopped.
async fn pause(stop: &CancellationToken, every: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(every) => true,
    }
}

fn entries(reply: Option<StreamReadReply>) -> Vec<StreamId> {
    reply
        .map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect())
        .unwrap_or_default()
}
