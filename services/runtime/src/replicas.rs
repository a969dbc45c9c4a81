//! The replicas behind a gRPC dependency, found by DNS, so a client can
//! choose one per call.
//!
//! Through a ClusterIP Service, kube-proxy pins each HTTP/2 connection to
//! one pod: a client with one channel talks to one replica for its whole
//! life, and replicas added by the autoscaler get nothing from it. A
//! headless Service instead resolves to every ready pod; [`Replicas`] keeps
//! one lazily connected channel per address, re-resolves periodically, and
//! [`Replicas::pick`] chooses by rendezvous hashing, so calls about one key
//! (a resource) keep going to the same replica while the set is unchanged,
//! and only the keys of an added or removed replica move.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use tonic::transport::Endpoint;

use crate::grpc::{GrpcChannel, grpc_channel};
use crate::resilience::Dependencies;

/// How often the addresses are resolved again: about a Kubernetes DNS
/// record's lifetime, so a new pod gets traffic within seconds.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ReplicasError {
    #[error("{0:?} is not an http://host:port address: {1}")]
    Address(String, String),
}

/// One reachable replica.
#[derive(Clone)]
struct Replica {
    addr: SocketAddr,
    channel: GrpcChannel,
}

/// Where addresses come from: DNS, or a fixed answer in tests.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>>;
}

/// The system resolver (in Kubernetes: cluster DNS).
pub struct Dns;

impl Resolve for Dns {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// An address as configured: resolved again on every refresh.
#[derive(Clone, Debug)]
struct Target {
    host: String,
    port: u16,
}

pub struct Replicas {
    targets: Vec<Target>,
    /// Each replica gets its own breaker and retry budget under `name`.
    dependencies: Arc<Dependencies>,
    name: String,
    resolver: Arc<dyn Resolve>,
    /// A resolve asked for by [`Replicas::refresh_soon`] is under way.
    refreshing: AtomicBool,
    /// Sorted by address; empty until a resolution succeeded.
    current: ArcSwap<Vec<Replica>>,
    /// Used while nothing resolved: the first configured URL, connected
    /// lazily, so a DNS hiccup at start-up behaves like a plain channel.
    fallback: GrpcChannel,
}

impl Replicas {
    /// Resolves `endpoints` (comma-separated `http://host:port`) now and
    /// then every [`REFRESH_EVERY`] while the returned handle is alive.
    pub async fn start(
        endpoints: &str,
        dependencies: Arc<Dependencies>,
        name: &str,
    ) -> Result<Arc<Self>, ReplicasError> {
        Self::start_with(endpoints, dependencies, name, Arc::new(Dns)).await
    }

    /// [`Replicas::start`] with another resolver.
    pub async fn start_with(
        endpoints: &str,
        dependencies: Arc<Dependencies>,
        name: &str,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Arc<Self>, ReplicasError> {
        let urls: Vec<&str> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let Some(first) = urls.first() else {
            return Err(ReplicasError::Address(
                endpoints.to_owned(),
                "no address given".to_owned(),
            ));
        };
        let targets = urls
            .iter()
            .map(|u| parse_target(u))
            .collect::<Result<Vec<_>, _>>()?;
        let fallback = Endpoint::from_shared((*first).to_owned())
            .map_err(|e| ReplicasError::Address((*first).to_owned(), e.to_string()))?
            .connect_lazy();
        let replicas = Arc::new(Self {
            targets,
            fallback: grpc_channel(fallback, dependencies.get(name)),
            dependencies,
            name: name.to_owned(),
            resolver,
            refreshing: AtomicBool::new(false),
            current: ArcSwap::from_pointee(Vec::new()),
        });
        replicas.refresh().await;
        tokio::spawn(keep_resolving(Arc::downgrade(&replicas)));
        Ok(replicas)
    }

    /// Addresses currently in use.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.current.load().iter().map(|r| r.addr).collect()
    }

    /// The `rank`-th replica for calls about `key` (0: the one with the
    /// highest rendezvous weight, 1: where its keys go when it fails) and
    /// its channel. While nothing has resolved, rank 0 is the fallback
    /// channel (no address); `None` when there is no such replica.
    pub fn pick(&self, key: &[u8], rank: usize) -> Option<(Option<SocketAddr>, GrpcChannel)> {
        let current = self.current.load();
        if current.is_empty() {
            return (rank == 0).then(|| (None, self.fallback.clone()));
        }
        let weight = |r: &&Replica| rendezvous_weight(key, &r.addr);
        let chosen = if rank == 0 {
            // Every call: no allocation, no sort.
            current.iter().max_by_key(weight)
        } else {
            let mut ranked: Vec<&Replica> = current.iter().collect();
            ranked.sort_unstable_by_key(|r| std::cmp::Reverse(weight(r)));
            ranked.get(rank).copied()
        };
        chosen.map(|r| (Some(r.addr), r.channel.clone()))
    }

    /// Resolves again now, in the background, unless such a resolve is
    /// already under way (and then at most once a second): for callers that
    /// could not reach a replica, so one that left DNS is dropped without
    /// waiting for the next period.
    pub fn refresh_soon(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let replicas = self.clone();
        tokio::spawn(async move {
            replicas.refresh().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            replicas.refreshing.store(false, Ordering::Release);
        });
    }

    /// Resolves every target again; keeps the channels of addresses that
    /// stay (their connections survive) and the old set if DNS fails.
    async fn refresh(&self) {
        let mut addrs = Vec::new();
        for target in &self.targets {
            match self.resolver.resolve(&target.host, target.port).await {
                Ok(found) => addrs.extend(found),
                Err(error) => {
                    tracing::warn!(host = %target.host, %error, "resolving replicas failed; keeping the last set");
                    return;
                }
            }
        }
        let addrs = one_family(addrs);
        let old = self.current.load();
        if old.iter().map(|r| r.addr).eq(addrs.iter().copied()) {
            return;
        }
        let next: Vec<Replica> = addrs
            .into_iter()
            .filter_map(|addr| match old.iter().find(|r| r.addr == addr) {
                Some(kept) => Some(kept.clone()),
                None => Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|error| tracing::warn!(%addr, %error, "unusable replica address"))
                    .ok()
                    .map(|endpoint| Replica {
                        addr,
                        channel: grpc_channel(
                            endpoint.connect_lazy(),
                            self.dependencies.replica(&self.name, &addr.to_string()),
                        ),
                    }),
            })
            .collect();
        for gone in old
            .iter()
            .filter(|r| !next.iter().any(|n| n.addr == r.addr))
        {
            self.dependencies
                .forget_replica(&self.name, &gone.addr.to_string());
        }
        tracing::info!(replicas = ?next.iter().map(|r| r.addr).collect::<Vec<_>>(), "replica set changed");
        self.current.store(Arc::new(next));
    }
}

async fn keep_resolving(replicas: Weak<Replicas>) {
    loop {
        tokio::time::sleep(REFRESH_EVERY).await;
        let Some(replicas) = replicas.upgrade() else {
            return;
        };
        replicas.refresh().await;
    }
}

/// One address per replica: a dual-stack name (`localhost`, a headless
/// Service in a dual-stack cluster) answers each replica's IPv4 and IPv6
/// address, and the services listen on IPv4 by default, so IPv4 wins when
/// there is any. Sorted and without duplicates.
fn one_family(mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    if addrs.iter().any(SocketAddr::is_ipv4) {
        addrs.retain(SocketAddr::is_ipv4);
    }
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

fn parse_target(url: &str) -> Result<Target, ReplicasError> {
    let invalid = |why: &str| ReplicasError::Address(url.to_owned(), why.to_owned());
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid("the scheme must be http"));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("no host"))?;
    let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
    Ok(Target {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    })
}

/// FNV-1a over the key and the address, then a 64-bit finaliser: stable
/// across processes and builds (every client must agree), unlike std's
/// randomly keyed hasher.
fn rendezvous_weight(key: &[u8], addr: &SocketAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(key);
    match addr {
        SocketAddr::V4(a) => feed(&a.ip().octets()),
        SocketAddr::V6(a) => feed(&a.ip().octets()),
    }
    feed(&addr.port().to_be_bytes());
    // splitmix64's finaliser spreads FNV's weak low bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn choose(key: &[u8], addrs: &[SocketAddr]) -> SocketAddr {
        *addrs
            .iter()
            .max_by_key(|a| rendezvous_weight(key, a))
            .unwrap()
    }

    #[test]
    fn keys_spread_and_only_a_removed_replicas_keys_move() {
        let three = [
            addr("10.0.0.1:9090"),
            addr("10.0.0.2:9090"),
            addr("10.0.0.3:9090"),
        ];
        let keys: Vec<[u8; 16]> = (0u128..3000).map(|k| k.to_be_bytes()).collect();
        let before: Vec<SocketAddr> = keys.iter().map(|k| choose(k, &three)).collect();
        for a in &three {
            let share = before.iter().filter(|b| *b == a).count();
            assert!((800..=1200).contains(&share), "{a} got {share} of 3000");
        }
        let two = [three[0], three[2]];
        for (k, was) in keys.iter().zip(&before) {
            let now = choose(k, &two);
            if *was != three[1] {
                assert_eq!(now, *was, "a key of a remaining replica moved");
            }
        }
    }

    #[test]
    fn a_dual_stack_answer_counts_each_replica_once() {
        let answer = vec![
            addr("[::1]:9090"),
            addr("127.0.0.1:9090"),
            addr("127.0.0.1:9090"),
        ];
        assert_eq!(one_family(answer), vec![addr("127.0.0.1:9090")]);
        let v6 = vec![addr("[fd00::2]:9090"), addr("[fd00::1]:9090")];
        assert_eq!(
            one_family(v6),
            vec![addr("[fd00::1]:9090"), addr("[fd00::2]:9090")]
        );
    }

    #[tokio::test]
    async fn localhost_resolves_to_one_replica() {
        let rt = crate::Runtime::new("replicas-test", crate::RuntimeConfig::default()).unwrap();
        let replicas = Replicas::start("http://localhost:9", rt.dependencies.clone(), "peer")
            .await
            .unwrap();
        assert_eq!(replicas.addrs(), vec![addr("127.0.0.1:9")]);
    }

    /// Answers whatever the test sets, counting the questions.
    #[derive(Default)]
    struct Fixed {
        answer: std::sync::Mutex<Vec<SocketAddr>>,
        asked: std::sync::atomic::AtomicUsize,
    }

    impl Resolve for Fixed {
        fn resolve<'a>(&'a self, _: &'a str, _: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let answer = self.answer.lock().unwrap().clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    #[tokio::test]
    async fn a_changed_answer_moves_keys_only_off_the_leaver_or_onto_the_newcomer() {
        let (a, b, c) = (
            addr("10.0.0.1:9090"),
            addr("10.0.0.2:9090"),
            addr("10.0.0.3:9090"),
        );
        let dns = Arc::new(Fixed::default());
        *dns.answer.lock().unwrap() = vec![b, a];
        let rt = crate::Runtime::new("replicas-test", crate::RuntimeConfig::default()).unwrap();
        let replicas = Replicas::start_with(
            "http://ledger.shop.svc:9090",
            rt.dependencies.clone(),
            "peer",
            dns.clone(),
        )
        .await
        .unwrap();
        assert_eq!(replicas.addrs(), vec![a, b]);
        let keys: Vec<[u8; 16]> = (0u128..200).map(|k| k.to_be_bytes()).collect();
        let first = |k: &[u8]| replicas.pick(k, 0).unwrap().0.unwrap();
        let before: Vec<SocketAddr> = keys.iter().map(|k| first(k)).collect();
        assert!(before.contains(&a) && before.contains(&b));
        for k in &keys {
            let second = replicas.pick(k, 1).unwrap().0.unwrap();
            assert_ne!(second, first(k), "rank 1 is another replica");
            assert!(replicas.pick(k, 2).is_none(), "only two replicas");
        }

        // b leaves, c joins: refresh_soon resolves at once, and only once
        // while one is under way.
        *dns.answer.lock().unwrap() = vec![a, c];
        let asked = dns.asked.load(Ordering::SeqCst);
        replicas.refresh_soon();
        replicas.refresh_soon();
        for _ in 0..100 {
            if replicas.addrs() == vec![a, c] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(replicas.addrs(), vec![a, c]);
        assert_eq!(dns.asked.load(Ordering::SeqCst), asked + 1);
        // A key moves only off the replica that left or onto the one
        // that joined.
        for (k, was) in keys.iter().zip(&before) {
            let now = first(k);
            assert!(now == *was || now == c || *was == b, "{was} -> {now}");
        }
        assert!(keys.iter().any(|k| first(k) == c), "the newcomer gets keys");
    }

    #[tokio::test]
    async fn a_failed_resolve_keeps_the_last_set() {
        struct Failing;
        impl Resolve for Failing {
            fn resolve<'a>(
                &'a self,
                _: &'a str,
                _: u16,
            ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
                Box::pin(async { Err(io::Error::other("no DNS")) })
            }
        }
        let rt = crate::Runtime::new("replicas-test", crate::RuntimeConfig::default()).unwrap();
        let replicas = Replicas::start_with(
            "http://ledger.shop.svc:9090",
            rt.dependencies.clone(),
            "peer",
            Arc::new(Failing),
        )
        .await
        .unwrap();
        // Nothing resolved: the configured URL itself, no address.
        assert!(replicas.addrs().is_empty());
        let (addr, _) = replicas.pick(b"key", 0).unwrap();
        assert_eq!(addr, None);
        assert!(replicas.pick(b"key", 1).is_none());
    }

    #[test]
    fn targets_must_be_http_host_port() {
        assert!(parse_target("http://availability:9090").is_ok());
        assert_eq!(parse_target("http://[::1]:9090").unwrap().host, "::1");
        for bad in ["https://a:1", "http://a", "availability:9090", "http://:1"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
