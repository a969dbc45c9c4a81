//! Shared by the load generators: start `berth` processes from the same
//! release build and give each run its own PostgreSQL database.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the process when the benchmark ends, however it ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `target/<profile>/examples/<name>` → `target/<profile>/berth`.
pub fn berth_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("berth")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `berth <args>` with `env` (over `BERTH_LOG=warn`, no config file).
fn berth_command(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(berth_binary());
    command
        .args(args)
        .env("BERTH_LOG", "warn")
        .env_remove("BERTH_CONFIG");
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

fn start(mut command: Command) -> Process {
    Process(
        command.spawn().expect(
            "berth binary: build it with `cargo build --release -p berth --bins --examples`",
        ),
    )
}

pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Process {
    let mut command = berth_command(args, env);
    command.stdout(Stdio::null());
    start(command)
}

/// Like [`spawn`], with the process's output appended to `log` (kept
/// across restarts, to read when something went wrong).
pub fn spawn_logged(args: &[&str], env: &[(&str, String)], log: &std::path::Path) -> Process {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut command = berth_command(args, env);
    command.stdout(file.try_clone().unwrap()).stderr(file);
    start(command)
}

/// Peak resident memory of a running process (`VmHWM`, Linux), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

pub async fn wait_ready(base: &str) {
    for _ in 0..600 {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} never became ready");
}

/// `POST url` with a JSON body as `bearer`; the answer's JSON, which must
/// be a success.
pub async fn post_json(
    client: &reqwest::Client,
    bearer: &str,
    url: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let response = client
        .post(url)
        .header("authorization", bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// `GET url` without credentials; the answer's JSON, which must be a
/// success.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = client.get(url).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// One bookable resource made over the availability API as `bearer` (a
/// staff token): the resource, its weekly hours and one appointment type.
/// Returns the resource's and the type's ids.
pub async fn create_resource(
    client: &reqwest::Client,
    base: &str,
    bearer: &str,
    resource: serde_json::Value,
    week: &serde_json::Value,
    appointment_type: serde_json::Value,
) -> (String, String) {
    let id = |created: serde_json::Value| created["id"].as_str().unwrap().to_owned();
    let rid = id(post_json(client, bearer, &format!("{base}/v1/resources"), resource).await);
    let schedule = client
        .put(format!("{base}/v1/resources/{rid}/schedule"))
        .header("authorization", bearer)
        .json(week)
        .send()
        .await
        .unwrap();
    assert!(
        schedule.status().is_success(),
        "schedule: {}",
        schedule.status()
    );
    let url = format!("{base}/v1/resources/{rid}/appointment-types");
    let tid = id(post_json(client, bearer, &url, appointment_type).await);
    (rid, tid)
}

/// A fresh database per run on the stack's PostgreSQL: the workspace's
/// test helper (`TestDb::create(prefix)`, `drop_now`).
#[path = "../../../../tests/support/db.rs"]
pub mod db;

pub mod paid;
pub mod placement;
pub mod redis_db;

/// Access tokens for the services under test: a real EdDSA issuer whose
/// JWKS is served over HTTP, so `berth serve` verifies exactly as in
/// Kubernetes (where the user service serves it).
pub struct Auth {
    pub issuer: berth_runtime::auth::testing::TestIssuer,
    pub jwks_url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Auth {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Auth {
    pub async fn start() -> Self {
        let issuer = berth_runtime::auth::testing::TestIssuer::new();
        let jwks = issuer.jwks();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jwks_url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            issuer,
            jwks_url,
            server,
        }
    }

    /// The settings that point `berth serve` at this issuer.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        use berth_runtime::auth::testing::{TEST_AUDIENCE, TEST_ISSUER};
        vec![
            ("BERTH_SERVICE__AUTH__JWKS_URL", self.jwks_url.clone()),
            ("BERTH_SERVICE__AUTH__ISSUER", TEST_ISSUER.to_owned()),
            ("BERTH_SERVICE__AUTH__AUDIENCE", TEST_AUDIENCE.to_owned()),
        ]
    }

    pub fn bearer(&self, subject: &str, role: &str) -> String {
        format!("Bearer {}", self.issuer.token(subject, &[role]))
    }
}

/// Which processes a [`CpuMeter`] line adds up.
#[derive(Clone, Copy)]
pub enum Procs {
    /// One process.
    Pid(u32),
    /// Every process with this name (e.g. all PostgreSQL backends).
    Named(&'static str),
}

/// CPU seconds (user + system, with reaped children) spent by groups of
/// processes between [`CpuMeter::start`] and [`CpuMeter::stop`], read from
/// `/proc` (Linux).
/// Shows where a run's CPU went when everything shares the same cores.
pub struct CpuMeter {
    lines: Vec<(&'static str, Procs, f64)>,
}

/// `/proc/<pid>/stat` reports times in clock ticks; Linux fixes `USER_HZ`
/// at 100 for user space whatever the kernel's internal rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds of one process so far.
fn proc_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is parenthesised and may contain spaces; fields follow the last ')'.
    let (_, tail) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = tail.split_whitespace().collect();
    // utime, stime, cutime and cstime are fields 14–17 of the line, 12–15
    // after comm. Children's time counts: a PostgreSQL backend that exits
    // (as `pgbench`'s do) moves its time to the postmaster's cutime.
    let ticks: f64 = fields
        .get(11..15)?
        .iter()
        .map(|v| v.parse::<f64>().ok())
        .sum::<Option<f64>>()?;
    Some(ticks / TICKS_PER_SECOND)
}

/// Process ids whose command name is `name`.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .collect()
}

fn cpu_of(procs: Procs) -> f64 {
    match procs {
        Procs::Pid(pid) => proc_cpu(pid).unwrap_or(0.0),
        Procs::Named(name) => pids_named(name).into_iter().filter_map(proc_cpu).sum(),
    }
}

impl CpuMeter {
    pub fn start(lines: Vec<(&'static str, Procs)>) -> Self {
        let lines = lines
            .into_iter()
            .map(|(label, procs)| (label, procs, cpu_of(procs)))
            .collect();
        Self { lines }
    }

    /// CPU seconds per label since `start`.
    pub fn stop(&self) -> Vec<(&'static str, f64)> {
        self.lines
            .iter()
            .map(|(label, procs, before)| (*label, (cpu_of(*procs) - before).max(0.0)))
            .collect()
    }
}

/// Where the whole machine's CPU time went, from the first line of
/// `/proc/stat` (Linux): ticks of every state, added up over the spans
/// between [`MachineTicks::read`] and [`MachineTicks::add_since`]. Steal (a
/// hypervisor running other guests on our cores) differs between runs
/// minutes apart, and between a benchmark and the limit it is compared to.
#[derive(Clone, Copy, Default)]
pub struct MachineTicks {
    total: u64,
    idle: u64,
    steal: u64,
}

impl MachineTicks {
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu user nice system idle iowait irq softirq steal guest guest_nice;
        // guest time is already counted in user.
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        Self {
            total: fields.iter().sum(),
            idle: field(3) + field(4),
            steal: field(7),
        }
    }

    /// Adds what happened since `start` to `self`.
    pub fn add_since(&mut self, start: MachineTicks) {
        let now = Self::read();
        self.total += now.total.saturating_sub(start.total);
        self.idle += now.idle.saturating_sub(start.idle);
        self.steal += now.steal.saturating_sub(start.steal);
    }

    /// "steal S %, idle I %" of the time added up.
    pub fn describe(&self) -> String {
        let share = |part: u64| 100.0 * part as f64 / self.total.max(1) as f64;
        format!(
            "steal {:.1} %, idle {:.1} %",
            share(self.steal),
            share(self.idle)
        )
    }
}

/// A load generator's HTTP/1.1 clients: one kept-alive connection each,
/// driven by hyper directly, so the generator spends as little of the
/// shared cores as it can (the system under test gets the rest).
pub mod load {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use hyper::client::conn::http1::SendRequest;
    use hyper_util::rt::TokioIo;

    /// What one request got back.
    pub struct Answer {
        /// The client that sent it.
        pub client: usize,
        pub status: u16,
        pub latency: Duration,
        pub location: Option<String>,
    }

    /// One kept-alive HTTP/1.1 connection, opened on first use and again
    /// whenever the server closed it.
    pub struct Client {
        addr: String,
        sender: Option<SendRequest<Full<Bytes>>>,
    }

    impl Client {
        pub fn new(addr: &str) -> Self {
            Self {
                addr: addr.to_owned(),
                sender: None,
            }
        }

        async fn sender(&mut self) -> &mut SendRequest<Full<Bytes>> {
            let fresh = match &self.sender {
                Some(sender) => sender.is_closed(),
                None => true,
            };
            if fresh {
                let stream = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                self.sender = Some(sender);
            }
            self.sender.as_mut().unwrap()
        }

        pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Response<Bytes> {
            let sender = self.sender().await;
            sender.ready().await.unwrap();
            let response = sender.send_request(request).await.unwrap();
            let (parts, body) = response.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            Response::from_parts(parts, body)
        }
    }

    /// `n` clients of the server at `addr` (`host:port`).
    pub struct Clients {
        clients: Vec<Client>,
    }

    impl Clients {
        pub fn new(addr: &str, n: usize) -> Self {
            Self::spread(&[addr], n)
        }

        /// `n` clients taking the servers at `addrs` in turn.
        pub fn spread(addrs: &[&str], n: usize) -> Self {
            Self {
                clients: (0..n)
                    .map(|c| Client {
                        addr: addrs[c % addrs.len()].to_owned(),
                        sender: None,
                    })
                    .collect(),
            }
        }

        /// Connects every client (outside any timed section).
        pub async fn connect(&mut self) {
            for client in &mut self.clients {
                client.sender().await;
            }
        }

        /// The clients take jobs `0..jobs` in turn, client `c` sending
        /// `request(c, job)`; every answer, indexed by job.
        pub async fn drain<F>(&mut self, jobs: usize, request: F) -> Vec<Answer>
        where
            F: Fn(usize, usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
        {
            let next = Arc::new(AtomicUsize::new(0));
            let request = Arc::new(request);
            let workers: Vec<_> = std::mem::take(&mut self.clients)
                .into_iter()
                .enumerate()
                .map(|(c, mut client)| {
                    let (next, request) = (next.clone(), request.clone());
                    tokio::spawn(async move {
                        let mut seen = Vec::new();
                        loop {
                            let job = next.fetch_add(1, Ordering::Relaxed);
                            if job >= jobs {
                                break (client, seen);
                            }
                            let sent = request(c, job);
                            let t0 = Instant::now();
                            let response = client.send(sent).await;
                            let latency = t0.elapsed();
                            let location = response
                                .headers()
                                .get(http::header::LOCATION)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            seen.push((
                                job,
                                Answer {
                                    client: c,
                                    status: response.status().as_u16(),
                                    latency,
                                    location,
                                },
                            ));
                        }
                    })
                })
                .collect();
            let mut answers: Vec<Option<Answer>> = (0..jobs).map(|_| None).collect();
            for worker in workers {
                let (client, seen) = worker.await.unwrap();
                self.clients.push(client);
                for (job, answer) in seen {
                    answers[job] = Some(answer);
                }
            }
            answers.into_iter().map(Option::unwrap).collect()
        }
    }

    /// A request with a JSON body (empty body when `body` is empty).
    pub fn post(path: &str, headers: &[(&str, &str)], body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::post(path)
            .header(http::header::HOST, "bench")
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Full::new(body)).unwrap()
    }

    pub fn get(path: &str) -> Request<Full<Bytes>> {
        Request::get(path)
            .header(http::header::HOST, "bench")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i]
    }
}
