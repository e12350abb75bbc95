//! Plans and their limits (docs/limits.md). Limits are stored and served here; enforcing
//! them is the admission crate's job.
use crate::ids::PlanId;
use serde::{Deserialize, Serialize};

/// The window a limit counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// A rate per second.
    Second,
    /// A rate per minute.
    Minute,
    /// A calendar hour (UTC).
    Hour,
    /// A calendar day (UTC).
    Day,
    /// A calendar week (UTC, Monday first).
    Week,
    /// A calendar month (UTC).
    Month,
    /// A level, such as storage bytes or members.
    Total,
    /// Concurrent leases.
    Concurrent,
}

impl Window {
    /// The calendar windows, counted per UTC period and persisted.
    pub const CALENDAR: [Window; 4] = [Window::Hour, Window::Day, Window::Week, Window::Month];

    /// The name used in JSON, headers and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Second => "second",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Week => "week",
            Window::Month => "month",
            Window::Total => "total",
            Window::Concurrent => "concurrent",
        }
    }

    /// Parses [`Window::as_str`].
    pub fn parse(s: &str) -> Option<Window> {
        [
            Window::Second,
            Window::Minute,
            Window::Hour,
            Window::Day,
            Window::Week,
            Window::Month,
            Window::Total,
            Window::Concurrent,
        ]
        .into_iter()
        .find(|w| w.as_str() == s)
    }

    /// The length of a sliding rate window in milliseconds (second, minute).
    pub fn rate_ms(self) -> Option<i64> {
        match self {
            Window::Second => Some(1_000),
            Window::Minute => Some(60_000),
            _ => None,
        }
    }

    /// Whether this is a calendar window (hour, day, week, month).
    pub fn is_calendar(self) -> bool {
        Self::CALENDAR.contains(&self)
    }

    /// The UTC calendar period `[start, end)` (Unix seconds) containing `now`; weeks start
    /// on Monday. `None` for windows that are not calendar periods.
    pub fn period(self, now: i64) -> Option<(i64, i64)> {
        const DAY: i64 = 86_400;
        let day_start = now.div_euclid(DAY) * DAY;
        match self {
            Window::Hour => {
                let s = now.div_euclid(3_600) * 3_600;
                Some((s, s + 3_600))
            }
            Window::Day => Some((day_start, day_start + DAY)),
            Window::Week => {
                // 1970-01-01 was a Thursday: three days after a Monday.
                let days = now.div_euclid(DAY);
                let s = (days - (days + 3).rem_euclid(7)) * DAY;
                Some((s, s + 7 * DAY))
            }
            Window::Month => {
                // Calendar arithmetic costs more than the rest of an admission; a thread
                // keeps the month it last saw.
                thread_local! {
                    static MONTH: std::cell::Cell<(i64, i64)> = const { std::cell::Cell::new((0, 0)) };
                }
                MONTH.with(|c| {
                    let (s, e) = c.get();
                    if s <= now && now < e {
                        return Some((s, e));
                    }
                    let (y, m) = crate::ts::year_month(now);
                    let p = (crate::ts::month_start(y, m), crate::ts::month_start_after(y, m));
                    c.set(p);
                    Some(p)
                })
            }
            _ => None,
        }
    }

    /// The nominal length in seconds, as `RateLimit-Policy` reports it (`w=`); the
    /// calendar period containing `now` for calendar windows.
    pub fn seconds(self, now: i64) -> i64 {
        match (self.rate_ms(), self.period(now)) {
            (Some(ms), _) => ms / 1_000,
            (None, Some((s, e))) => e - s,
            _ => 0,
        }
    }
}

/// What a plan's tenants get when shared counters (Redis) cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CounterFailure {
    /// Each node admits its own share of what remained (limit ÷ live nodes).
    #[default]
    FailOpenLocal,
    /// Refuse with `503 unavailable` until the counters are back.
    FailClosed,
}

impl CounterFailure {
    /// The name used in JSON and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            CounterFailure::FailOpenLocal => "fail_open_local",
            CounterFailure::FailClosed => "fail_closed",
        }
    }
}

/// What happens when a limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Refuse with 429.
    #[default]
    Hard,
    /// Admit, record the overage, emit `quota.exceeded`.
    Soft,
}

impl Enforcement {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Hard => "hard",
            Enforcement::Soft => "soft",
        }
    }
}

/// Where a tenant's data lives (docs/isolation.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Shared tables, row-level security.
    #[default]
    Row,
    /// A schema per tenant.
    Schema,
    /// A database per tenant.
    Database,
}

impl Isolation {
    /// Every tier.
    pub const ALL: [Isolation; 3] = [Isolation::Row, Isolation::Schema, Isolation::Database];

    /// The name used in JSON and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Row => "row",
            Isolation::Schema => "schema",
            Isolation::Database => "database",
        }
    }

    /// The tier with this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// One limit: resource × window × limit × enforcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// `api_calls`, `storage_bytes`, `members`, `keys` or any metered name: 1–64 of
    /// `a-z 0-9 _ - .`.
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    pub resource: String,
    /// The window counted over.
    pub window: Window,
    /// The limit, 0 to 2^53 − 1; `null` is unlimited.
    #[schema(minimum = 0, maximum = 9007199254740991_u64)]
    #[serde(default, deserialize_with = "crate::whole::opt_u64")]
    pub limit: Option<u64>,
    /// Hard or soft.
    #[serde(default)]
    pub enforcement: Enforcement,
}

impl Limit {
    pub fn new(resource: &str, window: Window, limit: Option<u64>, enforcement: Enforcement) -> Self {
        Self {
            resource: resource.to_string(),
            window,
            limit,
            enforcement,
        }
    }

    /// Checks the resource name (1–64 of `a-z0-9_-.`) and the limit (at most
    /// [`crate::usage::MAX_COUNT`], where counters stop).
    pub fn validate(&self) -> Result<(), String> {
        validate_resource(&self.resource)?;
        match self.limit {
            Some(l) if l > crate::usage::MAX_COUNT => Err(format!(
                "the limit of {} must be at most {} (2^53 - 1), or null for unlimited",
                self.resource,
                crate::usage::MAX_COUNT
            )),
            _ => Ok(()),
        }
    }
}

/// Checks a resource name: 1-64 characters of a-z, 0-9, '_', '-', '.'.
pub fn validate_resource(resource: &str) -> Result<(), String> {
    // `parse_name` checks the grammar but also trims and lower-cases; a resource must
    // already be in its final form.
    let name = resource.replace('.', "_");
    match crate::ids::parse_name(&name, "resource") {
        Ok(n) if n == name => Ok(()),
        _ => Err(format!(
            "resource '{resource}' must be 1-64 characters of a-z, 0-9, '_', '-', '.'"
        )),
    }
}

/// Replaces in `base` every limit with the same resource and window as one in
/// `overrides`, and appends the overrides that match none (docs/limits.md).
pub fn merge_limits(base: &[Limit], overrides: &[Limit]) -> Vec<Limit> {
    let mut out: Vec<Limit> = base
        .iter()
        .map(|b| {
            overrides
                .iter()
                .find(|o| o.resource == b.resource && o.window == b.window)
                .unwrap_or(b)
                .clone()
        })
        .collect();
    for o in overrides {
        if !base.iter().any(|b| b.resource == o.resource && b.window == o.window) {
            out.push(o.clone());
        }
    }
    out
}

fn default_currency() -> String {
    "USD".to_string()
}
fn default_price() -> String {
    "0".to_string()
}

/// A plan: a named list of limits with a price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The plan's id: 1–64 of `a-z 0-9 - _` (lower-cased).
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: PlanId,
    /// A display name: 1–200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$")]
    pub name: String,
    /// Price per month, a decimal string with at most 4 decimals (default `"0"`).
    #[serde(default = "default_price")]
    #[schema(pattern = "^[0-9]+(\\.[0-9]{1,4})?$", max_length = 30)]
    pub price: String,
    /// ISO 4217 currency code (default `"USD"`).
    #[serde(default = "default_currency")]
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// The plan's limits; one per resource and window.
    pub limits: Vec<Limit>,
    /// Feature names the plan enables.
    #[serde(default)]
    pub features: Vec<String>,
    /// The data isolation tier.
    #[serde(default)]
    pub isolation: Isolation,
    /// What happens when shared counters (Redis) are unreachable.
    #[serde(default)]
    pub counter_failure: CounterFailure,
    /// The plan's tenants' share of background job claims against other tenants': 1 to
    /// 1000 (default 1). A tenant of weight 3 gets three claims for every one of a tenant
    /// of weight 1 while both have work.
    #[serde(default = "default_job_weight", deserialize_with = "crate::whole::u32")]
    #[schema(minimum = 1, maximum = 1000, default = 1)]
    pub job_weight: u32,
    /// Back its tenants up every this many hours (0, the default: no scheduled backups).
    #[serde(default, deserialize_with = "crate::whole::u32")]
    #[schema(minimum = 0, maximum = 8760, default = 0)]
    pub backup_every_hours: u32,
    /// How many scheduled backups to keep per tenant (older ones are deleted): 1 to 1000
    /// (default 7).
    #[serde(default = "default_backup_keep", deserialize_with = "crate::whole::u32")]
    #[schema(minimum = 1, maximum = 1000, default = 7)]
    pub backup_keep: u32,
}

fn default_backup_keep() -> u32 {
    7
}

/// The most a plan's `job_weight` may be.
pub const MAX_JOB_WEIGHT: u32 = 1000;

fn default_job_weight() -> u32 {
    1
}

/// Checks that `s` is a non-negative decimal with at most 4 fractional digits.
pub fn validate_price(s: &str) -> Result<(), String> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let ok = !int.is_empty()
        && s.len() <= 30
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 4
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(s.contains('.') && frac.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "price '{s}' must be a non-negative decimal string such as \"29.00\""
        ))
    }
}

impl Plan {
    /// Checks the plan's fields beyond what parsing checks.
    pub fn validate(&self) -> Result<(), String> {
        crate::text::display_name("name", &self.name)?;
        validate_price(&self.price)?;
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "currency '{}' must be a 3-letter ISO 4217 code such as USD",
                self.currency
            ));
        }
        for (i, l) in self.limits.iter().enumerate() {
            l.validate()?;
            if self.limits[..i]
                .iter()
                .any(|o| o.resource == l.resource && o.window == l.window)
            {
                return Err(format!("limit {}/{:?} appears twice", l.resource, l.window));
            }
        }
        if self.backup_every_hours > 8760 {
            return Err("backup_every_hours must be 0 to 8760 (a year)".into());
        }
        if !(1..=1000).contains(&self.backup_keep) {
            return Err("backup_keep must be 1 to 1000".into());
        }
        if !(1..=MAX_JOB_WEIGHT).contains(&self.job_weight) {
            return Err(format!("job_weight must be 1 to {MAX_JOB_WEIGHT}"));
        }
        Ok(())
    }

    /// The four built-in plans (docs/limits.md), created at first start.
    pub fn builtins() -> Vec<Plan> {
        use Enforcement::{Hard, Soft};
        use Window::{Hour, Month, Total};
        const GIB: u64 = 1 << 30;
        let plan = |id: &str,
                    name: &str,
                    price: &str,
                    hour: u64,
                    month: u64,
                    menf,
                    gib: u64,
                    members: Option<u64>,
                    iso,
                    features: &[&str]| Plan {
            id: PlanId::parse(id).expect("builtin plan id"),
            name: name.to_string(),
            price: price.to_string(),
            currency: default_currency(),
            limits: vec![
                Limit::new("api_calls", Hour, Some(hour), Hard),
                Limit::new("api_calls", Month, Some(month), menf),
                Limit::new("storage_bytes", Total, Some(gib * GIB), Hard),
                Limit::new("members", Total, members, Hard),
            ],
            features: features.iter().map(|s| s.to_string()).collect(),
            isolation: iso,
            counter_failure: CounterFailure::default(),
            job_weight: 1,
            backup_every_hours: 0,
            backup_keep: 7,
        };
        vec![
            plan(
                "free",
                "Free",
                "0.00",
                100,
                1_000,
                Hard,
                1,
                Some(5),
                Isolation::Row,
                &[],
            ),
            plan(
                "starter",
                "Starter",
                "29.00",
                500,
                10_000,
                Soft,
                5,
                Some(25),
                Isolation::Row,
                &["exports"],
            ),
            plan(
                "professional",
                "Professional",
                "99.00",
                2_000,
                50_000,
                Soft,
                20,
                Some(100),
                Isolation::Schema,
                &["exports", "custom_roles", "sso"],
            ),
            plan(
                "enterprise",
                "Enterprise",
                "499.00",
                10_000,
                500_000,
                Soft,
                100,
                None,
                Isolation::Database,
                &["exports", "custom_roles", "sso", "dedicated_upstream"],
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_names_match_serde() {
        for t in Isolation::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
            assert_eq!(Isolation::parse(t.as_str()), Some(t));
        }
        assert_eq!(Isolation::parse("shared"), None);
    }

    #[test]
    fn month_periods_stay_right_when_a_thread_moves_between_months() {
        let jan = crate::ts::month_start(2026, 1);
        let feb = crate::ts::month_start(2026, 2);
        let mar = crate::ts::month_start(2026, 3);
        for _ in 0..2 {
            assert_eq!(Window::Month.period(jan + 5), Some((jan, feb)));
            assert_eq!(Window::Month.period(feb - 1), Some((jan, feb)));
            assert_eq!(Window::Month.period(feb), Some((feb, mar)));
            assert_eq!(Window::Month.period(mar - 1), Some((feb, mar)));
        }
        assert_eq!(mar - feb, 28 * 86_400);
    }

    #[test]
    fn builtins_match_the_contract() {
        let plans = Plan::builtins();
        assert_eq!(plans.len(), 4);
        let free = &plans[0];
        assert_eq!(
            free.limits[0],
            Limit::new("api_calls", Window::Hour, Some(100), Enforcement::Hard)
        );
        assert_eq!(free.limits[1].limit, Some(1000));
        assert_eq!(free.limits[2].limit, Some(1 << 30));
        assert_eq!(plans[3].limits[3].limit, None);
        assert_eq!(plans[2].isolation, Isolation::Schema);
        for p in &plans {
            p.validate().unwrap();
        }
    }

    #[test]
    fn plan_json_defaults() {
        let p: Plan = serde_json::from_str(
            r#"{"id":"burst","name":"Burst","limits":[{"resource":"api_calls","window":"minute","limit":50}]}"#,
        )
        .unwrap();
        assert_eq!(p.price, "0");
        assert_eq!(p.currency, "USD");
        assert_eq!(p.isolation, Isolation::Row);
        assert_eq!(p.limits[0].enforcement, Enforcement::Hard);
        assert!(serde_json::from_str::<Plan>(r#"{"id":"x","name":"X","limits":[],"bogus":1}"#).is_err());
    }

    #[test]
    fn overrides_replace_same_resource_and_window() {
        let base = Plan::builtins()[0].limits.clone();
        let o = vec![
            Limit::new("api_calls", Window::Hour, Some(5), Enforcement::Soft),
            Limit::new("orchestrations", Window::Concurrent, Some(5), Enforcement::Hard),
        ];
        let m = merge_limits(&base, &o);
        assert_eq!(m.len(), 5);
        assert_eq!(m[0], o[0]);
        assert_eq!(m[1], base[1]);
        assert_eq!(m[4], o[1]);
    }

    #[test]
    fn prices() {
        for ok in ["0", "29.00", "0.0001", "10"] {
            validate_price(ok).unwrap();
        }
        for bad in ["", "-1", "1.", "1.00001", "abc", "1,00"] {
            assert!(validate_price(bad).is_err(), "{bad}");
        }
    }
}
