//! Invoices (docs/limits.md): the plan's price prorated over the time the tenant was on it in
//! the month, API calls above the included quota at 0.01 per 1,000, and storage above the
//! plan at 0.10 per GiB-month. Decimal arithmetic throughout; every amount is rounded to
//! cents (half away from zero) and the total is the sum of the rounded lines.
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use std::str::FromStr;
use tenantd_core::plan::merge_limits;
use tenantd_core::{Limit, Plan, PlanId, TenantId, Window};
use tenantd_store::Catalog;

/// Price of 1,000 API calls above the included quota.
pub const API_CALLS_PER_1000: &str = "0.01";
/// Price of one GiB-month of storage above the plan.
pub const STORAGE_PER_GIB_MONTH: &str = "0.10";
const GIB: u64 = 1 << 30;
const DAY: i64 = 86_400;

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Line {
    /// What is billed.
    pub description: String,
    /// How much of it (a decimal string).
    pub quantity: String,
    /// Price per unit (a decimal string).
    pub unit_price: String,
    /// `quantity × unit_price`, rounded to cents (a decimal string).
    pub amount: String,
}

/// A tenant's invoice for one month.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Invoice {
    /// The tenant.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// `YYYY-MM`.
    pub period: String,
    /// ISO 4217, the plan's.
    pub currency: String,
    /// The lines.
    pub lines: Vec<Line>,
    /// The sum of the lines' amounts.
    pub total: String,
    /// `open` while the month runs (figures so far), `closed` after.
    #[schema(pattern = "^(open|closed)$")]
    pub status: &'static str,
}

/// What an invoice is computed from.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The tenant.
    pub tenant: TenantId,
    /// Year and month.
    pub year: i32,
    /// 1..=12.
    pub month: u8,
    /// `(since, plan)`, oldest first: every plan the tenant has been on.
    pub history: Vec<(i64, Plan)>,
    /// The tenant's limit overrides (applied to every plan of the month).
    pub overrides: Vec<Limit>,
    /// API calls counted in the month.
    pub api_calls: u64,
    /// `(day start, bytes)` snapshots of the storage level, oldest first; the last one
    /// before the month is the level the month starts with.
    pub storage: Vec<(i64, u64)>,
    /// Now (Unix seconds): a running month is billed for storage up to today.
    pub now: i64,
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_default()
}

fn cents(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

fn money(d: Decimal) -> String {
    format!("{:.2}", cents(d))
}

fn plan_limit(plan: &Plan, overrides: &[Limit], resource: &str, window: Window) -> Option<u64> {
    merge_limits(&plan.limits, overrides)
        .into_iter()
        .find(|l| l.resource == resource && l.window == window)
        .and_then(|l| l.limit)
}

/// Computes the invoice.
pub fn invoice(i: &Inputs) -> Invoice {
    let start = tenantd_core::ts::month_start(i.year, i.month);
    let end = tenantd_core::ts::month_start_after(i.year, i.month);
    let month_secs = Decimal::from(end - start);
    let mut lines = Vec::new();
    let mut total = Decimal::ZERO;
    let mut push = |lines: &mut Vec<Line>, description: String, quantity: String, unit: &str, amount: Decimal| {
        let amount = cents(amount);
        total += amount;
        lines.push(Line {
            description,
            quantity,
            unit_price: unit.to_string(),
            amount: money(amount),
        });
    };

    // The plan's price, prorated by the seconds of the month spent on each plan; the
    // included API calls prorated the same way.
    let mut included = Decimal::ZERO;
    let mut unlimited = false;
    for (n, (at, plan)) in i.history.iter().enumerate() {
        let from = (*at).max(start);
        let to = i.history.get(n + 1).map_or(end, |(next, _)| (*next).min(end));
        if to <= from {
            continue;
        }
        let fraction = Decimal::from(to - from) / month_secs;
        let price = dec(&plan.price);
        push(
            &mut lines,
            format!(
                "{} plan ({}), {} to {}",
                plan.name,
                plan.id,
                tenantd_core::ts::format(from),
                tenantd_core::ts::format(to)
            ),
            format!("{:.4}", fraction.round_dp(4)),
            &plan.price,
            price * fraction,
        );
        match plan_limit(plan, &i.overrides, "api_calls", Window::Month) {
            Some(l) => included += Decimal::from(l) * fraction,
            None => unlimited = true,
        }
    }
    let included = included.floor();
    let calls = Decimal::from(i.api_calls);
    if !unlimited && calls > included {
        let thousands = (calls - included) / Decimal::from(1000);
        push(
            &mut lines,
            format!("API calls above the {included} included, per 1,000"),
            thousands.normalize().to_string(),
            API_CALLS_PER_1000,
            thousands * dec(API_CALLS_PER_1000),
        );
    }

    // Storage: each day's level above that day's plan allowance, in GiB-days, over the
    // days of the month.
    let days_in_month = (end - start) / DAY;
    // Each plan's allowance, once: `(since, bytes)`, `None` when unlimited.
    let allowances: Vec<(i64, Option<u64>)> = i
        .history
        .iter()
        .map(|(at, plan)| (*at, plan_limit(plan, &i.overrides, "storage_bytes", Window::Total)))
        .collect();
    let mut over_bytes_days: u128 = 0;
    for day in (start..=i.now.min(end - 1)).step_by(DAY as usize) {
        let level = i.storage.iter().rev().find(|(d, _)| *d <= day).map_or(0, |(_, b)| *b);
        // The plan in effect by the day's end.
        let allowed = allowances.iter().rev().find(|(at, _)| *at < day + DAY);
        if let Some((_, Some(allowed))) = allowed {
            over_bytes_days += u128::from(level.saturating_sub(*allowed));
        }
    }
    if over_bytes_days > 0 {
        let gib_months = Decimal::from_i128_with_scale(over_bytes_days as i128, 0)
            / Decimal::from(GIB)
            / Decimal::from(days_in_month);
        push(
            &mut lines,
            "Storage above the plan, GiB-month".to_string(),
            format!("{:.4}", gib_months.round_dp(4)),
            STORAGE_PER_GIB_MONTH,
            gib_months * dec(STORAGE_PER_GIB_MONTH),
        );
    }

    let currency = i
        .history
        .iter()
        .rev()
        .find(|(at, _)| *at < end)
        .map_or_else(|| "USD".to_string(), |(_, p)| p.currency.clone());
    Invoice {
        tenant_id: i.tenant,
        period: format!("{:04}-{:02}", i.year, i.month),
        currency,
        lines,
        total: money(total),
        status: if i.now >= end { "closed" } else { "open" },
    }
}

/// Reads what the invoice of `tenant` for the month needs from the catalog.
pub async fn inputs(
    catalog: &dyn Catalog,
    tenant: &TenantId,
    year: i32,
    month: u8,
    now: i64,
) -> tenantd_store::Result<Inputs> {
    let start = tenantd_core::ts::month_start(year, month);
    let end = tenantd_core::ts::month_start_after(year, month);
    let t = catalog.get_tenant(tenant).await?;
    let mut history = Vec::new();
    for (at, plan) in catalog.plan_history(tenant).await? {
        if at >= end {
            break;
        }
        let plan = match PlanId::parse(&plan) {
            Ok(id) => catalog.get_plan(&id).await?,
            Err(_) => continue,
        };
        history.push((at, plan));
    }
    let api_calls = catalog
        .counters_in(tenant, Window::Month, start, end)
        .await?
        .iter()
        .filter(|r| r.resource == "api_calls")
        .map(|r| r.value)
        .sum();
    let storage = storage_levels(catalog, tenant, end).await?;
    Ok(Inputs {
        tenant: *tenant,
        year,
        month,
        history,
        overrides: t.limits,
        api_calls,
        storage,
        now,
    })
}

/// The tenant's `storage_bytes` level snapshots `(day, bytes)` of days before `end`,
/// oldest first: what its app metered plus the data plane's bytes.
async fn storage_levels(catalog: &dyn Catalog, tenant: &TenantId, end: i64) -> tenantd_store::Result<Vec<(i64, u64)>> {
    // Snapshots are `total` rows with a day as period (the live level is period 0),
    // ordered by the catalog.
    let rows = catalog.counters_in(tenant, Window::Total, 1, end).await?;
    let series = |resource: &str| -> Vec<(i64, u64)> {
        rows.iter()
            .filter(|r| r.resource == resource)
            .map(|r| (r.period, r.value))
            .collect()
    };
    Ok(add_levels(&series("storage_bytes"), &series(DATA_STORAGE)))
}

/// One UTC day of a tenant's use, from the rows invoices are computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayUsage {
    /// The day's start (Unix seconds).
    pub day: i64,
    /// API calls counted that day (its `day` counter; the `month` counter invoices bill
    /// is the sum of the month's days).
    pub api_calls: u64,
    /// The storage level invoices bill that day by: the latest snapshot on or before it.
    pub storage_bytes: u64,
}

/// The tenant's use on each of the `days` UTC days up to `now`'s, oldest first.
pub async fn daily_usage(
    catalog: &dyn Catalog,
    tenant: &TenantId,
    days: u32,
    now: i64,
) -> tenantd_store::Result<Vec<DayUsage>> {
    let today = now - now.rem_euclid(DAY);
    let first = today - DAY * i64::from(days.saturating_sub(1));
    let end = today + DAY;
    let calls = catalog.counters_in(tenant, Window::Day, first, end).await?;
    let storage = storage_levels(catalog, tenant, end).await?;
    Ok((0..i64::from(days))
        .map(|n| {
            let day = first + n * DAY;
            DayUsage {
                day,
                api_calls: calls
                    .iter()
                    .filter(|r| r.resource == "api_calls" && r.period == day)
                    .map(|r| r.value)
                    .fold(0u64, u64::saturating_add),
                storage_bytes: storage.iter().rev().find(|(d, _)| *d <= day).map_or(0, |(_, b)| *b),
            }
        })
        .collect())
}

/// The data plane's storage level snapshots: a resource name no app can meter (`:` is
/// not allowed in one), billed with `storage_bytes`.
pub const DATA_STORAGE: &str = "storage_bytes:data";

/// Two series of level snapshots `(day, level)`, each ordered by day, as one: on each
/// day either changed, the sum of both levels as of that day.
fn add_levels(a: &[(i64, u64)], b: &[(i64, u64)]) -> Vec<(i64, u64)> {
    let at = |s: &[(i64, u64)], day: i64| s.iter().rev().find(|(d, _)| *d <= day).map_or(0, |(_, v)| *v);
    let mut days: Vec<i64> = a.iter().chain(b).map(|(d, _)| *d).collect();
    days.sort_unstable();
    days.dedup();
    days.into_iter()
        .map(|d| (d, at(a, d).saturating_add(at(b, d))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantd_core::Enforcement;

    fn plan(id: &str, price: &str, month_calls: Option<u64>, storage_gib: u64) -> Plan {
        Plan {
            id: PlanId::parse(id).unwrap(),
            name: id.to_string(),
            price: price.into(),
            currency: "USD".into(),
            limits: vec![
                Limit {
                    resource: "api_calls".into(),
                    window: Window::Month,
                    limit: month_calls,
                    enforcement: Enforcement::Soft,
                },
                Limit {
                    resource: "storage_bytes".into(),
                    window: Window::Total,
                    limit: Some(storage_gib * GIB),
                    enforcement: Enforcement::Hard,
                },
            ],
            features: vec![],
            isolation: Default::default(),
            counter_failure: Default::default(),
            job_weight: 1,
            backup_every_hours: 0,
            backup_keep: 7,
        }
    }

    fn amounts(inv: &Invoice) -> Vec<(&str, &str)> {
        inv.lines
            .iter()
            .map(|l| (l.quantity.as_str(), l.amount.as_str()))
            .collect()
    }

    const OCT_1: i64 = 1_790_812_800; // 2026-10-01T00:00:00Z
    const NOV_1: i64 = OCT_1 + 31 * DAY;

    #[test]
    fn metered_and_stored_levels_add_up_day_by_day() {
        let metered = [(10, 5), (30, 7)];
        let stored = [(20, 100), (30, 50), (40, 0)];
        assert_eq!(
            add_levels(&metered, &stored),
            vec![(10, 5), (20, 105), (30, 57), (40, 7)]
        );
        assert_eq!(add_levels(&[], &stored), stored.to_vec());
        assert!(add_levels(&[], &[]).is_empty());
    }

    #[test]
    fn the_dates_are_what_the_figures_assume() {
        assert_eq!(tenantd_core::ts::month_start(2026, 10), OCT_1);
        assert_eq!(tenantd_core::ts::month_start_after(2026, 10), NOV_1);
    }

    #[test]
    fn a_plan_change_mid_month_prorates_price_and_included_calls() {
        // Starter (29.00, 10,000 calls) for the first 15.5 days of October's 31, then
        // professional (99.00, 50,000): half a month each.
        let mid = OCT_1 + 31 * DAY / 2;
        let i = Inputs {
            tenant: TenantId::parse("acme").unwrap(),
            year: 2026,
            month: 10,
            history: vec![
                (OCT_1 - 10 * DAY, plan("starter", "29.00", Some(10_000), 5)),
                (mid, plan("professional", "99.00", Some(50_000), 20)),
            ],
            overrides: vec![],
            api_calls: 42_345,
            storage: vec![],
            now: NOV_1 + 5,
        };
        let inv = invoice(&i);
        // 14.50 + 49.50; 30,000 included, 12,345 above = 12.345 thousand × 0.01 = 0.12345.
        assert_eq!(
            amounts(&inv),
            vec![("0.5000", "14.50"), ("0.5000", "49.50"), ("12.345", "0.12")]
        );
        assert_eq!(inv.lines[2].unit_price, "0.01");
        assert_eq!(inv.total, "64.12");
        assert_eq!(
            (inv.status, inv.currency.as_str(), inv.period.as_str()),
            ("closed", "USD", "2026-10")
        );
    }

    #[test]
    fn a_tenant_created_mid_month_pays_from_creation_and_rounding_is_to_cents() {
        // 10 of 31 days of 10.00 = 3.2258… → 3.23; included 1,000 × 10/31 = 322.58 → 322.
        let i = Inputs {
            tenant: TenantId::parse("acme").unwrap(),
            year: 2026,
            month: 10,
            history: vec![(OCT_1 + 21 * DAY, plan("basic", "10.00", Some(1_000), 1))],
            overrides: vec![],
            api_calls: 1_322,
            storage: vec![],
            now: NOV_1,
        };
        let inv = invoice(&i);
        assert_eq!(amounts(&inv), vec![("0.3226", "3.23"), ("1", "0.01")]);
        assert_eq!(inv.total, "3.24");
    }

    #[test]
    fn storage_above_the_plan_is_billed_per_gib_month_from_daily_levels() {
        // 1 GiB allowed. The month starts at 3 GiB (a September snapshot), drops to
        // 1 GiB on day 11 and rises to 32 GiB on day 22 (the last 10 days):
        // 2 GiB × 10 days + 0 + 31 GiB × 10 days = 330 GiB-days / 31 = 10.6452 GiB-month
        // → 1.06451… → 1.06. Unlimited calls: no call line.
        let i = Inputs {
            tenant: TenantId::parse("acme").unwrap(),
            year: 2026,
            month: 10,
            history: vec![(OCT_1 - DAY, plan("free", "0", None, 1))],
            overrides: vec![],
            api_calls: 5_000_000,
            storage: vec![
                (OCT_1 - 3 * DAY, 3 * GIB),
                (OCT_1 + 10 * DAY, GIB),
                (OCT_1 + 21 * DAY, 32 * GIB),
            ],
            now: NOV_1,
        };
        let inv = invoice(&i);
        assert_eq!(amounts(&inv), vec![("1.0000", "0.00"), ("10.6452", "1.06")]);
        assert_eq!(inv.total, "1.06");
    }

    #[test]
    fn an_override_changes_what_is_included_and_a_running_month_is_open() {
        let i = Inputs {
            tenant: TenantId::parse("acme").unwrap(),
            year: 2026,
            month: 10,
            history: vec![(OCT_1 - DAY, plan("starter", "29.00", Some(10_000), 5))],
            overrides: vec![Limit {
                resource: "api_calls".into(),
                window: Window::Month,
                limit: Some(20_000),
                enforcement: Enforcement::Soft,
            }],
            api_calls: 21_000,
            storage: vec![],
            now: OCT_1 + DAY,
        };
        let inv = invoice(&i);
        assert_eq!(amounts(&inv), vec![("1.0000", "29.00"), ("1", "0.01")]);
        assert_eq!(inv.status, "open");
    }
}
