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

/// What an example expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// This decoded object (JS number semantics).
    Object(Value),
    /// A decode error with exactly these messages.
    Errors(Vec<Value>),
}

/// One decoding example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub description: String,
    pub f_port: u8,
    pub bytes: Vec<u8>,
    pub expected: Expected,
}

/// Parses a file of examples in either shape:
/// - The Things Network codec examples: `{"description", "input": {"fPort", "bytes": [..]},
///   "output": {"data": {..}} | {"errors": [..]}}`, as a list, under `examples`, or under
///   `uplinkDecoder.examples`;
/// - the corpus shape: `{"description", "fPort", "bytes_hex", "expected" | "expected_errors"}`.
pub fn parse_examples(json: &str) -> Result<Vec<Example>, String> {
    let document: Value = serde_json::from_str(json).map_err(|e| format!("examples are not JSON: {e}"))?;
    let list = match &document {
        Value::Array(list) => list,
        Value::Object(_) => document["examples"]
            .as_array()
            .or_else(|| document["uplinkDecoder"]["examples"].as_array())
            .ok_or("no examples: expected a list, `examples` or `uplinkDecoder.examples`")?,
        _ => return Err("no examples: expected a list or an object".into()),
    };
    list.iter()
        .enumerate()
        .map(|(index, example)| parse_example(example).map_err(|e| format!("example {}: {e}", index + 1)))
        .collect()
}

fn parse_example(example: &Value) -> Result<Example, String> {
    let description = example["description"].as_str().unwrap_or_default().to_owned();
    let input = if example["input"].is_object() { &example["input"] } else { example };
    let f_port = input["fPort"].as_u64().filter(|port| *port <= 255).ok_or("fPort missing or not 0-255")? as u8;
    let bytes = match (input["bytes"].as_array(), input["bytes_hex"].as_str()) {
        (Some(list), _) => list
            .iter()
            .map(|byte| byte.as_u64().filter(|b| *b <= 255).map(|b| b as u8).ok_or("bytes must be 0-255"))
            .collect::<Result<Vec<u8>, _>>()?,
        (None, Some(hex)) => parse_hex(hex)?,
        (None, None) => return Err("no bytes or bytes_hex".into()),
    };
    let expected = if example["output"].is_object() {
        match example["output"]["errors"].as_array().filter(|errors| !errors.is_empty()) {
            Some(errors) => Expected::Errors(errors.clone()),
            None => Expected::Object(example["output"]["data"].clone()),
        }
    } else {
        match example.get("expected_errors").and_then(Value::as_array) {
            Some(errors) => Expected::Errors(errors.clone()),
            None => Expected::Object(example["expected"].clone()),
        }
    };
    Ok(Example { description, f_port, bytes, expected })
}

/// Checks one example against a decoding; `None` when it matches.
pub fn check_example(example: &Example, decoded: Result<&Value, &DecodeError>) -> Option<Mismatch> {
    let (ok, expected, actual) = match (decoded, &example.expected) {
        (Ok(object), Expected::Object(expected)) => {
            (js_equal(object, expected), expected.to_string(), object.to_string())
        }
        (Err(error), Expected::Errors(errors)) => {
            let expected = Value::Array(errors.clone());
            let actual = Value::Array(vec![Value::String(error.0.clone())]);
            (expected == actual, expected.to_string(), actual.to_string())
        }
        (Ok(object), Expected::Errors(errors)) => {
            (false, format!("errors {}", Value::Array(errors.clone())), object.to_string())
        }
        (Err(error), Expected::Object(expected)) => (false, expected.to_string(), format!("error: {error}")),
    };
    (!ok).then(|| Mismatch {
        description: example.description.clone(),
        f_port: example.f_port,
        bytes_hex: example.bytes.iter().map(|byte| format!("{byte:02x}")).collect(),
        expected,
        actual,
    })
}

/// Where two JSON values differ, as `path: expected X, actual Y` lines (JS number semantics).
pub fn json_diff(expected: &Value, actual: &Value) -> Vec<String> {
    fn walk(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
        match (expected, actual) {
            (Value::Object(a), Value::Object(b)) => {
                for (key, x) in a {
                    let child = format!("{path}.{key}");
                    match b.get(key) {
                        Some(y) => walk(x, y, &child, out),
                        None => out.push(format!("{child}: expected {x}, missing")),
                    }
                }
                for (key, y) in b.iter().filter(|(key, _)| !a.contains_key(*key)) {
                    out.push(format!("{path}.{key}: unexpected {y}"));
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (index, (x, y)) in a.iter().zip(b).enumerate() {
                    walk(x, y, &format!("{path}[{index}]"), out);
                }
            }
            _ if js_equal(expected, actual) => {}
            _ => out.push(format!("{path}: expected {expected}, actual {actual}")),
        }
    }
    let mut out = Vec::new();
    walk(expected, actual, "$", &mut out);
    out
}

/// Runs every example of a corpus file through `decode(f_port, bytes)`; returns the number of
/// examples and the mismatches.
pub fn check_examples(
    corpus_json: &str,
    decode: impl Fn(u8, &[u8]) -> Result<Decoded, DecodeError>,
) -> Result<(usize, Vec<Mismatch>), String> {
    let examples = parse_examples(corpus_json)?;
    let mismatches = examples
        .iter()
        .filter_map(|example| {
            let decoded = decode(example.f_port, &example.bytes);
            check_example(example, decoded.as_ref().map(|decoded| &decoded.object))
        })
        .collect();
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
    fn both_example_shapes_parse_and_diffs_name_paths() {
        let ttn = r#"{"uplinkDecoder": {"examples": [
            {"description": "busy", "input": {"fPort": 1, "bytes": [1, 255]}, "output": {"data": {"occupied": true}}},
            {"description": "bad", "input": {"fPort": 9, "bytes": []}, "output": {"errors": ["unknown FPort"]}}
        ]}}"#;
        let examples = parse_examples(ttn).unwrap();
        assert_eq!(examples[0].bytes, [1, 255]);
        assert_eq!(examples[0].expected, Expected::Object(json!({"occupied": true})));
        assert_eq!(examples[1].expected, Expected::Errors(vec![json!("unknown FPort")]));
        assert!(parse_examples(r#"[{"input": {"fPort": 1, "bytes": [256]}}]"#).unwrap_err().contains("example 1"));
        assert_eq!(
            json_diff(&json!({"a": 1, "b": {"c": [1, 2]}, "d": 0}), &json!({"a": 1.0, "b": {"c": [1, 3]}, "e": 1})),
            ["$.b.c[1]: expected 2, actual 3", "$.d: expected 0, missing", "$.e: unexpected 1"]
        );
    }

    #[test]
    fn js_equality_is_numeric_but_type_strict() {
        assert!(js_equal(&json!({"a": 1, "b": [2.0]}), &json!({"b": [2], "a": 1.0})));
        assert!(!js_equal(&json!({"a": 1}), &json!({"a": true})));
        assert!(!js_equal(&json!({"a": 1}), &json!({"a": 1, "b": null})));
        assert!(!js_equal(&json!([1, 2]), &json!([2, 1])));
    }
}
