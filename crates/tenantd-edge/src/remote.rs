//! The edge against a remote tenantd: [`RemoteEdge`] sends each request's tenant sources
//! and credential to `POST /v1/edge/decide` and gets back tenantd's own decision (the
//! same pipeline, counters and audit trail as tenantd's API and gateway), which
//! [`crate::EdgeLayer::remote`] hands to handlers exactly as a local decision.
//!
//! Nothing is decided or cached here: a revoked key, a suspended tenant or a spent quota
//! takes effect on the next request, and limits stay exact across every service that
//! asks. The cost is one round trip to tenantd per request; a service that needs
//! microseconds shares tenantd's catalog instead ([`crate::Edge`]).
use crate::cache::TenantEntry;
use crate::context::{Principal, RequestContext};
use crate::pipeline::{RequestInfo, RouteNeeds};
use crate::problem::Problem;
use crate::upstream::Upstream;
use axum::body::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tenantd_core::{Code, CounterFailure, Enforcement, Limit, Role, TenantId, TenantStatus, Window};
use tenantd_limits::LimitState;

/// The largest decision tenantd sends back (a tenant's limits and a role's permissions).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// What `POST /v1/edge/decide` is asked: the parts of a request the edge reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    /// The request's id, used by tenantd's log and audit trail (`req_` and hex, as the
    /// layer makes; at most 64 letters, digits, `_` or `-`).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub request_id: String,
    /// The path, without query (starting with `/`).
    #[schema(pattern = "^/[^\\u0000]*$")]
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The `Host` header.
    pub host: Option<String>,
    /// `X-Tenant-ID`.
    pub tenant_header: Option<String>,
    /// `Tenant-ID`.
    pub tenant_header_alias: Option<String>,
    /// The caller's bearer token.
    pub bearer: Option<String>,
    /// What the request costs in `api_calls` (default 1; at most 1,000,000).
    #[schema(minimum = 0, maximum = 1000000)]
    #[serde(default, deserialize_with = "tenantd_core::whole::opt_u64")]
    pub cost: Option<u64>,
    /// A permission the caller's role must grant before the request counts.
    #[schema(pattern = "^(\\*|(\\*|[A-Za-z0-9_.-]{1,64}):(\\*|[A-Za-z0-9_.-]{1,64}))$")]
    pub permission: Option<String>,
    /// Also answer the tenant's flags (evaluated with the caller as the targeting key) and
    /// configuration, for the service's `TenantContext::flag`/`config` (default `false`).
    #[serde(default)]
    pub settings: bool,
}

impl DecideRequest {
    /// The request `info` describes, under `request_id`.
    pub fn of(info: &RequestInfo<'_>, request_id: &str) -> Self {
        let own = |s: Option<&str>| s.map(str::to_string);
        Self {
            request_id: request_id.to_string(),
            path: info.path.to_string(),
            query: own(info.query),
            host: own(info.host),
            tenant_header: own(info.tenant_header),
            tenant_header_alias: own(info.tenant_header_alias),
            bearer: own(info.bearer),
            cost: info.cost,
            permission: own(info.route.and_then(|r| r.permission)),
            settings: false,
        }
    }

    /// The request as the pipeline reads it; `Err` names a field that cannot be.
    pub fn info(&self) -> Result<RequestInfo<'_>, Problem> {
        let id_ok = |s: &str| {
            (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !id_ok(&self.request_id) {
            return Err(Problem::invalid(
                "request_id must be 1 to 64 letters, digits, '_' or '-'",
            ));
        }
        if !self.path.starts_with('/') {
            return Err(Problem::invalid("path must start with '/'"));
        }
        if self.cost.is_some_and(|c| c > crate::pipeline::MAX_COST) {
            return Err(Problem::invalid(format!(
                "cost must be at most {}",
                crate::pipeline::MAX_COST
            )));
        }
        if let Some(p) = &self.permission {
            tenantd_core::Permission::parse(p).map_err(|e| Problem::invalid(format!("permission: {e}")))?;
        }
        Ok(RequestInfo {
            path: &self.path,
            query: self.query.as_deref(),
            host: self.host.as_deref(),
            tenant_header: self.tenant_header.as_deref(),
            tenant_header_alias: self.tenant_header_alias.as_deref(),
            bearer: self.bearer.as_deref(),
            cost: self.cost,
            route: self.permission.as_deref().map(|p| RouteNeeds {
                permission: Some(p),
                public: false,
            }),
        })
    }
}

/// What `POST /v1/edge/decide` answers (always `200`: a non-200 answer means the
/// decision itself could not be asked).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum DecideResponse {
    /// The request may proceed, with this context.
    Admitted {
        /// What the edge decided.
        context: Box<ContextWire>,
        /// Headers for the response (the rate-limit fields), `[name, value]` pairs.
        #[schema(value_type = Vec<Vec<String>>)]
        headers: Vec<(String, String)>,
    },
    /// The request is refused with this problem.
    Refused {
        /// The problem+json body.
        #[schema(value_type = Object)]
        problem: Value,
        /// Its headers (`Retry-After`, rate-limit fields, `WWW-Authenticate`), `[name,
        /// value]` pairs.
        #[schema(value_type = Vec<Vec<String>>)]
        headers: Vec<(String, String)>,
    },
}

/// A [`RequestContext`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContextWire {
    /// The caller.
    pub principal: Option<PrincipalWire>,
    /// The tenant.
    pub tenant: Option<TenantWire>,
    /// The caller's role in it.
    pub role: Option<Role>,
    /// The tightest limit admission applied.
    pub limit: Option<LimitWire>,
    /// The API key's own limits.
    pub key_limits: Option<Vec<Limit>>,
    /// The tenant's flags and configuration, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<crate::settings::Evaluated>,
}

/// A [`Principal`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PrincipalWire {
    /// The operator.
    Operator,
    /// An API key.
    Key {
        /// `key_…`
        id: String,
        /// Its tenant.
        tenant_id: String,
    },
    /// A person.
    User {
        /// `usr_…`
        id: String,
        /// Their email.
        email: String,
    },
}

/// A [`TenantEntry`] on the wire (without its gateway upstream).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantWire {
    /// Its id.
    pub id: String,
    /// Its plan.
    #[schema(value_type = String)]
    pub plan: tenantd_core::PlanId,
    /// Its plan's isolation tier.
    pub isolation: tenantd_core::Isolation,
    /// Its status.
    pub status: TenantStatus,
    /// Its effective limits.
    pub limits: Vec<Limit>,
    /// Its plan's policy for unreachable shared counters.
    pub counter_failure: CounterFailure,
    /// Its plan's share of background job claims (1 from servers that do not send it).
    #[serde(default = "one")]
    pub job_weight: u32,
}

fn one() -> u32 {
    1
}

/// A [`LimitState`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LimitWire {
    /// The resource.
    pub resource: String,
    /// The window.
    pub window: Window,
    /// `None` when unlimited.
    pub limit: Option<u64>,
    /// Used in the window.
    pub current: u64,
    /// Left.
    pub remaining: Option<u64>,
    /// Unix seconds of the reset.
    pub reset_at: i64,
    /// Milliseconds until then.
    pub reset_ms: i64,
    /// Hard or soft.
    pub enforcement: Enforcement,
    /// The key whose own limit this is.
    pub key: Option<String>,
}

fn header_pairs(h: &[(HeaderName, HeaderValue)]) -> Vec<(String, String)> {
    h.iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

fn bad_answer(why: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %why, "tenantd's edge decision could not be read");
    Problem::new(
        Code::Unavailable,
        "tenantd's decision on this request could not be read",
    )
}

impl DecideResponse {
    /// The answer for a decision tenantd made.
    pub fn of(decided: Result<RequestContext, Problem>, with_settings: bool) -> Self {
        match decided {
            Ok(ctx) => DecideResponse::Admitted {
                headers: ctx
                    .limit
                    .as_ref()
                    .map(|l| header_pairs(&crate::problem::rate_limit_headers(l)))
                    .unwrap_or_default(),
                context: Box::new(ContextWire {
                    settings: match (&ctx.settings, &ctx.tenant, &ctx.principal) {
                        (Some(s), Some(t), Some(p)) if with_settings => {
                            Some(crate::settings::Evaluated::of(s, t, &p.actor()))
                        }
                        _ => None,
                    },
                    principal: ctx.principal.map(|p| match p {
                        Principal::Operator => PrincipalWire::Operator,
                        Principal::Key { id, tenant } => PrincipalWire::Key {
                            id: id.to_string(),
                            tenant_id: tenant.to_string(),
                        },
                        Principal::User { id, email } => PrincipalWire::User { id, email },
                    }),
                    tenant: ctx.tenant.map(|t| TenantWire {
                        id: t.id.to_string(),
                        plan: t.plan.clone(),
                        isolation: t.isolation,
                        status: t.status,
                        limits: t.limits.to_vec(),
                        counter_failure: t.counter_failure,
                        job_weight: t.job_weight,
                    }),
                    role: ctx.role.map(|r| (*r).clone()),
                    limit: ctx.limit.map(|l| LimitWire {
                        resource: l.resource.into_owned(),
                        window: l.window,
                        limit: l.limit,
                        current: l.current,
                        remaining: l.remaining,
                        reset_at: l.reset_at,
                        reset_ms: l.reset_ms,
                        enforcement: l.enforcement,
                        key: l.key.map(|k| k.to_string()),
                    }),
                    key_limits: ctx.key_limits.map(|l| l.to_vec()),
                }),
            },
            Err(p) => {
                // The request id is the asker's: it renders the body again with its own.
                let mut headers = header_pairs(&p.headers);
                if p.code == Code::Unauthenticated {
                    headers.push(("www-authenticate".into(), "Bearer".into()));
                }
                DecideResponse::Refused {
                    problem: p.body(""),
                    headers,
                }
            }
        }
    }

    /// The decision as the layer uses it, with the rate-limit headers for the response.
    /// A malformed answer is `503 unavailable` (logged).
    pub fn into_result(self, request_id: &str) -> Result<(RequestContext, Vec<(HeaderName, HeaderValue)>), Problem> {
        let headers = |h: Vec<(String, String)>| -> Vec<(HeaderName, HeaderValue)> {
            h.into_iter()
                .filter_map(|(k, v)| Some((HeaderName::try_from(k).ok()?, HeaderValue::try_from(v).ok()?)))
                .collect()
        };
        match self {
            DecideResponse::Refused { problem, headers: h } => {
                let Value::Object(mut body) = problem else {
                    return Err(bad_answer("the problem is not an object"));
                };
                let code = body
                    .get("code")
                    .and_then(Value::as_str)
                    .and_then(Code::parse)
                    .ok_or_else(|| bad_answer("the problem has no known code"))?;
                let detail = body
                    .get("detail")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                for k in ["type", "title", "status", "detail", "code", "request_id"] {
                    body.remove(k);
                }
                let mut p = Problem::new(code, detail);
                p.extra = body;
                p.headers = headers(h);
                Err(p)
            }
            DecideResponse::Admitted { context, headers: h } => {
                let c = *context;
                let tenant_id = |s: &str| TenantId::parse_with(s, true).map_err(bad_answer);
                let principal = match c.principal {
                    None => None,
                    Some(PrincipalWire::Operator) => Some(Principal::Operator),
                    Some(PrincipalWire::User { id, email }) => Some(Principal::User { id, email }),
                    Some(PrincipalWire::Key { id, tenant_id: t }) => Some(Principal::Key {
                        id: crate::keys::KeyId::parse(&id).ok_or_else(|| bad_answer("a malformed key id"))?,
                        tenant: tenant_id(&t)?,
                    }),
                };
                let tenant = match c.tenant {
                    None => None,
                    Some(t) => Some(Arc::new(TenantEntry {
                        id: tenant_id(&t.id)?,
                        plan: t.plan,
                        isolation: t.isolation,
                        status: t.status,
                        limits: t.limits.into(),
                        counter_failure: t.counter_failure,
                        job_weight: t.job_weight,
                        upstream: None,
                        config: Arc::default(),
                        activity: Default::default(),
                    })),
                };
                let limit = match c.limit {
                    None => None,
                    Some(l) => Some(LimitState {
                        resource: l.resource.into(),
                        window: l.window,
                        limit: l.limit,
                        current: l.current,
                        remaining: l.remaining,
                        reset_at: l.reset_at,
                        reset_ms: l.reset_ms,
                        enforcement: l.enforcement,
                        key: match l.key {
                            Some(k) => {
                                Some(crate::keys::KeyId::parse(&k).ok_or_else(|| bad_answer("a malformed key id"))?)
                            }
                            None => None,
                        },
                    }),
                };
                let ctx = RequestContext {
                    request_id: request_id.to_string(),
                    principal,
                    tenant,
                    role: c.role.map(Arc::new),
                    limit,
                    key_limits: c.key_limits.map(Into::into),
                    settings: c.settings.map(|e| {
                        Arc::new(crate::Settings {
                            evaluated: Some(e),
                            ..Default::default()
                        })
                    }),
                };
                Ok((ctx, headers(h)))
            }
        }
    }
}

/// A client of a remote tenantd's edge decision (`POST /v1/edge/decide`), with a pooled
/// keep-alive connection.
pub struct RemoteEdge {
    url: http::Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    settings: bool,
}

impl RemoteEdge {
    /// Asks the tenantd at `base` (`http://host:port`), waiting at most 2 s per decision.
    pub fn new(base: &str) -> Result<Self, String> {
        let base = Upstream::parse(base)?;
        let pq = http::uri::PathAndQuery::from_static("/v1/edge/decide");
        let url = base.uri(Some(&pq)).map_err(|e| e.detail)?;
        // Connecting counts against the decision's timeout.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            url,
            client,
            timeout: Duration::from_secs(2),
            settings: false,
        })
    }

    /// Also asks for the tenant's flags and configuration with each decision, so that
    /// handlers' `TenantContext::flag`/`config` answer (a larger answer per request).
    pub fn with_settings(mut self) -> Self {
        self.settings = true;
        self
    }

    /// Waits at most `timeout` for a decision (connecting included); past it the request
    /// is refused with `503 unavailable`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Asks tenantd to decide the request; `503 unavailable` when it cannot be asked.
    pub async fn decide(
        &self,
        info: &RequestInfo<'_>,
        request_id: &str,
    ) -> Result<(RequestContext, Vec<(HeaderName, HeaderValue)>), Problem> {
        let unreachable = |why: String| {
            tracing::error!(url = %self.url, error = %why, "tenantd could not be asked to decide a request");
            Problem::new(
                Code::Unavailable,
                "tenantd, which decides this service's requests, cannot be reached; try again shortly",
            )
        };
        let ask = DecideRequest {
            settings: self.settings,
            ..DecideRequest::of(info, request_id)
        };
        let body = serde_json::to_vec(&ask).map_err(|e| unreachable(e.to_string()))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unreachable(e.to_string()))?;
        let ask = async {
            let resp = self.client.request(req).await.map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(unreachable(format!(
                    "answered {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
                )));
            }
            serde_json::from_slice::<DecideResponse>(&bytes).map_err(bad_answer)
        };
        let answer = tokio::time::timeout(self.timeout, ask)
            .await
            .map_err(|_| unreachable(format!("no decision within {} ms", self.timeout.as_millis())))??;
        answer.into_result(request_id)
    }
}
