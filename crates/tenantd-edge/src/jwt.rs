//! JWTs: tenantd signs its own (Ed25519, keys kept in the catalog, public keys served as
//! a JWKS) and verifies ID tokens of one configured external OpenID provider.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::RwLock;

/// The `iss` of every token tenantd signs.
pub const ISSUER: &str = "tenantd";
/// Longest lifetime of a tenantd access token (15 minutes).
pub const MAX_TOKEN_SECONDS: i64 = 900;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 5;

/// Claims of a tenantd JWT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Always `tenantd`.
    pub iss: String,
    /// The principal: a user id (`usr_…`) or a key id (`key_…`).
    pub sub: String,
    /// The user's email (empty for keys).
    #[serde(default)]
    pub email: String,
    /// The tenant the token acts for, when bound to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// The principal's role(s) in `tid`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The tenant's plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before (Unix seconds).
    pub nbf: i64,
    /// Expires (Unix seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// Set only on context tokens the gateway hands upstreams ([`CONTEXT_AUDIENCE`]):
    /// tenantd refuses a token with an audience as a credential, so an upstream cannot
    /// replay one against tenantd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The `aud` of the `X-Tenant-Context` tokens the gateway sends upstreams.
pub const CONTEXT_AUDIENCE: &str = "tenantd-context";

/// Why a token was refused; the text is safe to return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `alg` not accepted for the key (including `none` and HMAC with a public key).
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    /// No key with the token's `kid`.
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    /// Issuer or audience wrong.
    #[error("the token's issuer or audience is not accepted")]
    Claims,
    /// `exp − iat` longer than this server issues tokens for.
    #[error("the token's lifetime (exp - iat) is longer than this server issues")]
    Lifetime,
    /// A `crit` header: extensions tenantd does not implement, so it must refuse them.
    #[error("the token's header lists critical extensions (crit), which are not supported")]
    Critical,
    /// Anything else: bad signature, malformed.
    #[error("the token is invalid")]
    Invalid,
}

fn map_err(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience | ErrorKind::MissingRequiredClaim(_) => {
            TokenError::Claims
        }
        _ => TokenError::Invalid,
    }
}

/// The header, read without trusting the token: `none` and unknown algorithms fail, and
/// so does a `crit` member (RFC 7515 §4.1.11: extensions a verifier does not understand
/// must be refused, and tenantd understands none).
fn header_of(token: &str) -> Result<Header, TokenError> {
    let h = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        ErrorKind::Json(_) | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        _ => TokenError::Invalid,
    })?;
    // The same segment decode_header just read; it parsed as JSON there.
    let raw = token.split('.').next().and_then(|p| URL_SAFE_NO_PAD.decode(p).ok());
    let members: Option<serde_json::Map<String, serde_json::Value>> = raw.and_then(|b| serde_json::from_slice(&b).ok());
    match members {
        Some(m) if m.contains_key("crit") => Err(TokenError::Critical),
        Some(_) => Ok(h),
        None => Err(TokenError::Invalid),
    }
}

/// A new Ed25519 signing key: `(kid, pkcs8 DER, base64url public key)`.
pub fn generate_signing_key() -> (String, Vec<u8>, String) {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("the OS random source works");
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a key ring just made parses");
    let x = URL_SAFE_NO_PAD.encode(kp.public_key().as_ref());
    let kid =
        URL_SAFE_NO_PAD.encode(&ring::digest::digest(&ring::digest::SHA256, kp.public_key().as_ref()).as_ref()[..12]);
    (kid, pkcs8.as_ref().to_vec(), x)
}

/// tenantd's own token signer and verifier.
pub struct Signer {
    kid: String,
    enc: EncodingKey,
    /// The current key, for signatures that are not JWTs (audit checkpoints).
    pair: ring::signature::Ed25519KeyPair,
    keys: Vec<(String, DecodingKey, String)>,
    validation: Validation,
    /// The longest `exp − iat` accepted (the server's `token_ttl_seconds`).
    max_lifetime: i64,
}

impl Signer {
    /// From stored keys `(kid, pkcs8, x)`, oldest first; the newest signs, all verify.
    /// Tokens living longer than `max_lifetime` seconds (`exp − iat`, plus the leeway)
    /// are refused: tenantd never issues them.
    pub fn new(keys: &[(String, Vec<u8>, String)], max_lifetime: i64) -> Result<Self, String> {
        let (kid, pkcs8, _) = keys.last().ok_or("no signing key")?;
        let mut decoding = Vec::new();
        for (kid, _, x) in keys {
            decoding.push((
                kid.clone(),
                DecodingKey::from_ed_components(x).map_err(|e| format!("signing key {kid}: {e}"))?,
                x.clone(),
            ));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "nbf"]);
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = LEEWAY_SECONDS;
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| format!("signing key {kid}: not an Ed25519 PKCS#8 key: {e}"))?;
        Ok(Self {
            kid: kid.clone(),
            enc: EncodingKey::from_ed_der(pkcs8),
            pair,
            keys: decoding,
            validation,
            max_lifetime,
        })
    }

    /// Signs claims with the current key.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(self.kid.clone());
        h.typ = Some("JWT".into());
        jsonwebtoken::encode(&h, claims, &self.enc).expect("Ed25519 signing of plain claims cannot fail")
    }

    /// Verifies a tenantd token: EdDSA only, no `crit`, a known `kid`, `iss`, `exp`,
    /// `nbf`, and a lifetime no longer than this server issues.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let h = header_of(token)?;
        if h.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm);
        }
        let kid = h.kid.ok_or(TokenError::UnknownKey)?;
        let (_, key, _) = self
            .keys
            .iter()
            .find(|(k, _, _)| *k == kid)
            .ok_or(TokenError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|d| d.claims)
            .map_err(map_err)?;
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime + LEEWAY_SECONDS as i64 {
            return Err(TokenError::Lifetime);
        }
        match claims.aud {
            Some(_) => Err(TokenError::Claims),
            None => Ok(claims),
        }
    }

    /// The current key's id, and its Ed25519 signature of `msg` (base64url, no padding).
    pub fn sign_detached(&self, msg: &[u8]) -> (String, String) {
        (self.kid.clone(), URL_SAFE_NO_PAD.encode(self.pair.sign(msg).as_ref()))
    }

    /// The current key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public keys as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|(kid, _, x)| serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": x}))
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// Configuration of the external OpenID provider whose ID tokens are accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud` (the client id).
    pub audience: String,
}

/// Who an external ID token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The provider's subject.
    pub subject: String,
    /// The verified email.
    pub email: String,
}

#[derive(Deserialize)]
struct IdClaims {
    sub: String,
    email: Option<String>,
    email_verified: Option<serde_json::Value>,
}

/// Verifies ID tokens of the configured provider against its JWKS.
pub struct OidcVerifier {
    cfg: OidcConfig,
    jwks: RwLock<JwkSet>,
}

impl OidcVerifier {
    /// A verifier with the provider's current key set.
    pub fn new(cfg: OidcConfig, jwks: JwkSet) -> Self {
        Self {
            cfg,
            jwks: RwLock::new(jwks),
        }
    }

    /// Replaces the key set (after a refresh from the provider).
    pub fn set_jwks(&self, jwks: JwkSet) {
        *self.jwks.write().unwrap_or_else(|e| e.into_inner()) = jwks;
    }

    /// Whether this token claims to come from the configured provider (cheap, unverified).
    pub fn claims_issuer(&self, token: &str) -> bool {
        #[derive(Deserialize)]
        struct Iss {
            iss: Option<String>,
        }
        token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice::<Iss>(&b).ok())
            .and_then(|c| c.iss)
            .is_some_and(|iss| iss == self.cfg.issuer)
    }

    /// Verifies signature (with an algorithm the key's type allows), `iss`, `aud`, `exp`,
    /// `nbf`, and a verified `email`.
    pub fn verify(&self, token: &str) -> Result<ExternalIdentity, TokenError> {
        let h = header_of(token)?;
        let jwks = self.jwks.read().unwrap_or_else(|e| e.into_inner());
        let jwk = match &h.kid {
            Some(kid) => jwks.find(kid),
            None if jwks.keys.len() == 1 => jwks.keys.first(),
            None => None,
        }
        .ok_or(TokenError::UnknownKey)?;
        // The key's type decides which algorithms may be used with it: this is what
        // stops algorithm confusion (an HS256 token "signed" with a public key).
        let allowed: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => &[],
            },
            AlgorithmParameters::OctetKeyPair(_) => &[Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => &[],
        };
        if !allowed.contains(&h.alg) {
            return Err(TokenError::Algorithm);
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| TokenError::UnknownKey)?;
        let mut v = Validation::new(h.alg);
        v.algorithms = allowed.to_vec();
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = LEEWAY_SECONDS;
        let c = jsonwebtoken::decode::<IdClaims>(token, &key, &v)
            .map_err(map_err)?
            .claims;
        let verified = match c.email_verified {
            None => true,
            Some(serde_json::Value::Bool(b)) => b,
            Some(serde_json::Value::String(s)) => s == "true",
            Some(_) => false,
        };
        match c.email {
            Some(email) if verified => Ok(ExternalIdentity { subject: c.sub, email }),
            _ => Err(TokenError::Claims),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_in: i64, nbf_in: i64) -> Claims {
        let now = tenantd_core::now_secs();
        Claims {
            iss: ISSUER.into(),
            sub: "usr_x".into(),
            email: "a@b.co".into(),
            tid: Some("acme".into()),
            roles: vec!["owner".into()],
            plan: None,
            iat: now,
            nbf: now + nbf_in,
            exp: now + exp_in,
            jti: "j".into(),
            aud: None,
        }
    }

    fn signer() -> Signer {
        Signer::new(&[generate_signing_key()], MAX_TOKEN_SECONDS).unwrap()
    }

    #[test]
    fn round_trip_and_time_checks() {
        let s = signer();
        let t = s.sign(&claims(60, 0));
        assert_eq!(s.verify(&t).unwrap().tid.as_deref(), Some("acme"));
        assert_eq!(s.verify(&s.sign(&claims(-60, -120))), Err(TokenError::Expired));
        assert_eq!(s.verify(&s.sign(&claims(600, 120))), Err(TokenError::NotYetValid));
        // Another tenantd's key does not verify here.
        let other = signer();
        assert!(s.verify(&other.sign(&claims(60, 0))).is_err());
    }

    #[test]
    fn refuses_alg_none_and_hmac() {
        let s = signer();
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(60, 0)).unwrap());
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#), body);
        assert_eq!(s.verify(&none), Err(TokenError::Algorithm));
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(60, 0),
            &EncodingKey::from_secret(b"x"),
        )
        .unwrap();
        assert_eq!(s.verify(&hs), Err(TokenError::Algorithm));
        // A tampered payload fails the signature.
        let t = s.sign(&claims(60, 0));
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = claims(60, 0);
        c.tid = Some("other".into());
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap()),
            parts[2]
        );
        assert_eq!(s.verify(&forged), Err(TokenError::Invalid));
    }

    #[test]
    fn refuses_lifetimes_longer_than_issued_and_crit_headers() {
        let s = signer();
        let mut c = claims(60, 0);
        c.exp = 253_402_300_799; // 9999-12-31
        assert_eq!(s.verify(&s.sign(&c)), Err(TokenError::Lifetime));
        let mut c = claims(0, 0);
        c.exp = c.iat + MAX_TOKEN_SECONDS + LEEWAY_SECONDS as i64;
        assert!(
            s.verify(&s.sign(&c)).is_ok(),
            "the longest lifetime issued, with leeway"
        );
        c.exp += 1;
        assert_eq!(s.verify(&s.sign(&c)), Err(TokenError::Lifetime));
        let short = Signer::new(&[generate_signing_key()], 60).unwrap();
        assert_eq!(short.verify(&short.sign(&claims(600, 0))), Err(TokenError::Lifetime));
        // A crit header, correctly signed, is refused all the same.
        let (kid, pkcs8, _) = generate_signing_key();
        let kp = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let x = URL_SAFE_NO_PAD.encode(ring::signature::KeyPair::public_key(&kp).as_ref());
        let s = Signer::new(&[(kid.clone(), pkcs8, x)], 900).unwrap();
        let head = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}","crit":["exp"]}}"#));
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(60, 0)).unwrap());
        let sig = URL_SAFE_NO_PAD.encode(kp.sign(format!("{head}.{body}").as_bytes()).as_ref());
        let token = format!("{head}.{body}.{sig}");
        assert_eq!(s.verify(&token), Err(TokenError::Critical));
        // The same token without crit verifies: it is the header that is refused.
        let head = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}"#));
        let sig = URL_SAFE_NO_PAD.encode(kp.sign(format!("{head}.{body}").as_bytes()).as_ref());
        assert!(s.verify(&format!("{head}.{body}.{sig}")).is_ok());
    }

    #[test]
    fn jwks_lists_public_keys_only() {
        let s = signer();
        let j = s.jwks();
        assert_eq!(j["keys"][0]["kty"], "OKP");
        assert!(j["keys"][0].get("d").is_none());
    }
}
