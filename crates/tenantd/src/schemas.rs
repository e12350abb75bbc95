//! Configuration values against their key's JSON Schema (2020-12), with the `jsonschema`
//! crate: a schema that is not one is `400 invalid_request`, a value it refuses is
//! `400 invalid_config` naming the JSON pointer and the keyword (docs/config.md).
use serde_json::Value;
use tenantd_core::Code;
use tenantd_edge::Problem;

/// A key's compiled schema. No remote `$ref` is fetched: the crate is built without
/// its HTTP and file resolvers, so such a schema is refused.
pub fn compile(key: &str, schema: &Value) -> Result<jsonschema::Validator, Problem> {
    jsonschema::draft202012::new(schema)
        .map_err(|e| Problem::invalid(format!("schema of '{key}' is not a usable JSON Schema (2020-12): {e}")))
}

/// `Ok` if `value` (called `what` in the answer) is valid; otherwise the first error as
/// `400 invalid_config` with `pointer` and `keyword` members.
pub fn check(schema: &jsonschema::Validator, what: &str, value: &Value) -> Result<(), Problem> {
    let Some(e) = schema.iter_errors(value).next() else {
        return Ok(());
    };
    let pointer = e.instance_path().to_string();
    let keyword = e.kind().keyword().to_string();
    let at = if pointer.is_empty() {
        "the value".to_string()
    } else {
        format!("'{pointer}'")
    };
    Err(
        Problem::new(Code::InvalidConfig, format!("{what}: {at} fails '{keyword}': {e}"))
            .with("pointer", pointer)
            .with("keyword", keyword),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_refusal_names_the_pointer_and_the_keyword() {
        let s = compile(
            "limits",
            &json!({"type":"object","properties":{"seats":{"type":"integer","maximum":5}},"required":["seats"]}),
        )
        .unwrap();
        assert!(check(&s, "value", &json!({"seats": 5})).is_ok());
        let p = check(&s, "value", &json!({"seats": 7})).unwrap_err();
        assert_eq!(p.code, Code::InvalidConfig);
        assert_eq!(
            (p.extra["pointer"].clone(), p.extra["keyword"].clone()),
            (json!("/seats"), json!("maximum"))
        );
        assert!(p.detail.contains("'/seats' fails 'maximum'"), "{}", p.detail);
        let p = check(&s, "value", &json!({})).unwrap_err();
        assert_eq!(
            (p.extra["pointer"].clone(), p.extra["keyword"].clone()),
            (json!(""), json!("required"))
        );
        assert!(compile("x", &json!({"type": "nope"})).is_err());
        assert!(
            compile("x", &json!({"$ref": "https://example.com/s.json"})).is_err(),
            "no remote refs"
        );
    }
}
