//! A Redis database (1–15) of the stack's server, claimed for one run.
//! `berth serve` names its streams and consumer groups itself
//! (`berth:events`, group `payment.bookings`, …), so two platforms on one
//! database take each other's events (a cancellation consumed by the
//! other platform's payment service is never refunded here); a database
//! of its own stands for the Redis of its own each platform has.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// Holds the claim's token; expires by itself if the run dies.
const CLAIM: &str = "berth:claimed-by";
/// The streams `berth serve` writes, removed when claimed and released.
const STREAMS: [&str; 3] = ["berth:events", "berth:payments", "berth:accounts"];

pub struct RedisDb {
    /// `redis://…/<index>`, for `BERTH_REDIS_URL`.
    pub url: String,
    token: String,
}

impl RedisDb {
    /// The first database no other run holds, for at most `ttl_secs`.
    pub fn claim(redis_url: &str, ttl_secs: u64) -> Self {
        let token = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        for index in 1..16 {
            let mut url = url::Url::parse(redis_url).unwrap();
            url.set_path(&format!("/{index}"));
            let mut conn = Resp::connect(&url);
            let ttl = ttl_secs.to_string();
            if conn.call(&["SET", CLAIM, &token, "NX", "EX", &ttl]) == "OK" {
                conn.call(&[&["DEL"][..], &STREAMS].concat());
                return Self {
                    url: url.to_string(),
                    token,
                };
            }
        }
        panic!("every Redis database 1-15 of {redis_url} is claimed by another run")
    }
}

impl Drop for RedisDb {
    fn drop(&mut self) {
        let Ok(url) = url::Url::parse(&self.url) else {
            return;
        };
        let mut conn = Resp::connect(&url);
        if conn.call(&["GET", CLAIM]) == self.token {
            conn.call(&[&["DEL", CLAIM][..], &STREAMS].concat());
        }
    }
}

/// Just enough of the Redis protocol for the claim: commands in, simple,
/// integer and bulk replies out (as text; errors and nil as "").
struct Resp {
    stream: BufReader<TcpStream>,
}

impl Resp {
    fn connect(url: &url::Url) -> Self {
        let host = url.host_str().unwrap_or("127.0.0.1");
        let port = url.port().unwrap_or(6379);
        let stream = TcpStream::connect((host, port)).unwrap();
        let mut conn = Self {
            stream: BufReader::new(stream),
        };
        if let Some(password) = url.password() {
            conn.call(&["AUTH", password]);
        }
        let index = url.path().trim_start_matches('/');
        if !index.is_empty() {
            conn.call(&["SELECT", index]);
        }
        conn
    }

    fn call(&mut self, args: &[&str]) -> String {
        let mut command = format!("*{}\r\n", args.len());
        for arg in args {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.stream.get_mut().write_all(command.as_bytes()).unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            return String::new();
        }
        match line.split_at(1) {
            ("+" | ":", rest) => rest.to_owned(),
            ("$", len) => match len.parse::<usize>() {
                Ok(len) => {
                    let mut body = vec![0; len + 2];
                    self.stream.read_exact(&mut body).unwrap();
                    String::from_utf8_lossy(&body[..len]).into_owned()
                }
                Err(_) => String::new(),
            },
            _ => String::new(),
        }
    }
}
