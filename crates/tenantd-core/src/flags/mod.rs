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
}

#[cfg(test)]
mod tests;
