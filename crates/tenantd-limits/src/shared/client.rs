//! The shared engine's Redis client: its keys, its connection, calls bounded by a timeout,
//! and the admission and take-back scripts' invocations and answers.
use super::{Inner, Shared};
use crate::state::period;
use crate::{Ask, Check, Outcome, Reservation, Seen};
use redis::aio::ConnectionManager;
use std::time::Duration;
use tenantd_core::usage::{saturating_count, MAX_COUNT};
use tenantd_core::{Enforcement, KeyId, TenantId, Window};

/// How long a Redis call may take before the node treats Redis as down.
const TIMEOUT: Duration = Duration::from_millis(250);

fn scope_str(s: Option<KeyId>) -> String {
    s.map(|k| k.to_string()).unwrap_or_default()
}

pub(super) async fn call<T>(fut: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", TIMEOUT.as_millis())),
    }
}

impl Inner {
    pub(super) fn tenant_key(&self, t: TenantId) -> String {
        format!("{}{{{}}}:", self.prefix, t)
    }

    pub(super) fn counter_key(
        &self,
        t: TenantId,
        scope: Option<KeyId>,
        resource: &str,
        window: Window,
        now_s: i64,
    ) -> String {
        self.counter_key_of(t, scope, resource, window, period(window, now_s).0)
    }

    /// The key of a sliding log, or of a counter of the period starting at `period`.
    pub(super) fn counter_key_of(
        &self,
        t: TenantId,
        scope: Option<KeyId>,
        resource: &str,
        window: Window,
        period: i64,
    ) -> String {
        let base = self.tenant_key(t);
        let scope = scope_str(scope);
        match window.rate_ms() {
            Some(_) => format!("{base}r:{scope}:{resource}:{}", window.as_str()),
            None => format!("{base}c:{scope}:{resource}:{}:{period}", window.as_str()),
        }
    }

    pub(super) async fn conn(&self) -> Result<ConnectionManager, String> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
            .set_number_of_retries(1);
        let c = call(ConnectionManager::new_with_config(self.client.clone(), cfg)).await?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }
}

impl Shared {
    /// Every check of `asks` plus the tenant's calendar counters (always shared: they
    /// are what the quota table shows on any node).
    fn plan(asks: &[Ask<'_>]) -> Vec<(usize, Check)> {
        Self::plan_of(asks.iter().map(|a| a.checks()))
    }

    /// [`Shared::plan`] of each ask's checks.
    fn plan_of<I: IntoIterator<Item = Check>>(asks: impl Iterator<Item = I>) -> Vec<(usize, Check)> {
        let mut out = Vec::new();
        for (i, checks) in asks.enumerate() {
            let start = out.len();
            out.extend(checks.into_iter().map(|c| (i, c)));
            for w in Window::CALENDAR {
                if !out[start..].iter().any(|(_, c)| c.scope.is_none() && c.window == w) {
                    out.push((
                        i,
                        Check {
                            scope: None,
                            window: w,
                            limit: None,
                            enforcement: Enforcement::Soft,
                        },
                    ));
                }
            }
        }
        out
    }

    /// Runs the take-back script on every counter and log a reservation counted.
    pub(super) async fn eval_take_back(&self, r: &Reservation) -> Result<(), String> {
        let at_s = r.at_ms.div_euclid(1000);
        let checks = Self::plan_of(r.held.iter().map(|h| h.checks.iter().copied()));
        let mut inv = self.inner.take_back.prepare_invoke();
        for (i, c) in &checks {
            let h = &r.held[*i];
            inv.key(self.inner.counter_key(r.tenant, c.scope, &h.resource, c.window, at_s));
            match c.window.rate_ms() {
                Some(len) => inv.arg("r").arg(h.cost).arg(r.at_ms.div_euclid((len / 100).max(1))),
                None => inv.arg("c").arg(h.cost).arg(""),
            };
        }
        let conn = self.inner.conn().await?;
        call(inv.invoke_async::<i64>(&mut conn.clone())).await.map(drop)
    }

    pub(super) async fn eval_admit(&self, asks: &[Ask<'_>], now_ms: i64) -> Result<Outcome, String> {
        let now_s = now_ms.div_euclid(1000);
        let checks = Self::plan(asks);
        let mut keys = Vec::with_capacity(checks.len());
        // Floors of every counter, from this node's record under one lock (rate
        // windows have none and get 0).
        let wanted: Vec<_> = checks
            .iter()
            .map(|(i, c)| (c.scope, asks[*i].resource, c.window))
            .collect();
        let floors = self
            .inner
            .record
            .values_at(asks[0].tenant, &wanted, now_ms)
            .await
            .map_err(|e| e.to_string())?;
        let mut inv = self.inner.admit.prepare_invoke();
        inv.arg(now_ms);
        for ((i, c), floor) in checks.iter().zip(floors) {
            let ask = &asks[*i];
            let key = self
                .inner
                .counter_key(ask.tenant, c.scope, ask.resource, c.window, now_s);
            let (kind, len, exp) = match (c.window.rate_ms(), c.window.period(now_s)) {
                (Some(len), _) => ("r", len, 0),
                // Counters are kept a day past their period, for late readers.
                (None, p) => ("c", 0, p.map_or(0, |(_, end)| end + 86_400)),
            };
            inv.key(&key);
            inv.arg(kind)
                .arg(c.limit.map_or(-1, |l| l as i64))
                .arg(u8::from(c.enforcement == Enforcement::Hard))
                .arg(ask.cost.min(MAX_COUNT))
                .arg(floor)
                .arg(exp)
                .arg(len);
            keys.push(key);
        }
        let conn = self.inner.conn().await?;
        let res: Vec<i64> = call(inv.invoke_async(&mut conn.clone())).await?;
        if res.len() != 1 + 3 * checks.len() {
            return Err(format!("unexpected script answer of {} values", res.len()));
        }
        let refused = res[0];
        let mut seens: Vec<Vec<Seen>> = asks.iter().map(|_| Vec::new()).collect();
        for (n, (i, c)) in checks.iter().enumerate() {
            let (cur, reset, retry) = (res[1 + 3 * n], res[2 + 3 * n], res[3 + 3 * n]);
            let current = cur.max(0) as u64;
            let (reset_ms, retry_ms) = match (c.window.rate_ms(), period(c.window, now_s)) {
                (Some(_), _) => (reset, retry),
                (None, (_, Some(end))) => (end * 1000 - now_ms, end * 1000 - now_ms),
                // Levels never reset; a refused growth may fit after others shrink it.
                (None, (_, None)) => (0, 1000),
            };
            if c.limit.is_some() {
                let after = if refused == 0 {
                    saturating_count(current, asks[*i].cost)
                } else {
                    current
                };
                self.inner.last.insert(keys[n].clone(), after);
            }
            seens[*i].push(Seen {
                check: *c,
                current,
                reset_ms,
                retry_ms,
            });
        }
        if refused > 0 {
            let (i, _) = checks[(refused - 1) as usize];
            return asks[i]
                .refusal(&seens[i], now_ms)
                .ok_or_else(|| "the script refused a request no limit refuses".to_string());
        }
        Ok(Outcome::all(
            asks.iter().zip(&seens).map(|(a, s)| a.admitted(s, now_ms)),
        ))
    }
}
