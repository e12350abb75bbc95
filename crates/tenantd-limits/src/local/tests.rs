//! Tests of the in-process engine.

use super::*;
use tenantd_core::usage::CounterRow;
use tenantd_core::Enforcement;

/// Deltas, and level snapshots.
#[derive(Default)]
struct Mem(Mutex<Vec<CounterRow>>, Mutex<Vec<CounterRow>>);

#[async_trait::async_trait]
impl CounterStore for Mem {
    async fn load(&self, t: &TenantId, since: i64) -> Result<Vec<CounterRow>, String> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.tenant == *t && (r.period >= since || r.window == Window::Total))
            .cloned()
            .collect())
    }
    async fn add(&self, d: &[CounterRow]) -> Result<(), String> {
        self.0.lock().unwrap().extend_from_slice(d);
        Ok(())
    }
    async fn set_levels(&self, l: &[CounterRow]) -> Result<(), String> {
        self.1.lock().unwrap().extend_from_slice(l);
        Ok(())
    }
}

fn lim(resource: &str, window: Window, limit: u64, enforcement: Enforcement) -> Limit {
    Limit {
        resource: resource.into(),
        window,
        limit: Some(limit),
        enforcement,
    }
}

fn ask<'a>(t: &str, tl: &'a [Limit], kl: &'a [Limit], key: Option<KeyId>) -> Ask<'a> {
    Ask {
        tenant: TenantId::parse(t).unwrap(),
        key,
        tenant_limits: tl,
        key_limits: kl,
        resource: "api_calls",
        cost: 1,
        failure: Default::default(),
    }
}

fn admitted(o: &Outcome) -> bool {
    matches!(o, Outcome::Admitted { .. })
}

#[tokio::test]
async fn sliding_minute_never_admits_more_than_the_limit_in_any_minute() {
    let l = Local::new(Arc::new(Mem::default()));
    let limits = [lim("api_calls", Window::Minute, 10, Enforcement::Hard)];
    let a = ask("acme", &limits, &[], None);
    let t0 = 1_700_000_000_000i64;
    // 10 admitted at t0 + 59 s; at the fixed-window edge (t0 + 60 s) a fixed window
    // would admit 10 more; the sliding log refuses until those leave the window.
    for i in 0..10 {
        assert!(admitted(&l.admit_at(&a, t0 + 59_000 + i).await.unwrap()));
    }
    let o = l.admit_at(&a, t0 + 60_500).await.unwrap();
    let Outcome::Refused { state, retry_after } = o else {
        panic!("admitted past the limit")
    };
    assert_eq!(
        (state.current, state.limit, state.window),
        (10, Some(10), Window::Minute)
    );
    assert!((58..=60).contains(&retry_after), "{retry_after}");
    // Once the whole first bucket is older than a minute, there is room again.
    assert!(admitted(&l.admit_at(&a, t0 + 59_000 + 60_600).await.unwrap()));
}

#[tokio::test]
async fn refused_requests_count_nothing_and_soft_limits_admit_with_crossings() {
    let l = Local::new(Arc::new(Mem::default()));
    let limits = [
        lim("api_calls", Window::Hour, 5, Enforcement::Hard),
        lim("api_calls", Window::Month, 3, Enforcement::Soft),
    ];
    let a = ask("acme", &limits, &[], None);
    let t = 1_700_000_000_000i64;
    let mut kinds = Vec::new();
    for i in 0..5 {
        match l.admit_at(&a, t + i).await.unwrap() {
            Outcome::Admitted { crossings, .. } => kinds.extend(crossings.iter().map(|c| (c.kind, c.state.window))),
            o => panic!("{o:?}"),
        }
    }
    // Month (soft, 3): warning at 3 (80% of 3 rounds up to 3) and exceeded at 3, once each;
    // hour (hard, 5): warning at 4, exceeded at 5.
    assert_eq!(
        kinds,
        vec![
            ("quota.warning", Window::Month),
            ("quota.exceeded", Window::Month),
            ("quota.warning", Window::Hour),
            ("quota.exceeded", Window::Hour)
        ]
    );
    for i in 0..3 {
        assert!(!admitted(&l.admit_at(&a, t + 10 + i).await.unwrap()));
    }
    let month = l.current(a.tenant, "api_calls", Window::Month, t).await.unwrap();
    assert_eq!(month, 5, "refused calls were counted");
}

#[tokio::test]
async fn a_key_limit_narrower_than_the_tenant_applies_to_that_key_only() {
    let l = Local::new(Arc::new(Mem::default()));
    let tl = [lim("api_calls", Window::Hour, 100, Enforcement::Hard)];
    let kl = [lim("api_calls", Window::Hour, 2, Enforcement::Hard)];
    let k1 = KeyId::from_part("aaaaaaaaaaaaaaaaaaaa");
    let t = 1_700_000_000_000i64;
    for _ in 0..2 {
        assert!(admitted(&l.admit_at(&ask("acme", &tl, &kl, k1), t).await.unwrap()));
    }
    let Outcome::Refused { state, .. } = l.admit_at(&ask("acme", &tl, &kl, k1), t).await.unwrap() else {
        panic!("key limit ignored")
    };
    assert_eq!((state.limit, state.key), (Some(2), k1));
    let k2 = KeyId::from_part("bbbbbbbbbbbbbbbbbbbb");
    assert!(admitted(&l.admit_at(&ask("acme", &tl, &[], k2), t).await.unwrap()));
    // Another tenant's counters are its own.
    assert!(admitted(&l.admit_at(&ask("beta", &tl, &kl, k1), t).await.unwrap()));
}

#[tokio::test]
async fn counters_survive_a_new_engine_through_the_store() {
    let store = Arc::new(Mem::default());
    let limits = [lim("api_calls", Window::Month, 3, Enforcement::Hard)];
    let t = now_ms();
    let l = Local::new(store.clone());
    for _ in 0..2 {
        l.admit_at(&ask("acme", &limits, &[], None), t).await.unwrap();
    }
    assert!(l.flush().await.unwrap() > 0);
    let again = Local::new(store);
    assert!(admitted(
        &again.admit_at(&ask("acme", &limits, &[], None), t).await.unwrap()
    ));
    assert!(!admitted(
        &again.admit_at(&ask("acme", &limits, &[], None), t).await.unwrap()
    ));
}

/// The current value of `resource` in `window`, as the engine reports it.
async fn current(l: &Local, resource: &str, window: Window, t: i64) -> u64 {
    current_of(l, "acme", resource, window, t).await
}

async fn current_of(l: &Local, tenant: &str, resource: &str, window: Window, t: i64) -> u64 {
    l.current(TenantId::parse(tenant).unwrap(), resource, window, t)
        .await
        .unwrap()
}

#[tokio::test]
async fn counts_saturate_instead_of_wrapping() {
    use tenantd_core::usage::MAX_COUNT;
    let store = Arc::new(Mem::default());
    let hourly = lim("api_calls", Window::Hour, 400, Enforcement::Hard);
    let limits = [
        lim("api_calls", Window::Minute, MAX_COUNT, Enforcement::Soft),
        lim("api_calls", Window::Month, 1000, Enforcement::Soft),
        lim("storage_bytes", Window::Total, 10, Enforcement::Soft),
    ];
    let t = now_ms();
    let l = Local::new(store.clone());
    let big = |resource: &'static str, cost: u64| Ask {
        resource,
        cost,
        ..ask("acme", &limits, &[], None)
    };
    for cost in [MAX_COUNT - 100, 200, u64::MAX - 10] {
        for resource in ["api_calls", "storage_bytes"] {
            assert!(admitted(&l.admit_at(&big(resource, cost), t).await.unwrap()));
        }
    }
    for (resource, window) in [
        ("api_calls", Window::Month),
        ("api_calls", Window::Minute),
        ("storage_bytes", Window::Total),
    ] {
        assert_eq!(
            current(&l, resource, window, t).await,
            MAX_COUNT,
            "{resource} {window:?}"
        );
    }
    l.flush().await.unwrap();
    let stored: u64 = store
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.resource == "api_calls" && r.window == Window::Month)
        .map(|r| r.value)
        .sum();
    assert_eq!(stored, MAX_COUNT, "the flushed delta saturates too");
    // A hard limit stays shut: a sum that wrapped would have let these in.
    let hard = [hourly];
    let of = |cost: u64| Ask {
        cost,
        ..ask("globex", &hard, &[], None)
    };
    assert!(admitted(&l.admit_at(&of(400), t).await.unwrap()));
    assert!(!admitted(&l.admit_at(&of(u64::MAX - 100), t).await.unwrap()));
    assert!(!admitted(&l.admit_at(&of(1), t).await.unwrap()));
    assert_eq!(current_of(&l, "globex", "api_calls", Window::Hour, t).await, 400);
}

#[tokio::test]
async fn a_reservation_counts_for_admission_is_left_to_the_caller_and_can_be_taken_back() {
    let store = Arc::new(Mem::default());
    let limits = [
        lim("orchestrations", Window::Minute, 5, Enforcement::Hard),
        lim("orchestrations", Window::Month, 5, Enforcement::Hard),
        lim("storage_bytes", Window::Total, 100, Enforcement::Soft),
    ];
    let t = now_ms();
    let l = Local::new(store.clone());
    let of = |resource: &'static str, cost: u64| Ask {
        resource,
        cost,
        ..ask("acme", &limits, &[], None)
    };
    let (out, kept) = l
        .reserve_at(&[of("orchestrations", 3), of("storage_bytes", 40)], t)
        .await
        .unwrap();
    assert!(admitted(&out));
    let r = kept.expect("admitted, so reserved");
    // What the caller stores: the four calendar periods of each resource, and the level.
    let month = r
        .deltas
        .iter()
        .find(|d| d.resource == "orchestrations" && d.window == Window::Month)
        .unwrap();
    assert_eq!(month.value, 3);
    assert_eq!(r.deltas.iter().filter(|d| d.resource == "orchestrations").count(), 4);
    assert!(r
        .deltas
        .iter()
        .any(|d| d.resource == "storage_bytes" && d.window == Window::Total && d.value == 40));
    assert_eq!(r.levels.len(), 1);
    assert_eq!(r.levels[0].value, 40);
    // Counted for admission, but nothing for the flusher.
    assert!(!admitted(&l.admit_at(&of("orchestrations", 3), t).await.unwrap()));
    assert_eq!(l.flush().await.unwrap(), 0);
    assert!(store.0.lock().unwrap().is_empty());
    // Taken back, the place is free again: in the calendar and in the sliding minute.
    l.take_back(&r, true);
    assert_eq!(current(&l, "orchestrations", Window::Month, t).await, 0);
    assert_eq!(current(&l, "orchestrations", Window::Minute, t).await, 0);
    assert_eq!(current(&l, "storage_bytes", Window::Total, t).await, 0);
    assert!(admitted(&l.admit_at(&of("orchestrations", 5), t).await.unwrap()));
    // A refused reservation holds nothing.
    let (out, kept) = l.reserve_at(&[of("orchestrations", 1)], t).await.unwrap();
    assert!(!admitted(&out) && kept.is_none());
}

#[tokio::test]
async fn calendar_periods_roll_and_every_periods_use_is_flushed() {
    let store = Arc::new(Mem::default());
    let l = Local::new(store.clone());
    let limits = [lim("api_calls", Window::Hour, 100, Enforcement::Hard)];
    let a = ask("acme", &limits, &[], None);
    // 2023-11-14T22:00:00Z; the next hour is the same day.
    let h = 1_700_000_000i64 - 1_700_000_000i64.rem_euclid(3600);
    for _ in 0..3 {
        assert!(admitted(&l.admit_at(&a, (h + 3598) * 1000).await.unwrap()));
    }
    for _ in 0..2 {
        assert!(admitted(&l.admit_at(&a, (h + 3601) * 1000).await.unwrap()));
    }
    let at = (h + 3602) * 1000;
    assert_eq!(l.current(a.tenant, "api_calls", Window::Hour, at).await.unwrap(), 2);
    assert_eq!(l.current(a.tenant, "api_calls", Window::Day, at).await.unwrap(), 5);
    l.flush().await.unwrap();
    let sum = |w: Window, p: i64| -> u64 {
        store
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.window == w && r.period == p && r.scope.is_none())
            .map(|r| r.value)
            .sum()
    };
    assert_eq!((sum(Window::Hour, h), sum(Window::Hour, h + 3600)), (3, 2));
    assert_eq!(sum(Window::Day, h - h.rem_euclid(86_400)), 5);
    // Nothing is written twice.
    assert_eq!(l.flush().await.unwrap(), 0);
}

#[tokio::test]
async fn a_changed_level_is_snapshotted_for_the_day_at_flush() {
    let store = Arc::new(Mem::default());
    let l = Local::new(store.clone());
    let limits = [lim("storage_bytes", Window::Total, 100, Enforcement::Hard)];
    let mut a = ask("acme", &limits, &[], None);
    a.resource = "storage_bytes";
    let now = now_ms();
    for cost in [30, 20] {
        a.cost = cost;
        assert!(admitted(&l.admit_at(&a, now).await.unwrap()));
    }
    let day = || {
        let s = now_ms().div_euclid(1000);
        s - s.rem_euclid(86_400)
    };
    let before = day();
    l.flush().await.unwrap();
    // The flush's own clock names the day (a flush at midnight may see the next one).
    let day = if day() == before {
        before
    } else {
        store.1.lock().unwrap()[0].period
    };
    let levels: Vec<(String, Window, i64, u64)> = store
        .1
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.resource.clone(), r.window, r.period, r.value))
        .collect();
    assert_eq!(levels, vec![("storage_bytes".to_string(), Window::Total, day, 50)]);
    // No change, no new snapshot.
    l.flush().await.unwrap();
    assert_eq!(store.1.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn leases_are_limited_and_free_themselves() {
    let l = Local::new(Arc::new(Mem::default()));
    let limits = [lim("jobs", Window::Concurrent, 2, Enforcement::Hard)];
    let t = TenantId::parse("acme").unwrap();
    let a = l.acquire(t, &limits, "jobs", 1_000, 0).await.unwrap().unwrap();
    l.acquire(t, &limits, "jobs", 5_000, 0).await.unwrap().unwrap();
    assert!(l.acquire(t, &limits, "jobs", 1_000, 10).await.unwrap().is_err());
    assert!(l.release(t, &a, 20).await.unwrap());
    assert!(!l.release(t, &a, 20).await.unwrap(), "released twice");
    l.acquire(t, &limits, "jobs", 1_000, 30).await.unwrap().unwrap();
    assert!(l.acquire(t, &limits, "jobs", 1_000, 40).await.unwrap().is_err());
    // The 1 s lease taken at 30 ms has expired by 1.1 s.
    assert!(l.acquire(t, &limits, "jobs", 1_000, 1_100).await.unwrap().is_ok());
    assert_eq!(l.leases_held(t, "jobs", 1_100).await.unwrap(), 2);
}
