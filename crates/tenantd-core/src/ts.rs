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

/// The UTC `(year, month)` containing `secs`.
pub fn year_month(secs: i64) -> (i32, u8) {
    let d = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    (d.year(), d.month() as u8)
}

/// Unix seconds at the start (UTC midnight) of the first day of `year-month`.
pub fn month_start(year: i32, month: u8) -> i64 {
    time::Month::try_from(month)
        .ok()
        .and_then(|m| time::Date::from_calendar_date(year, m, 1).ok())
        .map_or(0, |d| d.midnight().assume_utc().unix_timestamp())
}

/// Unix seconds at the start of the month after `year-month`.
pub fn month_start_after(year: i32, month: u8) -> i64 {
    if month >= 12 {
        month_start(year + 1, 1)
    } else {
        month_start(year, month + 1)
    }
}

/// Parses `YYYY-MM` into `(year, month)`.
pub fn parse_year_month(s: &str) -> Option<(i32, u8)> {
    let (y, m) = s.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let y: i32 = y.parse().ok()?;
    let m: u8 = m.parse().ok()?;
    ((1..=12).contains(&m) && y >= 1970).then_some((y, m))
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
