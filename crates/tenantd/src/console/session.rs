//! The console's sessions: stateless tokens any node can check, and the cookie that
//! carries them (docs/console.md#sign-in-and-sessions).
//!
//! A token is `v1.<payload>.<tag>`: the payload is base64url of the session id (16 random
//! bytes) and its expiry (Unix seconds, 8 bytes big-endian); the tag is base64url of its
//! HMAC-SHA256 under the session key. The session and CSRF keys are derived (HKDF) from
//! the master key with the operator key's hash as salt: a new operator key (or master
//! key) ends every session, and a reader of the catalog, which holds the operator key's
//! hash, cannot make a token. Signing out revokes the session id on this node only.
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use dashmap::DashMap;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// How long a session lasts from sign-in.
pub const LIFETIME_SECS: i64 = 8 * 3600;
/// The session cookie's name.
pub const COOKIE: &str = "tenantd_console";
/// The cookies' path: the console's, so the API never receives them.
pub const PATH: &str = "/console";

const VERSION: &str = "v1";
const PAYLOAD_LEN: usize = 16 + 8;

/// A signed-in operator's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// Random, unique to the sign-in.
    pub id: [u8; 16],
    /// Unix seconds.
    pub expires_at: i64,
}

/// The keys sessions are signed with, and the sessions signed out on this node.
pub struct Sessions {
    session_key: hmac::Key,
    csrf_key: hmac::Key,
    /// Signed-out session ids, with their expiry (dropped once past it).
    revoked: DashMap<[u8; 16], i64>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("keys", &"[redacted]")
            .field("revoked", &self.revoked.len())
            .finish()
    }
}

impl Sessions {
    /// The console's keys, derived from the master key with the operator key's SHA-256
    /// as salt.
    pub fn new(master: &tenantd_core::crypto::Key, operator_key_hash: &[u8; 32]) -> Self {
        let key = |purpose: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, &master.derive(operator_key_hash, purpose));
        Self {
            session_key: key(b"tenantd console session v1"),
            csrf_key: key(b"tenantd console csrf v1"),
            revoked: DashMap::new(),
            rng: SystemRandom::new(),
        }
    }

    /// A new session from `now`, and its token; `None` if the system has no randomness.
    pub fn issue(&self, now: i64) -> Option<(Session, String)> {
        let mut id = [0u8; 16];
        self.rng.fill(&mut id).ok()?;
        let s = Session {
            id,
            expires_at: now + LIFETIME_SECS,
        };
        Some((s, self.token(&s)))
    }

    /// The token of `s`.
    fn token(&self, s: &Session) -> String {
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[..16].copy_from_slice(&s.id);
        payload[16..].copy_from_slice(&s.expires_at.to_be_bytes());
        let tag = hmac::sign(&self.session_key, &payload);
        format!("{VERSION}.{}.{}", B64.encode(payload), B64.encode(tag.as_ref()))
    }

    /// The session a token carries, if its tag verifies, it has not expired at `now` and
    /// it was not signed out on this node. Anything else is `None`, whatever was wrong.
    pub fn verify(&self, token: &str, now: i64) -> Option<Session> {
        let mut parts = token.split('.');
        let (Some(VERSION), Some(payload), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let payload = B64.decode(payload).ok().filter(|p| p.len() == PAYLOAD_LEN)?;
        let tag = B64.decode(tag).ok()?;
        hmac::verify(&self.session_key, &payload, &tag).ok()?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&payload[..16]);
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&payload[16..]);
        let s = Session {
            id,
            expires_at: i64::from_be_bytes(exp),
        };
        (s.expires_at > now && !self.revoked.contains_key(&s.id)).then_some(s)
    }

    /// Signs `s` out on this node: its token is refused here from now on.
    pub fn revoke(&self, s: &Session, now: i64) {
        self.revoked.retain(|_, exp| *exp > now);
        self.revoked.insert(s.id, s.expires_at);
    }

    /// The CSRF token of the session's forms: HMAC-SHA256 of its id under the CSRF key.
    pub fn csrf_token(&self, s: &Session) -> String {
        self.mac_b64(b"session:", &s.id)
    }

    /// Whether `given` is the session's CSRF token (compared in constant time).
    pub fn csrf_ok(&self, s: &Session, given: &str) -> bool {
        self.verify_b64(b"session:", &s.id, given)
    }

    /// A new pre-session nonce for the sign-in form's double-submit cookie.
    pub fn login_nonce(&self) -> Option<String> {
        let mut n = [0u8; 16];
        self.rng.fill(&mut n).ok()?;
        Some(B64.encode(n))
    }

    /// The sign-in form's token for the nonce in its cookie.
    pub fn login_token(&self, nonce: &str) -> String {
        self.mac_b64(b"login:", nonce.as_bytes())
    }

    /// Whether `given` is the sign-in token of `nonce` (compared in constant time).
    pub fn login_ok(&self, nonce: &str, given: &str) -> bool {
        !nonce.is_empty() && self.verify_b64(b"login:", nonce.as_bytes(), given)
    }

    fn mac_b64(&self, label: &[u8], msg: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.csrf_key);
        ctx.update(label);
        ctx.update(msg);
        B64.encode(ctx.sign().as_ref())
    }

    fn verify_b64(&self, label: &[u8], msg: &[u8], given: &str) -> bool {
        let Ok(tag) = B64.decode(given) else { return false };
        hmac::verify(&self.csrf_key, &[label, msg].concat(), &tag).is_ok()
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, if sent.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for the console: `HttpOnly`, `SameSite=Strict`, the console's
/// path, `Secure` when `secure`; `max_age` 0 removes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path={PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantd_core::crypto::Key;

    fn sessions(operator: &[u8; 32]) -> (Key, Sessions) {
        let master = Key::generate().unwrap();
        let s = Sessions::new(&master, operator);
        (master, s)
    }

    #[test]
    fn a_token_verifies_until_it_expires() {
        let (_, s) = sessions(&[1; 32]);
        let (session, token) = s.issue(1_000).unwrap();
        assert_eq!(session.expires_at, 1_000 + LIFETIME_SECS);
        assert_eq!(s.verify(&token, 1_000), Some(session));
        assert_eq!(s.verify(&token, 1_000 + LIFETIME_SECS - 1), Some(session));
        assert_eq!(s.verify(&token, 1_000 + LIFETIME_SECS), None, "expired");
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let (_, s) = sessions(&[1; 32]);
        let (session, token) = s.issue(1_000).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        // A later expiry under the old tag.
        let mut payload = B64.decode(parts[1]).unwrap();
        payload[16..].copy_from_slice(&(session.expires_at + 3600).to_be_bytes());
        let longer = format!("v1.{}.{}", B64.encode(&payload), parts[2]);
        assert_eq!(s.verify(&longer, 1_000), None);
        // Every single changed character of the token.
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(bytes).unwrap();
            if t != token {
                assert_eq!(s.verify(&t, 1_000), None, "changed at {i}: {t}");
            }
        }
        for junk in [
            "",
            "v1",
            "v1..",
            "v2.a.b",
            "v1.a.b.c",
            format!("{token}.x").as_str(),
            "v1.%%%.%%%",
        ] {
            assert_eq!(s.verify(junk, 1_000), None, "{junk}");
        }
    }

    #[test]
    fn a_new_operator_key_or_master_key_ends_every_session() {
        let (master, s) = sessions(&[1; 32]);
        let (_, token) = s.issue(1_000).unwrap();
        assert!(
            Sessions::new(&master, &[1; 32]).verify(&token, 1_000).is_some(),
            "another node"
        );
        assert!(Sessions::new(&master, &[2; 32]).verify(&token, 1_000).is_none());
        assert!(Sessions::new(&Key::generate().unwrap(), &[1; 32])
            .verify(&token, 1_000)
            .is_none());
    }

    #[test]
    fn a_signed_out_session_is_refused_here() {
        let (_, s) = sessions(&[1; 32]);
        let (a, token_a) = s.issue(1_000).unwrap();
        let (_, token_b) = s.issue(1_000).unwrap();
        s.revoke(&a, 1_001);
        assert!(s.verify(&token_a, 1_002).is_none());
        assert!(s.verify(&token_b, 1_002).is_some(), "only that session");
        // Revocations past their session's expiry are forgotten.
        s.revoke(&s.verify(&token_b, 1_002).unwrap(), 1_000 + LIFETIME_SECS + 1);
        assert_eq!(s.revoked.len(), 1);
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let (_, s) = sessions(&[1; 32]);
        let (a, _) = s.issue(1_000).unwrap();
        let (b, _) = s.issue(1_000).unwrap();
        let t = s.csrf_token(&a);
        assert!(s.csrf_ok(&a, &t));
        assert!(!s.csrf_ok(&b, &t));
        assert!(!s.csrf_ok(&a, ""));
        assert!(!s.csrf_ok(&a, "not base64!"));
        let nonce = s.login_nonce().unwrap();
        let lt = s.login_token(&nonce);
        assert!(s.login_ok(&nonce, &lt));
        assert!(!s.login_ok("another", &lt));
        assert!(!s.login_ok("", &s.login_token("")));
        assert!(!s.csrf_ok(&a, &lt), "a sign-in token is no session's");
    }

    #[test]
    fn cookies_are_read_from_any_cookie_header() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; tenantd_console=v1.x.y".parse().unwrap());
        h.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE), Some("v1.x.y"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(
            set_cookie(COOKIE, "v", 60, false),
            "tenantd_console=v; Path=/console; Max-Age=60; HttpOnly; SameSite=Strict"
        );
        assert!(set_cookie(COOKIE, "v", 60, true).ends_with("; Secure"));
    }
}
