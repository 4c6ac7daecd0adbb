//! Checks a decoder against a corpus file (The Things Network codec example shape, as in
//! `shared/sensor-corpus/`): every example must decode to exactly the expected object, and
//! error examples to exactly the expected error.
//!
//! Equality is JSON deep equality with JavaScript number semantics (`1` equals `1.0`, because a
//! JS decoder cannot tell them apart), and strict types otherwise (`1` is not `true`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::sensor::{DecodeError, Decoded};

/// One example that did not decode as expected.
#[derive(Debug)]
pub struct Mismatch {
    pub description: String,
    pub f_port: u8,
    pub bytes_hex: String,
    pub expected: String,
    pub actual: String,
}

/// JSON equality with JavaScript number semantics.
pub fn js_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| js_equal(x, y)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(key, x)| b.get(key).is_some_and(|y| js_equal(x, y)))
        }
        _ => left == right,
    }
}

pub fn parse_hex(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits in '{hex}'"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|idx| u8::from_str_radix(&hex[idx..idx + 2], 16).map_err(|_| format!("'{hex}' is not hex")))
        .collect()
}

/// Finds `shared/sensor-corpus/<file>` beside the checkout (the layout of development machines
/// and CI), or under `$BERTH_SENSOR_CORPUS`.
pub fn corpus_path(file: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("BERTH_SENSOR_CORPUS") {
        return Path::new(&dir).join(file);
    }
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .map(|dir| dir.join("shared/sensor-corpus").join(file))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("sensor corpus file {file} not found beside the checkout; set BERTH_SENSOR_CORPUS"))
}

/// Runs every example of a corpus file through `decode(f_port, bytes)`; returns the number of
/// examples and the mismatches.
pub fn check_examples(
    corpus_json: &str,
    decode: impl Fn(u8, &[u8]) -> Result<Decoded, DecodeError>,
) -> Result<(usize, Vec<Mismatch>), String> {
    let corpus: Value = serde_json::from_str(corpus_json).map_err(|e| format!("corpus is not JSON: {e}"))?;
    let examples = corpus["examples"].as_array().ok_or("corpus has no examples array")?;
    let mut mismatches = Vec::new();
    for example in examples {
        let f_port = example["fPort"].as_u64().ok_or("example without fPort")? as u8;
        let bytes_hex = example["bytes_hex"].as_str().ok_or("example without bytes_hex")?;
        let bytes = parse_hex(bytes_hex)?;
        let expected_errors = example.get("expected_errors").and_then(Value::as_array);
        let (ok, expected, actual) = match (decode(f_port, &bytes), expected_errors) {
            (Ok(decoded), None) => (
                js_equal(&decoded.object, &example["expected"]),
                example["expected"].to_string(),
                decoded.object.to_string(),
            ),
            (Err(error), Some(errors)) => {
                let expected = Value::Array(errors.clone());
                let actual = Value::Array(vec![Value::String(error.0)]);
                (expected == actual, expected.to_string(), actual.to_string())
            }
            (Ok(decoded), Some(errors)) => {
                (false, format!("errors {}", Value::Array(errors.clone())), decoded.object.to_string())
            }
            (Err(error), None) => (false, example["expected"].to_string(), format!("error: {error}")),
        };
        if !ok {
            mismatches.push(Mismatch {
                description: example["description"].as_str().unwrap_or_default().to_owned(),
                f_port,
                bytes_hex: bytes_hex.to_owned(),
                expected,
                actual,
            });
        }
    }
    Ok((examples.len(), mismatches))
}

/// Test helper: panics with a readable report unless every example of `file` passes.
pub fn assert_corpus(file: &str, decode: impl Fn(u8, &[u8]) -> Result<Decoded, DecodeError>) {
    let path = corpus_path(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let (n_examples, mismatches) = check_examples(&text, decode).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert!(n_examples > 0, "{file} has no examples");
    let report: Vec<String> = mismatches
        .iter()
        .map(|m| {
            format!(
                "  {} (port {}, {}):\n    expected {}\n    actual   {}",
                m.description, m.f_port, m.bytes_hex, m.expected, m.actual
            )
        })
        .collect();
    assert!(report.is_empty(), "{file}: {} of {n_examples} examples failed:\n{}", report.len(), report.join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mismatches_and_errors_are_reported() {
        use crate::sensor::{Decoded, Reading};
        let corpus = r#"{"examples": [
            {"description": "ok", "fPort": 1, "bytes_hex": "01", "expected": {"occupied": true}},
            {"description": "wrong", "fPort": 1, "bytes_hex": "00", "expected": {"occupied": true}},
            {"description": "error", "fPort": 9, "bytes_hex": "00", "expected": null, "expected_errors": ["unknown FPort"]},
            {"description": "missed error", "fPort": 8, "bytes_hex": "00", "expected": null, "expected_errors": ["unknown FPort"]}
        ]}"#;
        let decode = |port: u8, bytes: &[u8]| match port {
            1 => Ok(Decoded { reading: Reading::other(), object: json!({"occupied": bytes[0] == 1}) }),
            8 => Ok(Decoded { reading: Reading::other(), object: json!({}) }),
            _ => Err(DecodeError::unknown_port()),
        };
        let (n, mismatches) = check_examples(corpus, decode).unwrap();
        assert_eq!(n, 4);
        let failed: Vec<&str> = mismatches.iter().map(|m| m.description.as_str()).collect();
        assert_eq!(failed, ["wrong", "missed error"]);
    }

    #[test]
    fn js_equality_is_numeric_but_type_strict() {
        assert!(js_equal(&json!({"a": 1, "b": [2.0]}), &json!({"b": [2], "a": 1.0})));
        assert!(!js_equal(&json!({"a": 1}), &json!({"a": true})));
        assert!(!js_equal(&json!({"a": 1}), &json!({"a": 1, "b": null})));
        assert!(!js_equal(&json!([1, 2]), &json!([2, 1])));
    }
}
