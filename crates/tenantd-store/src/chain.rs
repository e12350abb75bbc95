//! The event log's hash chains (docs/events.md): each tenant's events form one chain, the
//! platform's another. An event's `digest` is the SHA-256 of the canonical JSON of its
//! fields `id, seq, type, tenant_id, actor, request_id, at, data`; its `hash` is the
//! SHA-256 of its `prev_hash` followed by its `digest`; the first `prev_hash` is 64 zeros.
//! A checkpoint signs a chain's head with the JWT signing key. Everything here is pure,
//! so the same code checks the database and an exported file.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `prev_hash` of a chain's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// JSON with object keys sorted and no insignificant whitespace (strings escaped as JSON
/// escapes them), whatever order the value's maps keep.
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// What an event's digest covers, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Content {
    /// `evt_…`
    pub id: String,
    /// Its place in its chain, from 1.
    pub seq: i64,
    /// `noun.verb`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its tenant; `null` for the platform's chain.
    pub tenant_id: Option<String>,
    /// `{"type", "id"}`.
    pub actor: Value,
    /// The request that made it (empty for background work).
    pub request_id: String,
    /// RFC 3339, seconds, UTC.
    pub at: String,
    /// Its data.
    pub data: Value,
}

impl Content {
    /// The lower-case hex SHA-256 of its canonical JSON.
    pub fn digest(&self) -> String {
        let v = serde_json::to_value(self).expect("plain fields serialise");
        sha256_hex(canonical(&v).as_bytes())
    }
}

/// An event's link: the SHA-256 of `prev_hash` then `digest` (their hex, as UTF-8).
pub fn link(prev_hash: &str, digest: &str) -> String {
    let mut bytes = Vec::with_capacity(prev_hash.len() + digest.len());
    bytes.extend_from_slice(prev_hash.as_bytes());
    bytes.extend_from_slice(digest.as_bytes());
    sha256_hex(&bytes)
}

/// One event as a chain check reads it: its content (absent when redacted) and links.
#[derive(Debug, Clone)]
pub struct Linked {
    /// Its place in its chain.
    pub seq: i64,
    /// Its content; `None` for a redacted tombstone, whose digest stands for it.
    pub content: Option<Content>,
    /// As stored.
    pub digest: String,
    /// As stored.
    pub prev_hash: String,
    /// As stored.
    pub hash: String,
}

/// A chain that verified: how many events, and its head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Events checked.
    pub events: u64,
    /// The last event's `seq` and `hash`; `None` for an empty chain.
    pub head: Option<(i64, String)>,
}

/// Where a chain broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// The first `seq` that does not verify.
    pub first_bad_seq: i64,
    /// Why.
    pub reason: String,
}

/// A chain check fed one event at a time (a chain read in batches, a file read by lines).
#[derive(Debug, Clone)]
pub struct Verifier {
    seq: i64,
    hash: String,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }
}

impl Verifier {
    /// Checks the next event.
    pub fn push(&mut self, e: &Linked) -> Result<(), Broken> {
        let bad = |seq: i64, reason: String| Broken {
            first_bad_seq: seq,
            reason,
        };
        let expected = self.seq + 1;
        if e.seq != expected {
            return Err(bad(
                e.seq.min(expected),
                format!(
                    "seq {} follows seq {}: an event is missing or was added",
                    e.seq, self.seq
                ),
            ));
        }
        if e.prev_hash != self.hash {
            return Err(bad(e.seq, "its prev_hash is not the hash of the event before".into()));
        }
        if let Some(c) = &e.content {
            if c.seq != e.seq {
                return Err(bad(e.seq, "its content names another seq".into()));
            }
            if c.digest() != e.digest {
                return Err(bad(e.seq, "its content does not match its digest".into()));
            }
        }
        if link(&e.prev_hash, &e.digest) != e.hash {
            return Err(bad(
                e.seq,
                "its hash is not the hash of its prev_hash and digest".into(),
            ));
        }
        self.seq = e.seq;
        self.hash = e.hash.clone();
        Ok(())
    }

    /// What was checked so far.
    pub fn verified(&self) -> Verified {
        Verified {
            events: self.seq as u64,
            head: (self.seq > 0).then(|| (self.seq, self.hash.clone())),
        }
    }
}

/// A signed chain head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    /// The chain's tenant; `null` for the platform's.
    pub tenant_id: Option<String>,
    /// The head's `seq`.
    pub seq: i64,
    /// The head's `hash`.
    pub hash: String,
    /// When it was signed (RFC 3339).
    pub at: String,
    /// The signing key's id in `/.well-known/jwks.json`.
    pub kid: String,
    /// Base64url (no padding) Ed25519 signature of the canonical JSON of the other five
    /// fields.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes its signature covers.
    pub fn signed_bytes(tenant_id: Option<&str>, seq: i64, hash: &str, at: &str, kid: &str) -> Vec<u8> {
        let v = serde_json::json!({"tenant_id": tenant_id, "seq": seq, "hash": hash, "at": at, "kid": kid});
        canonical(&v).into_bytes()
    }

    /// Checks the signature with the Ed25519 public key `x` (base64url, as in a JWK).
    pub fn verify_with(&self, x: &str) -> Result<(), String> {
        let key = URL_SAFE_NO_PAD
            .decode(x)
            .map_err(|_| format!("the key {} is not base64url", self.kid))?;
        let sig = URL_SAFE_NO_PAD
            .decode(&self.signature)
            .map_err(|_| "the checkpoint's signature is not base64url".to_string())?;
        let msg = Self::signed_bytes(self.tenant_id.as_deref(), self.seq, &self.hash, &self.at, &self.kid);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
            .verify(&msg, &sig)
            .map_err(|_| format!("the checkpoint's signature does not verify with key {}", self.kid))
    }
}

/// Checks a chain's checkpoint: signed by a key of `jwks` (found by its `kid`), and
/// naming an event of the chain whose hash is `hash_at_seq` (the chain's hash at the
/// checkpoint's `seq`, `None` if it has no such event).
pub fn check_checkpoint(cp: &Checkpoint, jwks: &Value, hash_at_seq: Option<&str>) -> Result<(), Broken> {
    let x = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == cp.kid.as_str())
        .and_then(|k| k["x"].as_str());
    let bad = |reason: String| Broken {
        first_bad_seq: cp.seq,
        reason,
    };
    match x {
        Some(x) => cp.verify_with(x).map_err(bad)?,
        None => {
            return Err(bad(format!(
                "the checkpoint's key {} is not among the public keys",
                cp.kid
            )))
        }
    }
    if hash_at_seq != Some(cp.hash.as_str()) {
        return Err(bad("the checkpoint's hash is not the hash of the event it names".into()));
    }
    Ok(())
}

/// One chain of an exported NDJSON file, as [`verify_export`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// The tenant of its first event (`None`: the platform's, or a purged tenant's).
    pub tenant_id: Option<String>,
    /// Whether its events and its checkpoint (if any) verify.
    pub result: Result<Verified, Broken>,
    /// Whether a signed checkpoint vouched for it.
    pub checkpointed: bool,
}

/// Checks an export (`GET …/audit` with `Accept: application/x-ndjson`) offline, with
/// nothing but the JWKS's public keys: each chain (a run of events from `seq` 1, followed
/// by its `{"checkpoint": …}` line when it has one) must verify, and its checkpoint must be
/// signed by a key of `jwks` and name one of its events with that hash. `Err` for a line
/// that is neither.
pub fn verify_export(ndjson: &str, jwks: &Value) -> Result<Vec<ChainReport>, String> {
    struct Open {
        report: ChainReport,
        verifier: Verifier,
        hashes: std::collections::HashMap<i64, String>,
    }
    let mut done: Vec<ChainReport> = Vec::new();
    let mut open: Option<Open> = None;
    for (n, line) in ndjson.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", n + 1))?;
        if let Some(cp) = v.get("checkpoint") {
            let cp: Checkpoint =
                serde_json::from_value(cp.clone()).map_err(|e| format!("line {}: not a checkpoint: {e}", n + 1))?;
            let Some(chain) = open.as_mut() else {
                return Err(format!("line {}: a checkpoint with no events before it", n + 1));
            };
            chain.report.checkpointed = true;
            if chain.report.result.is_ok() {
                if let Err(b) = check_checkpoint(&cp, jwks, chain.hashes.get(&cp.seq).map(String::as_str)) {
                    chain.report.result = Err(b);
                }
            }
            done.extend(open.take().map(|o| o.report));
            continue;
        }
        let seq = v["seq"]
            .as_i64()
            .ok_or_else(|| format!("line {}: an event without a seq", n + 1))?;
        if seq == 1 || open.is_none() {
            done.extend(open.take().map(|o| o.report));
            open = Some(Open {
                report: ChainReport {
                    tenant_id: v["tenant_id"].as_str().map(str::to_string),
                    result: Ok(Verifier::default().verified()),
                    checkpointed: false,
                },
                verifier: Verifier::default(),
                hashes: Default::default(),
            });
        }
        let chain = open.as_mut().expect("opened above");
        if chain.report.result.is_err() {
            continue;
        }
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let redacted = v["redacted"].as_bool().unwrap_or(false);
        let content = if redacted {
            None
        } else {
            Some(serde_json::from_value::<Content>(v.clone()).map_err(|e| format!("line {}: {e}", n + 1))?)
        };
        let linked = Linked {
            seq,
            content,
            digest: text("digest"),
            prev_hash: text("prev_hash"),
            hash: text("hash"),
        };
        chain.hashes.insert(seq, linked.hash.clone());
        chain.report.result = chain.verifier.push(&linked).map(|()| chain.verifier.verified());
    }
    done.extend(open.map(|o| o.report));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole chain through one [`Verifier`].
    fn verify(events: impl IntoIterator<Item = Linked>) -> Result<Verified, Broken> {
        let mut v = Verifier::default();
        for e in events {
            v.push(&e)?;
        }
        Ok(v.verified())
    }
    use serde_json::json;

    fn content(seq: i64) -> Content {
        Content {
            id: format!("evt_{seq}"),
            seq,
            kind: "tenant.created".into(),
            tenant_id: Some("acme".into()),
            actor: json!({"type": "operator", "id": "operator"}),
            request_id: "req_1".into(),
            at: "2026-12-07T12:00:00Z".into(),
            data: json!({"plan": "free", "b": [1, {"z": 1, "a": "é\n"}]}),
        }
    }

    fn chain(n: i64) -> Vec<Linked> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let c = content(seq);
                let digest = c.digest();
                let hash = link(&prev, &digest);
                let l = Linked {
                    seq,
                    content: Some(c),
                    digest,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                l
            })
            .collect()
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let v: Value = serde_json::from_str(r#"{ "b": 1, "a": {"d": [true, null], "c": "x\"y"} }"#).unwrap();
        assert_eq!(canonical(&v), r#"{"a":{"c":"x\"y","d":[true,null]},"b":1}"#);
    }

    #[test]
    fn the_digest_and_link_are_sha256_of_the_documented_bytes() {
        let c = content(1);
        let text = r#"{"actor":{"id":"operator","type":"operator"},"at":"2026-12-07T12:00:00Z","data":{"b":[1,{"a":"é\n","z":1}],"plan":"free"},"id":"evt_1","request_id":"req_1","seq":1,"tenant_id":"acme","type":"tenant.created"}"#;
        assert_eq!(c.digest(), sha256_hex(text.as_bytes()));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            link(GENESIS, &c.digest()),
            sha256_hex(format!("{GENESIS}{}", c.digest()).as_bytes())
        );
    }

    #[test]
    fn a_whole_chain_verifies_and_each_kind_of_tampering_names_its_seq() {
        let ok = verify(chain(5)).unwrap();
        assert_eq!((ok.events, ok.head.clone().map(|h| h.0)), (5, Some(5)));
        // Edited content.
        let mut edited = chain(5);
        edited[2].content.as_mut().unwrap().data = json!({"plan": "enterprise"});
        assert_eq!(verify(edited).unwrap_err().first_bad_seq, 3);
        // Deleted.
        let mut deleted = chain(5);
        deleted.remove(3);
        assert_eq!(verify(deleted).unwrap_err().first_bad_seq, 4);
        // Inserted (a copy of an event put in again).
        let mut inserted = chain(5);
        let copy = inserted[1].clone();
        inserted.insert(2, copy);
        assert_eq!(verify(inserted).unwrap_err().first_bad_seq, 2);
        // A rewritten hash.
        let mut relinked = chain(5);
        relinked[4].hash = GENESIS.into();
        assert_eq!(verify(relinked).unwrap_err().first_bad_seq, 5);
        // A redacted tombstone keeps the links.
        let mut redacted = chain(5);
        redacted[1].content = None;
        assert_eq!(verify(redacted).unwrap().events, 5);
    }

    #[test]
    fn a_checkpoint_verifies_with_its_key_only() {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pair = |seed| {
            let _ = seed;
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
        };
        let (mine, other) = (pair(1), pair(2));
        let at = "2026-12-07T12:00:00Z";
        let msg = Checkpoint::signed_bytes(Some("acme"), 5, GENESIS, at, "k1");
        let cp = Checkpoint {
            tenant_id: Some("acme".into()),
            seq: 5,
            hash: GENESIS.into(),
            at: at.into(),
            kid: "k1".into(),
            signature: URL_SAFE_NO_PAD.encode(mine.sign(&msg).as_ref()),
        };
        let x = |k: &ring::signature::Ed25519KeyPair| URL_SAFE_NO_PAD.encode(k.public_key().as_ref());
        cp.verify_with(&x(&mine)).unwrap();
        assert!(cp.verify_with(&x(&other)).is_err(), "another key's");
        let moved = Checkpoint { seq: 6, ..cp };
        assert!(moved.verify_with(&x(&mine)).is_err(), "a changed head");
    }
}
