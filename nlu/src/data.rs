//! Training data: Rasa's NLU YAML (intents with inline `[text](entity)` and
//! `[text]{"entity": .., "value": ..}` annotations, synonyms, regexes, lookup tables) and the
//! JSON Lines joint intent + slot benchmarks (tokens with BIO tags).

use serde::Deserialize;

use crate::NluError;
use crate::token::{Token, from_words, tokenize};

/// An annotated entity inside an example, over tokens `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub entity: String,
    /// The value the annotation maps the text to (`[NYC]{"entity": "city", "value": "New York"}`).
    pub value: Option<String>,
}

/// One training or test utterance.
#[derive(Debug, Clone)]
pub struct Example {
    pub text: String,
    pub tokens: Vec<Token>,
    pub intent: String,
    pub spans: Vec<Span>,
}

/// Everything a pipeline trains from.
#[derive(Debug, Clone, Default)]
pub struct TrainingData {
    pub examples: Vec<Example>,
    /// Canonical value → the texts that mean it.
    pub synonyms: Vec<(String, Vec<String>)>,
    /// Name (an entity type, to extract it) → patterns.
    pub regexes: Vec<(String, Vec<String>)>,
    /// Entity type → known values.
    pub lookups: Vec<(String, Vec<String>)>,
}

#[derive(Deserialize)]
struct RasaFile {
    #[serde(default)]
    nlu: Vec<RasaItem>,
}

#[derive(Deserialize)]
struct RasaItem {
    intent: Option<String>,
    synonym: Option<String>,
    regex: Option<String>,
    lookup: Option<String>,
    examples: Examples,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Examples {
    Block(String),
    List(Vec<String>),
}

impl Examples {
    /// The example lines, without their `- ` markers.
    fn lines(&self) -> Vec<String> {
        match self {
            Examples::Block(block) => block
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(|line| line.strip_prefix('-').unwrap_or(line).trim().to_owned())
                .collect(),
            Examples::List(items) => items.iter().map(|item| item.trim().to_owned()).collect(),
        }
    }
}

#[derive(Deserialize)]
struct JsonAnnotation {
    entity: String,
    value: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct BenchLine {
    tokens: Vec<String>,
    tags: Vec<String>,
    intent: String,
}

impl TrainingData {
    /// Parses a Rasa NLU YAML file (`version` and other top-level keys such as `responses` are ignored).
    pub fn from_rasa_yaml(source: &str) -> Result<Self, NluError> {
        let file: RasaFile = serde_yaml::from_str(source).map_err(|error| NluError::Data(error.to_string()))?;
        let mut data = TrainingData::default();
        for item in file.nlu {
            let lines = item.examples.lines();
            if let Some(intent) = item.intent {
                for line in lines {
                    data.examples.push(parse_example(&line, &intent)?);
                }
            } else if let Some(value) = item.synonym {
                data.synonyms.push((value, lines));
            } else if let Some(name) = item.regex {
                for pattern in &lines {
                    regex::Regex::new(pattern)
                        .map_err(|error| NluError::Data(format!("regex {name}: {pattern}: {error}")))?;
                }
                data.regexes.push((name, lines));
            } else if let Some(name) = item.lookup {
                data.lookups.push((name, lines));
            } else {
                return Err(NluError::Data("an nlu item needs one of intent, synonym, regex or lookup".into()));
            }
        }
        Ok(data)
    }

    /// Parses the benchmarks' JSON Lines (`tokens`, BIO `tags`, `intent` per line).
    pub fn from_bench_jsonl(source: &str) -> Result<Self, NluError> {
        let mut data = TrainingData::default();
        for (number, line) in source.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
            let line: BenchLine =
                serde_json::from_str(line).map_err(|error| NluError::Data(format!("line {}: {error}", number + 1)))?;
            if line.tokens.len() != line.tags.len() {
                return Err(NluError::Data(format!(
                    "line {}: {} tokens but {} tags",
                    number + 1,
                    line.tokens.len(),
                    line.tags.len()
                )));
            }
            let spans = spans_from_bio(&line.tags);
            data.examples.push(Example {
                text: line.tokens.join(" "),
                tokens: from_words(&line.tokens),
                intent: line.intent,
                spans,
            });
        }
        Ok(data)
    }

    /// Adds another file's data to this one.
    pub fn extend(&mut self, other: TrainingData) {
        self.examples.extend(other.examples);
        self.synonyms.extend(other.synonyms);
        self.regexes.extend(other.regexes);
        self.lookups.extend(other.lookups);
    }
}

/// Chunks of a BIO sequence, as conlleval reads them: an `I-x` that does not continue an `x`
/// chunk starts one.
pub fn spans_from_bio<S: AsRef<str>>(tags: &[S]) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut open: Option<usize> = None;
    for (idx, tag) in tags.iter().enumerate() {
        let tag = tag.as_ref();
        let (kind, entity) = match tag.split_once('-') {
            Some((kind, entity)) if kind == "B" || kind == "I" => (kind, entity),
            _ => {
                open = None;
                continue;
            }
        };
        let continues = kind == "I" && open.is_some_and(|span| spans[span].entity == entity);
        if continues {
            spans[open.unwrap()].end = idx + 1;
        } else {
            spans.push(Span { start: idx, end: idx + 1, entity: entity.to_owned(), value: None });
            open = Some(spans.len() - 1);
        }
    }
    spans
}

/// Parses one example line with inline annotations into plain text, tokens and token spans.
pub fn parse_example(line: &str, intent: &str) -> Result<Example, NluError> {
    let bad = |why: &str| NluError::Data(format!("example {line:?} (intent {intent}): {why}"));
    let mut text = String::new();
    let mut char_spans: Vec<(usize, usize, String, Option<String>)> = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find(']').ok_or_else(|| bad("'[' without ']'"))?;
        let inner = &after[..close];
        let tail = &after[close + 1..];
        let (entity, value, consumed) = if let Some(tail) = tail.strip_prefix('(') {
            let end = tail.find(')').ok_or_else(|| bad("'(' without ')'"))?;
            let annotation = &tail[..end];
            let (entity, value) = match annotation.split_once(':') {
                Some((entity, value)) => (entity.trim().to_owned(), Some(value.trim().to_owned())),
                None => (annotation.trim().to_owned(), None),
            };
            (entity, value, end + 2)
        } else if tail.starts_with('{') {
            let end = tail.find('}').ok_or_else(|| bad("'{' without '}'"))?;
            let annotation: JsonAnnotation =
                serde_json::from_str(&tail[..=end]).map_err(|error| bad(&format!("annotation: {error}")))?;
            let value = annotation.value.map(|value| match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            });
            (annotation.entity, value, end + 1)
        } else {
            // A bracket that is not an annotation is text.
            text.push('[');
            rest = after;
            continue;
        };
        if entity.is_empty() {
            return Err(bad("an annotation names no entity"));
        }
        let start = text.chars().count();
        text.push_str(inner);
        char_spans.push((start, text.chars().count(), entity, value));
        rest = &tail[consumed..];
    }
    text.push_str(rest);
    let tokens = tokenize(&text);
    let mut spans = Vec::new();
    for (start, end, entity, value) in char_spans {
        let covered: Vec<usize> =
            (0..tokens.len()).filter(|&idx| tokens[idx].start < end && tokens[idx].end > start).collect();
        let (Some(&first), Some(&last)) = (covered.first(), covered.last()) else {
            return Err(bad("an annotation covers no word"));
        };
        spans.push(Span { start: first, end: last + 1, entity, value });
    }
    Ok(Example { text, tokens, intent: intent.to_owned(), spans })
}

/// A training set and a test set read from a directory: the benchmarks' `train.jsonl` and
/// `test.jsonl`, or Rasa YAML (`test.yml` is the test split, every other `*.yml` trains).
pub fn load_dir(dir: &std::path::Path) -> Result<(TrainingData, TrainingData), NluError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|error| NluError::Data(format!("{}: {error}", path.display())))
    };
    if dir.join("train.jsonl").is_file() {
        let train = TrainingData::from_bench_jsonl(&read(&dir.join("train.jsonl"))?)?;
        let test = TrainingData::from_bench_jsonl(&read(&dir.join("test.jsonl"))?)?;
        return Ok((train, test));
    }
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|error| NluError::Data(format!("{}: {error}", dir.display())))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "yml" || extension == "yaml"))
        .collect();
    files.sort();
    let (mut train, mut test) = (TrainingData::default(), TrainingData::default());
    for path in files {
        let data = TrainingData::from_rasa_yaml(&read(&path)?)
            .map_err(|error| NluError::Data(format!("{}: {error}", path.display())))?;
        if path.file_stem().is_some_and(|stem| stem == "test") {
            test.extend(data);
        } else {
            train.extend(data);
        }
    }
    if train.examples.is_empty() {
        return Err(NluError::Data(format!("{}: no train.jsonl and no Rasa YAML with examples", dir.display())));
    }
    Ok((train, test))
}

/// Training data from Rasa YAML files, or from every `*.yml` in a directory but `test.yml`.
pub fn load_paths(paths: &[std::path::PathBuf]) -> Result<TrainingData, NluError> {
    let mut data = TrainingData::default();
    for path in paths {
        if path.is_dir() {
            data.extend(load_dir(path)?.0);
        } else {
            let source = std::fs::read_to_string(path)
                .map_err(|error| NluError::Data(format!("{}: {error}", path.display())))?;
            data.extend(
                TrainingData::from_rasa_yaml(&source)
                    .map_err(|error| NluError::Data(format!("{}: {error}", path.display())))?,
            );
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rasa_yaml_with_every_kind_of_item() {
        let data = TrainingData::from_rasa_yaml(
            r#"
version: "3.1"
nlu:
- intent: book_parking
  examples: |
    - book a space near [King's Cross](location) for [2 hours](duration)
    - park my [e-bike]{"entity": "vehicle_type", "value": "motorcycle"} at [Euston](location:Euston Station)
- synonym: car
  examples: |
    - motor
    - auto
- regex: vehicle_plate
  examples: |
    - \b[a-z]{2}\d{2} ?[a-z]{3}\b
- lookup: location
  examples: |
    - Paddington
"#,
        )
        .unwrap();
        assert_eq!(data.examples.len(), 2);
        let first = &data.examples[0];
        assert_eq!(first.text, "book a space near King's Cross for 2 hours");
        assert_eq!(first.spans[0], Span { start: 4, end: 6, entity: "location".into(), value: None });
        assert_eq!(first.spans[1], Span { start: 7, end: 9, entity: "duration".into(), value: None });
        let second = &data.examples[1];
        assert_eq!(second.spans[0].value.as_deref(), Some("motorcycle"));
        assert_eq!(second.spans[1].value.as_deref(), Some("Euston Station"));
        assert_eq!(data.synonyms, [("car".to_owned(), vec!["motor".to_owned(), "auto".to_owned()])]);
        assert_eq!(data.regexes[0].0, "vehicle_plate");
        assert_eq!(data.lookups, [("location".to_owned(), vec!["Paddington".to_owned()])]);
    }

    #[test]
    fn bad_annotations_say_where() {
        let error = TrainingData::from_rasa_yaml("nlu:\n- intent: x\n  examples: |\n    - park at [Euston(location)\n")
            .unwrap_err();
        assert!(error.to_string().contains("'[' without ']'"), "{error}");
        let error =
            TrainingData::from_rasa_yaml("nlu:\n- intent: x\n  examples: |\n    - [a]{\"value\": 1}\n").unwrap_err();
        assert!(error.to_string().contains("annotation"), "{error}");
    }

    #[test]
    fn bio_chunks_follow_conlleval() {
        let spans = spans_from_bio(&["O", "B-a", "I-a", "I-b", "B-a", "O", "I-a"]);
        let ranges: Vec<_> = spans.iter().map(|span| (span.start, span.end, span.entity.as_str())).collect();
        assert_eq!(ranges, [(1, 3, "a"), (3, 4, "b"), (4, 5, "a"), (6, 7, "a")]);
    }
}
