//! Feature flags (docs/config.md): what a flag is, and how it is evaluated for a tenant.
//! Evaluation is pure: a [`FlagSet`] built once from the catalog answers every question
//! without I/O or allocation.
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;

/// The longest flag or configuration key.
pub const MAX_KEY_LEN: usize = 128;

/// Checks a flag or configuration key: 1 to 128 of `A-Z a-z 0-9 _ - .`.
pub fn check_key(what: &str, key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} '{key}' must be 1 to {MAX_KEY_LEN} of A-Z, a-z, 0-9, '_', '-', '.'"
        ))
    }
}

/// The type of a flag's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlagType {
    /// `true` or `false`.
    Boolean,
    /// A string.
    String,
    /// A number.
    Number,
    /// A JSON object.
    Object,
}

impl FlagType {
    /// Whether `v` is a value of this type.
    pub fn admits(self, v: &Value) -> bool {
        match self {
            FlagType::Boolean => v.is_boolean(),
            FlagType::String => v.is_string(),
            FlagType::Number => v.is_number(),
            FlagType::Object => v.is_object(),
        }
    }

    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagType::Boolean => "boolean",
            FlagType::String => "string",
            FlagType::Number => "number",
            FlagType::Object => "object",
        }
    }
}

/// Who a rollout buckets: the tenant, or the caller's `targetingKey` (a user, a device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutBy {
    /// The tenant's id.
    #[default]
    Tenant,
    /// The evaluation context's `targetingKey`.
    TargetingKey,
}

/// A share of subjects, in hundredths of a percent (0 to 10,000): JSON carries it as a
/// percentage with at most two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percent(u16);

impl Percent {
    /// From hundredths of a percent (at most 10,000).
    pub fn from_basis_points(bp: u16) -> Option<Self> {
        (bp <= 10_000).then_some(Self(bp))
    }
    /// In hundredths of a percent.
    pub fn basis_points(self) -> u16 {
        self.0
    }
}

impl TryFrom<f64> for Percent {
    type Error = String;
    fn try_from(p: f64) -> Result<Self, String> {
        let bp = (p * 100.0).round();
        if !(0.0..=100.0).contains(&p) || (p * 100.0 - bp).abs() > 1e-6 {
            return Err(format!("percent must be 0 to 100 with at most two decimals, not {p}"));
        }
        Ok(Self(bp as u16))
    }
}

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let whole = self.0 / 100;
        if whole * 100 == self.0 {
            s.serialize_u16(whole)
        } else {
            s.serialize_f64(f64::from(self.0) / 100.0)
        }
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Percent::try_from(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A gradual rollout: subjects whose bucket is under `percent` get `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// 0 to 100, at most two decimals.
    #[schema(value_type = f64, minimum = 0, maximum = 100, multiple_of = 0.01)]
    pub percent: Percent,
    /// The value subjects in the rollout get.
    pub value: Value,
    /// Who is bucketed (default `tenant`).
    #[serde(default)]
    pub by: RolloutBy,
}

/// A flag as the operator defines it (`PUT /v1/flags/{flag}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagSpec {
    /// The type every value of the flag has.
    #[serde(rename = "type")]
    pub kind: FlagType,
    /// The value when nothing else applies, and while the flag is disabled.
    pub default: Value,
    /// The kill switch: `false` serves `default` to everyone (default `true`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Values per plan id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plans: BTreeMap<String, Value>,
    /// Values per tenant id (these win over the plan's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, Value>,
    /// A gradual rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

fn yes() -> bool {
    true
}

/// The most plan or tenant values one flag may have.
pub const MAX_TARGETS: usize = 10_000;

impl FlagSpec {
    /// Checks that every value has the flag's type and that plan and tenant ids are
    /// well formed; the message names the first problem.
    pub fn validate(&self) -> Result<(), String> {
        let t = self.kind;
        let check = |what: &str, v: &Value| {
            if t.admits(v) {
                Ok(())
            } else {
                Err(format!("{what} must be a {} (the flag's type)", t.as_str()))
            }
        };
        check("default", &self.default)?;
        if self.plans.len() + self.tenants.len() > MAX_TARGETS {
            return Err(format!("a flag may name at most {MAX_TARGETS} plans and tenants"));
        }
        for (p, v) in &self.plans {
            crate::PlanId::parse(p).map_err(|e| format!("plans: '{p}': {e}"))?;
            check(&format!("plans.{p}"), v)?;
        }
        for (id, v) in &self.tenants {
            crate::TenantId::parse_with(id, true).map_err(|e| format!("tenants: '{id}': {e}"))?;
            check(&format!("tenants.{id}"), v)?;
        }
        if let Some(r) = &self.rollout {
            check("rollout.value", &r.value)?;
        }
        Ok(())
    }

    /// The spec with plan and tenant ids lower-cased, as they are stored and matched.
    pub fn normalized(mut self) -> Self {
        let lower = |m: BTreeMap<String, Value>| m.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        self.plans = lower(self.plans);
        self.tenants = lower(self.tenants);
        self
    }
}

/// A stored flag: its key, its definition and its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Flag {
    /// The flag's key.
    pub key: String,
    /// Its definition.
    #[serde(flatten)]
    pub spec: FlagSpec,
    /// Raised by every change, from 1.
    pub version: i64,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// Why an evaluation gave its value (OpenFeature's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The flag is disabled: its default.
    Disabled,
    /// A value for the tenant or its plan.
    TargetingMatch,
    /// The subject is in the rollout.
    Split,
    /// Nothing applied: the default.
    Default,
}

/// What an evaluation answers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evaluation<'a> {
    /// The value.
    pub value: &'a Value,
    /// Why.
    pub reason: Reason,
    /// Which of the flag's values it is: `default`, `tenant`, `plan` or `rollout`.
    pub variant: &'static str,
}

/// Why a flag could not be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The flag rolls out by `targeting_key` and none was given.
    #[error("the flag rolls out by targeting key and the context has no targetingKey")]
    TargetingKeyMissing,
}

/// Who a flag is evaluated for.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The tenant's id.
    pub tenant: &'a str,
    /// Its plan's id.
    pub plan: &'a str,
    /// The caller's `targetingKey`, if any.
    pub targeting_key: Option<&'a str>,
}

/// `murmur3_x86_32(flag + "/" + subject, seed 0)`, the hash rollouts bucket by.
pub fn rollout_hash(flag: &str, subject: &str) -> u32 {
    let mut input = flag.as_bytes().chain(&b"/"[..]).chain(subject.as_bytes());
    // Reading from memory cannot fail.
    murmur3::murmur3_32(&mut input, 0).unwrap_or(0)
}

/// A subject's bucket for a flag, 0 to 9,999: it is in a rollout of `percent` when its
/// bucket is under `percent × 100`.
pub fn bucket(flag: &str, subject: &str) -> u16 {
    (rollout_hash(flag, subject) % 10_000) as u16
}

/// A flag ready to evaluate: its spec with the plans that list it as a feature folded in.
#[derive(Debug, Clone)]
struct Compiled {
    flag: Arc<Flag>,
    /// `plans`, with `true` for each plan whose `features` list the key (boolean flags,
    /// where the flag names no value for that plan).
    plans: HashMap<String, Value, foldhash::fast::FixedState>,
}

static TRUE: Value = Value::Bool(true);

impl Compiled {
    fn evaluate(&self, s: &Subject<'_>) -> Result<Evaluation<'_>, EvalError> {
        let spec = &self.flag.spec;
        let hit = |value, reason, variant| Ok(Evaluation { value, reason, variant });
        if !spec.enabled {
            return hit(&spec.default, Reason::Disabled, "default");
        }
        if let Some(v) = spec.tenants.get(s.tenant) {
            return hit(v, Reason::TargetingMatch, "tenant");
        }
        if let Some(v) = self.plans.get(s.plan) {
            return hit(v, Reason::TargetingMatch, "plan");
        }
        if let Some(r) = &spec.rollout {
            let subject = match r.by {
                RolloutBy::Tenant => s.tenant,
                RolloutBy::TargetingKey => s.targeting_key.ok_or(EvalError::TargetingKeyMissing)?,
            };
            if bucket(&self.flag.key, subject) < r.percent.basis_points() {
                return hit(&r.value, Reason::Split, "rollout");
            }
        }
        hit(&spec.default, Reason::Default, "default")
    }
}

/// Every flag, and every plan feature as a boolean flag, ready to evaluate.
#[derive(Debug, Clone, Default)]
pub struct FlagSet {
    /// By key.
    flags: Vec<Compiled>,
    /// Each key's place in `flags`, for lookups on the hot path.
    index: HashMap<String, usize, foldhash::fast::FixedState>,
}

impl FlagSet {
    /// Builds the set from the stored flags and each plan's `features`. A feature no flag
    /// defines becomes a boolean flag, `false` by default and `true` on the plans that
    /// list it; a boolean flag of the same key is `true` on those plans unless it names
    /// a value for them itself.
    pub fn new(flags: Vec<Flag>, plan_features: &[(String, Vec<String>)]) -> Self {
        let mut out: BTreeMap<String, Compiled> = flags
            .into_iter()
            .map(|f| {
                let plans = f.spec.plans.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                (
                    f.key.clone(),
                    Compiled {
                        flag: Arc::new(f),
                        plans,
                    },
                )
            })
            .collect();
        for (plan, features) in plan_features {
            for key in features {
                let c = out.entry(key.clone()).or_insert_with(|| Compiled {
                    flag: Arc::new(Flag {
                        key: key.clone(),
                        spec: FlagSpec {
                            kind: FlagType::Boolean,
                            default: Value::Bool(false),
                            enabled: true,
                            plans: BTreeMap::new(),
                            tenants: BTreeMap::new(),
                            rollout: None,
                        },
                        version: 0,
                        updated_at: String::new(),
                    }),
                    plans: HashMap::default(),
                });
                if c.flag.spec.kind == FlagType::Boolean {
                    c.plans.entry(plan.clone()).or_insert_with(|| TRUE.clone());
                }
            }
        }
        let index = out.keys().enumerate().map(|(i, k)| (k.clone(), i)).collect();
        Self {
            flags: out.into_values().collect(),
            index,
        }
    }

    /// Evaluates one flag; `None` if there is no such flag.
    pub fn evaluate(&self, key: &str, s: &Subject<'_>) -> Option<Result<Evaluation<'_>, EvalError>> {
        let c = &self.flags[*self.index.get(key)?];
        Some(c.evaluate(s))
    }

    /// Every flag's evaluation, by key.
    pub fn evaluate_all<'a>(
        &'a self,
        s: &'a Subject<'a>,
    ) -> impl Iterator<Item = (&'a str, Result<Evaluation<'a>, EvalError>)> + 'a {
        self.flags.iter().map(move |c| (c.flag.key.as_str(), c.evaluate(s)))
    }

    /// A flag as stored (or as a plan feature makes it), if any.
    pub fn flag(&self, key: &str) -> Option<&Flag> {
        self.index.get(key).map(|i| &*self.flags[*i].flag)
    }

    /// The boolean flags that are on for the subject, by key.
    pub fn enabled_booleans<'a>(&'a self, s: &'a Subject<'a>) -> impl Iterator<Item = &'a str> + 'a {
        self.evaluate_all(s)
            .filter(|(_, e)| matches!(e, Ok(e) if e.value == &Value::Bool(true)))
            .map(|(k, _)| k)
    }

    /// How many flags there are.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }
}

#[cfg(test)]
mod tests {
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
}
