//! Gazetteers: the phrases known to be values of an entity type (from training annotations and
//! lookup tables), matched over token sequences. Training sees each utterance through the
//! phrases of the *other* folds only, so the tagger learns how far to trust a hit on a phrase it
//! has never seen, which is what a real utterance offers.

use std::hash::Hasher;

use rustc_hash::{FxHashMap, FxHasher};
use serde::{Deserialize, Serialize};

use crate::token::Token;

/// Folds used to hide an utterance's own phrases from it during training.
pub const N_FOLDS: usize = 5;

/// A gazetteer hit: tokens `start..end` are a known value of `entity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub start: usize,
    pub end: usize,
    pub entity: u16,
    /// No other type was seen more often for this phrase.
    pub dominant: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Gazetteer {
    /// Phrase hash → (entity type, occurrences per fold). Lookup tables count in every fold.
    phrases: FxHashMap<u64, Vec<(u16, [u16; N_FOLDS])>>,
    max_tokens: usize,
}

fn phrase_hash<'a>(words: impl Iterator<Item = &'a str>) -> u64 {
    let mut hasher = FxHasher::default();
    for word in words {
        hasher.write(word.as_bytes());
        hasher.write_u8(0xff);
    }
    hasher.finish()
}

impl Gazetteer {
    /// Records that `words` were annotated as `entity` in an utterance of `fold`
    /// (`None`: from a lookup table, seen by every fold).
    pub fn add(&mut self, words: &[&str], entity: u16, fold: Option<usize>) {
        if words.is_empty() {
            return;
        }
        self.max_tokens = self.max_tokens.max(words.len());
        let entries = self.phrases.entry(phrase_hash(words.iter().copied())).or_default();
        let entry = match entries.iter_mut().find(|(known, _)| *known == entity) {
            Some(entry) => entry,
            None => {
                entries.push((entity, [0; N_FOLDS]));
                entries.last_mut().unwrap()
            }
        };
        match fold {
            Some(fold) => entry.1[fold] = entry.1[fold].saturating_add(1),
            None => entry.1.iter_mut().for_each(|count| *count = count.saturating_add(1)),
        }
    }

    /// Every known phrase in `tokens`, as seen by `fold` (`None`: all phrases, as at parse time).
    pub fn find(&self, tokens: &[Token], fold: Option<usize>, out: &mut Vec<Match>) {
        out.clear();
        for start in 0..tokens.len() {
            let mut hasher = FxHasher::default();
            for end in start + 1..=(start + self.max_tokens).min(tokens.len()) {
                hasher.write(tokens[end - 1].text.as_bytes());
                hasher.write_u8(0xff);
                let Some(entries) = self.phrases.get(&hasher.finish()) else { continue };
                let visible = |counts: &[u16; N_FOLDS]| {
                    let total: u32 = counts.iter().map(|&count| count as u32).sum();
                    match fold {
                        Some(fold) => total - counts[fold] as u32,
                        None => total,
                    }
                };
                let most = entries.iter().map(|(_, counts)| visible(counts)).max().unwrap_or(0);
                for (entity, counts) in entries {
                    let seen = visible(counts);
                    if seen > 0 {
                        out.push(Match { start, end, entity: *entity, dominant: seen == most });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::tokenize;

    #[test]
    fn phrases_match_by_tokens_and_folds_hide_their_own() {
        let mut gazetteer = Gazetteer::default();
        gazetteer.add(&["king's", "cross"], 1, Some(0));
        gazetteer.add(&["euston"], 1, None);
        let tokens = tokenize("from King's Cross to Euston");
        let mut found = Vec::new();
        gazetteer.find(&tokens, None, &mut found);
        let spans: Vec<_> = found.iter().map(|found| (found.start, found.end, found.entity)).collect();
        assert_eq!(spans, [(1, 3, 1), (4, 5, 1)]);
        gazetteer.find(&tokens, Some(0), &mut found);
        assert_eq!((found[0].start, found.len()), (4, 1));
        gazetteer.find(&tokens, Some(1), &mut found);
        assert_eq!(found.len(), 2);
    }
}
