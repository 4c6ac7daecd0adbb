//! Evaluation as the joint intent + slot literature reports it: intent accuracy, slot F1 over
//! exact spans and types (conlleval), sentence accuracy (intent and every tag right), tables per
//! intent and per slot type, and parse latency.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use chrono::Utc;

use crate::Nlu;
use crate::data::{Example, Span};

#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Gold items.
    pub support: usize,
    /// Predicted items.
    pub predicted: usize,
    pub correct: usize,
}

impl Counts {
    pub fn precision(&self) -> f64 {
        ratio(self.correct, self.predicted)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.correct, self.support)
    }

    pub fn f1(&self) -> f64 {
        let (precision, recall) = (self.precision(), self.recall());
        if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) }
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// What an evaluation measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub n_examples: usize,
    pub intent_correct: usize,
    pub sentence_correct: usize,
    pub slots: Counts,
    pub per_intent: BTreeMap<String, Counts>,
    pub per_slot: BTreeMap<String, Counts>,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
}

impl Report {
    pub fn intent_accuracy(&self) -> f64 {
        ratio(self.intent_correct, self.n_examples)
    }

    pub fn sentence_accuracy(&self) -> f64 {
        ratio(self.sentence_correct, self.n_examples)
    }
}

/// Predicted spans from labels, as token ranges with the type's name.
fn predicted_spans(nlu: &Nlu, labels: &[u16]) -> Vec<(usize, usize, String)> {
    crate::tagger::spans(labels)
        .into_iter()
        .map(|(start, end, entity)| (start, end, nlu.entities()[entity].clone()))
        .collect()
}

fn gold_spans(spans: &[Span]) -> Vec<(usize, usize, String)> {
    spans.iter().map(|span| (span.start, span.end, span.entity.clone())).collect()
}

/// Evaluates `nlu` on examples (tokens as given); latency is a whole [`Nlu::parse`] of each text.
pub fn evaluate(nlu: &Nlu, examples: &[Example]) -> Report {
    let mut report = Report { n_examples: examples.len(), ..Report::default() };
    for example in examples {
        let analysis = nlu.analyse(&example.text, &example.tokens);
        let predicted_intent = nlu.intents()[analysis.intent].as_str();
        let intent_right = predicted_intent == example.intent;
        report.intent_correct += intent_right as usize;
        report.per_intent.entry(example.intent.clone()).or_default().support += 1;
        let predicted_counts = report.per_intent.entry(predicted_intent.to_owned()).or_default();
        predicted_counts.predicted += 1;
        predicted_counts.correct += intent_right as usize;

        let gold = gold_spans(&example.spans);
        let predicted = predicted_spans(nlu, &analysis.labels);
        for span in &gold {
            report.per_slot.entry(span.2.clone()).or_default().support += 1;
        }
        for span in &predicted {
            let counts = report.per_slot.entry(span.2.clone()).or_default();
            counts.predicted += 1;
            if gold.contains(span) {
                counts.correct += 1;
            }
        }
        let n_correct = predicted.iter().filter(|span| gold.contains(span)).count();
        report.slots.support += gold.len();
        report.slots.predicted += predicted.len();
        report.slots.correct += n_correct;
        let all_tags_right = n_correct == gold.len() && predicted.len() == gold.len();
        report.sentence_correct += (intent_right && all_tags_right) as usize;
    }
    let now = Utc::now();
    let mut latencies_us: Vec<f64> = Vec::with_capacity(examples.len());
    for round in 0..2 {
        for example in examples {
            let started = Instant::now();
            let parse = nlu.parse(&example.text, now, chrono_tz::UTC);
            let elapsed = started.elapsed().as_secs_f64() * 1e6;
            std::hint::black_box(parse);
            // The first round warms caches; the second is measured.
            if round == 1 {
                latencies_us.push(elapsed);
            }
        }
    }
    latencies_us.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        if latencies_us.is_empty() { 0.0 } else { latencies_us[((latencies_us.len() - 1) as f64 * p).round() as usize] }
    };
    report.latency_p50_us = percentile(0.5);
    report.latency_p99_us = percentile(0.99);
    report
}

/// One row per name: support, precision, recall and F1 in percent.
fn table(f: &mut fmt::Formatter<'_>, title: &str, rows: &BTreeMap<String, Counts>) -> fmt::Result {
    writeln!(f, "{:<36} {:>7} {:>9} {:>7} {:>7}", title, "support", "precision", "recall", "F1")?;
    for (name, counts) in rows {
        writeln!(
            f,
            "{:<36} {:>7} {:>9.2} {:>7.2} {:>7.2}",
            name,
            counts.support,
            100.0 * counts.precision(),
            100.0 * counts.recall(),
            100.0 * counts.f1()
        )?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "examples            {}", self.n_examples)?;
        writeln!(f, "intent accuracy     {:.2}%", 100.0 * self.intent_accuracy())?;
        writeln!(
            f,
            "slot F1             {:.2}  (precision {:.2}, recall {:.2}; {} gold spans)",
            100.0 * self.slots.f1(),
            100.0 * self.slots.precision(),
            100.0 * self.slots.recall(),
            self.slots.support
        )?;
        writeln!(f, "sentence accuracy   {:.2}%", 100.0 * self.sentence_accuracy())?;
        writeln!(f, "parse latency       p50 {:.1} µs, p99 {:.1} µs", self.latency_p50_us, self.latency_p99_us)?;
        writeln!(f)?;
        table(f, "intent", &self.per_intent)?;
        writeln!(f)?;
        table(f, "slot", &self.per_slot)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrainOptions;
    use crate::data::load_dir;

    /// Trains on a public benchmark's train split and checks its test split stays at least as
    /// good as when this was written (figures in docs/chat.md). Not a speed test.
    fn holds(name: &str, intent_floor: f64, slot_floor: f64) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/nlu-bench").join(name);
        let (train, test) = load_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
        let nlu = Nlu::train(&train, TrainOptions::default()).unwrap();
        let report = evaluate(&nlu, &test.examples);
        assert!(report.intent_accuracy() >= intent_floor, "{name}: {report}");
        assert!(report.slots.f1() >= slot_floor, "{name}: {report}");
    }

    #[test]
    fn snips_stays_at_its_figures() {
        // Measured: intent 98.14%, slot F1 95.03.
        holds("snips", 0.981, 0.950);
    }

    #[test]
    fn atis_stays_at_its_figures() {
        // Measured: intent 96.08%, slot F1 95.13. Evaluation only: the model is dropped here.
        holds("atis", 0.960, 0.950);
    }
}
