//! Identifier newtypes, parsed at the edge so that invalid input never enters the domain.
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A tenant id outside the contract's grammar, or a reserved one.
    #[error("invalid tenant id: {0}")]
    TenantId(&'static str),
    /// An email without the shape `local@domain`.
    #[error("invalid email address")]
    Email,
    /// A host name that is not a DNS name.
    #[error("invalid host: use a DNS name such as app.example.com, without scheme or port")]
    Host,
    /// A plan, workspace or role name outside `[a-z0-9_-]{1,64}`.
    #[error("invalid {0}: use 1-64 characters of a-z, 0-9, '-' and '_'")]
    Name(&'static str),
}

/// Tenant ids reserved by tenantd (docs/api.md).
pub const RESERVED_TENANT_IDS: [&str; 4] = ["admin", "api", "www", "default"];

/// A tenant id: 1–39 characters of `a-z`, `0-9` and `-`, not starting or ending with `-`.
/// Held inline (40 bytes, no heap): the edge copies and compares ids on every request,
/// and an inline id costs no allocation and no shared reference count.
#[derive(Clone, Copy)]
pub struct TenantId {
    len: u8,
    buf: [u8; TenantId::MAX_LEN],
}

impl TenantId {
    /// The longest tenant id.
    pub const MAX_LEN: usize = 39;

    /// Lower-cases and validates `raw`; `allow_default` lets `default` through (single-tenant mode).
    pub fn parse_with(raw: &str, allow_default: bool) -> Result<Self, IdError> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(IdError::TenantId("it must be 1 to 39 characters long"));
        }
        let mut buf = [0u8; Self::MAX_LEN];
        for (d, s) in buf.iter_mut().zip(raw.bytes()) {
            let b = s.to_ascii_lowercase();
            if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                return Err(IdError::TenantId("only a-z, 0-9 and '-' are allowed"));
            }
            *d = b;
        }
        let id = Self {
            len: raw.len() as u8,
            buf,
        };
        let s = id.as_str();
        if s.starts_with('-') || s.ends_with('-') {
            return Err(IdError::TenantId("it must not start or end with '-'"));
        }
        if RESERVED_TENANT_IDS.contains(&s) && !(allow_default && s == "default") {
            return Err(IdError::TenantId("this id is reserved"));
        }
        Ok(id)
    }

    /// [`TenantId::parse_with`] with reserved ids refused.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        Self::parse_with(raw, false)
    }

    /// Wraps a value read back from storage, where it was validated on the way in.
    pub fn from_trusted(s: String) -> Self {
        Self::from_trusted_str(&s)
    }

    /// [`TenantId::from_trusted`] without an owned string. Only the leading ASCII bytes
    /// (at most 39) are kept; validated ids are all ASCII and short enough.
    pub fn from_trusted_str(s: &str) -> Self {
        let mut buf = [0u8; Self::MAX_LEN];
        let n = s.bytes().take(Self::MAX_LEN).take_while(u8::is_ascii).count();
        buf[..n].copy_from_slice(&s.as_bytes()[..n]);
        Self { len: n as u8, buf }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever written into `buf[..len]`.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or_default()
    }
}

impl TenantId {
    /// The id's bytes (all ASCII).
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

// Comparisons work on the bytes: no UTF-8 check on the edge's hot path.
impl PartialEq for TenantId {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}
impl Eq for TenantId {}
impl std::hash::Hash for TenantId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // What `str`'s hash writes (so lookups by `&str` through `Borrow` agree), without
        // re-checking that the bytes are UTF-8.
        state.write(self.bytes());
        state.write_u8(0xff);
    }
}
impl PartialOrd for TenantId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TenantId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes().cmp(other.bytes())
    }
}
impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}
impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::parse_with(&s, true).map_err(serde::de::Error::custom)
    }
}

/// The alphabet of every random id and secret tenantd makes: lower-case RFC 4648 base32.
const BASE32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `bytes` in lower-case base32, without padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A new random resource id: `prefix`, `_`, then 20 base32 characters (100 bits), as
/// `usr_…`, `rec_…`, `jti_…`. The one generator of every such id.
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 13] = rand::random();
    format!("{prefix}_{}", &base32(&bytes)[..20])
}

/// What a tenant id is, as the OpenAPI document's pattern: 1–39 of `a-z 0-9 -`, not
/// starting or ending with `-`, in any case (lower-cased when parsed). The reserved ids
/// (`admin`, `api`, `www`, `default`) are refused as well.
pub const TENANT_ID_PATTERN: &str = "^[A-Za-z0-9]([A-Za-z0-9-]{0,37}[A-Za-z0-9])?$";
/// What a machine name (plan, workspace, role) is: 1–64 of `a-z 0-9 - _`, in any case.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
/// What an email is: visible ASCII, one `@`, a `.` inside the domain (≤ 254 in all).
pub const EMAIL_PATTERN: &str = "^[!-?A-~]+@[!-\\-/-?A-~][!-?A-~]*\\.[!-?A-~]*[!-\\-/-?A-~]$";
/// What a custom domain's host is (≤ 253 characters in all).
pub const HOST_PATTERN: &str =
    "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$";

/// An email address, lower-cased; the identity of a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Lower-cases and checks the `local@domain.tld` shape: at most 254 visible ASCII
    /// characters, one `@`, and a domain with a `.` inside it ([`EMAIL_PATTERN`]).
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let e = raw.to_ascii_lowercase();
        let (local, domain) = e.split_once('@').ok_or(IdError::Email)?;
        let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic() && b != b'@');
        let ok = !local.is_empty()
            && e.len() <= 254
            && visible(local)
            && visible(domain)
            && domain.len() >= 3
            && domain[1..domain.len() - 1].contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.');
        if ok {
            Ok(Self(e))
        } else {
            Err(IdError::Email)
        }
    }
    /// The address as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Email::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lower-cases and checks a DNS host name: at most 253 characters, at least two labels
/// of 1–63 of `a-z 0-9 -` (no `-` at either end), the last starting with a letter (so no
/// IP literal such as 169.254.169.254), no port, scheme or trailing dot
/// ([`HOST_PATTERN`]).
pub fn parse_host(raw: &str) -> Result<String, IdError> {
    let h = raw.to_ascii_lowercase();
    let labels_ok = h.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    let not_ip = h
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.starts_with(|c: char| c.is_ascii_lowercase()));
    if h.len() <= 253 && h.contains('.') && labels_ok && not_ip {
        Ok(h)
    } else {
        Err(IdError::Host)
    }
}

/// Lower-cases and checks a short machine name (plan id, workspace id, role name): 1–64
/// of `a-z 0-9 - _` ([`NAME_PATTERN`]).
pub fn parse_name(raw: &str, what: &'static str) -> Result<String, IdError> {
    let s = raw.to_ascii_lowercase();
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(IdError::Name(what));
    }
    Ok(s)
}

macro_rules! name_id {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);
        impl $name {
            /// Lower-cases and validates `raw`.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                parse_name(raw, $what).map(Self)
            }
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_id!(
    /// A plan id such as `free` or `enterprise`.
    PlanId,
    "plan id"
);
name_id!(
    /// A workspace id, unique within its tenant.
    WorkspaceId,
    "workspace id"
);

/// A user id, `usr_` followed by 20 lower-case base32 characters.
pub type UserId = String;
/// An API key's id, `key_` and 20 base32 characters, held inline (the edge copies it
/// on every request).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 20]);

impl KeyId {
    /// From the 20-character id part of a token.
    pub fn from_part(part: &str) -> Option<Self> {
        let b: [u8; 20] = part.as_bytes().try_into().ok()?;
        b.iter()
            .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(c))
            .then_some(Self(b))
    }
    /// From `key_…`.
    pub fn parse(id: &str) -> Option<Self> {
        Self::from_part(id.strip_prefix("key_")?)
    }
    /// The 20-character id part.
    pub fn part(&self) -> &str {
        // Only base32 ASCII is ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key_{}", self.part())
    }
}
impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"key_{}\"", self.part())
    }
}
impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_tenant_ids_compare_order_and_serialize_as_strings() {
        let id = |s: &str| TenantId::parse(s).unwrap();
        assert_eq!(TenantId::from_trusted_str("acme"), id("ACME"));
        assert_ne!(id("acme"), id("acme-1"));
        let mut v = [id("b"), id("ab"), id("a")];
        v.sort();
        assert_eq!(v.iter().map(TenantId::as_str).collect::<Vec<_>>(), ["a", "ab", "b"]);
        assert_eq!(serde_json::to_string(&id("acme")).unwrap(), "\"acme\"");
        assert_eq!(format!("{:?} {}", id("acme"), id("acme")), "\"acme\" acme");
        let k = KeyId::parse("key_abcdefghijklmnopqrst").unwrap();
        assert_eq!(
            (k.to_string(), k.part()),
            ("key_abcdefghijklmnopqrst".into(), "abcdefghijklmnopqrst")
        );
        assert!(KeyId::parse("key_short").is_none() && KeyId::parse("abcdefghijklmnopqrst").is_none());
    }

    #[test]
    fn tenant_ids_follow_the_contract() {
        assert_eq!(TenantId::parse("Acme-1").unwrap().as_str(), "acme-1");
        assert!(TenantId::parse("a").is_ok());
        assert!(TenantId::parse(&"a".repeat(39)).is_ok());
        assert!(TenantId::parse(&"a".repeat(40)).is_err());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("-acme").is_err());
        assert!(TenantId::parse("acme-").is_err());
        assert!(TenantId::parse("ac_me").is_err());
        assert!(TenantId::parse("acmé").is_err());
        assert!(TenantId::parse(" acme").is_err());
        for r in RESERVED_TENANT_IDS {
            assert!(TenantId::parse(r).is_err(), "{r} is reserved");
        }
        assert!(TenantId::parse_with("default", true).is_ok());
        assert!(TenantId::parse_with("admin", true).is_err());
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(Email::parse("Ann@Example.COM").unwrap().as_str(), "ann@example.com");
        assert!(Email::parse("o'neil+tag@a.b").is_ok());
        for bad in [
            "ann",
            "@x.com",
            "ann@x",
            "ann@.com",
            "ann@x.",
            "a b@x.com",
            "a@b@c.com",
            " ann@x.com",
            "ann@x.com ",
            "anné@x.com",
            "ann@x\u{0}.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(parse_host("App.Example.COM").unwrap(), "app.example.com");
        assert!(parse_host("xn--bcher-kva.example").is_ok());
        for bad in [
            "app.example.com.",
            " a.com",
            "a.1com",
            "localhost",
            "http://a.com",
            "a.com:80",
            "-a.com",
            "a..com",
            "a_b.com",
            "",
            "169.254.169.254",
        ] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(PlanId::parse("Pro_2").unwrap().as_str(), "pro_2");
        assert!(PlanId::parse("a b").is_err());
        assert!(
            PlanId::parse(" pro").is_err(),
            "no trimming: what is sent is what is checked"
        );
        assert!(WorkspaceId::parse("").is_err());
    }

    /// The OpenAPI document's patterns are what the parsers accept: a generated client
    /// or fuzzer that follows the document is never refused, and one that does not is.
    /// Checked on strings drawn from an alphabet of the characters that matter.
    #[test]
    fn the_patterns_say_what_the_parsers_accept() {
        let alphabet: Vec<char> = "aZ09-_.@ !~/:?\u{0}é\t".chars().collect();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        type Parses = dyn Fn(&str) -> bool;
        let checks: [(&str, &Parses, usize); 4] = [
            (TENANT_ID_PATTERN, &|s| TenantId::parse_with(s, true).is_ok(), 40),
            (NAME_PATTERN, &|s| parse_name(s, "name").is_ok(), 66),
            (EMAIL_PATTERN, &|s| Email::parse(s).is_ok(), 254),
            (HOST_PATTERN, &|s| parse_host(s).is_ok(), 253),
        ];
        for (pattern, parses, max_len) in checks {
            let re = regex::Regex::new(pattern).unwrap();
            let (mut matched, mut refused) = (0, 0);
            for _ in 0..200_000 {
                let len = (next() % 12) as usize;
                let s: String = (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                let by_pattern = re.is_match(&s) && s.len() <= max_len;
                assert_eq!(by_pattern, parses(&s), "{pattern} and the parser differ on {s:?}");
                if by_pattern {
                    matched += 1;
                } else {
                    refused += 1;
                }
            }
            assert!(
                matched > 20 && refused > 100,
                "{pattern}: {matched} matched, {refused} refused"
            );
        }
        // Lengths at the bounds, which short random strings do not reach.
        assert!(TenantId::parse(&"a".repeat(39)).is_ok() && TenantId::parse(&"a".repeat(40)).is_err());
        assert!(parse_name(&"a".repeat(64), "n").is_ok() && parse_name(&"a".repeat(65), "n").is_err());
    }
}
