//! Group commit: concurrent callers' items coalesced into one batch call.
//!
//! A [`Batcher`] hands every submitted item to one dispatcher task. The
//! dispatcher waits for a free run slot (at most `concurrency` batches run at
//! once), then takes everything queued so far (up to `max_batch`) and runs
//! it as one batch. An item never waits for company: when a slot is free it
//! runs at once, alone if need be; items only gather while every slot is
//! busy, so batches grow exactly as fast as the load does. This is how one
//! statement can carry the work of many concurrent requests.
//!
//! The batch function returns one outcome per item, in order. Items whose
//! submitter stopped waiting still run (a request whose client went away
//! still completes, as its idempotency record expects).

use std::future::Future;
use std::sync::Arc;
use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Why a submitted item got no outcome.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// The batch function panicked or returned too few outcomes, or the
    /// dispatcher is gone (runtime shutting down).
    #[error("the {0} batch did not produce an outcome for this item")]
    Lost(&'static str),
}

/// Items per batch, by batcher name; every service's `/metrics` shows it.
pub fn size_histogram() -> &'static HistogramVec {
    static SIZE: LazyLock<HistogramVec> = LazyLock::new(|| {
        // Invariant: constant, valid options (a name, help and buckets that
        // rise), so construction cannot fail.
        #[allow(clippy::expect_used)]
        HistogramVec::new(
            HistogramOpts::new("berth_batch_size", "Items per group-committed batch")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            &["batch"],
        )
        .expect("constant histogram options")
    });
    &SIZE
}

/// Seconds each batch took to run, by batcher name.
pub fn duration_histogram() -> &'static HistogramVec {
    static SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
        // Invariant: constant, valid options, so construction cannot fail.
        #[allow(clippy::expect_used)]
        HistogramVec::new(
            HistogramOpts::new(
                "berth_batch_duration_seconds",
                "Time to run one group-committed batch",
            )
            .buckets(prometheus::exponential_buckets(0.000_25, 2.0, 14).unwrap_or_default()),
            &["batch"],
        )
        .expect("constant histogram options")
    });
    &SECONDS
}

type Job<I, O> = (I, oneshot::Sender<O>);

/// Submits items to a shared dispatcher; cheap to clone.
pub struct Batcher<I, O> {
    name: &'static str,
    queue: mpsc::UnboundedSender<Job<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            queue: self.queue.clone(),
        }
    }
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("name", &self.name).finish()
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the dispatcher on the current Tokio runtime. `run` gets each
    /// batch (1 to `max_batch` items, in arrival order) and must return one
    /// outcome per item, in the same order. It stops when every handle is
    /// dropped.
    pub fn spawn<F, Fut>(name: &'static str, max_batch: usize, concurrency: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(
            name,
            jobs,
            max_batch.max(1),
            concurrency.max(1),
            Arc::new(run),
        ));
        Self { name, queue }
    }

    /// Queues `item` and waits for its outcome.
    pub async fn submit(&self, item: I) -> Result<O, BatchError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send((item, reply))
            .map_err(|_| BatchError::Lost(self.name))?;
        outcome.await.map_err(|_| BatchError::Lost(self.name))
    }
}

async fn dispatch<I, O, F, Fut>(
    name: &'static str,
    mut jobs: mpsc::UnboundedReceiver<Job<I, O>>,
    max_batch: usize,
    concurrency: usize,
    run: Arc<F>,
) where
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<O>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrency));
    let size = size_histogram().with_label_values(&[name]);
    let seconds = duration_histogram().with_label_values(&[name]);
    loop {
        // Wait for a run slot first: while none is free, items gather.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = jobs.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        size.observe(batch.len() as f64);
        let (run, seconds) = (run.clone(), seconds.clone());
        tokio::spawn(async move {
            let (items, replies): (Vec<I>, Vec<oneshot::Sender<O>>) = batch.into_iter().unzip();
            let timer = seconds.start_timer();
            let outcomes = run(items).await;
            timer.observe_duration();
            if outcomes.len() != replies.len() {
                tracing::error!(
                    batch = name,
                    items = replies.len(),
                    outcomes = outcomes.len(),
                    "batch returned the wrong number of outcomes"
                );
            }
            // A reply whose submitter stopped waiting is simply dropped.
            for (outcome, reply) in outcomes.into_iter().zip(replies) {
                let _ = reply.send(outcome);
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_lone_item_runs_at_once_and_gets_its_outcome() {
        let batcher = Batcher::spawn("test_lone", 8, 1, |items: Vec<u32>| async move {
            items.into_iter().map(|i| i * 2).collect::<Vec<_>>()
        });
        let started = std::time::Instant::now();
        assert_eq!(batcher.submit(21).await, Ok(42));
        assert!(started.elapsed() < Duration::from_millis(200));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn items_gather_while_the_slots_are_busy_and_keep_their_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let batcher = Batcher::spawn("test_gather", 64, 1, move |items: Vec<u32>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(items.clone());
                tokio::time::sleep(Duration::from_millis(50)).await;
                items.into_iter().map(|i| i + 1000).collect::<Vec<_>>()
            }
        });
        // The first item occupies the only slot; the next 20 arrive meanwhile.
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.submit(0).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let rest: Vec<_> = (1..=20)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.submit(i).await) })
            })
            .collect();
        assert_eq!(first.await.unwrap(), Ok(1000));
        for task in rest {
            let (i, outcome) = task.await.unwrap();
            assert_eq!(outcome, Ok(i + 1000));
        }
        let batches = seen.lock().unwrap().clone();
        assert_eq!(batches[0], vec![0]);
        assert_eq!(
            batches.len(),
            2,
            "the 20 waiting items form one batch: {batches:?}"
        );
        let mut second = batches[1].clone();
        second.sort_unstable();
        assert_eq!(second, (1..=20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn batches_never_exceed_the_maximum() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let batcher = Batcher::spawn("test_max", 3, 1, move |items: Vec<u32>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(items.len());
                tokio::time::sleep(Duration::from_millis(5)).await;
                items
            }
        });
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(i).await })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), Ok(i as u32));
        }
        assert!(seen.lock().unwrap().iter().all(|n| *n <= 3));
    }

    #[tokio::test]
    async fn a_panicking_or_short_batch_reports_lost_items() {
        let panicking = Batcher::spawn("test_panic", 4, 1, |_items: Vec<u32>| async move {
            panic!("batch failure");
            #[allow(unreachable_code)]
            Vec::<u32>::new()
        });
        assert_eq!(
            panicking.submit(1).await,
            Err(BatchError::Lost("test_panic"))
        );
        // The dispatcher survives a panicking batch.
        assert_eq!(
            panicking.submit(2).await,
            Err(BatchError::Lost("test_panic"))
        );
        let short = Batcher::spawn("test_short", 4, 1, |_items: Vec<u32>| async move {
            Vec::<u32>::new()
        });
        assert_eq!(short.submit(1).await, Err(BatchError::Lost("test_short")));
    }
}
