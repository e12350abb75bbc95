//! Evaluation, bucketing against reference vectors, rollouts' shares, plan features.
use super::*;
use serde_json::json;

fn flag(key: &str, spec: Value) -> Flag {
    Flag {
        key: key.into(),
        spec: serde_json::from_value(spec).unwrap(),
        version: 1,
        updated_at: String::new(),
    }
}

fn subject<'a>(tenant: &'a str, plan: &'a str, key: Option<&'a str>) -> Subject<'a> {
    Subject {
        tenant,
        plan,
        targeting_key: key,
    }
}

#[test]
fn murmur3_matches_the_reference_vectors() {
    // Austin Appleby's MurmurHash3_x86_32, seed 0 (SMHasher's values).
    let h = |s: &str| {
        let mut b = s.as_bytes();
        murmur3::murmur3_32(&mut b, 0).unwrap()
    };
    assert_eq!(h(""), 0);
    assert_eq!(h("hello"), 0x248b_fa47);
    assert_eq!(h("The quick brown fox jumps over the lazy dog"), 0x2e4f_f723);
    // The flag and subject are joined by "/" without an allocation.
    assert_eq!(rollout_hash("new-ui", "acme"), h("new-ui/acme"));
}

/// The vectors docs/config.md publishes: `(flag, subject, murmur3, bucket)`, checked
/// against Python's `mmh3.hash(…, 0, signed=False)` (the reference C code).
const VECTORS: [(&str, &str, u32, u16); 6] = [
    ("new-ui", "acme", 267_931_572, 1_572),
    ("new-ui", "globex", 418_641_910, 1_910),
    ("new-ui", "initech", 3_675_737_215, 7_215),
    ("beta-search", "usr_42", 1_516_259_751, 9_751),
    ("beta-search", "usr_43", 2_468_680_426, 426),
    ("dark-mode", "acme", 3_494_694_688, 4_688),
];

#[test]
fn the_published_bucketing_vectors_hold() {
    for (f, s, hash, b) in VECTORS {
        assert_eq!((rollout_hash(f, s), bucket(f, s)), (hash, b), "{f}/{s}");
    }
}

#[test]
fn every_reason_in_its_order() {
    let f = flag(
        "theme",
        json!({"type":"string","default":"plain","plans":{"pro":"gold"},"tenants":{"acme":"red"},
               "rollout":{"percent":100,"value":"blue"}}),
    );
    let set = FlagSet::new(vec![f.clone()], &[]);
    let eval = |t, p| set.evaluate("theme", &subject(t, p, None)).unwrap().unwrap();
    assert_eq!(
        eval("acme", "pro"),
        Evaluation {
            value: &json!("red"),
            reason: Reason::TargetingMatch,
            variant: "tenant"
        }
    );
    assert_eq!(
        (eval("globex", "pro").value, eval("globex", "pro").variant),
        (&json!("gold"), "plan")
    );
    assert_eq!(eval("globex", "free").reason, Reason::Split);
    let mut off = f.clone();
    off.spec.enabled = false;
    let set = FlagSet::new(vec![off], &[]);
    let e = set.evaluate("theme", &subject("acme", "pro", None)).unwrap().unwrap();
    assert_eq!((e.value, e.reason), (&json!("plain"), Reason::Disabled));
    let mut none = f;
    none.spec.rollout.as_mut().unwrap().percent = Percent::from_basis_points(0).unwrap();
    let set = FlagSet::new(vec![none], &[]);
    let e = set
        .evaluate("theme", &subject("globex", "free", None))
        .unwrap()
        .unwrap();
    assert_eq!((e.value, e.reason), (&json!("plain"), Reason::Default));
    assert!(set.evaluate("nope", &subject("acme", "pro", None)).is_none());
}

#[test]
fn a_targeting_key_rollout_needs_the_key_only_when_it_is_reached() {
    let f = flag(
        "beta",
        json!({"type":"boolean","default":false,"tenants":{"acme":true},
               "rollout":{"percent":50,"value":true,"by":"targeting_key"}}),
    );
    let set = FlagSet::new(vec![f], &[]);
    assert!(set.evaluate("beta", &subject("acme", "free", None)).unwrap().is_ok());
    assert_eq!(
        set.evaluate("beta", &subject("globex", "free", None)).unwrap(),
        Err(EvalError::TargetingKeyMissing)
    );
    let in_ = set
        .evaluate("beta", &subject("globex", "free", Some("usr_43")))
        .unwrap()
        .unwrap();
    assert_eq!(in_.reason, Reason::Split, "usr_43's bucket is 3555 < 5000");
    let out = set
        .evaluate("beta", &subject("globex", "free", Some("usr_42")))
        .unwrap()
        .unwrap();
    assert_eq!(out.reason, Reason::Default, "usr_42's bucket is 7703");
}

#[test]
fn a_rollout_is_near_its_percent_and_raising_it_keeps_everyone_in() {
    let spec = |p: f64| {
        flag(
            "gradual",
            json!({"type":"boolean","default":false,"rollout":{"percent":p,"value":true}}),
        )
    };
    let subjects: Vec<String> = (0..10_000).map(|i| format!("tenant-{i}")).collect();
    let ins = |p: f64| -> Vec<bool> {
        let set = FlagSet::new(vec![spec(p)], &[]);
        subjects
            .iter()
            .map(|t| {
                set.evaluate("gradual", &subject(t, "free", None))
                    .unwrap()
                    .unwrap()
                    .reason
                    == Reason::Split
            })
            .collect()
    };
    let quarter = ins(25.0);
    let n = quarter.iter().filter(|x| **x).count();
    assert!((2_400..=2_600).contains(&n), "{n} of 10,000 in a 25 % rollout");
    let half = ins(50.0);
    assert!(
        quarter.iter().zip(&half).all(|(q, h)| !q || *h),
        "raising the percent took someone out"
    );
    let m = half.iter().filter(|x| **x).count();
    assert!((4_900..=5_100).contains(&m), "{m} of 10,000 in a 50 % rollout");
    assert_eq!(ins(0.0).iter().filter(|x| **x).count(), 0);
    assert_eq!(ins(100.0).iter().filter(|x| **x).count(), 10_000);
}

#[test]
fn plan_features_are_boolean_flags() {
    let explicit = flag(
        "exports",
        json!({"type":"boolean","default":false,"plans":{"pro":false}}),
    );
    let features = vec![
        ("pro".to_string(), vec!["exports".to_string(), "sso".to_string()]),
        ("team".to_string(), vec!["exports".to_string()]),
    ];
    let set = FlagSet::new(vec![explicit], &features);
    let v = |k, p| {
        set.evaluate(k, &subject("acme", p, None))
            .unwrap()
            .unwrap()
            .value
            .clone()
    };
    assert_eq!(v("sso", "pro"), json!(true));
    assert_eq!(v("sso", "free"), json!(false));
    assert_eq!(v("exports", "team"), json!(true), "a feature turns the flag on");
    assert_eq!(v("exports", "pro"), json!(false), "the flag's own plan value wins");
    let s = subject("acme", "pro", None);
    assert_eq!(set.enabled_booleans(&s).collect::<Vec<_>>(), vec!["sso"]);
}

#[test]
fn specs_are_checked() {
    let bad = |v: Value| {
        serde_json::from_value::<FlagSpec>(v)
            .map_err(|e| e.to_string())
            .and_then(|s| s.validate())
    };
    assert!(bad(json!({"type":"boolean","default":"yes"}))
        .unwrap_err()
        .contains("default"));
    assert!(bad(json!({"type":"number","default":1,"plans":{"pro":"x"}}))
        .unwrap_err()
        .contains("plans.pro"));
    assert!(bad(json!({"type":"number","default":1,"tenants":{"no way":2}}))
        .unwrap_err()
        .contains("tenants"));
    assert!(bad(json!({"type":"object","default":{},"rollout":{"percent":10.001,"value":{}}})).is_err());
    assert!(bad(json!({"type":"object","default":{},"rollout":{"percent":101,"value":{}}})).is_err());
    assert!(bad(json!({"type":"object","default":{},"rollout":{"percent":12.34,"value":{}}})).is_ok());
    assert!(bad(json!({"type":"boolean","default":true,"colour":1})).is_err());
    let p: Rollout = serde_json::from_value(json!({"percent":12.5,"value":1})).unwrap();
    assert_eq!(serde_json::to_value(&p).unwrap()["percent"], json!(12.5));
    assert!(check_key("flag", "new-ui.v2").is_ok() && check_key("flag", "a/b").is_err());
}
