//! Bearer tokens on the listener (ingest, read endpoints). The scheme is
//! matched without regard to case (RFC 7235) and the token is compared in
//! constant time over SHA-256 digests of fixed length, so the answer time
//! shows neither where a guess differs nor how long the token is. Only the
//! digest is kept.

use std::fmt;

use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

use crate::sink::Secret;

/// A token clients must present as `Authorization: Bearer <token>`.
pub struct BearerToken {
    digest: [u8; 32],
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken([redacted])")
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, b).as_ref());
    out
}

impl BearerToken {
    pub(crate) fn new(secret: &Secret) -> BearerToken {
        BearerToken { digest: sha256(secret.expose().as_bytes()) }
    }

    /// Whether the `Authorization` header value carries this token.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let given = authorization.and_then(bearer).unwrap_or("");
        bool::from(sha256(given.as_bytes()).ct_eq(&self.digest))
    }
}

/// The credentials of a `Bearer` authorization, the scheme in any case.
fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim_matches(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> BearerToken {
        BearerToken { digest: sha256(s.as_bytes()) }
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_exact() {
        let t = token("s3cret");
        for ok in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR  s3cret"] {
            assert!(t.admits(Some(ok)), "{ok}");
        }
        for bad in ["Bearer s3creT", "Bearer s3cret!", "Bearer s3cre", "Basic s3cret", "s3cret", "Bearer", "Bearers3cret", ""] {
            assert!(!t.admits(Some(bad)), "{bad}");
        }
        assert!(!t.admits(None));
    }

    #[test]
    fn debug_shows_no_digest() {
        assert_eq!(format!("{:?}", token("s3cret")), "BearerToken([redacted])");
    }
}
