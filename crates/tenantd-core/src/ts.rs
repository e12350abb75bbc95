//! Timestamps: stored as Unix seconds, shown as RFC 3339 in UTC.
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Unix seconds as RFC 3339 UTC (`2026-11-23T08:00:00Z`).
pub fn format(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// RFC 3339 (any offset) to Unix seconds.
pub fn parse(s: &str) -> Result<i64, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| format!("'{s}' is not an RFC 3339 timestamp such as 2026-01-31T12:00:00Z"))
}

/// serde: Unix seconds out as RFC 3339.
pub fn ser<S: serde::Serializer>(secs: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*secs))
}

/// serde: optional Unix seconds out as RFC 3339 or null.
pub fn ser_opt<S: serde::Serializer>(secs: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match secs {
        Some(v) => s.serialize_str(&format(*v)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        assert_eq!(super::format(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::parse("2026-11-23T08:00:00Z").unwrap(), 1_795_420_800);
        assert_eq!(super::parse("2026-11-23T09:00:00+01:00").unwrap(), 1_795_420_800);
        assert!(super::parse("yesterday").is_err());
    }
}
