//! Keys and authenticated encryption (docs/protection.md), on ring's AES-256-GCM: nothing
//! here is cryptography of tenantd's own, only how ring's AEAD is used.
//!
//! - A [`Key`] is 32 random bytes. It never prints (`Debug` says `Key([redacted])`).
//! - [`seal`] encrypts under a key with a fresh random 96-bit nonce and binds
//!   *associated data*: what the value is and whose (`tenant/acme/secret/stripe`). The
//!   sealed bytes are `nonce ‖ ciphertext ‖ tag`.
//! - [`open`] refuses anything altered, and anything sealed under another key or with
//!   other associated data: a value copied into another tenant's row does not open.
//! - The master key wraps (seals) each tenant's data keys ([`wrap`]); data keys seal the
//!   tenant's values.
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;

/// A 256-bit key for AES-256-GCM.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key([redacted])")
    }
}

/// Why a sealed value did not open, or a key could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Altered, truncated, or sealed under another key or for another owner or object.
    #[error("the value does not decrypt: it was sealed under another key or for another tenant or object, or altered")]
    Open,
    /// Key material of the wrong length or encoding.
    #[error("{0}")]
    BadKey(String),
    /// The system's random source failed.
    #[error("no randomness available")]
    Random,
    /// The tenant has no data key of that version.
    #[error("the tenant has no data key version {0} (its keys were destroyed, or the value is not its own)")]
    NoKey(i64),
}

impl Key {
    /// A new random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = [0u8; 32];
        SystemRandom::new().fill(&mut k).map_err(|_| CryptoError::Random)?;
        Ok(Self(k))
    }

    /// From exactly 32 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CryptoError> {
        let k: [u8; 32] = b
            .try_into()
            .map_err(|_| CryptoError::BadKey(format!("a key is 32 bytes, not {}", b.len())))?;
        Ok(Self(k))
    }

    /// From standard base64 of 32 bytes (surrounding whitespace ignored).
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| CryptoError::BadKey("a key is base64 of 32 bytes".into()))?;
        Self::from_bytes(&b)
    }

    /// Standard base64 of the key, for the one place that writes it down (a key file).
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// A short public fingerprint: the first 8 bytes of SHA-256 over a fixed label and
    /// the key, hex. Tells which key a catalog was wrapped under without revealing it.
    pub fn fingerprint(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"tenantd key fingerprint v1\0");
        ctx.update(&self.0);
        hex_prefix(ctx.finish().as_ref())
    }

    /// A 32-byte subkey for one purpose, so this key's bytes never serve two: HKDF-SHA256
    /// (RFC 5869) of this key with `salt`, `info` naming the purpose.
    pub fn derive(&self, salt: &[u8], info: &[u8]) -> [u8; 32] {
        use ring::hkdf;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&self.0);
        let mut out = [0u8; 32];
        prk.expand(&[info], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out))
            .expect("32 bytes is HKDF-SHA256's own output length");
        out
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("a 32-byte key fits AES-256-GCM"))
    }
}

fn hex_prefix(d: &[u8]) -> String {
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Encrypts `plaintext` under `key`, bound to `aad`: `nonce ‖ ciphertext ‖ tag`.
pub fn seal(key: &Key, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .aead()
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[NONCE_LEN..],
        )
        .map_err(|_| CryptoError::Open)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Decrypts what [`seal`] made under the same key and `aad`.
pub fn open(key: &Key, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(CryptoError::Open);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Open)?;
    let mut buf = rest.to_vec();
    let plain = key
        .aead()
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Open)?;
    let n = plain.len();
    buf.truncate(n);
    Ok(buf)
}

/// The associated data of a tenant's data key `version` under the master key.
fn data_key_aad(tenant: &str, version: i64) -> Vec<u8> {
    format!("tenantd/data-key/{tenant}/{version}").into_bytes()
}

/// A tenant's data key, sealed under the master key for that tenant and version.
pub fn wrap(master: &Key, tenant: &str, version: i64, data_key: &Key) -> Result<Vec<u8>, CryptoError> {
    seal(master, &data_key_aad(tenant, version), &data_key.0)
}

/// The data key [`wrap`] sealed.
pub fn unwrap(master: &Key, tenant: &str, version: i64, wrapped: &[u8]) -> Result<Key, CryptoError> {
    Key::from_bytes(&open(master, &data_key_aad(tenant, version), wrapped)?)
}

/// The associated data binding a tenant's value: `tenant/<id>/<kind>/<name>`.
pub fn object_aad(tenant: &str, kind: &str, name: &str) -> Vec<u8> {
    format!("tenant/{tenant}/{kind}/{name}").into_bytes()
}

/// One tenant's unwrapped data keys: the newest version seals, every version opens.
pub struct TenantKeys {
    tenant: String,
    current: i64,
    keys: std::collections::BTreeMap<i64, Key>,
}

impl fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantKeys")
            .field("tenant", &self.tenant)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TenantKeys {
    /// The tenant's keys by version; `None` when there are none.
    pub fn new(tenant: &str, keys: std::collections::BTreeMap<i64, Key>) -> Option<Self> {
        let current = *keys.keys().next_back()?;
        Some(Self {
            tenant: tenant.to_string(),
            current,
            keys,
        })
    }

    /// The version new values are sealed under.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Whether it holds that version.
    pub fn has(&self, version: i64) -> bool {
        self.keys.contains_key(&version)
    }

    /// Seals the tenant's `kind`/`name` under the current key: its version and the
    /// sealed bytes.
    pub fn seal(&self, kind: &str, name: &str, plaintext: &[u8]) -> Result<(i64, Vec<u8>), CryptoError> {
        let key = &self.keys[&self.current];
        let sealed = seal(key, &object_aad(&self.tenant, kind, name), plaintext)?;
        Ok((self.current, sealed))
    }

    /// Opens what [`TenantKeys::seal`] made for the same tenant, kind and name.
    pub fn open(&self, version: i64, kind: &str, name: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self.keys.get(&version).ok_or(CryptoError::NoKey(version))?;
        open(key, &object_aad(&self.tenant, kind, name), sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_key_depends_on_the_key_the_salt_and_the_purpose() {
        let (k, other) = (Key::generate().unwrap(), Key::generate().unwrap());
        let d = k.derive(b"salt", b"purpose");
        assert_eq!(d, k.derive(b"salt", b"purpose"), "the same inputs, the same key");
        assert_ne!(d, other.derive(b"salt", b"purpose"));
        assert_ne!(d, k.derive(b"another salt", b"purpose"));
        assert_ne!(d, k.derive(b"salt", b"another purpose"));
    }

    #[test]
    fn a_value_opens_only_with_its_key_and_its_associated_data() {
        let (k, other) = (Key::generate().unwrap(), Key::generate().unwrap());
        let aad = object_aad("acme", "secret", "stripe");
        let sealed = seal(&k, &aad, b"sk_live_marker").unwrap();
        assert!(
            !sealed.windows(6).any(|w| w == b"marker"),
            "the plaintext is not in the sealed bytes"
        );
        assert_eq!(open(&k, &aad, &sealed).unwrap(), b"sk_live_marker");
        assert_eq!(open(&other, &aad, &sealed), Err(CryptoError::Open));
        assert_eq!(
            open(&k, &object_aad("globex", "secret", "stripe"), &sealed),
            Err(CryptoError::Open)
        );
        assert_eq!(
            open(&k, &object_aad("acme", "secret", "other"), &sealed),
            Err(CryptoError::Open)
        );
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(open(&k, &aad, &altered), Err(CryptoError::Open));
        assert_eq!(open(&k, &aad, &sealed[..10]), Err(CryptoError::Open));
        // A fresh nonce each time: the same value seals differently.
        assert_ne!(seal(&k, &aad, b"x").unwrap(), seal(&k, &aad, b"x").unwrap());
    }

    #[test]
    fn data_keys_unwrap_only_for_their_tenant_and_version() {
        let master = Key::generate().unwrap();
        let dk = Key::generate().unwrap();
        let w = wrap(&master, "acme", 1, &dk).unwrap();
        assert_eq!(unwrap(&master, "acme", 1, &w).unwrap(), dk);
        assert!(unwrap(&master, "acme", 2, &w).is_err());
        assert!(unwrap(&master, "globex", 1, &w).is_err());
        assert!(unwrap(&Key::generate().unwrap(), "acme", 1, &w).is_err());
    }

    #[test]
    fn tenant_keys_seal_under_the_newest_and_open_every_version() {
        let (k1, k2) = (Key::generate().unwrap(), Key::generate().unwrap());
        let one = TenantKeys::new("acme", [(1, k1.clone())].into()).unwrap();
        let (v, sealed) = one.seal("record", "orders/1", b"marker").unwrap();
        assert_eq!(v, 1);
        let both = TenantKeys::new("acme", [(1, k1.clone()), (2, k2)].into()).unwrap();
        assert_eq!(both.current(), 2);
        assert_eq!(both.open(1, "record", "orders/1", &sealed).unwrap(), b"marker");
        assert_eq!(both.seal("record", "orders/1", b"x").unwrap().0, 2);
        assert_eq!(both.open(1, "record", "orders/2", &sealed), Err(CryptoError::Open));
        assert_eq!(both.open(3, "record", "orders/1", &sealed), Err(CryptoError::NoKey(3)));
        let globex = TenantKeys::new("globex", [(1, k1)].into()).unwrap();
        assert_eq!(globex.open(1, "record", "orders/1", &sealed), Err(CryptoError::Open));
        assert!(TenantKeys::new("acme", Default::default()).is_none());
        assert!(!format!("{both:?}").contains("Key("));
    }

    #[test]
    fn keys_never_print_and_read_back_from_base64() {
        let k = Key::generate().unwrap();
        assert_eq!(format!("{k:?}"), "Key([redacted])");
        assert_eq!(Key::from_base64(&k.to_base64()).unwrap(), k);
        assert!(Key::from_base64("c2hvcnQ=").is_err());
        assert_eq!(k.fingerprint().len(), 16);
        assert_ne!(k.fingerprint(), Key::generate().unwrap().fingerprint());
    }
}
