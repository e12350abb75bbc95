//! Tenant configuration's layers (docs/config.md): a key's value is the tenant's, else its
//! plan's, else the key's default. Resolving is pure; the catalog stores the layers.
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// Which layer a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The tenant's own value.
    Tenant,
    /// Its plan's.
    Plan,
    /// The key's default.
    Default,
}

/// A value in one layer, with the version that wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    /// The value.
    pub value: Value,
    /// The layer's version of the key that wrote it (for defaults, the schema's).
    pub version: i64,
}

/// One layer: values by key.
pub type Layer = HashMap<String, Versioned, foldhash::fast::RandomState>;

/// A key's effective value for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Effective<'a> {
    /// The value.
    pub value: &'a Value,
    /// The layer it came from.
    pub source: Source,
    /// That layer's version of the key.
    pub version: i64,
}

/// The layers every tenant shares: the keys' defaults and each plan's values.
#[derive(Debug, Clone, Default)]
pub struct SharedLayers {
    defaults: Layer,
    plans: HashMap<String, Layer, foldhash::fast::RandomState>,
}

impl SharedLayers {
    /// From the keys' defaults and `(plan, key, value)` of the plans' layers.
    pub fn new(defaults: Layer, plans: Vec<(String, String, Versioned)>) -> Self {
        let mut by_plan: HashMap<String, Layer, _> = HashMap::default();
        for (plan, key, v) in plans {
            by_plan.entry(plan).or_default().insert(key, v);
        }
        Self {
            defaults,
            plans: by_plan,
        }
    }

    /// `key`'s value for a tenant on `plan` whose own layer is `tenant`.
    pub fn effective<'a>(&'a self, tenant: &'a Layer, plan: &str, key: &str) -> Option<Effective<'a>> {
        let hit = |v: &'a Versioned, source| Effective {
            value: &v.value,
            source,
            version: v.version,
        };
        if let Some(v) = tenant.get(key) {
            return Some(hit(v, Source::Tenant));
        }
        if let Some(v) = self.plans.get(plan).and_then(|l| l.get(key)) {
            return Some(hit(v, Source::Plan));
        }
        self.defaults.get(key).map(|v| hit(v, Source::Default))
    }

    /// Every key with a value for that tenant, by key.
    pub fn all<'a>(&'a self, tenant: &'a Layer, plan: &str) -> BTreeMap<&'a str, Effective<'a>> {
        let plan_layer = self.plans.get(plan);
        let keys = tenant
            .keys()
            .chain(plan_layer.into_iter().flat_map(|l| l.keys()))
            .chain(self.defaults.keys());
        keys.filter_map(|k| self.effective(tenant, plan, k).map(|e| (k.as_str(), e)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(pairs: &[(&str, Value, i64)]) -> Layer {
        pairs
            .iter()
            .map(|(k, v, n)| {
                (
                    k.to_string(),
                    Versioned {
                        value: v.clone(),
                        version: *n,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn tenant_over_plan_over_default() {
        let shared = SharedLayers::new(
            layer(&[("theme", json!("plain"), 1), ("seats", json!(5), 2)]),
            vec![(
                "pro".into(),
                "seats".into(),
                Versioned {
                    value: json!(50),
                    version: 3,
                },
            )],
        );
        let mine = layer(&[("theme", json!("dark"), 7)]);
        let none = Layer::default();
        let e = |t, p, k| {
            shared
                .effective(t, p, k)
                .map(|e| (e.value.clone(), e.source, e.version))
        };
        assert_eq!(e(&mine, "pro", "theme"), Some((json!("dark"), Source::Tenant, 7)));
        assert_eq!(e(&none, "pro", "theme"), Some((json!("plain"), Source::Default, 1)));
        assert_eq!(e(&none, "pro", "seats"), Some((json!(50), Source::Plan, 3)));
        assert_eq!(e(&none, "free", "seats"), Some((json!(5), Source::Default, 2)));
        assert_eq!(e(&none, "free", "missing"), None);
        let all = shared.all(&mine, "pro");
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec!["seats", "theme"]);
        assert_eq!(all["seats"].source, Source::Plan);
    }
}
