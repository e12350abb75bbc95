//! Counters shared by every node through Redis: one Lua script per decision checks and
//! commits every limit of a request atomically, so N nodes together never admit more
//! than the limit. When Redis cannot be reached, each plan's policy decides:
//! `fail_closed` refuses (503), `fail_open_local` lets each node admit its own share of
//! what was left when Redis was last seen. A heartbeat every second counts the live nodes
//! and notices when Redis is back; what the nodes admitted meanwhile is then added to the
//! shared counters.
use crate::local::{new_lease_id, Local};
use crate::state::period;
use crate::{AdmitError, Ask, Check, CounterStore, Outcome, Reservation, Seen};
use dashmap::DashMap;
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tenantd_core::usage::{saturating_count, CounterRow, MAX_COUNT};
use tenantd_core::{CounterFailure, Enforcement, KeyId, Limit, TenantId, Window};

/// What every script that writes a count starts with: counts stop at 2^53 − 1
/// (`MAX_COUNT`) and are written with all their digits (a Lua number passed to Redis as
/// it is would be written in `%.14g`, losing digits past the 14th).
const COUNTS: &str = r#"
local MAX = 9007199254740991
local function int(v) return string.format('%.0f', v) end
local function grow(v, n) return math.min(v + n, MAX) end
"#;

/// Checks every limit and commits all or none. KEYS: one per check. ARGV[1] = now (ms);
/// then 7 per check: kind (`r` sliding log, `c` counter), limit (-1 = none), hard (1/0),
/// cost, floor (a counter's value when its key is missing), expire-at (Unix s, 0 = never)
/// and the rate window's length (ms). Returns the index (1-based) of a refusing check or 0,
/// then per check: current, reset (ms) and retry (ms) (-1 where the caller knows them).
/// Counts saturate at `MAX`.
const ADMIT: &str = r#"
local now = tonumber(ARGV[1])
local n = #KEYS
local out = {0}
local refuse, refuse_retry = 0, -1
local logs = {}
for i = 1, n do
  local b = 1 + (i - 1) * 7
  local kind, limit, hard = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3] == '1'
  local cost, floor, len = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 7])
  local cur, reset, retry = 0, -1, -1
  if kind == 'r' then
    local g = math.max(math.floor(len / 100), 1)
    local h = redis.call('HGETALL', KEYS[i])
    local buckets = {}
    for j = 1, #h, 2 do
      local bk, c = tonumber(h[j]), tonumber(h[j + 1])
      if (bk + 1) * g <= now - len then
        redis.call('HDEL', KEYS[i], h[j])
      else
        cur = cur + c
        buckets[#buckets + 1] = {bk, c}
      end
    end
    table.sort(buckets, function(x, y) return x[1] < y[1] end)
    logs[i] = g
    reset = len
    if #buckets > 0 then reset = math.max((buckets[1][1] + 1) * g + len - now, 1) end
    retry = len
    if limit >= 0 and cost <= limit then
      local s = cur
      for _, bc in ipairs(buckets) do
        s = s - bc[2]
        if s + cost <= limit then
          retry = math.max((bc[1] + 1) * g + len - now, 1)
          break
        end
      end
    end
    if hard and limit >= 0 and cur + cost > limit and retry > refuse_retry then
      refuse, refuse_retry = i, retry
    end
  else
    local v = redis.call('GET', KEYS[i])
    if v then cur = tonumber(v) else cur = floor end
    if hard and limit >= 0 and cur + cost > limit and refuse == 0 then refuse = i end
  end
  out[#out + 1] = math.min(cur, MAX)
  out[#out + 1] = reset
  out[#out + 1] = retry
end
if refuse > 0 then
  out[1] = refuse
  return out
end
for i = 1, n do
  local b = 1 + (i - 1) * 7
  local cost, floor, exp, len = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
  if logs[i] then
    local field = int(math.floor(now / logs[i]))
    local c = tonumber(redis.call('HGET', KEYS[i], field) or '0')
    redis.call('HSET', KEYS[i], field, int(grow(c, cost)))
    redis.call('PEXPIRE', KEYS[i], len * 2)
  else
    local v = redis.call('GET', KEYS[i])
    local cur = floor
    if v then cur = tonumber(v) end
    redis.call('SET', KEYS[i], int(grow(cur, cost)))
    if exp > 0 then redis.call('EXPIREAT', KEYS[i], exp) end
  end
end
return out
"#;

/// Takes back a reservation's counts where they still are. KEYS: its counters and logs;
/// ARGV per key: kind (`r`/`c`), cost, and the log's bucket (empty for counters).
const TAKE_BACK: &str = r#"
for i = 1, #KEYS do
  local b = (i - 1) * 3
  local kind, cost, field = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3]
  local v
  if kind == 'r' then v = redis.call('HGET', KEYS[i], field) else v = redis.call('GET', KEYS[i]) end
  if v then
    local left = int(math.max(tonumber(v) - cost, 0))
    if kind == 'r' then
      redis.call('HSET', KEYS[i], field, left)
    else
      redis.call('SET', KEYS[i], left, 'KEEPTTL')
    end
  end
end
return #KEYS
"#;

/// Takes a lease. KEYS[1] = the resource's lease set, KEYS[2] = lease → resource hash.
/// ARGV: now (ms), ttl (ms), limit (-1 = none), hard, lease id, resource.
/// Returns {1, held} or {0, held, ms until the first lease expires}.
const ACQUIRE: &str = r#"
local now, ttl, limit, hard = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('HDEL', KEYS[2], unpack(gone))
end
local held = redis.call('ZCARD', KEYS[1])
if hard and limit >= 0 and held + 1 > limit then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, held, tonumber(first[2]) - now}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[5])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
return {1, held + 1}
"#;

/// Releases a lease. KEYS[1] = lease → resource hash; ARGV: now (ms), lease id, the
/// lease-set key prefix. Returns 1 if the lease was held.
const RELEASE: &str = r#"
local r = redis.call('HGET', KEYS[1], ARGV[2])
if not r then return 0 end
redis.call('HDEL', KEYS[1], ARGV[2])
local set = ARGV[3] .. r
local exp = redis.call('ZSCORE', set, ARGV[2])
redis.call('ZREM', set, ARGV[2])
if exp and tonumber(exp) > tonumber(ARGV[1]) then return 1 end
return 0
"#;

/// Adds what a node counted during an outage. KEYS: counters; ARGV per key: floor (the
/// value when the key is missing, which already holds the outage's use), delta, expire-at.
const RECONCILE: &str = r#"
for i = 1, #KEYS do
  local b = (i - 1) * 3
  local v = redis.call('GET', KEYS[i])
  if not v then
    redis.call('SET', KEYS[i], ARGV[b + 1])
  else
    redis.call('SET', KEYS[i], int(grow(tonumber(v), tonumber(ARGV[b + 2]))))
  end
  local exp = tonumber(ARGV[b + 3])
  if exp > 0 then redis.call('EXPIREAT', KEYS[i], exp) end
end
return #KEYS
"#;

/// How long a Redis call may take before the node treats Redis as down.
const TIMEOUT: Duration = Duration::from_millis(250);
/// A node that has not beaten for this long is not counted as live.
const NODE_TTL_MS: i64 = 5_000;

/// Health and fallback figures, for `/metrics`.
#[derive(Debug, Default)]
pub struct SharedMetrics {
    /// Redis calls that failed or timed out.
    pub errors: AtomicU64,
    /// Decisions made by a fallback policy while Redis was unreachable.
    pub fallbacks: AtomicU64,
    /// True while Redis answers.
    pub up: AtomicBool,
    /// Live nodes seen at the last heartbeat.
    pub nodes: AtomicU64,
}

/// Where the fallback's counters go when it is flushed: kept, to be added to Redis when
/// it answers again.
#[derive(Default)]
struct Outage(Mutex<Vec<CounterRow>>);

#[async_trait::async_trait]
impl CounterStore for Outage {
    async fn load(&self, _: &TenantId, _: i64) -> Result<Vec<CounterRow>, String> {
        Ok(Vec::new())
    }
    async fn add(&self, deltas: &[CounterRow]) -> Result<(), String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(deltas);
        Ok(())
    }
}

/// The in-process engine an outage is decided by, and what it counted.
struct Fallback {
    engine: Local,
    counted: Arc<Outage>,
}

impl Fallback {
    fn new() -> Arc<Self> {
        let counted = Arc::new(Outage::default());
        Arc::new(Self {
            engine: Local::new(counted.clone()),
            counted,
        })
    }
}

struct Inner {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    prefix: String,
    node: String,
    admit: redis::Script,
    acquire: redis::Script,
    release: redis::Script,
    reconcile: redis::Script,
    take_back: redis::Script,
    metrics: SharedMetrics,
    /// The last value seen of each shared counter: what a fallback shares out.
    last: DashMap<String, u64>,
    /// The fallback's own counters, fresh for each outage.
    fallback: Mutex<Arc<Fallback>>,
    /// This node's record, for the floors of recreated counters.
    record: Arc<Local>,
}

/// The shared engine.
pub struct Shared {
    inner: Arc<Inner>,
}

fn scope_str(s: Option<KeyId>) -> String {
    s.map(|k| k.to_string()).unwrap_or_default()
}

async fn call<T>(fut: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", TIMEOUT.as_millis())),
    }
}

impl Shared {
    /// Connects lazily to `url` (a bad URL is an error; an unreachable server is not:
    /// the node starts on its fallback policies and joins when Redis answers). Keys start
    /// with `prefix`; `record` is this node's usage record. Spawns the heartbeat on the
    /// current Tokio runtime.
    pub fn start(url: &str, prefix: &str, record: Arc<Local>) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis_url: {e}"))?;
        let inner = Arc::new(Inner {
            client,
            conn: Mutex::new(None),
            prefix: prefix.to_string(),
            node: format!("{:016x}", rand::random::<u64>()),
            admit: redis::Script::new(&format!("{COUNTS}{ADMIT}")),
            acquire: redis::Script::new(ACQUIRE),
            release: redis::Script::new(RELEASE),
            reconcile: redis::Script::new(&format!("{COUNTS}{RECONCILE}")),
            take_back: redis::Script::new(&format!("{COUNTS}{TAKE_BACK}")),
            metrics: SharedMetrics::default(),
            last: DashMap::new(),
            fallback: Mutex::new(Fallback::new()),
            record,
        });
        inner.metrics.nodes.store(1, Ordering::Relaxed);
        tokio::spawn(heartbeat(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// Health and fallback figures.
    pub fn metrics(&self) -> &SharedMetrics {
        &self.inner.metrics
    }

    /// Beats once now (connecting if needed); `Ok` when Redis answered.
    pub async fn beat(&self) -> Result<(), String> {
        let r = self.inner.beat().await;
        if let Err(e) = &r {
            self.inner.down(e);
        }
        r
    }

    /// Decides `asks` (one tenant, distinct resources) in one script call, or by the
    /// plan's failure policy when Redis is unreachable. Admitted use is also recorded in
    /// this node's record (flushed to the catalog).
    pub async fn admit_all(&self, asks: &[Ask<'_>], now_ms: i64) -> Result<Outcome, AdmitError> {
        let (out, _) = self.decide(asks, now_ms).await?;
        if matches!(out, Outcome::Admitted { .. }) {
            self.inner.record.record_at(asks, now_ms).await?;
        }
        Ok(out)
    }

    /// [`Shared::admit_all`] for use the caller stores itself (see [`Reservation`]).
    pub(crate) async fn reserve(
        &self,
        asks: &[Ask<'_>],
        now_ms: i64,
    ) -> Result<(Outcome, Option<Reservation>), AdmitError> {
        let (out, in_redis) = self.decide(asks, now_ms).await?;
        let kept = match out {
            Outcome::Admitted { .. } => self.inner.record.record_reserved(asks, now_ms, in_redis).await?,
            _ => None,
        };
        Ok((out, kept))
    }

    /// Uncounts a reservation: in this node's record, and in Redis when Redis counted it
    /// (an outage's fallback share keeps what it admitted).
    pub(crate) async fn take_back(&self, r: &Reservation) {
        self.inner.record.take_back(r, false);
        if !r.in_redis {
            return;
        }
        if let Err(e) = self.eval_take_back(r).await {
            tracing::warn!(error = %e, tenant_id = %r.tenant, "could not take back usage counted in Redis");
            self.inner.down(&e);
        }
    }

    /// The decision, and whether Redis made it (rather than an outage's fallback).
    async fn decide(&self, asks: &[Ask<'_>], now_ms: i64) -> Result<(Outcome, bool), AdmitError> {
        let Some(first) = asks.first() else {
            return Ok((Outcome::nothing(), false));
        };
        if self.up() {
            match self.eval_admit(asks, now_ms).await {
                Ok(out) => return Ok((out, true)),
                Err(e) => self.inner.down(&e),
            }
        }
        self.inner.metrics.fallbacks.fetch_add(1, Ordering::Relaxed);
        match first.failure {
            CounterFailure::FailClosed => Err(AdmitError::Unavailable),
            CounterFailure::FailOpenLocal => Ok((self.fallback_admit(asks, now_ms).await?, false)),
        }
    }

    fn up(&self) -> bool {
        self.inner.metrics.up.load(Ordering::Relaxed)
    }

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
    async fn eval_take_back(&self, r: &Reservation) -> Result<(), String> {
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

    async fn eval_admit(&self, asks: &[Ask<'_>], now_ms: i64) -> Result<Outcome, String> {
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

    /// `fail_open_local`: this node's share of what was left when Redis was last seen,
    /// `(limit − last seen) ÷ live nodes`, counted in process from the outage's start.
    async fn fallback_admit(&self, asks: &[Ask<'_>], now_ms: i64) -> Result<Outcome, AdmitError> {
        let now_s = now_ms.div_euclid(1000);
        let nodes = self.inner.metrics.nodes.load(Ordering::Relaxed).max(1);
        let share = |ask: &Ask<'_>, scope: Option<KeyId>, ls: &[Limit]| -> Vec<Limit> {
            ls.iter()
                .map(|l| {
                    let mut l = l.clone();
                    if let (Some(limit), true) = (l.limit, l.resource == ask.resource) {
                        let key = self.inner.counter_key(ask.tenant, scope, ask.resource, l.window, now_s);
                        let seen = self.inner.last.get(&key).map_or(0, |v| *v);
                        l.limit = Some(limit.saturating_sub(seen) / nodes);
                    }
                    l
                })
                .collect()
        };
        let limits: Vec<(Vec<Limit>, Vec<Limit>)> = asks
            .iter()
            .map(|a| (share(a, None, a.tenant_limits), share(a, a.key, a.key_limits)))
            .collect();
        let scaled: Vec<Ask<'_>> = asks
            .iter()
            .zip(&limits)
            .map(|(a, (t, k))| Ask {
                tenant_limits: t,
                key_limits: k,
                ..*a
            })
            .collect();
        self.inner.fallback_engine().engine.admit_all_at(&scaled, now_ms).await
    }

    /// The tenant's current use of `resource` in `window` as Redis has it (`None` when
    /// Redis is unreachable or holds no such counter: the caller answers from this
    /// node's record).
    pub async fn current(&self, tenant: TenantId, resource: &str, window: Window, now_ms: i64) -> Option<u64> {
        if !self.up() {
            return None;
        }
        let now_s = now_ms.div_euclid(1000);
        let conn = self.inner.conn().await.ok()?;
        let counter = || self.inner.counter_key(tenant, None, resource, window, now_s);
        let res: Result<Option<u64>, String> = match (window, window.rate_ms()) {
            (Window::Concurrent, _) => {
                let key = format!("{}l:{resource}", self.inner.tenant_key(tenant));
                let cmd = redis::cmd("ZCOUNT")
                    .arg(&key)
                    .arg(format!("({now_ms}"))
                    .arg("+inf")
                    .to_owned();
                call(cmd.query_async(&mut conn.clone())).await.map(Some)
            }
            (_, Some(len)) => {
                let g = (len / 100).max(1);
                let cmd = redis::cmd("HGETALL").arg(counter()).to_owned();
                let h: Result<Vec<(i64, u64)>, String> = call(cmd.query_async(&mut conn.clone())).await;
                h.map(|h| {
                    Some(
                        h.iter()
                            .filter(|(b, _)| (b + 1) * g > now_ms - len)
                            .map(|(_, c)| c)
                            .sum(),
                    )
                })
            }
            _ => call(redis::cmd("GET").arg(counter()).query_async(&mut conn.clone())).await,
        };
        match res {
            Ok(v) => v,
            Err(e) => {
                self.inner.down(&e);
                None
            }
        }
    }

    /// Takes a lease in Redis, or by the plan's failure policy.
    pub async fn acquire(
        &self,
        tenant: TenantId,
        limits: &[Limit],
        failure: CounterFailure,
        resource: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Result<String, Outcome>, AdmitError> {
        let lim = limits
            .iter()
            .find(|l| l.resource == resource && l.window == Window::Concurrent);
        if self.up() {
            let id = new_lease_id();
            let base = self.inner.tenant_key(tenant);
            let res: Result<Vec<i64>, String> = match self.inner.conn().await {
                Ok(conn) => {
                    let mut inv = self.inner.acquire.prepare_invoke();
                    inv.key(format!("{base}l:{resource}"))
                        .key(format!("{base}lr"))
                        .arg(now_ms)
                        .arg(ttl_ms)
                        .arg(lim.and_then(|l| l.limit).map_or(-1, |l| l as i64))
                        .arg(u8::from(lim.is_some_and(|l| l.enforcement == Enforcement::Hard)))
                        .arg(&id)
                        .arg(resource);
                    call(inv.invoke_async(&mut conn.clone())).await
                }
                Err(e) => Err(e),
            };
            match res {
                Ok(r) if r.first() == Some(&1) => return Ok(Ok(id)),
                Ok(r) if r.len() == 3 => {
                    let (held, first_free) = (r[1].max(0) as u64, r[2].max(1));
                    let decided = crate::decide_counted(
                        tenant,
                        limits,
                        resource,
                        Window::Concurrent,
                        held,
                        1,
                        first_free,
                        now_ms,
                    );
                    if let refused @ Outcome::Refused { .. } = decided {
                        return Ok(Err(refused));
                    }
                    self.inner.down("a lease refused under no limit");
                }
                Ok(r) => self.inner.down(&format!("unexpected lease answer {r:?}")),
                Err(e) => self.inner.down(&e),
            }
        }
        self.inner.metrics.fallbacks.fetch_add(1, Ordering::Relaxed);
        match failure {
            CounterFailure::FailClosed => Err(AdmitError::Unavailable),
            CounterFailure::FailOpenLocal => {
                let nodes = self.inner.metrics.nodes.load(Ordering::Relaxed).max(1);
                let shared: Vec<Limit> = limits
                    .iter()
                    .map(|l| Limit {
                        limit: l.limit.map(|x| x / nodes),
                        ..l.clone()
                    })
                    .collect();
                self.inner
                    .fallback_engine()
                    .engine
                    .acquire(tenant, &shared, resource, ttl_ms, now_ms)
                    .await
            }
        }
    }

    /// Releases a lease; `false` if the tenant holds no such lease.
    pub async fn release(&self, tenant: TenantId, lease_id: &str, now_ms: i64) -> Result<bool, AdmitError> {
        if self.up() {
            let base = self.inner.tenant_key(tenant);
            if let Ok(conn) = self.inner.conn().await {
                let mut inv = self.inner.release.prepare_invoke();
                inv.key(format!("{base}lr"))
                    .arg(now_ms)
                    .arg(lease_id)
                    .arg(format!("{base}l:"));
                match call::<i64>(inv.invoke_async(&mut conn.clone())).await {
                    Ok(1) => return Ok(true),
                    Ok(_) => {}
                    Err(e) => self.inner.down(&e),
                }
            }
        }
        // A lease taken during an outage lives in the fallback.
        self.inner
            .fallback_engine()
            .engine
            .release(tenant, lease_id, now_ms)
            .await
    }
}

impl Shared {
    /// Deletes a purged tenant's keys (`{prefix}{tenant}:…`) from Redis, and its state in
    /// the outage fallback.
    pub async fn forget(&self, tenant: TenantId) -> Result<(), String> {
        self.inner.fallback_engine().engine.forget(tenant);
        let conn = self.inner.conn().await?;
        // MATCH is a glob: the prefix's own glob characters are escaped.
        let mut pattern = String::new();
        for c in self.inner.tenant_key(tenant).chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        let mut cursor = 0u64;
        loop {
            let cmd = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .to_owned();
            let (next, keys): (u64, Vec<String>) = call(cmd.query_async(&mut conn.clone())).await?;
            if !keys.is_empty() {
                let del = redis::cmd("DEL").arg(&keys).to_owned();
                call::<i64>(del.query_async(&mut conn.clone())).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl Inner {
    fn tenant_key(&self, t: TenantId) -> String {
        format!("{}{{{}}}:", self.prefix, t)
    }

    fn counter_key(&self, t: TenantId, scope: Option<KeyId>, resource: &str, window: Window, now_s: i64) -> String {
        self.counter_key_of(t, scope, resource, window, period(window, now_s).0)
    }

    /// The key of a sliding log, or of a counter of the period starting at `period`.
    fn counter_key_of(&self, t: TenantId, scope: Option<KeyId>, resource: &str, window: Window, period: i64) -> String {
        let base = self.tenant_key(t);
        let scope = scope_str(scope);
        match window.rate_ms() {
            Some(_) => format!("{base}r:{scope}:{resource}:{}", window.as_str()),
            None => format!("{base}c:{scope}:{resource}:{}:{period}", window.as_str()),
        }
    }

    async fn conn(&self) -> Result<ConnectionManager, String> {
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

    fn down(&self, why: &str) {
        self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        if self.metrics.up.swap(false, Ordering::Relaxed) {
            tracing::error!(
                error = why,
                "shared counters (Redis) unreachable: deciding by each plan's counter_failure policy until Redis answers"
            );
        }
    }

    fn fallback_engine(&self) -> Arc<Fallback> {
        self.fallback.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds what an outage's fallback counted to Redis, so the shared counters hold
    /// every node's use again.
    async fn reconcile(&self, conn: &ConnectionManager, rows: &[CounterRow]) -> Result<usize, String> {
        let now_ms = crate::now_ms();
        let now_s = now_ms.div_euclid(1000);
        let mut inv = self.reconcile.prepare_invoke();
        let mut n = 0;
        for r in rows {
            let (current, end) = period(r.window, now_s);
            if current != r.period {
                continue;
            }
            let floor = self
                .record
                .value_at(r.tenant, r.scope, &r.resource, r.window, now_ms)
                .await
                .map_err(|e| e.to_string())?;
            inv.key(self.counter_key_of(r.tenant, r.scope, &r.resource, r.window, r.period));
            inv.arg(floor).arg(r.value).arg(end.map_or(0, |e| e + 86_400));
            n += 1;
        }
        if n > 0 {
            call::<i64>(inv.invoke_async(&mut conn.clone())).await?;
        }
        Ok(n)
    }

    async fn beat(&self) -> Result<(), String> {
        let conn = self.conn().await?;
        let now = crate::now_ms();
        let key = format!("{}nodes", self.prefix);
        let (_, _, n): ((), (), u64) = call(
            redis::pipe()
                .atomic()
                .zadd(&key, &self.node, now)
                .zrembyscore(&key, "-inf", now - NODE_TTL_MS)
                .zcard(&key)
                .query_async(&mut conn.clone()),
        )
        .await?;
        self.metrics.nodes.store(n.max(1), Ordering::Relaxed);
        if !self.metrics.up.load(Ordering::Relaxed) {
            // What the outage counted goes to Redis first; the next outage starts fresh,
            // but keeps what could not be added yet.
            let old = std::mem::replace(
                &mut *self.fallback.lock().unwrap_or_else(|e| e.into_inner()),
                Fallback::new(),
            );
            old.engine.flush().await?;
            let rows = std::mem::take(&mut *old.counted.0.lock().unwrap_or_else(|e| e.into_inner()));
            let added = match self.reconcile(&conn, &rows).await {
                Ok(n) => n,
                Err(e) => {
                    let kept = self.fallback_engine();
                    kept.counted.0.lock().unwrap_or_else(|e| e.into_inner()).extend(rows);
                    return Err(e);
                }
            };
            self.metrics.up.store(true, Ordering::Relaxed);
            tracing::info!(
                nodes = n,
                counters_reconciled = added,
                "shared counters (Redis) reachable"
            );
        }
        if self.last.len() > 1_000_000 {
            self.last.clear();
        }
        Ok(())
    }
}

async fn heartbeat(inner: Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        if let Err(e) = i.beat().await {
            i.down(&e);
        }
        drop(i);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
