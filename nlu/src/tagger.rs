//! The entity tagger: a first-order linear-chain model over BIO labels, trained online with
//! cost-augmented passive-aggressive steps (an averaged structured perceptron that keeps
//! learning until gold wins by a margin), and decoded with Viterbi. Decoding only considers the labels seen with
//! the utterance's intent and never lets `I-x` follow anything but `B-x` or `I-x`, so every answer
//! is a well-formed set of spans.

use serde::{Deserialize, Serialize};

use crate::classifier::shuffle;
use crate::features::FeatureIndex;

/// Label 0 is `O`; entity type `t` has `B` = `1 + 2t` and `I` = `2 + 2t`.
pub fn begin_label(entity: usize) -> u16 {
    (1 + 2 * entity) as u16
}

pub fn inside_label(entity: usize) -> u16 {
    (2 + 2 * entity) as u16
}

/// The entity type of a non-`O` label.
pub fn entity_of(label: u16) -> usize {
    (label as usize - 1) / 2
}

fn is_inside(label: u16) -> bool {
    label != 0 && label.is_multiple_of(2)
}

/// May `current` follow `previous` (`None` at the start)?
fn may_follow(previous: Option<u16>, current: u16) -> bool {
    if !is_inside(current) {
        return true;
    }
    match previous {
        None | Some(0) => false,
        Some(previous) => entity_of(previous) == entity_of(current),
    }
}

/// The spans a label sequence marks: `(first token, one past the last, entity type)`. Decoded
/// sequences are well formed, so a span is a `B-x` and the `I-x` right after it.
pub fn spans(labels: &[u16]) -> Vec<(usize, usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    while start < labels.len() {
        let label = labels[start];
        if label == 0 {
            start += 1;
            continue;
        }
        let entity = entity_of(label);
        let mut end = start + 1;
        while end < labels.len() && labels[end] == inside_label(entity) {
            end += 1;
        }
        spans.push((start, end, entity));
        start = end;
    }
    spans
}

/// Training knobs.
#[derive(Debug, Clone, Copy)]
pub struct TaggerParams {
    /// Passes over the data.
    pub epochs: usize,
    /// Head start of every wrong label in training's decoding (cost-augmented decoding).
    pub margin: f32,
    /// Runs over different example orders whose weights are averaged.
    pub runs: usize,
    pub seed: u64,
}

/// One training utterance for the tagger: feature rows per token, gold labels, allowed labels.
pub struct TaggerExample<'a> {
    pub features: Vec<Vec<u32>>,
    pub gold: Vec<u16>,
    pub allowed: &'a [u16],
}

/// A trained tagger. Weights are stored sparsely (CSR): most (feature, label) pairs never moved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tagger {
    pub index: FeatureIndex,
    n_labels: usize,
    row_starts: Vec<u32>,
    row_labels: Vec<u16>,
    row_weights: Vec<f32>,
    /// `transitions[(previous + 1) * n_labels + current]`; previous row 0 is the start.
    transitions: Vec<f32>,
}

/// A decoded label sequence with a confidence per token.
#[derive(Debug, Clone)]
pub struct Tagged {
    pub labels: Vec<u16>,
    pub confidences: Vec<f32>,
    /// The best path's score.
    pub score: f32,
}

struct Averaged {
    n_labels: usize,
    weights: Vec<f32>,
    totals: Vec<f32>,
    transitions: Vec<f32>,
    transition_totals: Vec<f32>,
    step: f32,
}

impl Averaged {
    fn update(&mut self, features: &[u32], label: u16, delta: f32) {
        for &row in features {
            let at = row as usize * self.n_labels + label as usize;
            self.weights[at] += delta;
            self.totals[at] += self.step * delta;
        }
    }

    fn update_transition(&mut self, previous: Option<u16>, current: u16, delta: f32) {
        let at = previous.map_or(0, |label| label as usize + 1) * self.n_labels + current as usize;
        self.transitions[at] += delta;
        self.transition_totals[at] += self.step * delta;
    }
}

impl Tagger {
    /// Trains `runs` times for `epochs` passes each; `index` already holds every feature the examples use.
    pub fn train(index: FeatureIndex, n_labels: usize, examples: &[TaggerExample<'_>], params: TaggerParams) -> Self {
        let n_features = index.len();
        // Several runs over different orders, averaged: the weights vary less with the order the
        // examples came in (on the validation splits: +0.2 slot F1 for three runs).
        let runs = params.runs.max(1);
        let mut sum_weights = vec![0f32; n_features * n_labels];
        let mut sum_transitions = vec![0f32; (n_labels + 1) * n_labels];
        for run in 0..runs {
            let seed = params.seed.wrapping_add(run as u64 * 7919);
            let (weights, transitions) =
                Self::train_once(n_features, n_labels, examples, TaggerParams { seed, ..params });
            for (sum, value) in sum_weights.iter_mut().zip(weights) {
                *sum += value / runs as f32;
            }
            for (sum, value) in sum_transitions.iter_mut().zip(transitions) {
                *sum += value / runs as f32;
            }
        }
        let (weights, transitions) = (sum_weights, sum_transitions);
        let mut row_starts = Vec::with_capacity(n_features + 1);
        let (mut row_labels, mut row_weights) = (Vec::new(), Vec::new());
        for row in weights.chunks(n_labels) {
            row_starts.push(row_labels.len() as u32);
            for (label, &weight) in row.iter().enumerate() {
                if weight.abs() > 1e-6 {
                    row_labels.push(label as u16);
                    row_weights.push(weight);
                }
            }
        }
        row_starts.push(row_labels.len() as u32);
        Self { index, n_labels, row_starts, row_labels, row_weights, transitions }
    }

    /// One run: averaged weights and transitions.
    fn train_once(
        n_features: usize,
        n_labels: usize,
        examples: &[TaggerExample<'_>],
        params: TaggerParams,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut model = Averaged {
            n_labels,
            weights: vec![0.0; n_features * n_labels],
            totals: vec![0.0; n_features * n_labels],
            transitions: vec![0.0; (n_labels + 1) * n_labels],
            transition_totals: vec![0.0; (n_labels + 1) * n_labels],
            step: 1.0,
        };
        let mut order: Vec<usize> = (0..examples.len()).collect();
        let (epochs, margin) = (params.epochs, params.margin);
        let mut rng = params.seed | 1;
        let mut emissions = Vec::new();
        for _ in 0..epochs {
            shuffle(&mut order, &mut rng);
            for &idx in &order {
                let example = &examples[idx];
                dense_emissions(&model.weights, n_labels, &example.features, &mut emissions);
                let gold_score: f32 = example
                    .gold
                    .iter()
                    .enumerate()
                    .map(|(position, &gold)| {
                        let previous = position.checked_sub(1).map_or(0, |p| example.gold[p] as usize + 1);
                        emissions[position * n_labels + gold as usize]
                            + model.transitions[previous * n_labels + gold as usize]
                    })
                    .sum();
                // Cost-augmented decoding: every wrong label gets a head start of `margin`, so
                // the model keeps updating until gold wins by a margin, not just by a hair.
                for (position, &gold) in example.gold.iter().enumerate() {
                    for label in 0..n_labels {
                        if label != gold as usize {
                            emissions[position * n_labels + label] += margin;
                        }
                    }
                }
                let (predicted, predicted_score) = viterbi(&emissions, &model.transitions, n_labels, example.allowed);
                if predicted != example.gold {
                    // Passive-aggressive step: just enough to fix this example (capped).
                    let mut squared_norm = 0.0f32;
                    let mut n_wrong = 0.0f32;
                    for (position, (&gold, &guess)) in example.gold.iter().zip(&predicted).enumerate() {
                        if gold != guess {
                            squared_norm += 2.0 * example.features[position].len() as f32;
                            n_wrong += 1.0;
                        }
                        squared_norm += 2.0;
                    }
                    let step = ((predicted_score - gold_score + n_wrong.sqrt()) / squared_norm).clamp(0.0, 1.0);
                    for (position, (&gold, &guess)) in example.gold.iter().zip(&predicted).enumerate() {
                        let gold_previous = position.checked_sub(1).map(|p| example.gold[p]);
                        let guess_previous = position.checked_sub(1).map(|p| predicted[p]);
                        if gold != guess {
                            model.update(&example.features[position], gold, step);
                            model.update(&example.features[position], guess, -step);
                        }
                        if gold != guess || gold_previous != guess_previous {
                            model.update_transition(gold_previous, gold, step);
                            model.update_transition(guess_previous, guess, -step);
                        }
                    }
                }
                model.step += 1.0;
            }
        }
        let average = |weights: &[f32], totals: &[f32]| -> Vec<f32> {
            weights.iter().zip(totals).map(|(weight, total)| weight - total / model.step).collect()
        };
        (average(&model.weights, &model.totals), average(&model.transitions, &model.transition_totals))
    }

    /// Decodes one utterance from its tokens' feature hashes.
    pub fn tag(&self, token_features: &[Vec<u64>], allowed: &[u16]) -> Tagged {
        let n_labels = self.n_labels;
        let mut emissions = vec![0f32; token_features.len() * n_labels];
        for (position, features) in token_features.iter().enumerate() {
            let scores = &mut emissions[position * n_labels..(position + 1) * n_labels];
            for row in features.iter().filter_map(|&feature| self.index.get(feature)) {
                let (from, to) = (self.row_starts[row as usize] as usize, self.row_starts[row as usize + 1] as usize);
                for (label, weight) in self.row_labels[from..to].iter().zip(&self.row_weights[from..to]) {
                    scores[*label as usize] += weight;
                }
            }
        }
        let (labels, score) = viterbi(&emissions, &self.transitions, n_labels, allowed);
        let confidences = labels
            .iter()
            .enumerate()
            .map(|(position, &label)| {
                let previous = position.checked_sub(1).map(|p| labels[p]);
                let score = |candidate: u16| {
                    let row = previous.map_or(0, |label| label as usize + 1);
                    emissions[position * n_labels + candidate as usize]
                        + self.transitions[row * n_labels + candidate as usize]
                };
                let chosen = score(label);
                let total: f32 = allowed
                    .iter()
                    .filter(|&&candidate| may_follow(previous, candidate))
                    .map(|&candidate| (score(candidate) - chosen).exp())
                    .sum();
                1.0 / total.max(1.0)
            })
            .collect();
        Tagged { labels, confidences, score }
    }
}

fn dense_emissions(weights: &[f32], n_labels: usize, features: &[Vec<u32>], out: &mut Vec<f32>) {
    out.clear();
    out.resize(features.len() * n_labels, 0.0);
    for (position, rows) in features.iter().enumerate() {
        let scores = &mut out[position * n_labels..(position + 1) * n_labels];
        for &row in rows {
            let row = &weights[row as usize * n_labels..(row as usize + 1) * n_labels];
            for (score, weight) in scores.iter_mut().zip(row) {
                *score += weight;
            }
        }
    }
}

/// The largest `a[k] + b[k]` and a `k` where it is, in eight lanes the compiler turns into SIMD.
fn max_plus(a: &[f32], b: &[f32]) -> (f32, usize) {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunk_of = [0u32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let n_full = a.len() / 8 * 8;
    let (mut top, mut at) = (f32::NEG_INFINITY, 0);
    for (offset, (x, y)) in a_chunks.remainder().iter().zip(b_chunks.remainder()).enumerate() {
        if x + y > top {
            (top, at) = (x + y, n_full + offset);
        }
    }
    for (chunk, (x, y)) in a_chunks.zip(b_chunks).enumerate() {
        for lane in 0..8 {
            let sum = x[lane] + y[lane];
            let better = sum > lanes[lane];
            lanes[lane] = if better { sum } else { lanes[lane] };
            chunk_of[lane] = if better { chunk as u32 } else { chunk_of[lane] };
        }
    }
    for lane in 0..8 {
        if lanes[lane] > top {
            (top, at) = (lanes[lane], chunk_of[lane] as usize * 8 + lane);
        }
    }
    (top, at)
}

/// The best label sequence among `allowed` labels under the BIO constraint, and its score.
fn viterbi(emissions: &[f32], transitions: &[f32], n_labels: usize, allowed: &[u16]) -> (Vec<u16>, f32) {
    let n_tokens = emissions.len() / n_labels;
    if n_tokens == 0 {
        return (Vec::new(), 0.0);
    }
    let n_allowed = allowed.len();
    // Transitions among the allowed labels, forbidden ones at -inf, so the inner loop is a plain
    // max; `into[j * n_allowed + k]` is from `allowed[k]` into `allowed[j]`, contiguous per `j`.
    let mut start = vec![f32::NEG_INFINITY; n_allowed];
    let mut into = vec![f32::NEG_INFINITY; n_allowed * n_allowed];
    for (j, &label) in allowed.iter().enumerate() {
        if may_follow(None, label) {
            start[j] = transitions[label as usize];
        }
        for (k, &previous) in allowed.iter().enumerate() {
            if may_follow(Some(previous), label) {
                into[j * n_allowed + k] = transitions[(previous as usize + 1) * n_labels + label as usize];
            }
        }
    }
    let position_of = |label: u16| allowed.iter().position(|&known| known == label);
    let inside_from: Vec<Option<(usize, Option<usize>)>> = allowed
        .iter()
        .map(|&label| {
            if !is_inside(label) {
                return None;
            }
            // Allowed sets hold B and I of a type together; without its B, an I is unreachable.
            let begin = position_of(label - 1)?;
            Some((begin, position_of(label)))
        })
        .collect();
    let mut best = vec![f32::NEG_INFINITY; n_tokens * n_allowed];
    let mut back = vec![0u16; n_tokens * n_allowed];
    for (j, &label) in allowed.iter().enumerate() {
        best[j] = emissions[label as usize] + start[j];
    }
    for position in 1..n_tokens {
        let (done, rest) = best.split_at_mut(position * n_allowed);
        let before = &done[(position - 1) * n_allowed..];
        for (j, &label) in allowed.iter().enumerate() {
            let (top, top_from) = match inside_from[j] {
                // An inside label has two possible predecessors only.
                Some((begin, inside)) => {
                    let from_begin = before[begin] + into[j * n_allowed + begin];
                    let from_inside = inside.map_or(f32::NEG_INFINITY, |k| before[k] + into[j * n_allowed + k]);
                    if from_inside > from_begin { (from_inside, inside.unwrap_or(begin)) } else { (from_begin, begin) }
                }
                None => max_plus(before, &into[j * n_allowed..(j + 1) * n_allowed]),
            };
            rest[j] = top + emissions[position * n_labels + label as usize];
            back[position * n_allowed + j] = top_from as u16;
        }
    }
    let last = (n_tokens - 1) * n_allowed;
    let mut j = (0..n_allowed).max_by(|&a, &b| best[last + a].total_cmp(&best[last + b])).unwrap_or(0);
    let score = best[last + j];
    let mut labels = vec![0u16; n_tokens];
    for position in (0..n_tokens).rev() {
        labels[position] = allowed[j];
        j = back[position * n_allowed + j] as usize;
    }
    (labels, score)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viterbi_never_starts_a_span_with_inside() {
        // Emissions favour I-0 everywhere; the constraint forces B-0 first.
        let n_labels = 3;
        let emissions = vec![0.0, 0.0, 5.0, 0.0, 0.0, 5.0];
        let transitions = vec![0.0; (n_labels + 1) * n_labels];
        assert_eq!(viterbi(&emissions, &transitions, n_labels, &[0, 1, 2]).0, [1, 2]);
        assert_eq!(viterbi(&emissions, &transitions, n_labels, &[0, 2]).0, [0, 0]);
    }
}
