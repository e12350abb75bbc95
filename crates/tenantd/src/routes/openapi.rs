//! The OpenAPI document's fixed part: its info, tags and security; the problem+json
//! schema every error answers with, added to every operation for every error status the
//! edge and the handlers can give; and the shapes of path and query parameters that many
//! operations share. The operations themselves come from each handler's
//! `#[utoipa::path]`, through the router (see [`super::api`]).
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::OpenApi as _;

/// The fixed part of the document.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "tenantd", description = "Multi-tenancy as one binary: tenants, identity, access, quotas, data isolation. Errors are application/problem+json with `code` and `request_id`."),
    modifiers(&BearerAuth),
    components(schemas(Problem)),
    tags(
        (name = "system", description = "Health, metrics, OpenAPI, signing keys"),
        (name = "plans", description = "Plans (operator)"),
        (name = "tenants", description = "Tenants and their lifecycle"),
        (name = "members", description = "Members and roles"),
        (name = "workspaces", description = "Workspaces"),
        (name = "keys", description = "API keys"),
        (name = "identity", description = "Who am I, may I, tokens, audit"),
        (name = "usage", description = "Quotas, metered usage, leases, tenant events"),
        (name = "billing", description = "Invoices and the billing report"),
        (name = "data", description = "Tenant data: JSON records in collections, blobs and a cache"),
        (name = "config", description = "Tenant configuration: schemas, plan and tenant layers, versions"),
        (name = "flags", description = "Feature flags, a tenant's features, and OFREP evaluation"),
        (name = "secrets", description = "A tenant's secrets, sealed under its data key"),
        (name = "protection", description = "A tenant's data key: rotation and progress; exports, backups, restore and clone"),
        (name = "jobs", description = "Background jobs: enqueue, claim under a lease, complete or fail"),
        (name = "edge", description = "The edge decision, for services embedding tenantd's layer against a remote tenantd"),
    )
)]
pub struct ApiDoc;

/// An error (RFC 9457 problem+json).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// `urn:tenantd:problem:<code>`.
    #[schema(example = "urn:tenantd:problem:tenant_mismatch")]
    r#type: String,
    /// A short human title.
    title: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong, for people; never names another tenant.
    detail: String,
    /// The stable code to match on.
    #[schema(example = "tenant_mismatch")]
    code: String,
    /// The request's id, also in `X-Request-ID` and the log.
    #[schema(pattern = "^req_[0-9a-f]{32}$")]
    request_id: String,
    /// `429` only: the limit's resource.
    quota: Option<String>,
    /// `429` only: its window.
    window: Option<String>,
    /// `429` only: the limit (`null`: unlimited).
    limit: Option<u64>,
    /// `429` only: the use so far.
    current: Option<u64>,
    /// `429` only: when it resets (RFC 3339).
    reset_at: Option<String>,
}

struct BearerAuth;
impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

/// The error answers any operation can give, each as problem+json: a malformed request
/// (`400`), a missing or refused credential (`401`, which even public endpoints give to
/// a bad `Authorization` header), a role or tenant refused (`403`), something missing
/// (`404`), a conflict (`409`), a body too large (`413`), a limit reached (`429`), a
/// failure (`500`) and an unavailable catalog or tier move (`503`).
const ERRORS: [(u16, &str); 9] = [
    (400, "Invalid request: the body, a parameter or a tenant id (`invalid_request`, `invalid_tenant_id`, `tenant_required`)"),
    (401, "No credential, or one that is refused (`unauthenticated`)"),
    (403, "Forbidden: the role, another tenant, or a suspended one (`forbidden`, `tenant_mismatch`, `tenant_suspended`)"),
    (404, "Not found (`not_found`, `tenant_not_found`)"),
    (409, "Conflict with the current state (`conflict`, `last_owner`)"),
    (413, "The body is too large (`payload_too_large`)"),
    (429, "A limit is reached (`quota_exceeded`, `rate_limited`), with `Retry-After`"),
    (500, "Unexpected; the log has the cause under the `request_id` (`internal`)"),
    (503, "The catalog is unavailable, or the tenant's data is moving (`unavailable`), with `Retry-After` for a move"),
];

/// Adds [`ERRORS`] to every operation that does not describe that status itself (run
/// once the routes are in the document).
pub fn add_error_responses(openapi: &mut OpenApi) {
    {
        for item in openapi.paths.paths.values_mut() {
            for op in operations(item) {
                for (status, description) in ERRORS {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| problem_response(description).into());
                }
            }
        }
    }
}

/// A problem+json response.
fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The fixed part, ready for the routes.
pub fn base() -> OpenApi {
    ApiDoc::openapi()
}

/// `{id}`: the tenant of a `/v1/tenants/{id}/…` path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct TenantPath {
    /// The tenant: 1–39 of `a-z 0-9 -`, not starting or ending with `-` (lower-cased).
    #[param(pattern = "^[A-Za-z0-9]([A-Za-z0-9-]{0,37}[A-Za-z0-9])?$")]
    id: String,
}

/// `?limit=&cursor=` of every paged list.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// Items per page: 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`, as it was given (any other value is `400`).
    cursor: Option<String>,
}

/// A list that is not paged: every item at once.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Items<T: utoipa::ToSchema> {
    /// The items.
    items: Vec<T>,
}

/// A JSON value any backend can store: strings and keys without NUL (`\u0000`), at any
/// depth. Records and cache values are these.
pub struct JsonValue;

/// A record's document: a JSON object of [`JsonValue`]s.
pub struct RecordDoc;

/// A schema component written out by hand (recursive, which the derive cannot say).
macro_rules! named_schema {
    ($ty:ty, $name:literal) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                Ref::from_schema_name($name).into()
            }
        }
        impl utoipa::ToSchema for $ty {
            fn name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
        }
    };
}
named_schema!(JsonValue, "JsonValue");
named_schema!(RecordDoc, "RecordDoc");

/// The body of `POST …/usage/events`: one `UsageEvent` or a list of 1 to 1000.
pub struct UsageEvents;
named_schema!(UsageEvents, "UsageEvents");

/// A blob's content: any bytes.
pub struct Bytes;
named_schema!(Bytes, "Bytes");

/// The hand-written components, and the rule every string of the document follows: no
/// NUL (tenantd refuses one anywhere in a request, and sends none).
pub fn finish(doc: &mut serde_json::Value) {
    let schemas = &mut doc["components"]["schemas"];
    for (name, schema) in hand_written() {
        schemas[name] = schema;
    }
    // tenantd counts these levels itself; a usage event cannot name one.
    schemas["UsageEvent"]["properties"]["resource"]["not"] =
        serde_json::json!({"enum": tenantd_limits::CATALOG_LEVELS});
    one_of_each_parameter(doc);
    parameters_are_never_null(doc);
    no_nul_in_strings(doc);
    no_dot_segments(doc);
    unique_operation_ids(doc);
}

/// Calls `f` with the parameter list of every operation of the document.
fn each_parameter_list(doc: &mut serde_json::Value, mut f: impl FnMut(&mut Vec<serde_json::Value>)) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    let ops = paths
        .values_mut()
        .filter_map(|i| i.as_object_mut())
        .flat_map(|i| i.values_mut());
    for params in ops.filter_map(|op| op.get_mut("parameters").and_then(|p| p.as_array_mut())) {
        f(params);
    }
}

/// Takes `null` out of every parameter's type: a header, query or path parameter is
/// text or absent, never JSON `null` (the derive makes an `Option` nullable, and a
/// generator then sends the text `null`).
fn parameters_are_never_null(doc: &mut serde_json::Value) {
    each_parameter_list(doc, |params| {
        for p in params {
            let schema = &mut p["schema"];
            if let Some(types) = schema.get_mut("type").and_then(|t| t.as_array_mut()) {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    schema["type"] = types[0].clone();
                }
            }
            // An optional reference: `{"oneOf": [{"type": "null"}, {"$ref": …}]}`.
            if let Some(one_of) = schema.get_mut("oneOf").and_then(|o| o.as_array_mut()) {
                one_of.retain(|s| s.get("type").is_none_or(|t| t != "null"));
                if one_of.len() == 1 {
                    *schema = one_of[0].clone();
                }
            }
        }
    });
}

/// Keeps the first of each parameter (by place and name): the derive adds a bare copy of
/// a path parameter it reads from a tuple `Path<(…)>` beside the described one of
/// `params(…)`, and a client given both cannot know which to follow.
fn one_of_each_parameter(doc: &mut serde_json::Value) {
    each_parameter_list(doc, |params| {
        let mut seen = std::collections::HashSet::new();
        params.retain(|p| seen.insert((p["in"].to_string(), p["name"].to_string())));
    });
}

/// Names every operation after its method and path (`get_v1_tenants_id`): the handlers'
/// own names (`get`, `list`, …) repeat across resources, and clients and tools that
/// follow links between operations need each id once.
fn unique_operation_ids(doc: &mut serde_json::Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, op) in item.iter_mut() {
            let words: Vec<&str> = path
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .collect();
            op["operationId"] = format!("{method}_{}", words.join("_")).into();
        }
    }
}

/// A blob path has no `.` or `..` segment: a `not` the parameter derive cannot write.
fn no_dot_segments(doc: &mut serde_json::Value) {
    let Some(item) = doc["paths"]
        .get_mut("/v1/data/blobs/{path}")
        .and_then(|v| v.as_object_mut())
    else {
        return;
    };
    for op in item.values_mut() {
        let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else {
            continue;
        };
        for p in params.iter_mut().filter(|p| p["name"] == "path") {
            p["schema"]["not"] = serde_json::json!({"pattern": "(^|/)\\.\\.?(/|$)"});
        }
    }
}

/// How deep [`JsonValue`] nests: as deep as tenantd stores (each level's schema names
/// the one below, rather than itself, which generators of test data handle badly).
const JSON_DEPTH: usize = tenantd_data::MAX_DEPTH;

fn hand_written() -> Vec<(String, serde_json::Value)> {
    use serde_json::json;
    let no_nul = json!({"pattern": "^[^\\u0000]*$"});
    let level = |n: usize| format!("#/components/schemas/JsonValue{n}");
    let mut out = Vec::new();
    for n in 0..=JSON_DEPTH {
        let mut any_of = vec![
            json!({"type": "null"}),
            json!({"type": "boolean"}),
            json!({"type": "number"}),
            json!({"type": "string", "pattern": no_nul["pattern"]}),
        ];
        if n > 0 {
            let below = json!({"$ref": level(n - 1)});
            any_of.push(json!({"type": "array", "items": below}));
            any_of.push(json!({"type": "object", "additionalProperties": below, "propertyNames": no_nul}));
        }
        out.push((format!("JsonValue{n}"), json!({"anyOf": any_of})));
    }
    out.push((
        "JsonValue".into(),
        json!({"description": format!("Any JSON value without NUL in its strings and keys, nesting objects and arrays at most {JSON_DEPTH} deep"), "allOf": [{"$ref": level(JSON_DEPTH)}]}),
    ));
    out.push((
        "RecordDoc".into(),
        json!({"description": format!("A JSON object: the record (nesting at most {JSON_DEPTH} deep, itself included)"), "type": "object", "additionalProperties": {"$ref": level(JSON_DEPTH - 1)}, "propertyNames": no_nul}),
    ));
    out.push((
        "UsageEvents".into(),
        json!({"description": "One usage event, or a list of 1 to 1000", "oneOf": [
            {"$ref": "#/components/schemas/UsageEvent"},
            {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"$ref": "#/components/schemas/UsageEvent"}},
        ]}),
    ));
    out.push((
        "Bytes".into(),
        json!({"description": "Any bytes", "type": "string", "format": "binary"}),
    ));
    out
}

/// Gives every string schema that has no `pattern`, `enum` or `format` the pattern
/// "no NUL", and every map's keys the same.
fn no_nul_in_strings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            let is_string = m
                .get("type")
                .is_some_and(|t| t == "string" || t.as_array().is_some_and(|a| a.iter().any(|x| x == "string")));
            let free = !["pattern", "enum", "format", "const"]
                .iter()
                .any(|k| m.contains_key(*k));
            if is_string && free {
                m.insert("pattern".into(), "^[^\\u0000]*$".into());
            }
            // The keys of an object open to other properties are strings too.
            let is_object = m.get("type").is_some_and(|t| t == "object") || m.contains_key("additionalProperties");
            let open = m.get("additionalProperties").is_none_or(|a| a != false);
            if is_object && open && !m.contains_key("propertyNames") {
                m.insert("propertyNames".into(), serde_json::json!({"pattern": "^[^\\u0000]*$"}));
            }
            // And so are the strings in its other properties' values, at any depth.
            if is_object && m.get("additionalProperties").is_none_or(|a| a == true) {
                m.insert(
                    "additionalProperties".into(),
                    serde_json::json!({"$ref": "#/components/schemas/JsonValue"}),
                );
            }
            for (_, child) in m.iter_mut() {
                no_nul_in_strings(child);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(no_nul_in_strings),
        _ => {}
    }
}
