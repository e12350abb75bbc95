//! Free text a person gives a thing (display names, reasons): what makes it valid, in
//! one place, so that the OpenAPI document's `minLength`/`maxLength`/`pattern` say the
//! same. Lengths are in characters, as JSON Schema counts them.

/// The longest display name or reason, in characters.
pub const MAX_TEXT_CHARS: usize = 200;

/// Checks a display name or reason: 1 to 200 characters, not only whitespace. It is
/// stored trimmed.
pub fn display_name(what: &str, raw: &str) -> Result<String, String> {
    let n = raw.chars().count();
    if n == 0 || n > MAX_TEXT_CHARS || raw.trim().is_empty() {
        return Err(format!(
            "{what} must be 1 to {MAX_TEXT_CHARS} characters, not only spaces"
        ));
    }
    Ok(raw.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_counted_in_characters_and_trimmed() {
        assert_eq!(display_name("name", " Acme ").unwrap(), "Acme");
        assert!(
            display_name("name", &"é".repeat(200)).is_ok(),
            "200 characters, 400 bytes"
        );
        assert!(display_name("name", &"a".repeat(201)).is_err());
        assert!(display_name("name", "").is_err());
        assert!(display_name("name", "  \t").is_err());
    }
}
