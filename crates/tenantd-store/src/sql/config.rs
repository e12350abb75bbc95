//! [`ConfigStore`] on SQL: configuration schemas, the plan and tenant layers' versions,
//! and feature flags.
use super::{is_unique_violation, SqlCatalog};
use crate::*;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;
use tenantd_core::flags::{Flag, FlagSpec};
use tenantd_core::now_secs;

fn parse(s: Option<String>) -> Result<Option<Value>> {
    Ok(s.map(|s| serde_json::from_str(&s)).transpose()?)
}

fn schema_from(r: &AnyRow) -> Result<ConfigSchema> {
    Ok(ConfigSchema {
        key: r.try_get("key")?,
        schema: serde_json::from_str(&r.try_get::<String, _>("schema")?)?,
        default: parse(r.try_get("default_value")?)?,
        version: r.try_get("version")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn entry_from(r: &AnyRow) -> Result<ConfigEntry> {
    Ok(ConfigEntry {
        key: r.try_get("key")?,
        version: r.try_get("version")?,
        value: parse(r.try_get("value")?)?,
        actor: r.try_get("actor")?,
        at: r.try_get("at")?,
    })
}

fn plan_id(r: &AnyRow) -> Result<PlanId> {
    PlanId::parse(&r.try_get::<String, _>("plan_id")?).map_err(|e| StoreError::Invalid(e.to_string()))
}

fn flag_from(r: &AnyRow) -> Result<Flag> {
    Ok(Flag {
        key: r.try_get("key")?,
        spec: serde_json::from_str::<FlagSpec>(&r.try_get::<String, _>("definition")?)?,
        version: r.try_get("version")?,
        updated_at: tenantd_core::ts::format(r.try_get("updated_at")?),
    })
}

/// `Conflict` unless the stored version is the one the writer expected.
fn expect(what: &str, stored: i64, expected: Option<i64>) -> Result<()> {
    match expected {
        Some(e) if e != stored => Err(StoreError::Conflict(format!(
            "{what} is at version {stored}, not {e} (If-Match): read it again"
        ))),
        _ => Ok(()),
    }
}

/// A write that lost a race for its version number to another writer.
fn raced(what: &str, e: StoreError) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict(format!("{what} was changed meanwhile: read it again"))
    } else {
        e
    }
}

/// Writes row `key` of `table` (a key, text columns `cols` set to `values`, `version`,
/// `updated_at`) at the version after the stored one; `Conflict` unless the stored one
/// is `expected` (0: none), when given, or when another writer got there first. The new
/// version and its time.
async fn put_versioned(
    w: &mut Work,
    table: &str,
    key: &str,
    cols: &[&str],
    values: &[Option<String>],
    expected: Option<i64>,
    what: &str,
) -> Result<(i64, i64)> {
    let stored: Option<i64> = sqlx::query(&format!("SELECT version FROM {table} WHERE key = $1"))
        .bind(key)
        .fetch_optional(&mut *w.tx)
        .await?
        .map(|r| r.try_get("version"))
        .transpose()?;
    expect(what, stored.unwrap_or(0), expected)?;
    let (version, now) = (stored.unwrap_or(0) + 1, now_secs());
    let n = cols.len();
    let (v, at) = (n + 2, n + 3);
    let q = if stored.is_some() {
        let sets: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ${}", i + 2))
            .collect();
        format!(
            "UPDATE {table} SET {}, version = ${v}, updated_at = ${at} WHERE key = $1 AND version = ${v} - 1",
            sets.join(", ")
        )
    } else {
        let places: Vec<String> = (2..=n + 3).map(|i| format!("${i}")).collect();
        format!(
            "INSERT INTO {table} (key, {}, version, updated_at) VALUES ($1, {})",
            cols.join(", "),
            places.join(", ")
        )
    };
    let mut query = sqlx::query(&q).bind(key);
    for value in values {
        query = query.bind(value.clone());
    }
    let done = query
        .bind(version)
        .bind(now)
        .execute(&mut *w.tx)
        .await
        .map_err(|e| raced(what, e.into()))?;
    if done.rows_affected() == 0 {
        return Err(raced(what, StoreError::Conflict(String::new())));
    }
    Ok((version, now))
}

/// The latest version of each key in a layer (`$1` tenant_id, `$2` plan_id).
const LATEST: &str = "SELECT c.* FROM config_values c WHERE c.tenant_id = $1 AND c.plan_id = $2 \
                      AND c.version = (SELECT MAX(d.version) FROM config_values d \
                      WHERE d.tenant_id = c.tenant_id AND d.plan_id = c.plan_id AND d.key = c.key)";

#[async_trait::async_trait]
impl ConfigStore for SqlCatalog {
    async fn put_schema(
        &self,
        w: &mut Work,
        key: &str,
        schema: &Value,
        default: Option<&Value>,
        expected: Option<i64>,
    ) -> Result<ConfigSchema> {
        let (version, updated_at) = put_versioned(
            w,
            "config_schemas",
            key,
            &["schema", "default_value"],
            &[Some(schema.to_string()), default.map(Value::to_string)],
            expected,
            &format!("the schema of '{key}'"),
        )
        .await?;
        let s = ConfigSchema {
            key: key.to_string(),
            schema: schema.clone(),
            default: default.cloned(),
            version,
            updated_at,
        };
        Ok(s)
    }

    async fn get_schema(&self, key: &str) -> Result<Option<ConfigSchema>> {
        sqlx::query("SELECT * FROM config_schemas WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(schema_from)
            .transpose()
    }

    async fn list_schemas(&self) -> Result<Vec<ConfigSchema>> {
        let rows = sqlx::query("SELECT * FROM config_schemas ORDER BY key")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(schema_from).collect()
    }

    async fn delete_schema(&self, w: &mut Work, key: &str) -> Result<()> {
        let held = self.current_values_in(w, key).await?;
        if let Some((owner, _)) = held.first() {
            return Err(StoreError::Conflict(format!(
                "{} layer(s) hold a value of '{key}' ({owner} first): delete them first",
                held.len()
            )));
        }
        let n = sqlx::query("DELETE FROM config_schemas WHERE key = $1")
            .bind(key)
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("config schema"));
        }
        Ok(())
    }

    async fn put_config(
        &self,
        w: &mut Work,
        owner: &ConfigOwner,
        key: &str,
        value: Option<&Value>,
        expected: Option<i64>,
        actor: &str,
    ) -> Result<ConfigEntry> {
        let (t, p) = owner.columns();
        let stored: i64 = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) AS v FROM config_values WHERE tenant_id = $1 AND plan_id = $2 AND key = $3",
        )
        .bind(t)
        .bind(p)
        .bind(key)
        .fetch_one(&mut *w.tx)
        .await?
        .try_get("v")?;
        let what = format!("'{key}'");
        expect(&what, stored, expected)?;
        let e = ConfigEntry {
            key: key.to_string(),
            version: stored + 1,
            value: value.cloned(),
            actor: actor.to_string(),
            at: now_secs(),
        };
        sqlx::query(
            "INSERT INTO config_values (tenant_id, plan_id, key, version, value, actor, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(t)
        .bind(p)
        .bind(key)
        .bind(e.version)
        .bind(value.map(Value::to_string))
        .bind(&e.actor)
        .bind(e.at)
        .execute(&mut *w.tx)
        .await
        .map_err(|err| raced(&what, err.into()))?;
        Ok(e)
    }

    async fn config_entry(&self, owner: &ConfigOwner, key: &str, version: Option<i64>) -> Result<Option<ConfigEntry>> {
        let (t, p) = owner.columns();
        let q = match version {
            Some(_) => {
                "SELECT * FROM config_values WHERE tenant_id = $1 AND plan_id = $2 AND key = $3 AND version = $4"
            }
            None => {
                "SELECT * FROM config_values WHERE tenant_id = $1 AND plan_id = $2 AND key = $3 \
                 ORDER BY version DESC LIMIT 1"
            }
        };
        sqlx::query(q)
            .bind(t)
            .bind(p)
            .bind(key)
            .bind(version.unwrap_or(0))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(entry_from)
            .transpose()
    }

    async fn config_versions(&self, owner: &ConfigOwner, key: &str, page: &PageRequest) -> Result<Page<ConfigEntry>> {
        let (t, p) = owner.columns();
        let before = self.cursors().after_id(page)?;
        let rows = sqlx::query(&format!(
            "SELECT * FROM config_values WHERE tenant_id = $1 AND plan_id = $2 AND key = $3 AND version < $4 \
             ORDER BY version DESC LIMIT {}",
            page.limit + 1
        ))
        .bind(t)
        .bind(p)
        .bind(key)
        .bind(before.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(entry_from).collect::<Result<Vec<_>>>()?;
        Ok(self.cursors().page(items, page.limit, |e| e.version.to_string()))
    }

    async fn config_layer(&self, owner: &ConfigOwner) -> Result<Vec<ConfigEntry>> {
        let (t, p) = owner.columns();
        let rows = sqlx::query(&format!("{LATEST} AND c.value IS NOT NULL ORDER BY c.key"))
            .bind(t)
            .bind(p)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(entry_from).collect()
    }

    async fn plan_layers(&self) -> Result<Vec<(PlanId, ConfigEntry)>> {
        let rows = sqlx::query(
            "SELECT c.* FROM config_values c WHERE c.tenant_id = '' AND c.value IS NOT NULL \
             AND c.version = (SELECT MAX(d.version) FROM config_values d \
             WHERE d.tenant_id = c.tenant_id AND d.plan_id = c.plan_id AND d.key = c.key) ORDER BY c.plan_id, c.key",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((plan_id(r)?, entry_from(r)?))).collect()
    }

    async fn current_values_in(&self, w: &mut Work, key: &str) -> Result<Vec<(ConfigOwner, ConfigEntry)>> {
        let rows = sqlx::query(
            "SELECT c.* FROM config_values c WHERE c.key = $1 AND c.value IS NOT NULL \
             AND c.version = (SELECT MAX(d.version) FROM config_values d \
             WHERE d.tenant_id = c.tenant_id AND d.plan_id = c.plan_id AND d.key = c.key) ORDER BY c.plan_id, c.tenant_id",
        )
        .bind(key)
        .fetch_all(&mut *w.tx)
        .await?;
        rows.iter()
            .map(|r| {
                let t: String = r.try_get("tenant_id")?;
                let owner = if t.is_empty() {
                    ConfigOwner::Plan(plan_id(r)?)
                } else {
                    ConfigOwner::Tenant(TenantId::from_trusted(t))
                };
                Ok((owner, entry_from(r)?))
            })
            .collect()
    }

    async fn put_flag(&self, w: &mut Work, key: &str, spec: &FlagSpec, expected: Option<i64>) -> Result<Flag> {
        let (version, now) = put_versioned(
            w,
            "flags",
            key,
            &["definition"],
            &[Some(super::to_json(spec))],
            expected,
            &format!("flag '{key}'"),
        )
        .await?;
        Ok(Flag {
            key: key.to_string(),
            spec: spec.clone(),
            version,
            updated_at: tenantd_core::ts::format(now),
        })
    }

    async fn get_flag(&self, key: &str) -> Result<Option<Flag>> {
        sqlx::query("SELECT * FROM flags WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(flag_from)
            .transpose()
    }

    async fn list_flags(&self) -> Result<Vec<Flag>> {
        let rows = sqlx::query("SELECT * FROM flags ORDER BY key")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(flag_from).collect()
    }

    async fn delete_flag(&self, w: &mut Work, key: &str) -> Result<Flag> {
        let flag = sqlx::query("SELECT * FROM flags WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *w.tx)
            .await?
            .as_ref()
            .map(flag_from)
            .transpose()?
            .ok_or(StoreError::NotFound("flag"))?;
        sqlx::query("DELETE FROM flags WHERE key = $1")
            .bind(key)
            .execute(&mut *w.tx)
            .await?;
        Ok(flag)
    }
}
