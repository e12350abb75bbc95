//! The catalog's behaviour, one suite run against both backends.
//!
//! Each case is written once (`case_*`, taking the catalog) and the `both_backends!` macro
//! turns it into `sqlite_*` (a fresh SQLite file) and `postgres_*` (a fresh PostgreSQL
//! database from `TENANTD_TEST_DATABASE_URL`; skipped with one line on stderr when the
//! variable is unset, a failure under `CI=true`).
use std::collections::BTreeSet;

use tenantd_core::tenant::{Transition, RETENTION_DAYS};
use tenantd_core::{
    Email, Enforcement, Isolation, Limit, Permission, Plan, PlanId, Role, TenantId, TenantStatus, Window,
};
use tenantd_store::*;

// ---------------------------------------------------------------- harness

/// Each write in a unit of work of its own, committed when it succeeds: what these cases
/// check is the write itself (the unit of work has cases of its own).
struct Now<'a>(&'a dyn Catalog);

fn committed(c: &dyn Catalog) -> Now<'_> {
    Now(c)
}

macro_rules! in_own_work {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        impl Now<'_> {
            $(async fn $name(&self, $($arg: $ty),*) -> Result<$out> {
                let mut w = self.0.begin().await?;
                let out = self.0.$name(&mut w, $($arg),*).await?;
                w.commit().await?;
                Ok(out)
            })*
        }
    };
}

in_own_work! {
    create_plan(plan: &Plan) -> ();
    update_plan(plan: &Plan) -> ();
    delete_plan(id: &PlanId) -> ();
    create_tenant(new: &NewTenant) -> Created<Tenant>;
    update_tenant(id: &TenantId, patch: &TenantPatch) -> Tenant;
    transition_tenant(id: &TenantId, t: Transition, reason: Option<&str>) -> Tenant;
    purge_tenant(id: &TenantId, now: i64) -> u64;
    add_member(tenant: &TenantId, email: &Email, role: &str) -> Member;
    add_member_within(tenant: &TenantId, email: &Email, role: &str, max: Option<u64>) -> Member;
    set_member_role(tenant: &TenantId, user_id: &str, role: &str) -> Member;
    remove_member(tenant: &TenantId, user_id: &str) -> ();
    create_role(tenant: &TenantId, role: &Role) -> ();
    delete_role(tenant: &TenantId, name: &str) -> ();
    create_workspace(tenant: &TenantId, id: &str, name: &str) -> Workspace;
    rename_workspace(tenant: &TenantId, id: &str, name: &str) -> Workspace;
    delete_workspace(tenant: &TenantId, id: &str) -> ();
    add_workspace_member(tenant: &TenantId, ws: &str, email: &Email, role: &str) -> WorkspaceMember;
    create_key(key: &ApiKey) -> ();
    create_key_within(key: &ApiKey, max: Option<u64>) -> ();
    revoke_key(tenant: &TenantId, id: &str, at: i64) -> (ApiKey, bool);
    rotate_key(tenant: &TenantId, id: &str, prefix: &str, hash_hex: &str) -> ApiKey;
    add_domain(tenant: &TenantId, host: &str, token: &str) -> Domain;
}

tenantd_store::both_catalogs! {
    case_migrate_seeds_builtin_plans => sqlite_migrate_seeds_builtin_plans, postgres_migrate_seeds_builtin_plans;
    case_plan_crud => sqlite_plan_crud, postgres_plan_crud;
    case_a_change_and_its_event_commit_together => sqlite_a_change_and_its_event_commit_together, postgres_a_change_and_its_event_commit_together;
    case_create_tenant => sqlite_create_tenant, postgres_create_tenant;
    case_concurrent_create_tenant => sqlite_concurrent_create_tenant, postgres_concurrent_create_tenant;
    case_list_tenants => sqlite_list_tenants, postgres_list_tenants;
    case_update_tenant => sqlite_update_tenant, postgres_update_tenant;
    case_status_transitions => sqlite_status_transitions, postgres_status_transitions;
    case_members => sqlite_members, postgres_members;
    case_user_memberships => sqlite_user_memberships, postgres_user_memberships;
    case_custom_roles => sqlite_custom_roles, postgres_custom_roles;
    case_workspaces => sqlite_workspaces, postgres_workspaces;
    case_api_keys => sqlite_api_keys, postgres_api_keys;
    case_audit => sqlite_audit, postgres_audit;
    case_signing_keys => sqlite_signing_keys, postgres_signing_keys;
    case_operator_key => sqlite_operator_key, postgres_operator_key;
    case_concurrent_owner_demotions => sqlite_concurrent_owner_demotions, postgres_concurrent_owner_demotions;
    case_usage => sqlite_usage, postgres_usage;
    case_purge => sqlite_purge, postgres_purge;
    case_tenant_tables_are_all_registered => sqlite_tenant_tables_are_all_registered, postgres_tenant_tables_are_all_registered;
    case_one_event_log => sqlite_one_event_log, postgres_one_event_log;
}

// ---------------------------------------------------------------- helpers

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).expect("test tenant id")
}

fn email(s: &str) -> Email {
    Email::parse(s).expect("test email")
}

fn pid(s: &str) -> PlanId {
    PlanId::parse(s).expect("test plan id")
}

fn limit(resource: &str, window: Window, n: Option<u64>, enforcement: Enforcement) -> Limit {
    Limit {
        resource: resource.to_string(),
        window,
        limit: n,
        enforcement,
    }
}

fn new_tenant(id: &str, plan: &str, owner: &str) -> NewTenant {
    NewTenant {
        id: tid(id),
        name: format!("{id} Inc."),
        plan: pid(plan),
        owner_email: email(owner),
        settings: serde_json::json!({}),
    }
}

/// Creates a tenant that must be new.
async fn mk_tenant(c: &dyn Catalog, id: &str, plan: &str, owner: &str) -> Tenant {
    match committed(c).create_tenant(&new_tenant(id, plan, owner)).await {
        Ok(Created::New(t)) => t,
        other => panic!("creating {id}: expected Created::New, got {other:?}"),
    }
}

async fn user_id(c: &dyn Catalog, e: &str) -> String {
    c.find_user_by_email(&email(e))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("user {e} exists"))
        .id
}

fn new_key(tenant: &str, name: &str, role: &str) -> ApiKey {
    let id = new_id("key");
    ApiKey {
        prefix: format!("td_{}", &id[4..10]),
        hash: format!("{:0>64}", id.len()),
        id,
        tenant_id: tid(tenant),
        name: name.to_string(),
        role: role.to_string(),
        expires_at: Some(4_000_000_000),
        limits: vec![limit("api_calls", Window::Minute, Some(10), Enforcement::Hard)],
        created_at: tenantd_core::now_secs(),
        revoked_at: None,
        last_used_at: None,
    }
}

/// Asserts that a result is the given error variant.
macro_rules! assert_err {
    ($e:expr, $pat:pat) => {
        match $e {
            Err($pat) => {}
            other => panic!(
                "{}: expected Err({}), got {:?}",
                stringify!($e),
                stringify!($pat),
                other
            ),
        }
    };
}

/// Walks every page of `list_tenants`, checking page sizes and cursors on the way.
async fn all_tenant_pages(c: &dyn Catalog, filter: &TenantFilter, limit: u32) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let p = c.list_tenants(filter, &PageRequest { limit, after }).await.unwrap();
        assert!(p.items.len() <= limit as usize);
        pages.push(p.items.iter().map(|t| t.id.to_string()).collect::<Vec<_>>());
        match p.next_cursor {
            Some(cur) => {
                assert_eq!(p.items.len(), limit as usize, "only full pages carry a cursor");
                after = Some(cur);
            }
            None => return pages,
        }
        assert!(pages.len() < 1000, "pagination does not end");
    }
}

// ---------------------------------------------------------------- plans

async fn case_migrate_seeds_builtin_plans(c: &dyn Catalog) {
    let plans = c.list_plans().await.unwrap();
    let ids: Vec<&str> = plans.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["enterprise", "free", "professional", "starter"]);

    // The contract's table (§4), written out independently of Plan::builtins().
    const GIB: u64 = 1 << 30;
    use Enforcement::{Hard, Soft};
    #[allow(clippy::type_complexity)]
    let table: [(&str, u64, u64, Enforcement, u64, Option<u64>, &str, Isolation); 4] = [
        ("free", 100, 1_000, Hard, 1, Some(5), "0", Isolation::Row),
        ("starter", 500, 10_000, Soft, 5, Some(25), "29.00", Isolation::Row),
        (
            "professional",
            2_000,
            50_000,
            Soft,
            20,
            Some(100),
            "99.00",
            Isolation::Schema,
        ),
        (
            "enterprise",
            10_000,
            500_000,
            Soft,
            100,
            None,
            "499.00",
            Isolation::Database,
        ),
    ];
    for (id, hour, month, month_enf, gib, members, price, iso) in table {
        let p = c.get_plan(&pid(id)).await.unwrap();
        let find = |res: &str, w: Window| {
            p.limits
                .iter()
                .find(|l| l.resource == res && l.window == w)
                .unwrap_or_else(|| panic!("{id} has a {res}/{w:?} limit"))
                .clone()
        };
        assert_eq!(find("api_calls", Window::Hour).limit, Some(hour), "{id}");
        let m = find("api_calls", Window::Month);
        assert_eq!((m.limit, m.enforcement), (Some(month), month_enf), "{id}");
        assert_eq!(find("storage_bytes", Window::Total).limit, Some(gib * GIB), "{id}");
        assert_eq!(find("members", Window::Total).limit, members, "{id}");
        assert_eq!(
            p.price.parse::<f64>().unwrap(),
            price.parse::<f64>().unwrap(),
            "{id} price"
        );
        assert_eq!(p.currency, "USD");
        assert_eq!(p.isolation, iso, "{id}");
        // And what is stored is exactly the built-in definition.
        let builtin = Plan::builtins().into_iter().find(|b| b.id.as_str() == id).unwrap();
        assert_eq!(p, builtin);
    }

    // Migrating again (a restart, or a second node) is harmless: no duplicate, no
    // re-seeding over an operator's edits.
    let mut free = c.get_plan(&pid("free")).await.unwrap();
    free.name = "Free (edited)".into();
    committed(c).update_plan(&free).await.unwrap();
    c.migrate().await.unwrap();
    c.migrate().await.unwrap();
    let again = c.list_plans().await.unwrap();
    assert_eq!(again.len(), 4);
    assert_eq!(c.get_plan(&pid("free")).await.unwrap().name, "Free (edited)");
}

/// A unit of work commits its changes and their events together, or neither: when the
/// database refuses the event, the change is not made; dropped without a commit, nothing
/// is.
async fn case_a_change_and_its_event_commit_together(c: &SqlCatalog) {
    let plan = |id: &str| Plan {
        id: pid(id),
        ..Plan::builtins().remove(0)
    };
    let event = |id: &str| {
        NewEvent::new(
            None,
            "operator",
            "plan.created",
            serde_json::json!({"plan": id}),
            "req_t",
        )
    };
    let plans_events = || async {
        let page = c
            .list_audit(
                &AuditFilter::default(),
                &PageRequest {
                    limit: 1000,
                    after: None,
                },
            )
            .await
            .unwrap();
        page.items.iter().filter(|e| e.kind == "plan.created").count()
    };
    let events_before = plans_events().await;
    // The event is refused: the request fails, and the plan is not there.
    tenantd_store::testing::refuse_events(c.url(), true).await;
    let mut w = c.begin().await.unwrap();
    c.create_plan(&mut w, &plan("refused")).await.unwrap();
    let err = w.append(&event("refused")).await.unwrap_err();
    assert!(err.to_string().contains("events refused by the test"), "{err}");
    drop(w);
    assert_err!(c.get_plan(&pid("refused")).await, StoreError::NotFound(_));
    tenantd_store::testing::refuse_events(c.url(), false).await;
    // Not committed: neither the change nor its event.
    let mut w = c.begin().await.unwrap();
    c.create_plan(&mut w, &plan("dropped")).await.unwrap();
    w.append(&event("dropped")).await.unwrap();
    drop(w);
    assert_err!(c.get_plan(&pid("dropped")).await, StoreError::NotFound(_));
    assert_eq!(plans_events().await, events_before);
    // Committed: both, and several changes of one unit of work at once.
    let mut w = c.begin().await.unwrap();
    c.create_plan(&mut w, &plan("kept")).await.unwrap();
    c.create_plan(&mut w, &plan("kept-too")).await.unwrap();
    w.commit_with(&event("kept")).await.unwrap();
    assert_eq!(c.get_plan(&pid("kept")).await.unwrap().id, pid("kept"));
    assert_eq!(c.get_plan(&pid("kept-too")).await.unwrap().id, pid("kept-too"));
    assert_eq!(plans_events().await, events_before + 1);
}

async fn case_plan_crud(c: &dyn Catalog) {
    let burst = Plan {
        id: pid("burst"),
        name: "Burst".into(),
        price: "10.00".into(),
        currency: "USD".into(),
        limits: vec![limit("api_calls", Window::Minute, Some(50), Enforcement::Hard)],
        features: vec!["exports".into()],
        isolation: Isolation::Row,
        counter_failure: tenantd_core::CounterFailure::FailClosed,
        job_weight: 3,
        backup_every_hours: 0,
        backup_keep: 7,
    };
    committed(c).create_plan(&burst).await.unwrap();
    assert_eq!(c.get_plan(&pid("burst")).await.unwrap(), burst);
    assert_eq!(c.list_plans().await.unwrap().len(), 5);

    // Duplicate id.
    let mut dup = burst.clone();
    dup.name = "Other".into();
    assert_err!(committed(c).create_plan(&dup).await, StoreError::Conflict(_));
    assert_eq!(c.get_plan(&pid("burst")).await.unwrap().name, "Burst");

    // Update replaces the fields.
    let mut changed = burst.clone();
    changed.name = "Burst XL".into();
    changed.price = "12.50".into();
    changed.currency = "EUR".into();
    changed.limits = vec![
        limit("api_calls", Window::Minute, Some(100), Enforcement::Soft),
        limit("orchestrations", Window::Concurrent, None, Enforcement::Hard),
    ];
    changed.features = vec![];
    changed.isolation = Isolation::Database;
    committed(c).update_plan(&changed).await.unwrap();
    assert_eq!(c.get_plan(&pid("burst")).await.unwrap(), changed);

    // Unknown plans.
    assert_err!(c.get_plan(&pid("nope")).await, StoreError::NotFound(_));
    let mut ghost = burst.clone();
    ghost.id = pid("ghost");
    assert_err!(committed(c).update_plan(&ghost).await, StoreError::NotFound(_));
    assert_err!(committed(c).delete_plan(&pid("ghost")).await, StoreError::NotFound(_));

    // A plan in use cannot be deleted.
    mk_tenant(c, "burster", "burst", "owner@burst.example").await;
    assert_err!(committed(c).delete_plan(&pid("burst")).await, StoreError::Conflict(_));
    assert!(c.get_plan(&pid("burst")).await.is_ok());
    // A deleted (in retention) tenant still holds its plan.
    committed(c)
        .transition_tenant(&tid("burster"), Transition::Delete, None)
        .await
        .unwrap();
    assert_err!(committed(c).delete_plan(&pid("burst")).await, StoreError::Conflict(_));
    committed(c)
        .transition_tenant(&tid("burster"), Transition::Restore, None)
        .await
        .unwrap();

    // Once no tenant uses it, it can.
    committed(c)
        .update_tenant(
            &tid("burster"),
            &TenantPatch {
                plan: Some(pid("free")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    committed(c).delete_plan(&pid("burst")).await.unwrap();
    assert_err!(c.get_plan(&pid("burst")).await, StoreError::NotFound(_));
    assert_err!(committed(c).delete_plan(&pid("burst")).await, StoreError::NotFound(_));
    assert_eq!(c.list_plans().await.unwrap().len(), 4);
}

// ---------------------------------------------------------------- tenants

async fn case_create_tenant(c: &dyn Catalog) {
    let before = tenantd_core::now_secs();
    let mut req = new_tenant("acme", "starter", "Alice@Acme.example");
    req.settings = serde_json::json!({"region": "eu", "theme": {"color": "blue"}});
    let created = committed(c).create_tenant(&req).await.unwrap();
    let t = match created {
        Created::New(t) => t,
        other => panic!("expected New, got {other:?}"),
    };
    assert_eq!(t.id.as_str(), "acme");
    assert_eq!(t.name, "acme Inc.");
    assert_eq!(t.plan, "starter");
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(t.status_reason, None);
    assert_eq!(t.settings, req.settings);
    assert!(t.limits.is_empty());
    assert!(t.created_at >= before && t.created_at <= tenantd_core::now_secs());
    assert_eq!((t.deleted_at, t.purge_after), (None, None));
    assert_eq!(c.get_tenant(&tid("acme")).await.unwrap(), t);

    // The owner exists as a user (email lower-cased) and owns the tenant.
    let alice = c
        .find_user_by_email(&email("alice@acme.example"))
        .await
        .unwrap()
        .expect("owner user created");
    assert_eq!(alice.email, "alice@acme.example");
    assert!(alice.id.starts_with("usr_"));
    assert_eq!(c.get_user(&alice.id).await.unwrap(), alice);
    assert_eq!(
        c.member_role(&tid("acme"), &alice.id).await.unwrap().as_deref(),
        Some("owner")
    );
    let members = c.list_members(&tid("acme"), &PageRequest::default()).await.unwrap();
    assert_eq!(members.items.len(), 1);
    assert_eq!(
        (members.items[0].email.as_str(), members.items[0].role.as_str()),
        ("alice@acme.example", "owner")
    );

    // The same request again: Existing, with the same tenant, and nothing new made.
    match committed(c).create_tenant(&req).await.unwrap() {
        Created::Existing(again) => assert_eq!(again, t),
        other => panic!("expected Existing, got {other:?}"),
    }
    let all = c
        .list_tenants(&TenantFilter::default(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1);
    let members = c.list_members(&tid("acme"), &PageRequest::default()).await.unwrap();
    assert_eq!(members.items.len(), 1);

    // A different request for the same id: Conflict, tenant untouched.
    let mut other_name = req.clone();
    other_name.name = "Acme Two".into();
    assert_err!(committed(c).create_tenant(&other_name).await, StoreError::Conflict(_));
    let mut other_plan = req.clone();
    other_plan.plan = pid("free");
    assert_err!(committed(c).create_tenant(&other_plan).await, StoreError::Conflict(_));
    let mut other_owner = req.clone();
    other_owner.owner_email = email("mallory@evil.example");
    assert_err!(committed(c).create_tenant(&other_owner).await, StoreError::Conflict(_));
    assert_eq!(c.get_tenant(&tid("acme")).await.unwrap(), t);
    assert_eq!(
        c.list_members(&tid("acme"), &PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1,
        "a refused create adds no member"
    );

    // An unknown plan: NotFound, and nothing is created.
    assert_err!(
        committed(c)
            .create_tenant(&new_tenant("globex", "platinum", "hank@globex.example"))
            .await,
        StoreError::NotFound("plan")
    );
    assert_err!(c.get_tenant(&tid("globex")).await, StoreError::NotFound(_));
    assert_eq!(
        c.find_user_by_email(&email("hank@globex.example")).await.unwrap(),
        None,
        "a refused create leaves no user behind"
    );
    assert_err!(c.get_tenant(&tid("nobody")).await, StoreError::NotFound(_));

    // An existing user can own a second tenant; no duplicate user.
    mk_tenant(c, "acme-labs", "free", "alice@acme.example").await;
    assert_eq!(user_id(c, "alice@acme.example").await, alice.id);
}

/// Identical creates racing each other: all succeed, exactly one makes the tenant.
/// Different tenants created concurrently all succeed.
async fn case_concurrent_create_tenant(c: &SqlCatalog) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            committed(&c)
                .create_tenant(&new_tenant("racer", "free", "rita@racer.example"))
                .await
        }));
    }
    let mut new = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Created::New(_)) => new += 1,
            Ok(Created::Existing(t)) => assert_eq!(t.id.as_str(), "racer"),
            Err(e) => panic!("an identical concurrent create failed: {e}"),
        }
    }
    assert_eq!(new, 1, "exactly one identical create makes the tenant");
    assert_eq!(
        c.list_members(&tid("racer"), &PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let mut tasks = Vec::new();
    for i in 0..32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            committed(&c)
                .create_tenant(&new_tenant(
                    &format!("crowd-{i:02}"),
                    "free",
                    &format!("owner{}@crowd.example", i % 4),
                ))
                .await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(matches!(r, Ok(Created::New(_))), "concurrent create failed: {r:?}");
    }
    let page = c
        .list_tenants(
            &TenantFilter {
                plan: Some("free".into()),
                ..Default::default()
            },
            &PageRequest {
                limit: 100,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 33);
    let owner0 = user_id(c, "owner0@crowd.example").await;
    assert_eq!(c.user_memberships(&owner0).await.unwrap().len(), 8);
}

async fn case_list_tenants(c: &dyn Catalog) {
    // Created out of order; listed by id.
    let specs = [
        ("t-05", "starter"),
        ("t-02", "free"),
        ("t-07", "free"),
        ("t-01", "starter"),
        ("t-04", "free"),
        ("t-06", "enterprise"),
        ("t-03", "free"),
    ];
    for (id, plan) in specs {
        mk_tenant(c, id, plan, &format!("owner@{id}.example")).await;
    }
    let all: Vec<String> = (1..=7).map(|i| format!("t-{i:02}")).collect();

    let pages = all_tenant_pages(c, &TenantFilter::default(), 3).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 1],
        "7 tenants in pages of 3"
    );
    assert_eq!(pages.concat(), all, "every tenant exactly once, in id order");

    // One big page: no cursor.
    let one = c
        .list_tenants(&TenantFilter::default(), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(one.items.len(), 7);
    assert!(one.next_cursor.is_none());

    // A limit that divides the count exactly: the last full page has no cursor.
    let pages = all_tenant_pages(c, &TenantFilter::default(), 7).await;
    assert_eq!(pages.len(), 1, "one full page, no cursor");
    assert_eq!(pages[0], all);

    // Status and plan filters.
    committed(c)
        .transition_tenant(&tid("t-02"), Transition::Suspend, Some("billing"))
        .await
        .unwrap();
    committed(c)
        .transition_tenant(&tid("t-05"), Transition::Suspend, Some("abuse"))
        .await
        .unwrap();
    committed(c)
        .transition_tenant(&tid("t-07"), Transition::Delete, None)
        .await
        .unwrap();
    let by = |status: Option<TenantStatus>, plan: Option<&str>| TenantFilter {
        status,
        plan: plan.map(str::to_string),
        search: None,
    };
    let ids = |pages: Vec<Vec<String>>| pages.concat();

    // Default: everything but deleted.
    assert_eq!(
        ids(all_tenant_pages(c, &by(None, None), 2).await),
        ["t-01", "t-02", "t-03", "t-04", "t-05", "t-06"]
    );
    assert_eq!(
        ids(all_tenant_pages(c, &by(Some(TenantStatus::Suspended), None), 1).await),
        ["t-02", "t-05"]
    );
    assert_eq!(
        ids(all_tenant_pages(c, &by(Some(TenantStatus::Active), None), 50).await),
        ["t-01", "t-03", "t-04", "t-06"]
    );
    assert_eq!(
        ids(all_tenant_pages(c, &by(Some(TenantStatus::Deleted), None), 50).await),
        ["t-07"]
    );
    assert_eq!(
        ids(all_tenant_pages(c, &by(None, Some("free")), 2).await),
        ["t-02", "t-03", "t-04"],
        "deleted t-07 excluded by default"
    );
    assert_eq!(
        ids(all_tenant_pages(c, &by(Some(TenantStatus::Active), Some("free")), 1).await),
        ["t-03", "t-04"]
    );
    assert_eq!(
        ids(all_tenant_pages(c, &by(Some(TenantStatus::Suspended), Some("starter")), 50).await),
        ["t-05"]
    );
    assert_eq!(
        ids(all_tenant_pages(c, &by(None, Some("professional")), 50).await),
        Vec::<String>::new()
    );
    // Returned items carry their status.
    let suspended = c
        .list_tenants(&by(Some(TenantStatus::Suspended), None), &PageRequest::default())
        .await
        .unwrap();
    assert!(suspended
        .items
        .iter()
        .all(|t| t.status == TenantStatus::Suspended && t.status_reason.is_some()));

    // Search: id or name, any case, `%` and `_` as themselves; with the other filters.
    let search = |text: &str, status: Option<TenantStatus>| TenantFilter {
        status,
        search: Some(text.to_string()),
        ..Default::default()
    };
    assert_eq!(ids(all_tenant_pages(c, &search("05", None), 50).await), ["t-05"]);
    assert_eq!(
        ids(all_tenant_pages(c, &search("T-0", Some(TenantStatus::Suspended)), 1).await),
        ["t-02", "t-05"]
    );
    assert_eq!(
        ids(all_tenant_pages(c, &search("6 INC.", None), 50).await),
        ["t-06"],
        "by name, whatever its case"
    );
    for literal in ["%", "_", "t_0", "\\"] {
        assert!(
            ids(all_tenant_pages(c, &search(literal, None), 50).await).is_empty(),
            "{literal} is matched as itself"
        );
    }

    // A cursor this server did not issue.
    for garbage in ["!!not a cursor!!", "%%%", "ÿ"] {
        assert_err!(
            c.list_tenants(
                &TenantFilter::default(),
                &PageRequest {
                    limit: 3,
                    after: Some(garbage.into()),
                },
            )
            .await,
            StoreError::Invalid(_)
        );
    }
}

async fn case_update_tenant(c: &dyn Catalog) {
    let t0 = mk_tenant(c, "upd", "free", "olga@upd.example").await;
    let id = tid("upd");

    // Name only: the rest stays.
    let t = committed(c)
        .update_tenant(
            &id,
            &TenantPatch {
                name: Some("Updated Name".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(t.name, "Updated Name");
    assert_eq!(
        (t.plan.as_str(), &t.settings, t.status),
        ("free", &t0.settings, TenantStatus::Active)
    );
    assert_eq!(t.created_at, t0.created_at);
    assert!(t.updated_at >= t0.updated_at);

    // Plan: known changes, unknown is Invalid and changes nothing.
    let t = committed(c)
        .update_tenant(
            &id,
            &TenantPatch {
                plan: Some(pid("professional")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(t.plan, "professional");
    assert_err!(
        committed(c)
            .update_tenant(
                &id,
                &TenantPatch {
                    plan: Some(pid("platinum")),
                    name: Some("Should Not Stick".into()),
                    ..Default::default()
                },
            )
            .await,
        StoreError::NotFound("plan")
    );
    let t = c.get_tenant(&id).await.unwrap();
    assert_eq!((t.plan.as_str(), t.name.as_str()), ("professional", "Updated Name"));

    // Settings replace the object.
    committed(c)
        .update_tenant(
            &id,
            &TenantPatch {
                settings: Some(serde_json::json!({"a": 1, "b": {"c": 2}})),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let t = committed(c)
        .update_tenant(
            &id,
            &TenantPatch {
                settings: Some(serde_json::json!({"x": true})),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(t.settings, serde_json::json!({"x": true}));

    // Limit overrides merge by (resource, window).
    use Enforcement::{Hard, Soft};
    let patch = |l: Vec<Limit>| TenantPatch {
        limits: Some(l),
        ..Default::default()
    };
    let t = committed(c)
        .update_tenant(&id, &patch(vec![limit("api_calls", Window::Hour, Some(10), Hard)]))
        .await
        .unwrap();
    assert_eq!(t.limits, [limit("api_calls", Window::Hour, Some(10), Hard)]);
    let t = committed(c)
        .update_tenant(
            &id,
            &patch(vec![
                limit("storage_bytes", Window::Total, Some(5), Hard),
                limit("api_calls", Window::Hour, Some(20), Soft),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(
        t.limits,
        [
            limit("api_calls", Window::Hour, Some(20), Soft),
            limit("storage_bytes", Window::Total, Some(5), Hard),
        ]
    );
    let t = committed(c)
        .update_tenant(
            &id,
            &patch(vec![
                limit("api_calls", Window::Hour, None, Hard),
                limit("api_calls", Window::Day, Some(7), Hard),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(
        t.limits,
        [
            limit("api_calls", Window::Hour, None, Hard),
            limit("storage_bytes", Window::Total, Some(5), Hard),
            limit("api_calls", Window::Day, Some(7), Hard),
        ],
        "same resource, other window is a separate override; null means unlimited"
    );
    // An empty patch changes nothing but is fine; settings and plan survived the limit patches.
    let same = committed(c).update_tenant(&id, &TenantPatch::default()).await.unwrap();
    assert_eq!(same.limits, t.limits);
    assert_eq!(same.settings, serde_json::json!({"x": true}));
    assert_eq!(same.plan, "professional");
    assert_eq!(c.get_tenant(&id).await.unwrap().limits, t.limits);

    // Unknown and deleted tenants.
    assert_err!(
        committed(c)
            .update_tenant(&tid("nobody"), &TenantPatch::default())
            .await,
        StoreError::NotFound(_)
    );
    committed(c)
        .transition_tenant(&id, Transition::Delete, None)
        .await
        .unwrap();
    assert_err!(
        committed(c)
            .update_tenant(
                &id,
                &TenantPatch {
                    name: Some("zombie".into()),
                    ..Default::default()
                }
            )
            .await,
        StoreError::Conflict(_)
    );
    assert_eq!(c.get_tenant(&id).await.unwrap().name, "Updated Name");
}

async fn case_status_transitions(c: &dyn Catalog) {
    use Transition::*;
    mk_tenant(c, "life", "free", "lee@life.example").await;
    let id = tid("life");

    let t = committed(c)
        .transition_tenant(&id, Suspend, Some("billing"))
        .await
        .unwrap();
    assert_eq!(t.status, TenantStatus::Suspended);
    assert_eq!(t.status_reason.as_deref(), Some("billing"));
    assert_eq!(c.get_tenant(&id).await.unwrap(), t);
    match committed(c).transition_tenant(&id, Suspend, Some("again")).await {
        Err(StoreError::Status(e)) => assert_eq!((e.from, e.verb), ("suspended", "suspended")),
        other => panic!("suspend of suspended: {other:?}"),
    }
    assert_err!(
        committed(c).transition_tenant(&id, Restore, None).await,
        StoreError::Status(_)
    );

    let t = committed(c).transition_tenant(&id, Resume, None).await.unwrap();
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(t.status_reason, None, "resume clears the reason");
    assert_err!(
        committed(c).transition_tenant(&id, Resume, None).await,
        StoreError::Status(_)
    );
    assert_err!(
        committed(c).transition_tenant(&id, Restore, None).await,
        StoreError::Status(_)
    );

    // Delete from active: retention of 30 days.
    assert_eq!(RETENTION_DAYS, 30);
    let before = tenantd_core::now_secs();
    let t = committed(c).transition_tenant(&id, Delete, None).await.unwrap();
    assert_eq!(t.status, TenantStatus::Deleted);
    let deleted_at = t.deleted_at.expect("deleted_at set");
    assert!(deleted_at >= before && deleted_at <= tenantd_core::now_secs());
    assert_eq!(t.purge_after, Some(deleted_at + 30 * 86_400));
    // Forbidden from deleted.
    match committed(c).transition_tenant(&id, Resume, None).await {
        Err(StoreError::Status(e)) => {
            assert_eq!((e.from, e.verb), ("deleted", "resumed"));
            assert_eq!(e.to_string(), "a deleted tenant cannot be resumed");
        }
        other => panic!("resume of deleted: {other:?}"),
    }
    assert_err!(
        committed(c).transition_tenant(&id, Suspend, Some("x")).await,
        StoreError::Status(_)
    );
    assert_err!(
        committed(c).transition_tenant(&id, Delete, None).await,
        StoreError::Status(_)
    );
    // Nothing changed by the refusals.
    assert_eq!(c.get_tenant(&id).await.unwrap().status, TenantStatus::Deleted);

    // Restore of a tenant deleted while active: active, retention cleared.
    let t = committed(c).transition_tenant(&id, Restore, None).await.unwrap();
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(
        (t.deleted_at, t.purge_after, t.status_reason.clone()),
        (None, None, None)
    );

    // Restore of a tenant deleted while suspended: suspended again, with its reason.
    committed(c)
        .transition_tenant(&id, Suspend, Some("abuse"))
        .await
        .unwrap();
    let t = committed(c).transition_tenant(&id, Delete, None).await.unwrap();
    assert_eq!(t.status, TenantStatus::Deleted);
    assert_eq!(t.purge_after, t.deleted_at.map(|d| d + 30 * 86_400));
    let t = committed(c).transition_tenant(&id, Restore, None).await.unwrap();
    assert_eq!(t.status, TenantStatus::Suspended);
    assert_eq!(t.status_reason.as_deref(), Some("abuse"));
    assert_eq!((t.deleted_at, t.purge_after), (None, None));
    // …and a later delete + restore after resuming comes back active.
    committed(c).transition_tenant(&id, Resume, None).await.unwrap();
    committed(c).transition_tenant(&id, Delete, None).await.unwrap();
    let t = committed(c).transition_tenant(&id, Restore, None).await.unwrap();
    assert_eq!(t.status, TenantStatus::Active);

    assert_err!(
        committed(c).transition_tenant(&tid("nobody"), Suspend, Some("x")).await,
        StoreError::NotFound(_)
    );
}

// ---------------------------------------------------------------- members

async fn case_members(c: &dyn Catalog) {
    mk_tenant(c, "team", "starter", "alice@team.example").await;
    let t = tid("team");
    let alice = user_id(c, "alice@team.example").await;

    let bob = committed(c)
        .add_member(&t, &email("Bob@Team.example"), "member")
        .await
        .unwrap();
    assert_eq!((bob.email.as_str(), bob.role.as_str()), ("bob@team.example", "member"));
    assert!(bob.user_id.starts_with("usr_"));
    assert_eq!(
        c.member_role(&t, &bob.user_id).await.unwrap().as_deref(),
        Some("member")
    );
    // Duplicate add, whatever the role.
    assert_err!(
        committed(c).add_member(&t, &email("bob@team.example"), "admin").await,
        StoreError::Conflict(_)
    );
    assert_eq!(
        c.member_role(&t, &bob.user_id).await.unwrap().as_deref(),
        Some("member")
    );
    assert_err!(
        committed(c)
            .add_member(&tid("nobody"), &email("bob@team.example"), "member")
            .await,
        StoreError::NotFound(_)
    );

    // Set role.
    let m = committed(c).set_member_role(&t, &bob.user_id, "admin").await.unwrap();
    assert_eq!((m.user_id.as_str(), m.role.as_str()), (bob.user_id.as_str(), "admin"));
    assert_eq!(c.member_role(&t, &bob.user_id).await.unwrap().as_deref(), Some("admin"));
    assert_err!(
        committed(c).set_member_role(&t, "usr_nobody", "admin").await,
        StoreError::NotFound(_)
    );
    assert_err!(
        committed(c).remove_member(&t, "usr_nobody").await,
        StoreError::NotFound(_)
    );

    // The last owner can be neither demoted nor removed.
    assert_err!(
        committed(c).set_member_role(&t, &alice, "admin").await,
        StoreError::LastOwner
    );
    assert_err!(committed(c).remove_member(&t, &alice).await, StoreError::LastOwner);
    assert_eq!(c.member_role(&t, &alice).await.unwrap().as_deref(), Some("owner"));
    // Owner → owner is not a demotion.
    committed(c).set_member_role(&t, &alice, "owner").await.unwrap();

    // With two owners, one can be demoted, and one can be removed.
    committed(c).set_member_role(&t, &bob.user_id, "owner").await.unwrap();
    let m = committed(c).set_member_role(&t, &alice, "admin").await.unwrap();
    assert_eq!(m.role, "admin");
    assert_err!(
        committed(c).set_member_role(&t, &bob.user_id, "member").await,
        StoreError::LastOwner
    );
    committed(c).set_member_role(&t, &alice, "owner").await.unwrap();
    committed(c).remove_member(&t, &alice).await.unwrap();
    assert_eq!(c.member_role(&t, &alice).await.unwrap(), None);
    assert_err!(
        committed(c).remove_member(&t, &bob.user_id).await,
        StoreError::LastOwner
    );
    assert_err!(
        committed(c).set_member_role(&t, &bob.user_id, "viewer").await,
        StoreError::LastOwner
    );
    assert_eq!(c.member_role(&t, &bob.user_id).await.unwrap().as_deref(), Some("owner"));
    // A removed user still exists and can be added back.
    assert_eq!(c.get_user(&alice).await.unwrap().email, "alice@team.example");
    committed(c)
        .add_member(&t, &email("alice@team.example"), "viewer")
        .await
        .unwrap();
    // Non-owners are removed freely.
    committed(c).remove_member(&t, &alice).await.unwrap();
    assert_err!(committed(c).remove_member(&t, &alice).await, StoreError::NotFound(_));

    // Member list pages.
    let mut expected = BTreeSet::from([bob.user_id.clone()]);
    for i in 0..5 {
        let m = committed(c)
            .add_member(&t, &email(&format!("m{i}@team.example")), "viewer")
            .await
            .unwrap();
        expected.insert(m.user_id);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let p = c.list_members(&t, &PageRequest { limit: 2, after }).await.unwrap();
        seen.extend(p.items.iter().map(|m| m.user_id.clone()));
        match p.next_cursor {
            Some(cur) => after = Some(cur),
            None => break,
        }
    }
    assert_eq!(seen, expected.into_iter().collect::<Vec<_>>());
}

async fn case_user_memberships(c: &dyn Catalog) {
    mk_tenant(c, "one", "free", "alice@multi.example").await;
    mk_tenant(c, "two", "starter", "bob@multi.example").await;
    mk_tenant(c, "three", "free", "carol@multi.example").await;
    committed(c)
        .add_member(&tid("two"), &email("alice@multi.example"), "member")
        .await
        .unwrap();
    let alice = user_id(c, "alice@multi.example").await;
    let bob = user_id(c, "bob@multi.example").await;

    assert_eq!(
        c.user_memberships(&alice).await.unwrap(),
        [(tid("one"), "owner".to_string()), (tid("two"), "member".to_string())]
    );
    assert_eq!(
        c.user_memberships(&bob).await.unwrap(),
        [(tid("two"), "owner".to_string())]
    );
    assert!(c.user_memberships("usr_nobody").await.unwrap().is_empty());

    // Roles never leak across tenants.
    assert_eq!(c.member_role(&tid("three"), &alice).await.unwrap(), None);
    assert_eq!(c.member_role(&tid("one"), &bob).await.unwrap(), None);
    assert_eq!(c.member_role(&tid("nobody"), &alice).await.unwrap(), None);

    // A deleted tenant drops out of the user's list; restored, it is back.
    committed(c)
        .transition_tenant(&tid("two"), Transition::Delete, None)
        .await
        .unwrap();
    assert_eq!(
        c.user_memberships(&alice).await.unwrap(),
        [(tid("one"), "owner".to_string())]
    );
    committed(c)
        .transition_tenant(&tid("two"), Transition::Restore, None)
        .await
        .unwrap();
    assert_eq!(c.user_memberships(&alice).await.unwrap().len(), 2);

    // Users: ensure is idempotent, lookups by id and email.
    let u1 = c.ensure_user(&email("dora@multi.example")).await.unwrap();
    let u2 = c.ensure_user(&email("DORA@multi.example")).await.unwrap();
    assert_eq!(u1, u2);
    assert_eq!(c.get_user(&u1.id).await.unwrap(), u1);
    assert_eq!(
        c.find_user_by_email(&email("dora@multi.example")).await.unwrap(),
        Some(u1.clone())
    );
    assert!(c.user_memberships(&u1.id).await.unwrap().is_empty());
    assert_err!(c.get_user("usr_nobody").await, StoreError::NotFound(_));
    assert_eq!(c.find_user_by_email(&email("ghost@multi.example")).await.unwrap(), None);
}

// ---------------------------------------------------------------- roles

async fn case_custom_roles(c: &dyn Catalog) {
    mk_tenant(c, "roles", "professional", "alice@roles.example").await;
    mk_tenant(c, "other", "professional", "oscar@other.example").await;
    let t = tid("roles");
    let perms = |ps: &[&str]| ps.iter().map(|p| Permission::parse(p).unwrap()).collect();
    let auditor = Role::custom("auditor".into(), perms(&["audit:read", "usage:read"]));
    let reporter = Role::custom("reporter".into(), perms(&["reports:*"]));

    assert!(c.list_roles(&t).await.unwrap().is_empty());
    committed(c).create_role(&t, &auditor).await.unwrap();
    committed(c).create_role(&t, &reporter).await.unwrap();
    assert_eq!(c.list_roles(&t).await.unwrap(), [auditor.clone(), reporter.clone()]);
    assert_eq!(c.get_role(&t, "auditor").await.unwrap(), Some(auditor.clone()));
    assert_eq!(c.get_role(&t, "nope").await.unwrap(), None);
    // Duplicate name in the tenant; the same name elsewhere is another role.
    let other_perms = Role::custom("auditor".into(), perms(&["*"]));
    assert_err!(
        committed(c).create_role(&t, &other_perms).await,
        StoreError::Conflict(_)
    );
    assert_eq!(c.get_role(&t, "auditor").await.unwrap(), Some(auditor.clone()));
    committed(c).create_role(&tid("other"), &other_perms).await.unwrap();
    assert_eq!(c.get_role(&tid("other"), "auditor").await.unwrap(), Some(other_perms));
    assert_eq!(c.get_role(&tid("other"), "reporter").await.unwrap(), None);

    // Refused while a member holds it.
    let m = committed(c)
        .add_member(&t, &email("ivy@roles.example"), "auditor")
        .await
        .unwrap();
    assert_err!(committed(c).delete_role(&t, "auditor").await, StoreError::Conflict(_));
    assert!(c.get_role(&t, "auditor").await.unwrap().is_some());
    // A member of *another* tenant holding a same-named role does not block.
    committed(c)
        .add_member(&tid("other"), &email("ivy@roles.example"), "auditor")
        .await
        .unwrap();
    committed(c).set_member_role(&t, &m.user_id, "viewer").await.unwrap();
    committed(c).delete_role(&t, "auditor").await.unwrap();
    assert_eq!(c.get_role(&t, "auditor").await.unwrap(), None);
    assert!(c.get_role(&tid("other"), "auditor").await.unwrap().is_some());
    assert_err!(committed(c).delete_role(&t, "auditor").await, StoreError::NotFound(_));

    // Refused while a live API key holds it; a revoked key does not count.
    let k = new_key("roles", "ci", "reporter");
    committed(c).create_key(&k).await.unwrap();
    assert_err!(committed(c).delete_role(&t, "reporter").await, StoreError::Conflict(_));
    committed(c)
        .revoke_key(&t, &k.id, tenantd_core::now_secs())
        .await
        .unwrap();
    committed(c).delete_role(&t, "reporter").await.unwrap();
    assert!(c.list_roles(&t).await.unwrap().is_empty());
}

// ---------------------------------------------------------------- workspaces

async fn case_workspaces(c: &dyn Catalog) {
    mk_tenant(c, "ws", "professional", "alice@ws.example").await;
    mk_tenant(c, "ws-other", "free", "zed@ws.example").await;
    let t = tid("ws");
    committed(c)
        .add_member(&t, &email("bob@ws.example"), "guest")
        .await
        .unwrap();
    let bob = user_id(c, "bob@ws.example").await;
    let zed = user_id(c, "zed@ws.example").await;

    let eng = committed(c).create_workspace(&t, "eng", "Engineering").await.unwrap();
    assert_eq!((eng.id.as_str(), eng.name.as_str()), ("eng", "Engineering"));
    assert!(eng.members.is_empty());
    assert_err!(
        committed(c).create_workspace(&t, "eng", "Again").await,
        StoreError::Conflict(_)
    );
    committed(c).create_workspace(&t, "ops", "Operations").await.unwrap();
    // Same id in another tenant is a different workspace.
    committed(c)
        .create_workspace(&tid("ws-other"), "eng", "Their Eng")
        .await
        .unwrap();
    let list = c.list_workspaces(&t).await.unwrap();
    assert_eq!(
        list.iter()
            .map(|w| (w.id.as_str(), w.name.as_str()))
            .collect::<Vec<_>>(),
        [("eng", "Engineering"), ("ops", "Operations")]
    );

    let r = committed(c).rename_workspace(&t, "eng", "R&D").await.unwrap();
    assert_eq!(r.name, "R&D");
    assert_eq!(c.get_workspace(&t, "eng").await.unwrap().name, "R&D");
    assert_eq!(
        c.get_workspace(&tid("ws-other"), "eng").await.unwrap().name,
        "Their Eng"
    );
    assert_err!(
        committed(c).rename_workspace(&t, "nope", "x").await,
        StoreError::NotFound(_)
    );
    assert_err!(c.get_workspace(&t, "nope").await, StoreError::NotFound(_));

    // Only tenant members can be added: unknown users and members of other tenants are
    // not found among the tenant's members.
    assert_err!(
        committed(c)
            .add_workspace_member(&t, "eng", &email("stranger@ws.example"), "guest")
            .await,
        StoreError::NotFound("tenant member")
    );
    assert_eq!(
        c.find_user_by_email(&email("stranger@ws.example")).await.unwrap(),
        None,
        "no user is created by a refused workspace add"
    );
    assert_err!(
        committed(c)
            .add_workspace_member(&t, "eng", &email("zed@ws.example"), "guest")
            .await,
        StoreError::NotFound("tenant member")
    );
    assert_eq!(c.workspace_role(&t, "eng", &zed).await.unwrap(), None);
    assert_err!(
        committed(c)
            .add_workspace_member(&t, "nope", &email("bob@ws.example"), "guest")
            .await,
        StoreError::NotFound(_)
    );

    let wm = committed(c)
        .add_workspace_member(&t, "eng", &email("bob@ws.example"), "member")
        .await
        .unwrap();
    assert_eq!(
        (wm.user_id.as_str(), wm.email.as_str(), wm.role.as_str()),
        (bob.as_str(), "bob@ws.example", "member")
    );
    assert_eq!(
        c.workspace_role(&t, "eng", &bob).await.unwrap().as_deref(),
        Some("member")
    );
    assert_eq!(c.workspace_role(&t, "ops", &bob).await.unwrap(), None);
    assert_eq!(c.workspace_role(&tid("ws-other"), "eng", &bob).await.unwrap(), None);
    // Adding again re-roles.
    committed(c)
        .add_workspace_member(&t, "eng", &email("bob@ws.example"), "viewer")
        .await
        .unwrap();
    assert_eq!(
        c.workspace_role(&t, "eng", &bob).await.unwrap().as_deref(),
        Some("viewer")
    );
    let eng = c.get_workspace(&t, "eng").await.unwrap();
    assert_eq!(eng.members.len(), 1);
    assert_eq!(eng.members[0].role, "viewer");
    let listed = c.list_workspaces(&t).await.unwrap();
    assert_eq!(listed[0].members, eng.members);

    // Removing the tenant member removes their workspace memberships.
    committed(c)
        .add_workspace_member(&t, "ops", &email("bob@ws.example"), "guest")
        .await
        .unwrap();
    committed(c).remove_member(&t, &bob).await.unwrap();
    assert_eq!(c.workspace_role(&t, "eng", &bob).await.unwrap(), None);
    assert_eq!(c.workspace_role(&t, "ops", &bob).await.unwrap(), None);

    // Delete, with its memberships.
    let alice = user_id(c, "alice@ws.example").await;
    committed(c)
        .add_workspace_member(&t, "ops", &email("alice@ws.example"), "owner")
        .await
        .unwrap();
    committed(c).delete_workspace(&t, "ops").await.unwrap();
    assert_err!(c.get_workspace(&t, "ops").await, StoreError::NotFound(_));
    assert_eq!(c.workspace_role(&t, "ops", &alice).await.unwrap(), None);
    assert_err!(committed(c).delete_workspace(&t, "ops").await, StoreError::NotFound(_));
    assert_err!(committed(c).delete_workspace(&t, "nope").await, StoreError::NotFound(_));
    // Re-creating the id starts empty.
    assert!(committed(c)
        .create_workspace(&t, "ops", "Ops 2")
        .await
        .unwrap()
        .members
        .is_empty());
    assert_eq!(c.list_workspaces(&t).await.unwrap().len(), 2);
}

// ---------------------------------------------------------------- API keys

async fn case_api_keys(c: &dyn Catalog) {
    mk_tenant(c, "keys", "starter", "alice@keys.example").await;
    mk_tenant(c, "keys-other", "starter", "olly@keys.example").await;
    let t = tid("keys");

    let k1 = new_key("keys", "ci", "member");
    committed(c).create_key(&k1).await.unwrap();
    assert_eq!(c.get_key(&k1.id).await.unwrap(), Some(k1.clone()), "stored as given");
    assert_eq!(c.get_key("key_nope").await.unwrap(), None);

    let mut ids = BTreeSet::from([k1.id.clone()]);
    for i in 0..4 {
        let k = new_key("keys", &format!("k{i}"), "viewer");
        committed(c).create_key(&k).await.unwrap();
        ids.insert(k.id);
    }
    let theirs = new_key("keys-other", "theirs", "member");
    committed(c).create_key(&theirs).await.unwrap();

    // Pages of 2 over 5 keys: 2, 2, 1; each once, in id order; not the other tenant's.
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let p = c.list_keys(&t, &PageRequest { limit: 2, after }).await.unwrap();
        pages.push(p.items.iter().map(|k| k.id.clone()).collect::<Vec<_>>());
        match p.next_cursor {
            Some(cur) => after = Some(cur),
            None => break,
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(pages.concat(), ids.iter().cloned().collect::<Vec<_>>());
    assert_err!(
        c.list_keys(
            &t,
            &PageRequest {
                limit: 2,
                after: Some("**garbage**".into())
            }
        )
        .await,
        StoreError::Invalid(_)
    );

    // Rotate: new prefix and hash, same key.
    let r = committed(c)
        .rotate_key(&t, &k1.id, "td_newpfx", &"ab".repeat(32))
        .await
        .unwrap();
    assert_eq!((r.id.as_str(), r.prefix.as_str()), (k1.id.as_str(), "td_newpfx"));
    assert_eq!(r.hash, "ab".repeat(32));
    assert_eq!((r.name.as_str(), r.role.as_str(), r.revoked_at), ("ci", "member", None));
    assert_eq!(c.get_key(&k1.id).await.unwrap(), Some(r.clone()));
    // Another tenant's key: NotFound, and untouched.
    assert_err!(
        committed(c).rotate_key(&t, &theirs.id, "td_x", &"cd".repeat(32)).await,
        StoreError::NotFound(_)
    );
    assert_eq!(c.get_key(&theirs.id).await.unwrap().unwrap().hash, theirs.hash);

    // Revoke.
    let at = tenantd_core::now_secs();
    let (rk, changed) = committed(c).revoke_key(&t, &k1.id, at).await.unwrap();
    assert_eq!((rk.revoked_at, changed), (Some(at), true));
    assert_eq!(c.get_key(&k1.id).await.unwrap().unwrap().revoked_at, Some(at));
    // Revoking again keeps the first time, and says it changed nothing.
    let (again, changed) = committed(c).revoke_key(&t, &k1.id, at + 100).await.unwrap();
    assert_eq!((again.revoked_at, changed), (Some(at), false));
    // Rotating a revoked key is a conflict; its hash stays.
    assert_err!(
        committed(c).rotate_key(&t, &k1.id, "td_again", &"ef".repeat(32)).await,
        StoreError::Conflict(_)
    );
    assert_eq!(c.get_key(&k1.id).await.unwrap().unwrap().hash, "ab".repeat(32));
    // Another tenant's key (or an unknown one): NotFound, and it stays live.
    assert_err!(
        committed(c).revoke_key(&t, &theirs.id, at).await,
        StoreError::NotFound(_)
    );
    assert_eq!(c.get_key(&theirs.id).await.unwrap().unwrap().revoked_at, None);
    assert_err!(
        committed(c).revoke_key(&t, "key_nope", at).await,
        StoreError::NotFound(_)
    );
    // Revoked keys are still listed (with revoked_at).
    let all = c.list_keys(&t, &PageRequest { limit: 50, after: None }).await.unwrap();
    assert_eq!(all.items.len(), 5);
    assert!(all.items.iter().any(|k| k.id == k1.id && k.revoked_at == Some(at)));

    // touch_keys: last_used_at only moves forward.
    let k2 = pages[0].iter().find(|id| **id != k1.id).unwrap().clone();
    let used = |id: &str| {
        let id = id.to_string();
        async move { c.get_key(&id).await.unwrap().unwrap().last_used_at }
    };
    c.touch_keys(&[]).await.unwrap();
    c.touch_keys(&[(theirs.id.clone(), 1_000)]).await.unwrap();
    assert_eq!(used(&theirs.id).await, Some(1_000));
    c.touch_keys(&[(theirs.id.clone(), 500)]).await.unwrap();
    assert_eq!(used(&theirs.id).await, Some(1_000), "never moves backwards");
    c.touch_keys(&[
        (theirs.id.clone(), 2_000),
        (k2.clone(), 10),
        ("key_unknown".to_string(), 5),
    ])
    .await
    .unwrap();
    assert_eq!(used(&theirs.id).await, Some(2_000));
    assert_eq!(used(&k2).await, Some(10));
    c.touch_keys(&[(k2.clone(), 9), (k2.clone(), 11)]).await.unwrap();
    assert_eq!(used(&k2).await, Some(11));
}

// ---------------------------------------------------------------- audit

async fn case_audit(c: &SqlCatalog) {
    mk_tenant(c, "aud", "free", "alice@aud.example").await;
    mk_tenant(c, "aud-b", "free", "bob@aud.example").await;
    // (tenant, actor, action, at)
    let events: [(Option<&str>, &str, &str, i64); 6] = [
        (Some("aud"), "operator", "tenant.created", 1_000),
        (Some("aud"), "usr_alice", "member.added", 2_000),
        (Some("aud-b"), "operator", "tenant.created", 3_000),
        (None, "anonymous", "security.cross_tenant_attempt", 4_000),
        (Some("aud"), "usr_alice", "key.created", 5_000),
        (Some("aud"), "operator", "tenant.suspended", 6_000),
    ];
    for (i, (tenant, actor, action, at)) in events.iter().enumerate() {
        c.record_event(&NewEvent {
            tenant_id: tenant.map(str::to_string),
            actor: (*actor).into(),
            kind: action.to_string(),
            data: serde_json::json!({"n": i, "nested": {"ok": true}}),
            request_id: format!("req-{i}"),
        })
        .await
        .unwrap();
        // record_event stamps "now"; give each event its own time for the since/until checks.
        sqlx::query("UPDATE audit_events SET at = $1 WHERE request_id = $2")
            .bind(*at)
            .bind(format!("req-{i}"))
            .execute(c.pool())
            .await
            .unwrap();
    }
    let list = |f: AuditFilter| async move {
        c.list_audit(
            &f,
            &PageRequest {
                limit: 100,
                after: None,
            },
        )
        .await
        .unwrap()
        .items
        .iter()
        .map(|e| e.request_id.clone())
        .collect::<Vec<_>>()
    };
    let f = |tenant: Option<&str>, action: Option<&str>, actor: Option<&str>| AuditFilter {
        tenant_id: tenant.map(str::to_string),
        action: action.map(str::to_string),
        actor: actor.map(str::to_string),
        ..Default::default()
    };

    // Everything, newest first, with all fields.
    let all = c
        .list_audit(
            &AuditFilter::default(),
            &PageRequest {
                limit: 100,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.items.iter().map(|e| e.request_id.as_str()).collect::<Vec<_>>(),
        ["req-5", "req-4", "req-3", "req-2", "req-1", "req-0"]
    );
    assert!(all.items.windows(2).all(|w| w[0].row > w[1].row));
    let e3 = &all.items[2];
    assert_eq!(
        (e3.tenant_id.as_deref(), &e3.actor, e3.kind.as_str(), e3.at),
        (
            None,
            &serde_json::json!({"type": "system", "id": "anonymous"}),
            "security.cross_tenant_attempt",
            4_000
        )
    );
    assert_eq!(e3.data, serde_json::json!({"n": 3, "nested": {"ok": true}}));
    assert!(e3.id.starts_with("evt_"), "{}", e3.id);

    assert_eq!(
        list(f(Some("aud"), None, None)).await,
        ["req-5", "req-4", "req-1", "req-0"]
    );
    assert_eq!(list(f(Some("aud-b"), None, None)).await, ["req-2"]);
    assert_eq!(list(f(Some("nobody"), None, None)).await, Vec::<String>::new());
    assert_eq!(list(f(None, Some("tenant.created"), None)).await, ["req-2", "req-0"]);
    assert_eq!(list(f(None, None, Some("usr_alice"))).await, ["req-4", "req-1"]);
    assert_eq!(
        list(f(Some("aud"), Some("tenant.created"), Some("operator"))).await,
        ["req-0"]
    );
    assert_eq!(list(f(Some("aud"), None, Some("operator"))).await, ["req-5", "req-0"]);

    // since is inclusive, until exclusive.
    let window = |since: Option<i64>, until: Option<i64>| AuditFilter {
        since,
        until,
        ..Default::default()
    };
    assert_eq!(list(window(Some(4_000), None)).await, ["req-5", "req-4", "req-3"]);
    assert_eq!(list(window(None, Some(2_000))).await, ["req-0"]);
    assert_eq!(
        list(window(Some(2_000), Some(5_000))).await,
        ["req-3", "req-2", "req-1"]
    );
    assert_eq!(list(window(Some(7_000), None)).await, Vec::<String>::new());
    let mut tf = window(Some(1_500), Some(6_000));
    tf.tenant_id = Some("aud".into());
    assert_eq!(list(tf).await, ["req-4", "req-1"]);

    // Cursor pages: 2 + 2 + 2, newest first, and the last without a cursor.
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let p = c
            .list_audit(&AuditFilter::default(), &PageRequest { limit: 2, after })
            .await
            .unwrap();
        pages.push(p.items.iter().map(|e| e.request_id.clone()).collect::<Vec<_>>());
        match p.next_cursor {
            Some(cur) => after = Some(cur),
            None => break,
        }
    }
    assert_eq!(pages, [["req-5", "req-4"], ["req-3", "req-2"], ["req-1", "req-0"]]);
    // With a filter too.
    let p1 = c
        .list_audit(&f(Some("aud"), None, None), &PageRequest { limit: 3, after: None })
        .await
        .unwrap();
    let p2 = c
        .list_audit(
            &f(Some("aud"), None, None),
            &PageRequest {
                limit: 3,
                after: p1.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    assert!(p1.next_cursor.is_some());
    assert_eq!(
        p2.items.iter().map(|e| e.request_id.as_str()).collect::<Vec<_>>(),
        ["req-0"]
    );
    assert!(p2.next_cursor.is_none());
    assert_err!(
        c.list_audit(
            &AuditFilter::default(),
            &PageRequest {
                limit: 2,
                after: Some("?!garbage".into())
            }
        )
        .await,
        StoreError::Invalid(_)
    );
}

// ---------------------------------------------------------------- signing and operator keys

async fn case_signing_keys(c: &dyn Catalog) {
    assert!(c.signing_keys().await.unwrap().is_empty());
    let k = |kid: &str, generation: i64, bytes: Vec<u8>| SigningKeyRecord {
        kid: kid.into(),
        private_pkcs8: bytes,
        public_x: format!("pub-{kid}"),
        created_at: 1_000 * generation,
        generation,
    };
    let newer = k("k-newer", 2, vec![0x30, 0x2e, 0x00, 0xff, 0x80, 0x7f]);
    let older = k("k-older", 1, (0u8..=255).collect());
    c.add_signing_key(&newer).await.unwrap();
    c.add_signing_key(&older).await.unwrap();
    let got = c.signing_keys().await.unwrap();
    assert_eq!(
        got.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        ["k-older", "k-newer"],
        "by generation"
    );
    assert_eq!(got[0].private_pkcs8, older.private_pkcs8, "bytes round-trip");
    assert_eq!(got[1].private_pkcs8, newer.private_pkcs8);
    assert_eq!((got[0].public_x.as_str(), got[0].created_at), ("pub-k-older", 1_000));
    // A kid is unique, and so is a generation: a node that lost the race to add the
    // next key adds nothing, and loads the winner's.
    c.add_signing_key(&k("k-older", 3, vec![1])).await.unwrap();
    c.add_signing_key(&k("k-rival", 2, vec![2])).await.unwrap();
    let again = c.signing_keys().await.unwrap();
    assert_eq!(
        again.iter().map(|k| (k.kid.as_str(), k.generation)).collect::<Vec<_>>(),
        [("k-older", 1), ("k-newer", 2)]
    );
    assert_eq!(again[0].private_pkcs8, older.private_pkcs8);
}

async fn case_operator_key(c: &dyn Catalog) {
    assert_eq!(c.operator_key_hash().await.unwrap(), None);
    assert!(c.set_operator_key_hash("aa11").await.unwrap());
    assert_eq!(c.operator_key_hash().await.unwrap().as_deref(), Some("aa11"));
    assert!(!c.set_operator_key_hash("bb22").await.unwrap(), "set only once");
    assert_eq!(c.operator_key_hash().await.unwrap().as_deref(), Some("aa11"));
}

// ---------------------------------------------------------------- concurrency

/// Two owners demoted (or removed) at the same time: never both, so the tenant always
/// keeps an owner. Repeated to give the race a chance.
async fn case_concurrent_owner_demotions(c: &SqlCatalog) {
    mk_tenant(c, "duo", "free", "alice@duo.example").await;
    let t = tid("duo");
    committed(c)
        .add_member(&t, &email("bob@duo.example"), "owner")
        .await
        .unwrap();
    let alice = user_id(c, "alice@duo.example").await;
    let bob = user_id(c, "bob@duo.example").await;

    for round in 0..10 {
        let remove = round % 2 == 1;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = [alice.clone(), bob.clone()]
            .into_iter()
            .map(|u| {
                let (c, t, barrier) = (c.clone(), t, barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    if remove {
                        committed(&c).remove_member(&t, &u).await.map(|_| ())
                    } else {
                        committed(&c).set_member_role(&t, &u, "admin").await.map(|_| ())
                    }
                })
            })
            .collect();
        let mut ok = 0;
        let mut last_owner = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => ok += 1,
                Err(StoreError::LastOwner) => last_owner += 1,
                Err(e) => panic!("round {round}: unexpected error {e}"),
            }
        }
        assert_eq!((ok, last_owner), (1, 1), "round {round} (remove: {remove})");
        let owners: Vec<_> = c
            .list_members(&t, &PageRequest::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|m| m.role == "owner")
            .collect();
        assert_eq!(owners.len(), 1, "round {round}: exactly one owner left");

        // Back to two owners for the next round.
        for (u, e) in [(&alice, "alice@duo.example"), (&bob, "bob@duo.example")] {
            match c.member_role(&t, u).await.unwrap() {
                None => {
                    committed(c).add_member(&t, &email(e), "owner").await.unwrap();
                }
                Some(r) if r != "owner" => {
                    committed(c).set_member_role(&t, u, "owner").await.unwrap();
                }
                Some(_) => {}
            }
        }
    }
}

// ---------------------------------------------------------------- usage

async fn case_usage(c: &dyn Catalog) {
    use tenantd_core::KeyId;
    mk_tenant(c, "use", "free", "uma@use.example").await;
    mk_tenant(c, "other", "free", "otto@other.example").await;
    let (t, o) = (tid("use"), tid("other"));
    let key = KeyId::parse("key_abcdefghijklmnopqrst");
    let row = |tenant: TenantId, scope: Option<KeyId>, window: Window, period: i64, value: u64| CounterRow {
        tenant,
        scope,
        resource: "api_calls".into(),
        window,
        period,
        value,
    };
    // Deltas add up, whichever node (or flush) wrote them; scopes and tenants stay apart.
    c.add_counters(&[
        row(t, None, Window::Month, 1_000, 5),
        row(t, key, Window::Month, 1_000, 2),
        row(t, None, Window::Day, 500, 1),
        row(o, None, Window::Month, 1_000, 9),
    ])
    .await
    .unwrap();
    c.add_counters(&[row(t, None, Window::Month, 1_000, 3)]).await.unwrap();
    c.add_counters(&[]).await.unwrap();
    let mut got = c.load_counters(&t, 1_000).await.unwrap();
    got.sort_by_key(|r| (r.scope.is_some(), r.period));
    assert_eq!(
        got,
        vec![
            row(t, None, Window::Month, 1_000, 8),
            row(t, key, Window::Month, 1_000, 2)
        ],
        "periods before `since` are not loaded"
    );
    // Levels have no period and are always loaded.
    c.add_counters(&[CounterRow {
        resource: "storage_bytes".into(),
        ..row(t, None, Window::Total, 0, 42)
    }])
    .await
    .unwrap();
    assert!(c.load_counters(&t, 2_000).await.unwrap().iter().any(|r| r.value == 42));
    // Daily rollups of the tenant's own scope, by range.
    assert_eq!(
        c.counters_in(&t, Window::Day, 0, 1_000).await.unwrap(),
        vec![row(t, None, Window::Day, 500, 1)]
    );
    assert!(c.counters_in(&t, Window::Day, 501, 1_000).await.unwrap().is_empty());

    // Counters stop at 2^53 - 1 (MAX_COUNT) instead of wrapping, or going negative in a
    // BIGINT.
    let max = tenantd_core::usage::MAX_COUNT;
    for v in [max - 100, 200, max] {
        c.add_counters(&[row(t, None, Window::Week, 7_000, v)]).await.unwrap();
    }
    let week = |rows: Vec<CounterRow>| rows.into_iter().find(|r| r.window == Window::Week).unwrap().value;
    assert_eq!(week(c.load_counters(&t, 7_000).await.unwrap()), max);

    // Idempotency keys: claimed once per tenant, and only by a write that commits; a
    // write dropped without committing stores neither its keys nor its counts.
    let keys = vec!["a".to_string(), "b".to_string()];
    let w = c.begin_usage(&t, &keys).await.unwrap();
    assert_eq!(w.fresh(), [true, true]);
    drop(w);
    let w = c.begin_usage(&t, &keys).await.unwrap();
    assert_eq!(w.fresh(), [true, true], "a dropped write released its keys");
    let delta = row(t, None, Window::Week, 14_000, 4);
    let level = CounterRow {
        resource: "storage_bytes".into(),
        ..row(t, None, Window::Total, 86_400, 77)
    };
    w.commit(
        std::slice::from_ref(&delta),
        std::slice::from_ref(&level),
        &[("quota.warning", serde_json::json!({"n": "with the count"}))],
    )
    .await
    .unwrap();
    assert_eq!(
        week(c.load_counters(&t, 14_000).await.unwrap()),
        4,
        "the count committed with the keys"
    );
    let w = c.begin_usage(&t, &["b".into(), "c".into()]).await.unwrap();
    assert_eq!(w.fresh(), [false, true]);
    w.commit(&[], &[], &[]).await.unwrap();
    let w = c.begin_usage(&o, &keys).await.unwrap();
    assert_eq!(w.fresh(), [true, true], "per tenant");
    drop(w);
    let w = c.begin_usage(&t, &keys).await.unwrap();
    assert_eq!(w.fresh(), [false, false]);
    drop(w);
    let first = c
        .list_events(&t, &PageRequest { limit: 10, after: None })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.items[0].data["n"], "with the count");
    c.counters_in(&t, Window::Total, 86_400, 86_401)
        .await
        .unwrap()
        .iter()
        .find(|r| r.resource == "storage_bytes" && r.value == 77)
        .expect("the level snapshot committed too");

    // Events: per tenant, oldest first, in pages (after the one the usage write stored).
    for i in 0..3 {
        c.record_event(&NewEvent::system(&t, "quota.warning", serde_json::json!({"n": i})))
            .await
            .unwrap();
    }
    c.record_event(&NewEvent::system(&o, "quota.exceeded", serde_json::json!({})))
        .await
        .unwrap();
    let p1 = c.list_events(&t, &PageRequest { limit: 2, after: None }).await.unwrap();
    assert_eq!(p1.items.len(), 2);
    assert_eq!(p1.items[1].data["n"], 0);
    let p2 = c
        .list_events(
            &t,
            &PageRequest {
                limit: 2,
                after: p1.next_cursor,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (p2.items.len(), p2.items[0].data["n"].as_i64(), p2.next_cursor),
        (2, Some(1), None)
    );
    assert!(p2.items.iter().all(|e| e.tenant_id == t && e.kind == "quota.warning"));

    // Plan history: creation, then each change of plan (not other patches).
    committed(c)
        .update_tenant(
            &t,
            &TenantPatch {
                name: Some("Renamed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    committed(c)
        .update_tenant(
            &t,
            &TenantPatch {
                plan: Some(pid("starter")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let h = c.plan_history(&t).await.unwrap();
    let last = h.last().unwrap().0;
    // Created on free, changed to starter: both, or only starter when the change came
    // in the same second (the last plan of a second is the one billed).
    let plans: Vec<&str> = h.iter().map(|(_, p)| p.as_str()).collect();
    assert!(plans == ["free", "starter"] || plans == ["starter"], "{plans:?}");
    // Recorded changes keep time order, not name order; a second change at the same
    // instant replaces the first.
    c.record_plan(&t, last + 100, "professional").await.unwrap();
    c.record_plan(&t, last + 200, "enterprise").await.unwrap();
    c.record_plan(&t, last + 200, "basic").await.unwrap();
    let h = c.plan_history(&t).await.unwrap();
    let tail: Vec<(i64, &str)> = h.iter().rev().take(2).map(|(at, p)| (*at, p.as_str())).collect();
    assert_eq!(tail, [(last + 200, "basic"), (last + 100, "professional")]);

    // Levels counted from the catalog.
    assert_eq!(c.count(&t, Countable::Members).await.unwrap(), 1);
    committed(c)
        .add_member(&t, &email("max@use.example"), "member")
        .await
        .unwrap();
    assert_eq!(c.count(&t, Countable::Members).await.unwrap(), 2);
    let k = new_key("use", "ci", "member");
    committed(c).create_key(&k).await.unwrap();
    committed(c).create_key(&new_key("use", "cd", "member")).await.unwrap();
    assert_eq!(c.count(&t, Countable::ActiveKeys).await.unwrap(), 2);
    committed(c)
        .revoke_key(&t, &k.id, tenantd_core::now_secs())
        .await
        .unwrap();
    assert_eq!(c.count(&t, Countable::ActiveKeys).await.unwrap(), 1);
    assert_eq!(c.count(&o, Countable::ActiveKeys).await.unwrap(), 0);

    // Writes within a level: refused with the count at the maximum, and nothing written.
    assert!(matches!(
        committed(c)
            .add_member_within(&t, &email("no@use.example"), "member", Some(2))
            .await,
        Err(StoreError::LevelReached(2))
    ));
    assert_eq!(c.count(&t, Countable::Members).await.unwrap(), 2);
    committed(c)
        .add_member_within(&t, &email("yes@use.example"), "member", Some(3))
        .await
        .unwrap();
    assert_eq!(c.count(&t, Countable::Members).await.unwrap(), 3);
    let extra = new_key("use", "extra", "member");
    assert!(matches!(
        committed(c).create_key_within(&extra, Some(1)).await,
        Err(StoreError::LevelReached(1))
    ));
    assert!(c.get_key(&extra.id).await.unwrap().is_none(), "nothing written");
    // Revoked keys do not count; another tenant's level is its own.
    committed(c).create_key_within(&extra, Some(2)).await.unwrap();
    committed(c)
        .create_key_within(&new_key("other", "first", "member"), Some(1))
        .await
        .unwrap();
    assert_eq!(c.count(&t, Countable::ActiveKeys).await.unwrap(), 2);
}

// ---------------------------------------------------------------- purge

/// Every catalog table that holds a tenant's rows, with how many `tenant` has in each.
async fn rows_of(c: &SqlCatalog, tenant: &str) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    for (table, column) in [
        ("tenants", "id"),
        ("memberships", "tenant_id"),
        ("roles", "tenant_id"),
        ("workspaces", "tenant_id"),
        ("workspace_members", "tenant_id"),
        ("api_keys", "tenant_id"),
        ("audit_events", "tenant_id"),
        ("domains", "tenant_id"),
        ("usage_counters", "tenant_id"),
        ("usage_idempotency", "tenant_id"),
        ("plan_history", "tenant_id"),
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1"))
            .bind(tenant)
            .fetch_one(c.pool())
            .await
            .unwrap();
        counts.push((table, n));
    }
    counts
}

/// Gives `tenant` a row in every catalog table: a member shared with `other`, a member of
/// its own, a role, a workspace with a member, a key, a domain, usage, an idempotency key,
/// an event and an audit event.
async fn fill_tenant(c: &SqlCatalog, tenant: &str, other_owner: &str) {
    let t = tid(tenant);
    committed(c).add_member(&t, &email(other_owner), "admin").await.unwrap();
    let solo = format!("solo@{tenant}.example");
    committed(c).add_member(&t, &email(&solo), "member").await.unwrap();
    let perms = vec![Permission::parse("audit:read").unwrap()];
    committed(c)
        .create_role(&t, &Role::custom("auditor".into(), perms))
        .await
        .unwrap();
    committed(c).create_workspace(&t, "ws", "Workspace").await.unwrap();
    committed(c)
        .add_workspace_member(&t, "ws", &email(&solo), "member")
        .await
        .unwrap();
    committed(c).create_key(&new_key(tenant, "ci", "member")).await.unwrap();
    committed(c)
        .add_domain(&t, &format!("app.{tenant}.example"), "token")
        .await
        .unwrap();
    c.add_counters(&[CounterRow {
        tenant: t,
        scope: None,
        resource: "api_calls".into(),
        window: Window::Month,
        period: 1_000,
        value: 7,
    }])
    .await
    .unwrap();
    c.begin_usage(&t, &["idem-1".into()])
        .await
        .unwrap()
        .commit(&[], &[], &[])
        .await
        .unwrap();
    c.record_event(&NewEvent::system(
        &t,
        "quota.warning",
        serde_json::json!({"resource": "api_calls"}),
    ))
    .await
    .unwrap();
    for action in ["tenant.updated", "security.cross_tenant_attempt"] {
        c.record_event(&NewEvent {
            tenant_id: Some(tenant.into()),
            actor: "operator".into(),
            kind: action.into(),
            data: serde_json::json!({}),
            request_id: format!("req-{tenant}"),
        })
        .await
        .unwrap();
    }
}

async fn case_purge(c: &SqlCatalog) {
    let now = tenantd_core::now_secs();
    let month = 31 * 86_400;
    mk_tenant(c, "gone", "starter", "owner@gone.example").await;
    mk_tenant(c, "kept", "starter", "owner@kept.example").await;
    fill_tenant(c, "gone", "owner@kept.example").await;
    fill_tenant(c, "kept", "owner@gone.example").await;
    let kept_rows = rows_of(c, "kept").await;
    assert!(
        rows_of(c, "gone").await.iter().all(|(_, n)| *n > 0),
        "the test gives the tenant a row in every table: {:?}",
        rows_of(c, "gone").await
    );
    let gone = tid("gone");

    // Only a deleted tenant past its retention is purged; refusals change nothing.
    assert_err!(
        committed(c).purge_tenant(&gone, now + month).await,
        StoreError::Conflict(_)
    );
    committed(c)
        .transition_tenant(&gone, Transition::Delete, None)
        .await
        .unwrap();
    assert!(c.purgeable_tenants(now, None, 10).await.unwrap().is_empty());
    match committed(c).purge_tenant(&gone, now).await {
        Err(StoreError::Conflict(m)) => assert_eq!(m, "the tenant's retention period has not ended"),
        other => panic!("purge in retention: {other:?}"),
    }
    assert_eq!(c.get_tenant(&gone).await.unwrap().status, TenantStatus::Deleted);
    assert_eq!(c.purgeable_tenants(now + month, None, 10).await.unwrap(), [gone]);
    // Paged by id.
    assert!(c
        .purgeable_tenants(now + month, Some(&gone), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        c.purgeable_tenants(now + month, Some(&tid("a")), 10).await.unwrap(),
        [gone]
    );
    assert_eq!(c.purgeable_tenants(now + month, None, 0).await.unwrap(), []);
    assert_err!(
        committed(c).purge_tenant(&tid("nobody"), now + month).await,
        StoreError::NotFound(_)
    );

    // Once the retention has ended, the tenant cannot be restored.
    sqlx::query("UPDATE tenants SET purge_after = $1 WHERE id = 'gone'")
        .bind(now - 1)
        .execute(c.pool())
        .await
        .unwrap();
    match committed(c).transition_tenant(&gone, Transition::Restore, None).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("cannot be restored"), "{m}"),
        other => panic!("restore after retention: {other:?}"),
    }
    assert_eq!(c.get_tenant(&gone).await.unwrap().status, TenantStatus::Deleted);
    assert_eq!(c.purgeable_tenants(now, None, 10).await.unwrap(), [gone]);

    let removed = committed(c).purge_tenant(&gone, now).await.unwrap();
    let left = rows_of(c, "gone").await;
    assert!(left.iter().all(|(_, n)| *n == 0), "rows left: {left:?}");
    // The tenant, 3 memberships, a role, a workspace, its member, a key, a domain, a
    // counter, an idempotency key, its plan history; its 3 events (made tombstones); and
    // the one user who belonged to nothing else.
    assert_eq!(removed, 15 + 1);
    // Its events are redacted tombstones in a closed chain that still verifies.
    let closed = format!("gone@{now}");
    let tombstones = c.chain_events(&closed, &AuditFilter::default(), 0, 100).await.unwrap();
    assert_eq!(
        tombstones
            .iter()
            .map(|e| (e.kind.as_str(), e.redacted, e.tenant_id.clone(), e.data.clone()))
            .collect::<Vec<_>>(),
        ["quota.warning", "tenant.updated", "security.cross_tenant_attempt"].map(|k| (
            k,
            true,
            None,
            serde_json::Value::Null
        ))
    );
    assert_eq!(c.verify_chain(&closed).await.unwrap().unwrap().events, 3);
    assert!(
        c.verify_chain("gone").await.unwrap().unwrap().head.is_none(),
        "no open chain of it"
    );
    assert_err!(c.get_tenant(&gone).await, StoreError::NotFound(_));
    assert_err!(committed(c).purge_tenant(&gone, now).await, StoreError::NotFound(_));
    assert!(c.purgeable_tenants(now + month, None, 10).await.unwrap().is_empty());
    // Users who belong to another tenant stay; the one who belonged only to it goes.
    assert_eq!(c.find_user_by_email(&email("solo@gone.example")).await.unwrap(), None);
    for kept in ["owner@gone.example", "owner@kept.example", "solo@kept.example"] {
        assert!(c.find_user_by_email(&email(kept)).await.unwrap().is_some(), "{kept}");
    }
    // The other tenant, which shared a member with it, lost nothing.
    assert_eq!(rows_of(c, "kept").await, kept_rows);

    // The id is free again, and a new tenant under it inherits nothing.
    mk_tenant(c, "gone", "free", "new@gone.example").await;
    let fresh = rows_of(c, "gone").await;
    let expected: Vec<(&str, i64)> = fresh
        .iter()
        .map(|(t, _)| (*t, i64::from(["tenants", "memberships", "plan_history"].contains(t))))
        .collect();
    assert_eq!(fresh, expected);
}

/// Every table with a `tenant_id` column is in the registry purge (and export) use, and
/// the registry names no table that does not exist.
async fn case_tenant_tables_are_all_registered(c: &SqlCatalog) {
    let sql = match c.backend() {
        Backend::Sqlite => {
            "SELECT m.name AS name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND p.name = 'tenant_id' ORDER BY m.name"
        }
        Backend::Postgres => {
            "SELECT table_name::text AS name FROM information_schema.columns \
             WHERE column_name = 'tenant_id' AND table_schema = current_schema() ORDER BY table_name"
        }
    };
    let in_schema: BTreeSet<String> = sqlx::query_scalar(sql)
        .fetch_all(c.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let registered: BTreeSet<String> = TENANT_TABLES.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(
        in_schema, registered,
        "tables with a tenant_id column vs. TENANT_TABLES"
    );
}

/// Audit, security and quota events are one log: each has its public `evt_` id and its
/// actor's type, and a usage write's quota events land in it with the counts.
async fn case_one_event_log(c: &SqlCatalog) {
    let t = tid("evlog");
    mk_tenant(c, "evlog", "free", "owner@evlog.example").await;
    let mut w = c.begin().await.unwrap();
    w.append(&NewEvent::new(
        Some(&t),
        "usr_alice",
        "member.added",
        serde_json::json!({}),
        "req-1",
    ))
    .await
    .unwrap();
    w.append(&NewEvent::new(
        Some(&t),
        "key_abc",
        "key.created",
        serde_json::json!({}),
        "req-2",
    ))
    .await
    .unwrap();
    w.append(&NewEvent::new(
        None,
        "operator",
        "plan.created",
        serde_json::json!({}),
        "req-3",
    ))
    .await
    .unwrap();
    w.commit().await.unwrap();
    c.begin_usage(&t, &[])
        .await
        .unwrap()
        .commit(
            &[],
            &[],
            &[("quota.warning", serde_json::json!({"resource": "api_calls"}))],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT event_id, actor_type, actor, action FROM audit_events WHERE request_id IN ('req-1', 'req-2', 'req-3') OR action LIKE 'quota.%' ORDER BY id",
    )
    .fetch_all(c.pool())
    .await
    .unwrap();
    let kinds: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r.1.as_str(), r.2.as_str(), r.3.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("user", "usr_alice", "member.added"),
            ("api_key", "key_abc", "key.created"),
            ("operator", "operator", "plan.created"),
            ("system", "system", "quota.warning"),
        ]
    );
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "event ids are unique");
    assert!(ids.iter().all(|id| id.starts_with("evt_") && id.len() == 24), "{ids:?}");
    let quota = c
        .list_events(&t, &PageRequest { limit: 10, after: None })
        .await
        .unwrap();
    assert_eq!(
        quota.items.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["quota.warning"]
    );
}
