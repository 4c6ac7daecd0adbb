//! Small validation helpers shared by the domain types.

use crate::error::ValidationError;

/// Trims `value` and checks it is `1..=max_chars` characters with no control characters.
pub fn required_text(field: &str, value: &str, max_chars: usize) -> Result<String, ValidationError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    optional_text(field, Some(trimmed), max_chars).map(|text| text.unwrap_or_default())
}

/// Like [`required_text`], but an absent or blank value becomes `None`.
pub fn optional_text(field: &str, value: Option<&str>, max_chars: usize) -> Result<Option<String>, ValidationError> {
    let Some(trimmed) = value.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    let n_chars = trimmed.chars().count();
    if n_chars > max_chars {
        return Err(ValidationError::new(field, format!("must be at most {max_chars} characters (got {n_chars})")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "must not contain control characters"));
    }
    Ok(Some(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_bounds() {
        assert_eq!(required_text("name", "  A  ", 5).unwrap(), "A");
        assert_eq!(required_text("name", "   ", 5).unwrap_err().message, "must not be empty");
        assert!(required_text("name", "abcdef", 5).unwrap_err().message.contains("at most 5"));
        assert!(required_text("name", "a\u{0}b", 5).is_err());
        assert_eq!(optional_text("x", Some("  "), 5).unwrap(), None);
    }
}
