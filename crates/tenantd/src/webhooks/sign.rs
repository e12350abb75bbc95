//! The Standard Webhooks wire format's signature: `v1,` and the base64 HMAC-SHA256 of
//! `{id}.{timestamp}.{body}` under the secret (the base64 after `whsec_`), several of them
//! space-separated while a rotated secret still signs.
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The prefix of every webhook secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).expect("the OS random source works");
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// One signature, `v1,<base64>`, of a message under `secret` (with or without `whsec_`).
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .map_err(|_| "a webhook secret is not base64".to_string())?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(msg_id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    Ok(format!("v1,{}", STANDARD.encode(ctx.sign().as_ref())))
}

/// The `webhook-signature` header: one signature per secret, newest first.
pub fn signature_header(secrets: &[&str], msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let sigs: Result<Vec<String>, String> = secrets.iter().map(|s| sign(s, msg_id, timestamp, body)).collect();
    Ok(sigs?.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector of the Standard Webhooks reference libraries' tests ("sign function
    /// works"), with and without the prefix.
    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let body = br#"{"test": 2432232314}"#;
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        for key in [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            assert_eq!(
                sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
                expected
            );
        }
        assert_ne!(
            sign(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265331,
                body
            )
            .unwrap(),
            expected,
            "the timestamp is signed"
        );
    }

    #[test]
    fn a_rotation_signs_with_both_secrets_newest_first() {
        let (new, old) = (new_secret(), new_secret());
        let h = signature_header(&[&new, &old], "evt_1", 1, b"{}").unwrap();
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(
            parts,
            [
                sign(&new, "evt_1", 1, b"{}").unwrap(),
                sign(&old, "evt_1", 1, b"{}").unwrap()
            ]
        );
        assert!(new.starts_with(SECRET_PREFIX) && STANDARD.decode(&new[6..]).unwrap().len() == 32);
        assert!(sign("whsec_!!", "x", 1, b"").is_err());
    }
}
