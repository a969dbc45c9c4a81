//! Shared bearer-token verification: every service checks access JWTs the
//! same way.
//!
//! * Keys come from a JWKS fetched over HTTP and cached (refetched on an
//!   unknown `kid`, at most once per [`RemoteJwksOptions::min_refetch`]), or
//!   from an in-process [`SharedJwks`] (`berth dev`, where the user service
//!   runs in the same process).
//! * Only the algorithms in [`ALLOWED_ALGORITHMS`] are accepted. The token
//!   header's `alg` must be in that list *and* match the key the `kid` names
//!   (key type, curve and the key's own `alg`), so `none`, HS* (e.g. HMAC
//!   "signed" with the public key) and algorithm confusion are rejected.
//! * `iss`, `aud`, `exp`, `nbf` and `sub` are required and validated with a
//!   small leeway.
//!
//! Use [`Verifier::layer`] on a router: requests with a valid token carry a
//! [`Principal`] extension, requests with an invalid one get 401
//! problem+json with `WWW-Authenticate`, requests without one pass through
//! and fail at the [`Principal`] extractor (401) only where a handler needs
//! it. [`require_role`] turns a whole router into "this role only" (403).

mod error;
mod jwks;
mod layer;
mod principal;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod verifier;

use std::time::Duration;

use jsonwebtoken::Algorithm;

pub use error::AuthError;
pub use jwks::{RemoteJwksOptions, SharedJwks};
pub use layer::{AuthLayer, AuthService, RequireRoleLayer, RequireRoleService, require_role};
pub use principal::{AccessClaims, Principal};
pub use verifier::Verifier;

/// The only signature algorithms a token may use.
pub const ALLOWED_ALGORITHMS: [Algorithm; 2] = [Algorithm::EdDSA, Algorithm::ES256];

/// Default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests;

/// Bearer verification end to end: the attacks a verifier must refuse, JWKS
/// fetching with refetch on unknown `kid`, and the layer / extractor / roles.
#[cfg(test)]
mod attack_tests;
