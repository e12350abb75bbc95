//! [`EventStore`] on SQL: the event log, its hash chains and their checkpoints.
use super::SqlCatalog;
use crate::chain::{self, Checkpoint, Verifier};
use crate::*;
use sqlx::any::AnyRow;
use sqlx::Row;

/// An event's columns, as [`event_from`] reads them.
const COLS: &str =
    "id, event_id, seq, action, tenant_id, actor_type, actor, request_id, at, detail, digest, prev_hash, hash, redacted, count";

/// Events a chain check reads at a time.
const BATCH: u32 = 1000;

fn event_from(r: &AnyRow) -> Result<AuditEvent> {
    let detail: Option<String> = r.try_get("detail")?;
    Ok(AuditEvent {
        row: r.try_get("id")?,
        id: r.try_get::<Option<String>, _>("event_id")?.unwrap_or_default(),
        seq: r.try_get::<Option<i64>, _>("seq")?.unwrap_or_default(),
        kind: r.try_get("action")?,
        tenant_id: r.try_get("tenant_id")?,
        actor: serde_json::json!({"type": r.try_get::<String, _>("actor_type")?, "id": r.try_get::<String, _>("actor")?}),
        request_id: r.try_get("request_id")?,
        at: r.try_get("at")?,
        data: detail
            .map(|d| serde_json::from_str(&d))
            .transpose()?
            .unwrap_or(serde_json::Value::Null),
        digest: r.try_get::<Option<String>, _>("digest")?.unwrap_or_default(),
        prev_hash: r.try_get::<Option<String>, _>("prev_hash")?.unwrap_or_default(),
        hash: r.try_get::<Option<String>, _>("hash")?.unwrap_or_default(),
        redacted: r.try_get::<i32, _>("redacted")? != 0,
        count: r.try_get::<i64, _>("count")?.max(1) as u64,
    })
}

/// The tenant a chain is of: its name up to a `@` (a closed chain), `None` for `""`.
fn tenant_of(chain: &str) -> Option<String> {
    let t = chain.split('@').next().unwrap_or_default();
    (!t.is_empty()).then(|| t.to_string())
}

/// A text or integer bind value, for queries built from optional filters.
enum Bind {
    Text(String),
    Int(i64),
}

/// Conditions of `f` (its tenant apart), appended to `sql` with their values.
fn conditions(f: &AuditFilter, sql: &mut String, binds: &mut Vec<Bind>) {
    let mut cond = |sql: &mut String, expr: &str, v: Bind| {
        binds.push(v);
        sql.push_str(&format!(" AND {}", expr.replace('?', &format!("${}", binds.len()))));
    };
    if let Some(a) = &f.action {
        cond(sql, "action = ?", Bind::Text(a.clone()));
    }
    if let Some(p) = &f.kind_prefix {
        // One placeholder, used twice.
        cond(sql, "substr(action, 1, length(?)) = ?", Bind::Text(p.clone()));
    }
    if let Some(a) = &f.actor {
        cond(sql, "actor = ?", Bind::Text(a.clone()));
    }
    if let Some(s) = f.since {
        cond(sql, "at >= ?", Bind::Int(s));
    }
    if let Some(u) = f.until {
        cond(sql, "at < ?", Bind::Int(u));
    }
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s),
            Bind::Int(i) => q.bind(i),
        };
    }
    q
}

#[async_trait::async_trait]
impl EventStore for SqlCatalog {
    async fn redact_events_before(&self, tenant: &TenantId, before: i64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE audit_events SET detail = 'null', actor = '', actor_type = 'system', request_id = '', redacted = 1 \
             WHERE chain = $1 AND at < $2 AND redacted = 0",
        )
        .bind(tenant.as_str())
        .bind(before)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn record_event(&self, ev: &NewEvent) -> Result<i64> {
        let mut w = self.begin().await?;
        let id = w.append(ev).await?;
        w.commit().await?;
        Ok(id)
    }

    async fn add_audit_counts(&self, repeats: &[(i64, u64)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (id, n) in repeats {
            sqlx::query("UPDATE audit_events SET count = count + $1 WHERE id = $2")
                .bind(i64::try_from(*n).unwrap_or(i64::MAX / 2))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit(&self, f: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEvent>> {
        let mut sql = format!("SELECT {COLS} FROM audit_events WHERE 1 = 1");
        let mut binds: Vec<Bind> = Vec::new();
        if let Some(t) = &f.tenant_id {
            binds.push(Bind::Text(t.clone()));
            sql.push_str(&format!(" AND chain = ${}", binds.len()));
        }
        conditions(f, &mut sql, &mut binds);
        if let Some(id) = self.cursors().after_id(page)? {
            binds.push(Bind::Int(id));
            sql.push_str(&format!(" AND id < ${}", binds.len()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", page.limit + 1));
        let rows = bind_all(sqlx::query(&sql), binds).fetch_all(&self.pool).await?;
        let items = rows.iter().map(event_from).collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |e| e.row.to_string()))
    }

    async fn list_events(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<TenantEvent>> {
        let after = self.cursors().after_id(page)?.unwrap_or(0);
        let rows = sqlx::query(&format!(
            "SELECT id, tenant_id, action, detail, at FROM audit_events WHERE chain = $1 AND action LIKE 'quota.%' AND id > $2 ORDER BY id LIMIT {}",
            page.limit + 1
        ))
        .bind(tenant.as_str())
        .bind(after)
        .fetch_all(self.pool())
        .await?;
        let items = rows
            .iter()
            .map(|r| {
                let data: String = r.try_get("detail")?;
                Ok(TenantEvent {
                    id: r.try_get("id")?,
                    tenant_id: TenantId::from_trusted(r.try_get("tenant_id")?),
                    kind: r.try_get("action")?,
                    data: serde_json::from_str(&data)?,
                    at: r.try_get("at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |e| e.id.to_string()))
    }

    async fn chains(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT chain FROM event_chains ORDER BY chain")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn chain_events(&self, chain: &str, f: &AuditFilter, after_seq: i64, limit: u32) -> Result<Vec<AuditEvent>> {
        let mut sql = format!("SELECT {COLS} FROM audit_events WHERE chain = $1 AND seq > $2");
        let mut binds = vec![Bind::Text(chain.to_string()), Bind::Int(after_seq)];
        conditions(f, &mut sql, &mut binds);
        sql.push_str(&format!(" ORDER BY seq LIMIT {limit}"));
        let rows = bind_all(sqlx::query(&sql), binds).fetch_all(&self.pool).await?;
        rows.iter().map(event_from).collect()
    }

    async fn verify_chain(&self, chain: &str) -> Result<Result<chain::Verified, chain::Broken>> {
        let mut v = Verifier::default();
        let mut after = 0;
        loop {
            let batch = self.chain_events(chain, &AuditFilter::default(), after, BATCH).await?;
            for e in &batch {
                if let Err(b) = v.push(&e.linked()) {
                    return Ok(Err(b));
                }
            }
            match batch.last() {
                Some(last) if batch.len() == BATCH as usize => after = last.seq,
                _ => break,
            }
        }
        let done = v.verified();
        let head = sqlx::query("SELECT seq, hash FROM event_chains WHERE chain = $1")
            .bind(chain)
            .fetch_optional(&self.pool)
            .await?;
        let recorded: Option<(i64, String)> = match head {
            Some(h) => Some((h.try_get("seq")?, h.try_get("hash")?)).filter(|(seq, _)| *seq > 0),
            None => None,
        };
        if recorded != done.head {
            let last = done.head.as_ref().map_or(0, |h| h.0);
            let expected = recorded.as_ref().map_or(0, |h| h.0);
            return Ok(Err(chain::Broken {
                first_bad_seq: last.min(expected) + 1,
                reason: format!("the chain's head is seq {expected}, but its events end at seq {last}"),
            }));
        }
        Ok(Ok(done))
    }

    async fn heads_to_checkpoint(&self) -> Result<Vec<(Option<TenantId>, i64, String)>> {
        let rows = sqlx::query(
            "SELECT h.chain, h.seq, h.hash FROM event_chains h WHERE h.seq > 0 AND h.chain NOT LIKE '%@%' \
             AND h.seq > COALESCE((SELECT MAX(c.seq) FROM audit_checkpoints c WHERE c.chain = h.chain), 0) ORDER BY h.chain",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let chain: String = r.try_get("chain")?;
                Ok((
                    (!chain.is_empty()).then(|| TenantId::from_trusted(chain)),
                    r.try_get("seq")?,
                    r.try_get("hash")?,
                ))
            })
            .collect()
    }

    async fn add_checkpoint(&self, cp: &Checkpoint) -> Result<()> {
        let at = tenantd_core::ts::parse(&cp.at).map_err(StoreError::Invalid)?;
        sqlx::query(
            "INSERT INTO audit_checkpoints (chain, seq, hash, at, kid, signature) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (chain, seq) DO NOTHING",
        )
        .bind(cp.tenant_id.as_deref().unwrap_or(""))
        .bind(cp.seq)
        .bind(&cp.hash)
        .bind(at)
        .bind(&cp.kid)
        .bind(&cp.signature)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn latest_checkpoint(&self, chain: &str) -> Result<Option<Checkpoint>> {
        let r = sqlx::query(
            "SELECT seq, hash, at, kid, signature FROM audit_checkpoints WHERE chain = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(chain)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| {
            Ok(Checkpoint {
                tenant_id: tenant_of(chain),
                seq: r.try_get("seq")?,
                hash: r.try_get("hash")?,
                at: tenantd_core::ts::format(r.try_get("at")?),
                kid: r.try_get("kid")?,
                signature: r.try_get("signature")?,
            })
        })
        .transpose()
    }
}

/// Gives every event written before the chains existed (or by an older node) its place:
/// per chain, in the order they were written, after the chain's head.
pub(crate) async fn link_unlinked(c: &SqlCatalog) -> Result<u64> {
    let chains: Vec<String> = sqlx::query_scalar("SELECT DISTINCT chain FROM audit_events WHERE hash IS NULL")
        .fetch_all(&c.pool)
        .await?;
    let mut linked = 0;
    for chain in chains {
        let mut w = c.begin().await?;
        crate::work::start_chain(&mut w.tx, &chain).await?;
        let head = sqlx::query("UPDATE event_chains SET seq = seq WHERE chain = $1 RETURNING seq, hash")
            .bind(&chain)
            .fetch_one(&mut *w.tx)
            .await?;
        let (mut seq, mut prev): (i64, String) = (head.try_get("seq")?, head.try_get("hash")?);
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM audit_events WHERE chain = $1 AND hash IS NULL ORDER BY id"
        ))
        .bind(&chain)
        .fetch_all(&mut *w.tx)
        .await?;
        for r in &rows {
            let mut e = event_from(r)?;
            seq += 1;
            e.seq = seq;
            if e.id.is_empty() {
                e.id = tenantd_core::ids::new_id("evt");
            }
            let digest = e.content().map(|c| c.digest()).unwrap_or_default();
            let hash = chain::link(&prev, &digest);
            sqlx::query(
                "UPDATE audit_events SET event_id = $2, seq = $3, digest = $4, prev_hash = $5, hash = $6 WHERE id = $1",
            )
            .bind(e.row)
            .bind(&e.id)
            .bind(seq)
            .bind(&digest)
            .bind(&prev)
            .bind(&hash)
            .execute(&mut *w.tx)
            .await?;
            prev = hash;
        }
        sqlx::query("UPDATE event_chains SET seq = $2, hash = $3 WHERE chain = $1")
            .bind(&chain)
            .bind(seq)
            .bind(&prev)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        linked += rows.len() as u64;
    }
    Ok(linked)
}
