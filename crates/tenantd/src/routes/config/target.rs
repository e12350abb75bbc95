//! Whose configuration layer a request reads or writes (a plan's or a tenant's), and
//! what each write does: check the value against the key's schema, write the version
//! with its `config.changed` event, and tell every node.
use super::{key_of, schema_of, ConfigValue, VersionView};
use crate::error::ApiResult;
use crate::extract::{etag, if_match, PageQuery};
use crate::schemas::{check, compile};
use crate::state::State;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use tenantd_core::layers::Source;
use tenantd_core::{Code, PlanId};
use tenantd_edge::{Change, Ctx, Problem, TenantContext};
use tenantd_store::{ConfigEntry, ConfigOwner, NewEvent, Page};

/// Whose layer a request writes, and who writes it.
pub(super) struct Target {
    owner: ConfigOwner,
    actor: String,
    request_id: String,
}

impl Target {
    pub(super) fn tenant(ctx: &TenantContext) -> Self {
        Self {
            owner: ConfigOwner::Tenant(*ctx.tenant_id()),
            actor: ctx.principal().actor(),
            request_id: ctx.request_id().to_string(),
        }
    }

    pub(super) async fn plan(state: &State, ctx: &Ctx, plan: &str) -> ApiResult<Self> {
        ctx.require_operator()?;
        let plan = state.catalog.get_plan(&PlanId::parse(plan)?).await?.id;
        Ok(Self {
            owner: ConfigOwner::Plan(plan),
            actor: "operator".into(),
            request_id: ctx.request_id.clone(),
        })
    }

    fn source(&self) -> Source {
        match self.owner {
            ConfigOwner::Plan(_) => Source::Plan,
            ConfigOwner::Tenant(_) => Source::Tenant,
        }
    }

    /// Writes a version (`None` removes the layer's value) with its `config.changed`
    /// event (the tenant's; the platform's for a plan), and tells every node.
    async fn write(
        &self,
        state: &State,
        key: &str,
        value: Option<&Value>,
        expected: Option<i64>,
    ) -> ApiResult<ConfigEntry> {
        let schema = schema_of(state, key).await?;
        if let Some(v) = value {
            check(&compile(key, &schema.schema)?, "value", v)?;
        }
        let mut w = state.catalog.begin().await?;
        let e = state
            .catalog
            .put_config(&mut w, &self.owner, key, value, expected, &self.actor)
            .await?;
        let (tenant, data) = match &self.owner {
            ConfigOwner::Tenant(t) => (
                Some(t),
                json!({"key": key, "layer": "tenant", "version": e.version, "value": value, "deleted": value.is_none()}),
            ),
            ConfigOwner::Plan(p) => (
                None,
                json!({"key": key, "layer": "plan", "plan": p, "version": e.version, "value": value, "deleted": value.is_none()}),
            ),
        };
        w.commit_with(&NewEvent::new(
            tenant,
            self.actor.as_str(),
            "config.changed",
            data,
            &self.request_id,
        ))
        .await?;
        state
            .changed(match &self.owner {
                ConfigOwner::Tenant(t) => Change::Config(t.as_str()),
                ConfigOwner::Plan(_) => Change::Settings,
            })
            .await;
        Ok(e)
    }

    /// The layer's value of `key` now, or `404`.
    pub(super) async fn held(&self, state: &State, key: &str) -> ApiResult<ConfigEntry> {
        match state.catalog.config_entry(&self.owner, key, None).await? {
            Some(e) if e.value.is_some() => Ok(e),
            _ => Err(Problem::not_found("config value").into()),
        }
    }

    pub(super) async fn put(&self, state: &State, key: &str, h: &HeaderMap, value: &Value) -> ApiResult<Written> {
        let key = key_of(key)?;
        let e = self.write(state, &key, Some(value), if_match(h)?).await?;
        Ok(self.written(e))
    }

    pub(super) async fn delete(&self, state: &State, key: &str, h: &HeaderMap) -> ApiResult<StatusCode> {
        let key = key_of(key)?;
        self.held(state, &key).await?;
        self.write(state, &key, None, if_match(h)?).await?;
        Ok(StatusCode::NO_CONTENT)
    }

    pub(super) async fn versions(
        &self,
        state: &State,
        key: &str,
        q: &PageQuery,
    ) -> ApiResult<axum::Json<Page<VersionView>>> {
        let p = state
            .catalog
            .config_versions(&self.owner, &key_of(key)?, &q.page()?)
            .await?;
        Ok(axum::Json(Page {
            items: p.items.into_iter().map(Into::into).collect(),
            next_cursor: p.next_cursor,
        }))
    }

    /// Writes again what version `version` wrote (a value, or the removal).
    pub(super) async fn rollback(&self, state: &State, key: &str, h: &HeaderMap, version: i64) -> ApiResult<Written> {
        let key = key_of(key)?;
        let old = state
            .catalog
            .config_entry(&self.owner, &key, Some(version))
            .await?
            .ok_or_else(|| Problem::new(Code::NotFound, format!("'{key}' has no version {version} here")))?;
        let e = self.write(state, &key, old.value.as_ref(), if_match(h)?).await?;
        Ok(self.written(e))
    }

    pub(super) fn written(&self, e: ConfigEntry) -> Written {
        let headers = HeaderMap::from_iter(etag(e.version));
        let body = ConfigValue {
            key: e.key,
            value: e.value.unwrap_or(Value::Null),
            source: self.source(),
            version: e.version,
        };
        (headers, axum::Json(body))
    }
}

/// A write's answer: the `ETag` of the new version, and the value.
pub(super) type Written = (HeaderMap, axum::Json<ConfigValue>);
