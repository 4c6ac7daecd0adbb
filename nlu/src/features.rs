//! Sparse features: each feature is a 64-bit hash of a template and its parts, so extraction
//! allocates nothing per feature; a model keeps only the hashes it saw in training ([`FeatureIndex`]).

use std::hash::Hasher;

use rustc_hash::{FxHashMap, FxHasher};
use serde::{Deserialize, Serialize};

use crate::gazetteer::Match;
use crate::token::Token;

/// Hash of a feature template id and its string parts.
pub fn hash(template: u8, parts: &[&str]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write_u8(template);
    for part in parts {
        hasher.write(part.as_bytes());
        hasher.write_u8(0xff);
    }
    // FxHash's low bits are weak; mix so the index map spreads evenly.
    let mut x = hasher.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// Hash of a template and a number (ids of intents, entity types).
pub fn hash_id(template: u8, id: usize, extra: &str) -> u64 {
    hash(template, &[&id.to_string(), extra])
}

/// Feature hashes seen in training, each with its row in a model's weights.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FeatureIndex {
    rows: FxHashMap<u64, u32>,
}

impl FeatureIndex {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row of a feature, adding it when new (training only).
    pub fn intern(&mut self, feature: u64) -> u32 {
        let next = self.rows.len() as u32;
        *self.rows.entry(feature).or_insert(next)
    }

    pub fn get(&self, feature: u64) -> Option<u32> {
        self.rows.get(&feature).copied()
    }
}

/// The shape of a word: `Xxxx` → `Xx`, `AB12` → `Xd`, `10:30` → `d:d` (runs collapsed).
pub fn shape(word: &str) -> String {
    let mut shape = String::with_capacity(8);
    let mut last = '\0';
    for ch in word.chars() {
        let class = if ch.is_uppercase() {
            'X'
        } else if ch.is_lowercase() {
            'x'
        } else if ch.is_ascii_digit() {
            'd'
        } else {
            ch
        };
        if class != last {
            shape.push(class);
            last = class;
        }
    }
    shape
}

/// Weights of the intent classifier's feature groups (before the vector is normalised).
const CHAR_NGRAM_WEIGHT: f32 = 1.0;

/// Words at the head of an utterance, before its first gazetteer hit, that count as the head:
/// "[what meals are served] on american flight 811 ..." carries the intent, the rest is context.
const HEAD_WORDS: usize = 5;

/// Features of an utterance for the intent classifier: word 1- and 2-grams, word pairs one word
/// apart (inside the utterance: with its boundaries, a lone word looked like "yes"), character
/// 3- to 5-grams inside words and across word boundaries, the words and word pairs of the head
/// (up to [`HEAD_WORDS`] before the first gazetteer hit), and the entity types the gazetteers
/// see in it. (Word 3-grams, a lower weight for character n-grams, n-grams over
/// gazetteer-masked text and idf weights measured worse or no better: docs/chat.md.)
pub fn utterance(tokens: &[Token], matches: &[Match], out: &mut Vec<(u64, f32)>) {
    out.clear();
    out.push((hash(0, &[]), 1.0));
    let words: Vec<&str> = std::iter::once("<s>")
        .chain(tokens.iter().map(|token| token.text.as_str()))
        .chain(std::iter::once("</s>"))
        .collect();
    for n in 1..=2 {
        for window in words.windows(n) {
            if n == 1 && (window[0] == "<s>" || window[0] == "</s>") {
                continue;
            }
            out.push((hash(n as u8 * 16, window), 1.0));
        }
    }
    let inner = &words[1..words.len() - 1];
    for window in inner.windows(3) {
        out.push((hash(5, &[window[0], window[2]]), 1.0));
    }
    let head_end = matches.iter().map(|found| found.start).min().unwrap_or(tokens.len()).min(HEAD_WORDS);
    // `words` has `<s>` first: the head's words are `words[1..=head_end]`, its pairs start at `<s>`.
    for word in &words[1..=head_end] {
        out.push((hash(6, &[word]), 1.0));
    }
    for pair in words[..=head_end].windows(2) {
        out.push((hash(7, pair), 1.0));
    }
    let mut buffer = String::new();
    for token in tokens {
        let padded: Vec<char> = std::iter::once('<').chain(token.text.chars()).chain(std::iter::once('>')).collect();
        for n in 3..=5 {
            for window in padded.windows(n) {
                buffer.clear();
                buffer.extend(window);
                out.push((hash(3, &[&buffer]), CHAR_NGRAM_WEIGHT));
            }
        }
    }
    // Character n-grams across word boundaries ("s are s", "l info"): word pairs that survive
    // typos and inflection.
    let text: Vec<char> = std::iter::once('<')
        .chain(
            tokens
                .iter()
                .enumerate()
                .flat_map(|(idx, token)| (idx > 0).then_some(' ').into_iter().chain(token.text.chars())),
        )
        .chain(std::iter::once('>'))
        .collect();
    for n in 3..=5 {
        for window in text.windows(n).filter(|window| window.contains(&' ')) {
            buffer.clear();
            buffer.extend(window);
            out.push((hash(8, &[&buffer]), CHAR_NGRAM_WEIGHT));
        }
    }
    for found in matches {
        out.push((hash_id(4, found.entity as usize, ""), 1.0));
    }
    out.sort_unstable_by_key(|a| a.0);
    out.dedup_by(|a, b| a.0 == b.0);
}

/// Per-token features for the entity tagger: the words around it, word pairs, affixes, shapes,
/// gazetteer hits around it and the words around each whole hit, cue words left of numbers, and
/// the utterance's intent alone and with the word.
pub fn tokens(tokens: &[Token], matches: &[Match], intent: usize, out: &mut Vec<Vec<u64>>) {
    let n_tokens = tokens.len();
    out.resize_with(n_tokens, Vec::new);
    let word = |idx: isize| -> &str {
        if idx < 0 {
            "<s>"
        } else if idx as usize >= n_tokens {
            "</s>"
        } else {
            &tokens[idx as usize].text
        }
    };
    let intent_text = intent.to_string();
    // Each token's gazetteer hits, with the token's position in the hit (B, I, E or S).
    let mut gaz_at: Vec<Vec<(u8, &Match)>> = vec![Vec::new(); n_tokens];
    for found in matches {
        for (idx, at) in gaz_at.iter_mut().enumerate().take(found.end).skip(found.start) {
            let position = if found.end - found.start == 1 {
                b'S'
            } else if idx == found.start {
                b'B'
            } else if idx + 1 == found.end {
                b'E'
            } else {
                b'I'
            };
            at.push((position, found));
        }
    }
    for (idx, features) in out.iter_mut().enumerate() {
        features.clear();
        let i = idx as isize;
        let w0 = word(i);
        features.push(hash(10, &[]));
        features.push(hash(11, &[w0]));
        features.push(hash(12, &[word(i - 1)]));
        features.push(hash(13, &[word(i + 1)]));
        features.push(hash(14, &[word(i - 2)]));
        features.push(hash(15, &[word(i + 2)]));
        features.push(hash(16, &[word(i - 3)]));
        features.push(hash(17, &[word(i + 3)]));
        features.push(hash(18, &[word(i - 1), w0]));
        features.push(hash(19, &[w0, word(i + 1)]));
        features.push(hash(20, &[word(i - 2), word(i - 1)]));
        features.push(hash(21, &[word(i + 1), word(i + 2)]));
        features.push(hash(22, &[word(i - 1), word(i + 1)]));
        let chars: Vec<char> = w0.chars().collect();
        for n in 1..=4usize.min(chars.len()) {
            let prefix: String = chars[..n].iter().collect();
            let suffix: String = chars[chars.len() - n..].iter().collect();
            features.push(hash(23, &[&n.to_string(), &prefix]));
            features.push(hash(24, &[&n.to_string(), &suffix]));
        }
        features.push(hash(25, &[&shape(w0)]));
        features.push(hash(26, &[&shape(word(i - 1)), &shape(word(i + 1))]));
        features.push(hash(27, &[&intent_text]));
        features.push(hash(28, &[&intent_text, w0]));
        features.push(hash(29, &[&intent_text, word(i - 1)]));
        // Words further left and right, as bags: "arriving in boston by 7 pm" decides 7's type.
        for offset in 4..=7 {
            if i - offset >= 0 {
                features.push(hash(34, &[word(i - offset)]));
            }
        }
        for offset in 4..=6 {
            if ((i + offset) as usize) < n_tokens {
                features.push(hash(35, &[word(i + offset)]));
            }
        }
        // A number takes its type from a cue word further left ("arriving in boston by 7"): the
        // number's shape with each of the six words before the one next to it.
        let own_shape = shape(w0);
        if own_shape.starts_with('d') {
            for offset in 2..=7 {
                if i - offset >= 0 {
                    features.push(hash(41, &[&own_shape, word(i - offset)]));
                }
            }
        }
        for &(position, found) in &gaz_at[idx] {
            let (entity, dominant, start, end) = (found.entity, found.dominant, found.start, found.end);
            features.push(hash_id(30, entity as usize, &(position as char).to_string()));
            // The words around the whole match: "from [new york]" and "to [new york]" differ
            // for every token of the span.
            let (before, after) = (word(start as isize - 1), word(end as isize));
            features.push(hash_id(36, entity as usize, before));
            features.push(hash_id(37, entity as usize, after));
            features.push(hash(38, &[&entity.to_string(), word(start as isize - 2), before]));
            if dominant {
                features.push(hash_id(40, entity as usize, &(position as char).to_string()));
            }
            features.push(hash_id(31, entity as usize, &intent_text));
        }
        for (offset, template) in [(-1isize, 32u8), (1, 33)] {
            let other = i + offset;
            if other >= 0 && (other as usize) < n_tokens {
                for (_, found) in &gaz_at[other as usize] {
                    features.push(hash_id(template, found.entity as usize, ""));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_collapse_runs() {
        assert_eq!(shape("London"), "Xx");
        assert_eq!(shape("AB12"), "Xd");
        assert_eq!(shape("10:30"), "d:d");
    }

    #[test]
    fn the_index_keeps_the_first_row_of_each_feature() {
        let mut index = FeatureIndex::default();
        assert_eq!(index.intern(hash(1, &["a"])), 0);
        assert_eq!(index.intern(hash(1, &["b"])), 1);
        assert_eq!(index.intern(hash(1, &["a"])), 0);
        assert_eq!(index.get(hash(2, &["a"])), None);
    }
}
