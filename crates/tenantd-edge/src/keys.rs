//! Tenant API key secrets: `tdk_<id>_<secret>`, 200 random bits from the OS CSPRNG,
//! stored as a SHA-256 hash, compared in constant time.
use rand::RngCore;
use subtle::ConstantTimeEq;
pub use tenantd_core::KeyId;

/// The scheme prefix of every tenantd API key.
pub const KEY_PREFIX: &str = "tdk_";
use tenantd_core::ids::base32;

/// A freshly generated key: the secret (shown once) and what is stored.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// `key_…`, the key's id.
    pub id: String,
    /// The whole secret token, returned once.
    pub secret: String,
    /// What is shown afterwards to recognise it.
    pub prefix: String,
    /// Hex SHA-256 of the secret.
    pub hash_hex: String,
}

/// Generates a key with a new id.
pub fn generate() -> GeneratedKey {
    let mut idb = [0u8; 13];
    let mut sec = [0u8; 25];
    let mut rng = rand::rngs::OsRng;
    rng.fill_bytes(&mut idb);
    rng.fill_bytes(&mut sec);
    let id_part = &base32(&idb)[..20];
    generate_for(id_part, &sec)
}

/// Generates a new secret for an existing key id (rotation keeps nothing of the old secret).
pub fn regenerate(key_id: &str) -> Option<GeneratedKey> {
    let id_part = key_id.strip_prefix("key_")?;
    let mut sec = [0u8; 25];
    rand::rngs::OsRng.fill_bytes(&mut sec);
    Some(generate_for(id_part, &sec))
}

fn generate_for(id_part: &str, secret_bytes: &[u8]) -> GeneratedKey {
    let secret = format!("{KEY_PREFIX}{id_part}_{}", base32(secret_bytes));
    GeneratedKey {
        id: format!("key_{id_part}"),
        prefix: secret[..KEY_PREFIX.len() + 8].to_string(),
        hash_hex: hex::encode(hash(&secret)),
        secret,
    }
}

/// SHA-256 of a secret.
pub fn hash(secret: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The id of a presented token, without allocating.
pub fn key_id_of(token: &str) -> Option<KeyId> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if secret.is_empty() {
        return None;
    }
    KeyId::from_part(id)
}

/// Whether `token` hashes to `expected`, in constant time.
pub fn verify(token: &str, expected: &[u8; 32]) -> bool {
    hash(token).ct_eq(expected).into()
}

/// Parses a stored hex hash.
pub fn parse_hash(hex_hash: &str) -> Option<[u8; 32]> {
    let v = hex::decode(hex_hash).ok()?;
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_verify_and_carry_their_id() {
        let k = generate();
        assert!(k.secret.starts_with("tdk_"));
        assert_eq!(key_id_of(&k.secret).map(|p| p.to_string()), Some(k.id.clone()));
        let h = parse_hash(&k.hash_hex).unwrap();
        assert!(verify(&k.secret, &h));
        assert!(!verify(&format!("{}x", k.secret), &h));
        assert!(k.secret.starts_with(&k.prefix));
        assert_ne!(generate().secret, k.secret);
    }

    #[test]
    fn rotation_keeps_id_changes_secret() {
        let k = generate();
        let r = regenerate(&k.id).unwrap();
        assert_eq!(r.id, k.id);
        assert_ne!(r.secret, k.secret);
        assert_ne!(r.hash_hex, k.hash_hex);
    }

    #[test]
    fn malformed_tokens_have_no_id() {
        for t in [
            "",
            "tdk_",
            "tdk_abc_def",
            "xyz_aaaaaaaaaaaaaaaaaaaa_x",
            "tdk_aaaaaaaaaaaaaaaaaaaa_",
            "tdk_AAAAAAAAAAAAAAAAAAAA_x",
        ] {
            assert!(key_id_of(t).is_none(), "{t}");
        }
    }
}
