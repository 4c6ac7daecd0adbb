//! The intent classifier: one-vs-rest linear SVMs (L2-regularised, squared hinge loss) trained by
//! dual coordinate descent, as liblinear does, over L2-normalised binary features.

use serde::{Deserialize, Serialize};

use crate::features::FeatureIndex;

/// A trained linear classifier: `weights[row * n_classes + class]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinearClassifier {
    pub index: FeatureIndex,
    n_classes: usize,
    weights: Vec<f32>,
}

/// Training knobs.
#[derive(Debug, Clone, Copy)]
pub struct SvmParams {
    /// Inverse regularisation strength.
    pub c: f64,
    /// Passes over the data at most.
    pub max_passes: usize,
    /// Stop when the projected gradient spread falls below this.
    pub tolerance: f64,
}

impl Default for SvmParams {
    fn default() -> Self {
        Self { c: 32.0, max_passes: 200, tolerance: 0.05 }
    }
}

struct Sample {
    rows: Vec<u32>,
    values: Vec<f64>,
}

/// An utterance's features: (hash, value) pairs, unnormalised.
pub type Features = Vec<(u64, f32)>;

fn norm(features: &[(u64, f32)]) -> f64 {
    features.iter().map(|&(_, value)| value as f64 * value as f64).sum::<f64>().sqrt().max(1e-9)
}

impl LinearClassifier {
    /// Trains on `(feature hashes, class)` pairs.
    pub fn train(examples: &[(Features, usize)], n_classes: usize, params: SvmParams, seed: u64) -> Self {
        let mut index = FeatureIndex::default();
        let samples: Vec<Sample> = examples
            .iter()
            .map(|(features, _)| {
                let rows: Vec<u32> = features.iter().map(|&(feature, _)| index.intern(feature)).collect();
                let scale = norm(features);
                let values = features.iter().map(|&(_, value)| value as f64 / scale).collect();
                Sample { rows, values }
            })
            .collect();
        let n_features = index.len();
        let mut weights = vec![0f32; n_features * n_classes];
        let diagonal = 0.5 / params.c;
        let squared_norm: Vec<f64> = samples
            .iter()
            .map(|sample| sample.values.iter().map(|value| value * value).sum::<f64>() + diagonal)
            .collect();
        let mut rng = seed | 1;
        let mut order: Vec<usize> = (0..samples.len()).collect();
        for class in 0..n_classes {
            let mut w = vec![0f64; n_features];
            let mut alpha = vec![0f64; samples.len()];
            let sign: Vec<f64> = examples.iter().map(|(_, label)| if *label == class { 1.0 } else { -1.0 }).collect();
            for _ in 0..params.max_passes {
                shuffle(&mut order, &mut rng);
                let (mut max_pg, mut min_pg) = (f64::NEG_INFINITY, f64::INFINITY);
                for &i in &order {
                    let sample = &samples[i];
                    let dot: f64 =
                        sample.rows.iter().zip(&sample.values).map(|(&row, value)| w[row as usize] * value).sum();
                    let gradient = sign[i] * dot - 1.0 + diagonal * alpha[i];
                    let projected = if alpha[i] == 0.0 { gradient.min(0.0) } else { gradient };
                    max_pg = max_pg.max(projected);
                    min_pg = min_pg.min(projected);
                    if projected.abs() > 1e-12 {
                        let old = alpha[i];
                        alpha[i] = (alpha[i] - gradient / squared_norm[i]).max(0.0);
                        let step = (alpha[i] - old) * sign[i];
                        for (&row, value) in sample.rows.iter().zip(&sample.values) {
                            w[row as usize] += step * value;
                        }
                    }
                }
                if max_pg - min_pg < params.tolerance {
                    break;
                }
            }
            for (row, value) in w.into_iter().enumerate() {
                weights[row * n_classes + class] = value as f32;
            }
        }
        Self { index, n_classes, weights }
    }

    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Decision values of every class for an utterance's feature hashes.
    pub fn scores(&self, features: &[(u64, f32)]) -> Vec<f32> {
        let mut scores = vec![0f32; self.n_classes];
        // Unseen features carry no weight, but they still dilute the vector as they did in training.
        let scale = norm(features) as f32;
        for &(feature, value) in features {
            let Some(row) = self.index.get(feature) else { continue };
            let row = row as usize;
            let weights = &self.weights[row * self.n_classes..(row + 1) * self.n_classes];
            for (score, weight) in scores.iter_mut().zip(weights) {
                *score += weight * value / scale;
            }
        }
        scores
    }
}

/// Fisher–Yates with xorshift: deterministic training without a `rand` dependency.
pub(crate) fn shuffle<T>(items: &mut [T], state: &mut u64) {
    for idx in (1..items.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let other = (*state % (idx as u64 + 1)) as usize;
        items.swap(idx, other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::hash;

    #[test]
    fn separable_classes_are_learned() {
        let example =
            |words: &[&str], class| (words.iter().map(|word| (hash(1, &[word]), 1.0)).collect::<Vec<_>>(), class);
        let examples = vec![
            example(&["park", "near", "station"], 0),
            example(&["find", "parking", "near", "me"], 0),
            example(&["cancel", "my", "booking"], 1),
            example(&["cancel", "it"], 1),
            example(&["hello"], 2),
            example(&["hi", "there"], 2),
        ];
        let model = LinearClassifier::train(&examples, 3, SvmParams::default(), 7);
        let best = |words: &[&str]| {
            let scores = model.scores(&example(words, 0).0);
            (0..3).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap()
        };
        assert_eq!(best(&["parking", "near", "station"]), 0);
        assert_eq!(best(&["cancel", "booking"]), 1);
        assert_eq!(best(&["hello", "there"]), 2);
    }
}
