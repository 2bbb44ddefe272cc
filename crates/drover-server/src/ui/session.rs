//! Who may see the dashboard and act from it: the login session cookie and the CSRF token of
//! every form that changes something.
//!
//! With `server.api_key` set, a browser logs in once with the key and gets a cookie holding
//! `<issued unix seconds>.<random nonce>.<mac>`, where the mac is SHA-256 over a domain tag,
//! the key, the issue time and the nonce: the raw key is never in the cookie, a cookie cannot
//! be made without the key, and changing the key ends every session. The cookie is HttpOnly and
//! SameSite=Strict, and expires after [`SESSION_TTL`]. Every action (cancel, logout) carries a
//! CSRF token derived from the session (and, without a key, from a secret of this process), so
//! a page from another site cannot post one. This module reads and makes those values; what a
//! page shows is the pages' business, and comparing keys is `auth::keys_match`'s.

use crate::auth::keys_match;
use axum::http::HeaderMap;
use drover_core::Timestamp;
use sha2::{Digest, Sha256};

/// The session cookie's name.
pub const COOKIE: &str = "drover_session";
/// How long a login lasts.
pub const SESSION_TTL: chrono::Duration = chrono::Duration::hours(12);

/// What the dashboard's sessions are derived from.
pub struct Sessions {
    /// The configured API key; `None` leaves the dashboard open.
    key: Option<String>,
    /// A secret of this process: the CSRF tokens of an open dashboard are derived from it.
    process_secret: [u8; 32],
}

/// Whether a request may see the dashboard, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No key is configured: everyone may, and forms carry the process's token.
    Open,
    /// A valid session: its cookie value, from which its CSRF token is derived.
    Session(String),
    /// A key is configured and the request has no valid session.
    Denied,
}

fn mac(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefixed, so no two different part lists hash alike.
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

impl Sessions {
    pub fn new(key: Option<String>) -> Self {
        let mut process_secret = [0u8; 32];
        // Without randomness the tokens of an open dashboard are still per process, only
        // guessable: log it rather than refuse to start over the dashboard.
        if let Err(e) = getrandom::fill(&mut process_secret) {
            tracing::warn!(error = %e, "no randomness for the dashboard's CSRF secret");
        }
        Sessions {
            key,
            process_secret,
        }
    }

    /// Whether the dashboard asks for a login.
    pub fn guarded(&self) -> bool {
        self.key.is_some()
    }

    /// Whether `given` is the configured key.
    pub fn key_matches(&self, given: &str) -> bool {
        self.key
            .as_deref()
            .is_some_and(|k| keys_match(given.trim(), k))
    }

    /// A new session's cookie value, issued at `now`; `None` without a key or randomness.
    pub fn issue(&self, now: Timestamp) -> Option<String> {
        let key = self.key.as_deref()?;
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).ok()?;
        let issued = now.timestamp().to_string();
        let nonce = hex::encode(nonce);
        let mac = mac(&[
            b"drover dashboard session",
            key.as_bytes(),
            issued.as_bytes(),
            nonce.as_bytes(),
        ]);
        Some(format!("{issued}.{nonce}.{mac}"))
    }

    /// Whether `value` is a session this key issued that has not expired at `now`.
    fn valid(&self, value: &str, now: Timestamp) -> bool {
        let Some(key) = self.key.as_deref() else {
            return false;
        };
        let mut parts = value.splitn(3, '.');
        let (Some(issued), Some(nonce), Some(given)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(at) = issued.parse::<i64>() else {
            return false;
        };
        let Some(at) = chrono::DateTime::from_timestamp(at, 0) else {
            return false;
        };
        if now < at || now - at > SESSION_TTL {
            return false;
        }
        let expected = mac(&[
            b"drover dashboard session",
            key.as_bytes(),
            issued.as_bytes(),
            nonce.as_bytes(),
        ]);
        keys_match(given, &expected)
    }

    /// Who the request is: open, a valid session (its cookie), or denied. A request with the
    /// API key as a bearer token is let in too (scripts), as a session of its own.
    pub fn access(&self, headers: &HeaderMap, now: Timestamp) -> Access {
        if self.key.is_none() {
            return Access::Open;
        }
        if let Some(value) = cookie(headers, COOKIE)
            && self.valid(value, now)
        {
            return Access::Session(value.to_string());
        }
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(given) = bearer
            && self.key_matches(given)
        {
            return Access::Session(mac(&[b"drover dashboard bearer", given.trim().as_bytes()]));
        }
        Access::Denied
    }

    /// The CSRF token of forms shown to `access`.
    pub fn csrf_token(&self, access: &Access) -> String {
        match access {
            Access::Session(value) => mac(&[
                b"drover dashboard csrf",
                self.key.as_deref().unwrap_or_default().as_bytes(),
                value.as_bytes(),
            ]),
            Access::Open | Access::Denied => {
                mac(&[b"drover dashboard csrf (open)", &self.process_secret])
            }
        }
    }

    /// Whether `given` is the CSRF token of `access` (never for a denied request).
    pub fn csrf_matches(&self, access: &Access, given: &str) -> bool {
        *access != Access::Denied && keys_match(given, &self.csrf_token(access))
    }
}

/// The `Set-Cookie` value that keeps `value` as the session (`secure` over TLS).
pub fn set_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.num_seconds()
    )
}

/// The `Set-Cookie` value that ends the session in this browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The value of cookie `name`, if the request sends it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 1, 28, 12, 0, 0).unwrap()
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("other=1; {COOKIE}={value}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn an_issued_session_is_valid_until_it_expires_and_holds_no_key() {
        let s = Sessions::new(Some("the-key".into()));
        let value = s.issue(now()).unwrap();
        assert!(!value.contains("the-key"));
        assert_eq!(
            s.access(&with_cookie(&value), now()),
            Access::Session(value.clone())
        );
        let later = now() + SESSION_TTL + chrono::Duration::seconds(1);
        assert_eq!(s.access(&with_cookie(&value), later), Access::Denied);
    }

    #[test]
    fn a_forged_or_foreign_session_is_denied() {
        let s = Sessions::new(Some("the-key".into()));
        let other = Sessions::new(Some("another-key".into()));
        let foreign = other.issue(now()).unwrap();
        assert_eq!(s.access(&with_cookie(&foreign), now()), Access::Denied);
        assert_eq!(s.access(&with_cookie("1.2.3"), now()), Access::Denied);
        assert_eq!(s.access(&HeaderMap::new(), now()), Access::Denied);
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let s = Sessions::new(Some("the-key".into()));
        let a = Access::Session(s.issue(now()).unwrap());
        let b = Access::Session(s.issue(now()).unwrap());
        let token = s.csrf_token(&a);
        assert!(s.csrf_matches(&a, &token));
        assert!(!s.csrf_matches(&b, &token));
        assert!(!s.csrf_matches(&Access::Denied, &token));
    }

    #[test]
    fn without_a_key_everyone_may_look_and_forms_carry_the_process_token() {
        let s = Sessions::new(None);
        assert_eq!(s.access(&HeaderMap::new(), now()), Access::Open);
        let token = s.csrf_token(&Access::Open);
        assert!(s.csrf_matches(&Access::Open, &token));
        assert!(!s.csrf_matches(&Access::Open, "forged"));
    }
}
