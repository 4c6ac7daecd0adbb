//! berth's native language understanding: a trained intent classifier and entity tagger over
//! sparse features, with gazetteer, regex and lookup extractors, synonyms, and normalisers for
//! times, durations, money and licence plates. No I/O beyond what the caller hands in; no
//! Python, no neural runtime. Training takes seconds, a parse well under a millisecond.

pub mod classifier;
pub mod data;
pub mod eval;
pub mod features;
pub mod gazetteer;
pub mod normalise;
pub mod parking;
pub mod tagger;
pub mod token;

use berth_kernel::language::{IntentScore, Understanding, UnderstoodEntity};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use regex::Regex;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::classifier::{LinearClassifier, SvmParams};
use crate::data::TrainingData;
use crate::gazetteer::{Gazetteer, Match, N_FOLDS};
use crate::normalise::{Kind, Normalised, Reference};
use crate::tagger::{Tagger, TaggerExample, TaggerParams, begin_label, inside_label};
use crate::token::{Token, char_slice, tokenize};

/// The intent answered when the classifier is unsure (Rasa's name for it).
pub use berth_kernel::language::FALLBACK_INTENT;

#[derive(Debug, thiserror::Error)]
pub enum NluError {
    #[error("training data: {0}")]
    Data(String),
    #[error("model: {0}")]
    Model(String),
}

/// How a pipeline trains and when it falls back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Below this top intent confidence the parse answers [`FALLBACK_INTENT`].
    pub fallback_threshold: f32,
    /// When the top two intents are closer than this, the parse answers [`FALLBACK_INTENT`].
    pub ambiguity_threshold: f32,
    /// Passes of the tagger over the data.
    pub tagger_epochs: usize,
    /// The margin by which the tagger learns to prefer gold labels.
    pub tagger_margin: f32,
    /// Tagger runs (over different example orders) averaged into one model.
    pub tagger_runs: usize,
    /// The intent SVM's inverse regularisation.
    pub svm_c: f64,
    /// Scale applied to SVM decision values before the softmax that gives confidences.
    pub confidence_scale: f32,

    /// Entity type → how its values are normalised, beside the defaults by name.
    pub normalisers: Vec<(String, Kind)>,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            fallback_threshold: 0.3,
            ambiguity_threshold: 0.05,
            tagger_epochs: 12,
            tagger_margin: 0.5,
            tagger_runs: 3,
            svm_c: 32.0,
            confidence_scale: 6.0,

            normalisers: Vec::new(),
            seed: 0x5eed,
        }
    }
}

/// The analysis of pre-split tokens, as the evaluation needs it.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub intent: usize,
    pub confidences: Vec<f32>,
    pub labels: Vec<u16>,
    pub label_confidences: Vec<f32>,
}

/// A trained pipeline.
#[derive(Debug, Serialize, Deserialize)]
pub struct Nlu {
    intents: Vec<String>,
    entities: Vec<String>,
    classifier: LinearClassifier,
    tagger: Tagger,
    gazetteer: Gazetteer,
    /// Labels the tagger may use per intent.
    allowed: Vec<Vec<u16>>,
    /// (entity type index, pattern) — regex names that are entity types.
    regex_sources: Vec<(u16, String)>,
    #[serde(skip)]
    regexes: Vec<(u16, Regex)>,
    /// Lowercased text → canonical value.
    synonyms: FxHashMap<String, String>,
    kinds: Vec<Option<Kind>>,
    options: TrainOptions,
}

fn sorted_unique(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.collect();
    names.sort();
    names.dedup();
    names
}

fn softmax(scores: &[f32], scale: f32) -> Vec<f32> {
    let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores.iter().map(|score| ((score - top) * scale).exp()).collect();
    let total: f32 = exps.iter().sum();
    exps.into_iter().map(|value| value / total).collect()
}

impl Nlu {
    /// Trains a pipeline. CPU-bound: seconds for a few thousand examples.
    pub fn train(data: &TrainingData, options: TrainOptions) -> Result<Self, NluError> {
        if data.examples.is_empty() {
            return Err(NluError::Data("no examples to train on".into()));
        }
        let intents = sorted_unique(data.examples.iter().map(|example| example.intent.clone()));
        let entities = sorted_unique(
            data.examples
                .iter()
                .flat_map(|example| example.spans.iter().map(|span| span.entity.clone()))
                .chain(data.lookups.iter().map(|(name, _)| name.clone()))
                .chain(data.regexes.iter().map(|(name, _)| name.clone())),
        );
        if entities.len() > (u16::MAX as usize - 1) / 2 {
            return Err(NluError::Data("too many entity types".into()));
        }
        let entity_idx = |name: &str| entities.iter().position(|known| known == name).unwrap() as u16;
        let intent_idx = |name: &str| intents.iter().position(|known| known == name).unwrap();

        let mut gazetteer = Gazetteer::default();
        for (idx, example) in data.examples.iter().enumerate() {
            for span in &example.spans {
                let words: Vec<&str> =
                    example.tokens[span.start..span.end].iter().map(|token| token.text.as_str()).collect();
                gazetteer.add(&words, entity_idx(&span.entity), Some(idx % N_FOLDS));
            }
        }
        for (name, values) in &data.lookups {
            for value in values {
                let tokens = tokenize(value);
                let words: Vec<&str> = tokens.iter().map(|token| token.text.as_str()).collect();
                gazetteer.add(&words, entity_idx(name), None);
            }
        }
        let mut synonyms = FxHashMap::default();
        for (value, aliases) in &data.synonyms {
            for alias in aliases {
                synonyms.insert(alias.to_lowercase(), value.clone());
            }
        }
        for example in &data.examples {
            for span in &example.spans {
                if let Some(value) = &span.value {
                    let text =
                        char_slice(&example.text, example.tokens[span.start].start, example.tokens[span.end - 1].end);
                    synonyms.insert(text.to_lowercase(), value.clone());
                }
            }
        }
        let regex_sources: Vec<(u16, String)> = data
            .regexes
            .iter()
            .flat_map(|(name, patterns)| patterns.iter().map(|pattern| (entity_idx(name), pattern.clone())))
            .collect();
        let kinds = entities
            .iter()
            .map(|name| {
                options
                    .normalisers
                    .iter()
                    .find(|(entity, _)| entity == name)
                    .map(|(_, kind)| *kind)
                    .or_else(|| Kind::by_name(name))
            })
            .collect();
        let regexes = compile_regexes(&regex_sources)?;

        let mut allowed: Vec<Vec<u16>> = vec![vec![0]; intents.len()];
        for example in &data.examples {
            let labels = &mut allowed[intent_idx(&example.intent)];
            for span in &example.spans {
                let entity = entity_idx(&span.entity) as usize;
                labels.extend([begin_label(entity), inside_label(entity)]);
            }
        }
        for labels in &mut allowed {
            labels.sort_unstable();
            labels.dedup();
        }

        let mut matches = Vec::new();
        let mut intent_examples = Vec::with_capacity(data.examples.len());
        let mut tagger_index = features::FeatureIndex::default();
        let mut tagger_rows = Vec::with_capacity(data.examples.len());
        let mut token_features = Vec::new();
        for (idx, example) in data.examples.iter().enumerate() {
            find_matches(&gazetteer, &regexes, &example.text, &example.tokens, Some(idx % N_FOLDS), &mut matches);
            let mut utterance = Vec::new();
            features::utterance(&example.tokens, &matches, &mut utterance);
            let intent = intent_idx(&example.intent);
            intent_examples.push((utterance, intent));
            features::tokens(&example.tokens, &matches, intent, &mut token_features);
            let rows: Vec<Vec<u32>> = token_features[..example.tokens.len()]
                .iter()
                .map(|features| features.iter().map(|&feature| tagger_index.intern(feature)).collect())
                .collect();
            let mut gold = vec![0u16; example.tokens.len()];
            for span in &example.spans {
                let entity = entity_idx(&span.entity) as usize;
                gold[span.start] = begin_label(entity);
                for label in &mut gold[span.start + 1..span.end] {
                    *label = inside_label(entity);
                }
            }
            tagger_rows.push((rows, gold, intent));
        }
        let params = SvmParams { c: options.svm_c, ..SvmParams::default() };
        let classifier = LinearClassifier::train(&intent_examples, intents.len(), params, options.seed);
        let tagger_examples: Vec<TaggerExample<'_>> = tagger_rows
            .into_iter()
            .map(|(features, gold, intent)| TaggerExample { features, gold, allowed: &allowed[intent] })
            .collect();
        let n_labels = 1 + 2 * entities.len();
        let tagger_params = TaggerParams {
            epochs: options.tagger_epochs,
            margin: options.tagger_margin,
            runs: options.tagger_runs,
            seed: options.seed,
        };
        let tagger = Tagger::train(tagger_index, n_labels, &tagger_examples, tagger_params);
        drop(tagger_examples);
        Ok(Nlu {
            intents,
            entities,
            classifier,
            tagger,
            gazetteer,
            allowed,
            regex_sources,
            regexes,
            synonyms,
            kinds,
            options,
        })
    }

    /// Serialises the trained pipeline.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a trained pipeline always serialises")
    }

    /// Loads a pipeline serialised by [`Nlu::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NluError> {
        let mut nlu: Nlu = postcard::from_bytes(bytes).map_err(|error| NluError::Model(error.to_string()))?;
        nlu.regexes = compile_regexes(&nlu.regex_sources)?;
        Ok(nlu)
    }

    pub fn intents(&self) -> &[String] {
        &self.intents
    }

    pub fn entities(&self) -> &[String] {
        &self.entities
    }

    /// Intent and labels for tokens of `text`.
    pub fn analyse(&self, text: &str, tokens: &[Token]) -> Analysis {
        let mut matches = Vec::new();
        find_matches(&self.gazetteer, &self.regexes, text, tokens, None, &mut matches);
        let mut utterance = Vec::new();
        features::utterance(tokens, &matches, &mut utterance);
        let scores = self.classifier.scores(&utterance);
        let confidences = softmax(&scores, self.options.confidence_scale);
        let intent = (0..confidences.len()).max_by(|&a, &b| confidences[a].total_cmp(&confidences[b])).unwrap_or(0);
        let mut token_features = Vec::new();
        features::tokens(tokens, &matches, intent, &mut token_features);
        let tagged = self.tagger.tag(&token_features[..tokens.len()], &self.allowed[intent]);
        Analysis { intent, confidences, labels: tagged.labels, label_confidences: tagged.confidences }
    }

    /// Parses an utterance; times are resolved against `reference` (now, in the user's timezone).
    /// The answer is the kernel's [`Understanding`], in Rasa's shape: an entity's `extractor`
    /// is `tagger` or `regex`, offsets count characters.
    pub fn parse(&self, text: &str, reference: DateTime<Utc>, timezone: Tz) -> Understanding {
        let tokens = tokenize(text);
        let analysis = self.analyse(text, &tokens);
        let mut ranking: Vec<IntentScore> = self
            .intents
            .iter()
            .zip(&analysis.confidences)
            .map(|(name, &confidence)| IntentScore { name: name.clone(), confidence })
            .collect();
        ranking.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        ranking.truncate(10);
        let top = ranking.first().map_or(0.0, |score| score.confidence);
        let second = ranking.get(1).map_or(0.0, |score| score.confidence);
        let intent = if tokens.is_empty()
            || top < self.options.fallback_threshold
            || top - second < self.options.ambiguity_threshold
        {
            IntentScore { name: FALLBACK_INTENT.to_owned(), confidence: self.options.fallback_threshold.max(top) }
        } else {
            ranking[0].clone()
        };

        let mut entities = Vec::new();
        for (start, end, entity) in tagger::spans(&analysis.labels) {
            let confidence = analysis.label_confidences[start..end].iter().copied().fold(1.0, f32::min);
            entities.push((entity as u16, tokens[start].start, tokens[end - 1].end, confidence, "tagger"));
        }
        for (entity, regex) in &self.regexes {
            for found in regex.find_iter(text) {
                let from = text[..found.start()].chars().count();
                let to = from + found.as_str().chars().count();
                if !entities.iter().any(|&(_, start, end, _, _)| start < to && end > from) {
                    entities.push((*entity, from, to, 1.0, "regex"));
                }
            }
        }
        entities.sort_by_key(|&(_, start, _, _, _)| start);

        let reference = Reference::new(reference, timezone);
        let mut resolved: Vec<UnderstoodEntity> = Vec::with_capacity(entities.len());
        let mut anchor = None;
        for (entity, start, end, confidence, extractor) in entities {
            let span_text = char_slice(text, start, end);
            let name = &self.entities[entity as usize];
            let value = match self.synonyms.get(&span_text.to_lowercase()) {
                Some(value) => serde_json::Value::String(value.clone()),
                None => match self.kinds[entity as usize] {
                    Some(kind) => match normalise::normalise(kind, span_text, &reference, anchor) {
                        Some(Normalised::Time(time)) => {
                            anchor = Some(time);
                            serde_json::Value::String(time.to_rfc3339())
                        }
                        Some(other) => other.to_json(),
                        None => serde_json::Value::String(span_text.to_owned()),
                    },
                    None => serde_json::Value::String(span_text.to_owned()),
                },
            };
            resolved.push(UnderstoodEntity {
                entity: name.clone(),
                value,
                start,
                end,
                text: span_text.to_owned(),
                confidence,
                extractor: extractor.to_owned(),
            });
        }
        Understanding { text: text.to_owned(), intent, intent_ranking: ranking, entities: resolved }
    }
}

fn compile_regexes(sources: &[(u16, String)]) -> Result<Vec<(u16, Regex)>, NluError> {
    sources
        .iter()
        .map(|(entity, pattern)| {
            let regex = regex::RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_err(|error| NluError::Data(format!("regex {pattern}: {error}")))?;
            Ok((*entity, regex))
        })
        .collect()
}

/// Gazetteer and regex hits, in token positions.
fn find_matches(
    gazetteer: &Gazetteer,
    regexes: &[(u16, Regex)],
    text: &str,
    tokens: &[Token],
    fold: Option<usize>,
    out: &mut Vec<Match>,
) {
    gazetteer.find(tokens, fold, out);
    for (entity, regex) in regexes {
        for found in regex.find_iter(text) {
            let start = text[..found.start()].chars().count();
            let end = start + found.as_str().chars().count();
            let mut covered = tokens.iter().enumerate().filter(|(_, token)| token.start < end && token.end > start);
            if let Some((first, _)) = covered.next() {
                let last = covered.next_back().map_or(first, |(idx, _)| idx);
                out.push(Match { start: first, end: last + 1, entity: *entity, dominant: true });
            }
        }
    }
}

#[cfg(test)]
mod tests;
