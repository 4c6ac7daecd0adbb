//! The tokenizer: words, numbers and times as tokens with their character offsets in the text
//! (offsets count Unicode scalar values, as Rasa's do, so clients in any language agree on them).

/// One token: the lowercased text used for features, and where it sits in the original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Lowercased token text.
    pub text: String,
    /// Character offset of the first character.
    pub start: usize,
    /// Character offset one past the last character.
    pub end: usize,
}

/// Splits `text` into tokens. A token is a run of letters and digits, joined across a single
/// `'`, `:` or `.` between two letters or digits (so `don't`, `10:30` and `7.50` stay whole);
/// any other visible character (`£`, `?`, `-`) is a token of its own; white space separates.
pub fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut idx = 0;
    while idx < chars.len() {
        let ch = chars[idx];
        if ch.is_whitespace() {
            idx += 1;
            continue;
        }
        let start = idx;
        if ch.is_alphanumeric() {
            idx += 1;
            loop {
                if idx < chars.len() && chars[idx].is_alphanumeric() {
                    idx += 1;
                } else if idx + 1 < chars.len()
                    && matches!(chars[idx], '\'' | '’' | ':' | '.')
                    && chars[idx + 1].is_alphanumeric()
                {
                    idx += 2;
                } else {
                    break;
                }
            }
        } else {
            idx += 1;
        }
        tokens.push(Token { text: chars[start..idx].iter().collect::<String>().to_lowercase(), start, end: idx });
    }
    tokens
}

/// Tokens given already split (benchmark corpora ship them), with offsets as if joined by single spaces.
pub fn from_words<S: AsRef<str>>(words: &[S]) -> Vec<Token> {
    let mut offset = 0;
    words
        .iter()
        .map(|word| {
            let word = word.as_ref();
            let n_chars = word.chars().count();
            let token = Token { text: word.to_lowercase(), start: offset, end: offset + n_chars };
            offset += n_chars + 1;
            token
        })
        .collect()
}

/// The substring of `text` between two character offsets.
pub fn char_slice(text: &str, start: usize, end: usize) -> &str {
    let mut indices = text.char_indices().map(|(byte, _)| byte).chain(std::iter::once(text.len()));
    let from = indices.nth(start).unwrap_or(text.len());
    let to = if end > start { indices.nth(end - start - 1).unwrap_or(text.len()) } else { from };
    &text[from..to]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<String> {
        tokenize(text).into_iter().map(|token| token.text).collect()
    }

    #[test]
    fn words_times_and_symbols_are_tokens_with_char_offsets() {
        assert_eq!(texts("Park me at 10:30, please!"), ["park", "me", "at", "10:30", ",", "please", "!"]);
        assert_eq!(texts("I don't want more than £7.50"), ["i", "don't", "want", "more", "than", "£", "7.50"]);
        assert_eq!(texts("AB12 CDE"), ["ab12", "cde"]);
        let tokens = tokenize("Café near Zürich");
        assert_eq!((tokens[2].start, tokens[2].end), (10, 16));
        assert_eq!(char_slice("Café near Zürich", 10, 16), "Zürich");
        assert_eq!(char_slice("Café near Zürich", 0, 4), "Café");
    }

    #[test]
    fn pre_split_words_get_offsets_as_if_joined_by_spaces() {
        let tokens = from_words(&["book", "a", "Table"]);
        assert_eq!(tokens[2], Token { text: "table".into(), start: 7, end: 12 });
    }
}
