//! Flag evaluation in process: tenantd's [`FlagSet`] against Unleash's own engine
//! (`unleash-yggdrasil`, the domain logic every Unleash SDK shares), each evaluating an
//! equivalent flag — a 25 % gradual rollout sticky on the subject — for 10,000 subjects
//! in turn, in the same run. `cargo bench -p tenantd-core --bench flags`.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::json;
use tenantd_core::flags::{Flag, FlagSet, Subject};
use unleash_types::client_features::{ClientFeatures, Context};
use unleash_yggdrasil::{EngineState, UpdateMessage};

const SUBJECTS: usize = 10_000;

fn tenantd_set() -> FlagSet {
    let flag = Flag {
        key: "gradual".into(),
        spec: serde_json::from_value(json!({"type": "boolean", "default": false,
            "rollout": {"percent": 25, "value": true, "by": "tenant"}}))
        .unwrap(),
        version: 1,
        updated_at: String::new(),
    };
    // Plan features as real deployments have them, so the lookup is not of a set of one.
    let features = vec![
        ("starter".to_string(), vec!["exports".to_string()]),
        (
            "professional".to_string(),
            vec!["exports".to_string(), "sso".to_string()],
        ),
    ];
    FlagSet::new(vec![flag], &features)
}

fn unleash_engine() -> EngineState {
    let features: ClientFeatures = serde_json::from_value(json!({
        "version": 2,
        "features": [
            {"name": "gradual", "type": "release", "enabled": true, "strategies": [
                {"name": "flexibleRollout", "parameters":
                    {"rollout": "25", "stickiness": "userId", "groupId": "gradual"}}]},
            {"name": "exports", "type": "release", "enabled": true, "strategies": [{"name": "default"}]},
            {"name": "sso", "type": "release", "enabled": true, "strategies": [{"name": "default"}]}
        ]
    }))
    .unwrap();
    let engine = EngineState::default();
    engine.take_state(UpdateMessage::FullResponse(features));
    engine
}

fn evaluation(c: &mut Criterion) {
    let ids: Vec<String> = (0..SUBJECTS).map(|i| format!("tenant-{i}")).collect();
    let set = tenantd_set();
    let engine = unleash_engine();
    let contexts: Vec<Context> = ids
        .iter()
        .map(|id| Context {
            user_id: Some(id.clone()),
            ..Context::default()
        })
        .collect();
    // Both agree on who is in: not the same subjects (the hash input differs), but the
    // same share.
    let ours = ids
        .iter()
        .filter(|t| {
            let s = Subject {
                tenant: t,
                plan: "free",
                targeting_key: None,
            };
            set.evaluate("gradual", &s).unwrap().unwrap().value == &json!(true)
        })
        .count();
    let theirs = contexts
        .iter()
        .filter(|c| engine.is_enabled("gradual", c, &None))
        .count();
    eprintln!("in the 25 % rollout of {SUBJECTS}: tenantd {ours}, unleash {theirs}");

    let mut g = c.benchmark_group("rollout_flag");
    let mut i = 0;
    g.bench_function("tenantd", |b| {
        b.iter(|| {
            i = (i + 1) % SUBJECTS;
            let s = Subject {
                tenant: &ids[i],
                plan: "free",
                targeting_key: None,
            };
            black_box(
                set.evaluate(black_box("gradual"), &s)
                    .map(|r| r.map(|e| e.value.is_boolean())),
            )
        })
    });
    let mut i = 0;
    g.bench_function("unleash_yggdrasil", |b| {
        b.iter(|| {
            i = (i + 1) % SUBJECTS;
            black_box(engine.is_enabled(black_box("gradual"), &contexts[i], &None))
        })
    });
    g.finish();
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
