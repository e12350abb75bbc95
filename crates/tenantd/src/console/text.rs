//! How the console writes numbers, sizes and times.
use time::OffsetDateTime;

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    // A comma before every digit that has a multiple of three digits after it.
    let first_group = digits.len() % 3;
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && i % 3 == first_group {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units, one decimal unless it is 0: `0 B`, `512 B`, `1.5 KiB`,
/// `20 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    let v = format!("{v:.1}");
    format!("{} {}", v.strip_suffix(".0").unwrap_or(&v), UNITS[unit])
}

/// A quantity of `resource`: bytes for storage, a count otherwise.
pub fn amount(resource: &str, n: u64) -> String {
    if resource.starts_with("storage_bytes") {
        bytes(n)
    } else {
        count(n)
    }
}

fn at(secs: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).ok()
}

/// `2026-03-03 14:02 UTC`.
pub fn datetime(secs: i64) -> String {
    at(secs).map_or_else(String::new, |t| {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    })
}

/// `2026-03-03`.
pub fn date(secs: i64) -> String {
    at(secs).map_or_else(String::new, |t| {
        format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
    })
}

/// `Mar 3`.
pub fn short_date(secs: i64) -> String {
    at(secs).map_or_else(String::new, |t| {
        let m = t.month().to_string();
        format!("{} {}", &m[..3.min(m.len())], t.day())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_sizes_and_times_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(20 << 30), "20 GiB");
        assert_eq!(bytes(u64::MAX), "16 EiB");
        assert_eq!(amount("storage_bytes", 2048), "2 KiB");
        assert_eq!(amount("api_calls", 2048), "2,048");
        assert_eq!(datetime(1_772_546_520), "2026-03-03 14:02 UTC");
        assert_eq!(date(1_772_546_520), "2026-03-03");
        assert_eq!(short_date(1_772_546_520), "Mar 3");
        assert_eq!(datetime(i64::MAX), "", "out of range: nothing, no panic");
    }
}
