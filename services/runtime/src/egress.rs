//! The one egress guard: outbound requests to user-supplied URLs
//! (availability's calendar feeds, notification's webhooks), guarded
//! against server-side request forgery: a user must not make a service
//! reach loopback, private networks or cloud metadata (169.254.169.254).
//!
//! The check runs where the connection is made, so DNS rebinding cannot
//! slip past a check done earlier: host names resolve through
//! [`PublicOnly`], which refuses a name if any address is not public, and
//! the client connects to exactly the addresses it checked; IP literals
//! (which never reach a resolver) are checked before each request and on
//! every redirect hop. Proxies are ignored while guarding: a proxy would
//! connect on our behalf, unchecked. Services also check a URL when it is
//! registered ([`check_destination`]), so the user hears about it at once.
//!
//! Loopback and private destinations are allowed only when a service is
//! explicitly told so ([`Egress::allowing_private`]): `berth dev` and
//! tests that serve locally, never a deployment reachable by users.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Client, Url, redirect};

/// How the clients behave besides the guard.
#[derive(Debug, Clone)]
pub struct EgressOptions {
    /// `User-Agent` of every request.
    pub user_agent: String,
    /// A request that does not complete in this time fails (a request may
    /// set a shorter one).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Redirect hops followed (each checked); 0: none are followed.
    pub max_redirects: usize,
}

impl Default for EgressOptions {
    fn default() -> Self {
        Self {
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")).to_owned(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_redirects: 5,
        }
    }
}

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("scheme {0:?} is not supported; use http or https")]
    Scheme(String),
    #[error("URL points to a private or local address")]
    Private,
}

/// Whether `ip` is an ordinary Internet address (not loopback, private,
/// link-local, CGNAT, multicast, reserved, or an IPv4-mapped one of those).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", incl. 0.0.0.0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // incl. cloud metadata 169.254.169.254
        || ip.is_multicast()
        || a >= 240 // reserved, incl. broadcast
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18)) // benchmarking 198.18.0.0/15
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
    }
    !(s[..6] == [0; 6] // ::, ::1 and deprecated IPv4-compatible ::a.b.c.d
        || ip.is_multicast()
        || ip.is_unique_local() // fc00::/7
        || ip.is_unicast_link_local() // fe80::/10
        || (s[0] & 0xffc0) == 0xfec0) // deprecated site-local fec0::/10
}

/// Scheme and, for IP-literal hosts, the address. Host names are checked
/// when they resolve.
pub fn check_url(url: &Url, allow_private: bool) -> Result<(), Refused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::Scheme(url.scheme().to_owned()));
    }
    if allow_private {
        return Ok(());
    }
    match host(url) {
        None => Err(Refused::Private),
        Some(Host::Name(_)) => Ok(()),
        Some(Host::Ip(ip)) if is_public(ip) => Ok(()),
        Some(Host::Ip(_)) => Err(Refused::Private),
    }
}

enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// The URL's host; the URL parser has already normalised IPv4 spellings
/// such as `0x7f.1` to dotted quads, and brackets IPv6 literals.
fn host(url: &Url) -> Option<Host<'_>> {
    let raw = url.host_str()?;
    let bare = raw
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(raw);
    Some(match bare.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(raw),
    })
}

/// [`check_url`] plus resolving a host name now, for immediate feedback.
/// A name that does not resolve passes here; the fetch then reports it.
pub async fn check_destination(url: &Url, allow_private: bool) -> Result<(), Refused> {
    check_url(url, allow_private)?;
    match host(url) {
        Some(Host::Name(name)) if !allow_private => match resolve(name).await {
            Ok(_) | Err(Resolution::Failed(_)) => Ok(()),
            Err(Resolution::Refused) => Err(Refused::Private),
        },
        _ => Ok(()),
    }
}

enum Resolution {
    Refused,
    Failed(std::io::Error),
}

/// All addresses of `name`, or `Refused` if any of them is not public (a
/// name mixing public and private answers is not to be trusted).
async fn resolve(name: &str) -> Result<Vec<SocketAddr>, Resolution> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, 0))
        .await
        .map_err(Resolution::Failed)?
        .collect();
    if addrs.iter().all(|a| is_public(a.ip())) {
        Ok(addrs)
    } else {
        Err(Resolution::Refused)
    }
}

/// A resolver that only ever hands out public addresses.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let name = name.as_str().to_owned();
        Box::pin(async move {
            match resolve(&name).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(Resolution::Refused) => Err(Refused::Private.into()),
                Err(Resolution::Failed(e)) => Err(e.into()),
            }
        })
    }
}

type Check = Arc<dyn Fn(&Url) -> Result<(), Refused> + Send + Sync>;

/// A client whose redirects are followed only to destinations `check`
/// accepts; with `public_dns_only`, names resolve through [`PublicOnly`].
fn client_with(
    check: Check,
    public_dns_only: bool,
    options: &EgressOptions,
) -> Result<Client, reqwest::Error> {
    let max_redirects = options.max_redirects;
    let policy = if max_redirects == 0 {
        redirect::Policy::none()
    } else {
        redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= max_redirects {
                return attempt.error("too many redirects");
            }
            match check(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        })
    };
    let mut builder = Client::builder()
        .timeout(options.timeout)
        .connect_timeout(options.connect_timeout)
        .redirect(policy)
        .user_agent(options.user_agent.as_str());
    if public_dns_only {
        builder = builder.dns_resolver(Arc::new(PublicOnly)).no_proxy();
    }
    builder.build()
}

/// The client and the policy it enforces. Both clients are built up front
/// so switching the policy cannot fail.
#[derive(Clone)]
pub struct Egress {
    allow_private: bool,
    guarded: Client,
    open: Client,
}

impl Egress {
    /// Guarded (private addresses refused).
    pub fn new(options: &EgressOptions) -> Result<Self, reqwest::Error> {
        Ok(Self {
            allow_private: false,
            guarded: client_with(Arc::new(|u: &Url| check_url(u, false)), true, options)?,
            open: client_with(Arc::new(|u: &Url| check_url(u, true)), false, options)?,
        })
    }

    /// With `allow`, loopback, private and link-local destinations are
    /// reached too: only for `berth dev` and tests serving locally.
    #[must_use]
    pub fn allowing_private(self, allow: bool) -> Self {
        Self {
            allow_private: allow,
            ..self
        }
    }

    pub fn allow_private(&self) -> bool {
        self.allow_private
    }

    /// Checks `url` (again: redirects and resolution are checked by the
    /// client itself) and returns the client to fetch it with.
    pub fn client_for(&self, url: &Url) -> Result<&Client, Refused> {
        check_url(url, self.allow_private)?;
        Ok(if self.allow_private {
            &self.open
        } else {
            &self.guarded
        })
    }
}

/// The refusal behind a failed request, if a guard caused it.
pub fn refusal(error: &reqwest::Error) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests;
