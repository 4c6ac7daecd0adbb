//! Language understanding as the kernel sees it: a port that turns a driver's message into an
//! intent and entities ([`LanguageUnderstanding`]), and the service call that checks the request
//! before asking it. The trained pipeline lives in `nlu/`; the kernel knows only this shape.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::auth::Principal;
use crate::{Kernel, KernelError, KernelResult, ValidationError};

/// The intent of a message the model is unsure about.
pub const FALLBACK_INTENT: &str = "nlu_fallback";

/// The longest message understood, in characters: chat messages, not documents.
pub const MAX_TEXT_CHARS: usize = 2_000;

/// A ranked intent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntentScore {
    pub name: String,
    pub confidence: f32,
}

/// An entity found in the text; offsets count characters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnderstoodEntity {
    pub entity: String,
    /// Normalised: RFC 3339 times in the user's zone, ISO 8601 durations, money in minor units,
    /// plates upper case; otherwise the text (or its synonym's canonical value).
    pub value: serde_json::Value,
    pub start: usize,
    pub end: usize,
    pub text: String,
    pub confidence: f32,
    /// Which component found it.
    pub extractor: String,
}

/// What a message means.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Understanding {
    pub text: String,
    pub intent: IntentScore,
    pub intent_ranking: Vec<IntentScore>,
    pub entities: Vec<UnderstoodEntity>,
}

/// A trained language model. Parsing is pure CPU work of well under a millisecond.
pub trait LanguageUnderstanding: Send + Sync {
    fn understand(&self, text: &str, reference: DateTime<Utc>, timezone: Tz) -> Understanding;
}

/// Refuses a message longer than [`MAX_TEXT_CHARS`].
pub fn check_text_length(text: &str) -> Result<(), ValidationError> {
    let n_chars = text.chars().count();
    if n_chars > MAX_TEXT_CHARS {
        return Err(ValidationError::new("text", format!("{n_chars} characters; at most {MAX_TEXT_CHARS}")));
    }
    Ok(())
}

/// Parses an IANA timezone name (`Europe/London`).
pub fn parse_timezone(name: &str) -> Result<Tz, ValidationError> {
    name.parse::<Tz>().map_err(|_| {
        ValidationError::new("timezone", format!("{name:?} is not an IANA timezone such as Europe/London"))
    })
}

impl Kernel {
    /// The language model drivers' messages go through.
    pub fn with_language(mut self, language: Arc<dyn LanguageUnderstanding>) -> Self {
        self.language = Some(language);
        self
    }

    /// Understands one message. Any authenticated caller may ask: the model holds no tenant's
    /// data, and the answer is only a reading of the text they sent.
    pub fn understand(
        &self,
        _principal: &Principal,
        text: &str,
        reference: Option<DateTime<Utc>>,
        timezone: Option<&str>,
    ) -> KernelResult<Understanding> {
        check_text_length(text)?;
        let timezone = match timezone {
            Some(name) => parse_timezone(name)?,
            None => chrono_tz::UTC,
        };
        let language =
            self.language.as_ref().ok_or_else(|| KernelError::Unavailable("no language model is configured".into()))?;
        Ok(language.understand(text, reference.unwrap_or_else(Utc::now), timezone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timezones_are_iana_names() {
        assert_eq!(parse_timezone("Europe/London").unwrap(), chrono_tz::Europe::London);
        let error = parse_timezone("Mars/Olympus").unwrap_err();
        assert_eq!(error.field, "timezone");
        assert!(error.message.contains("IANA"), "{}", error.message);
    }
}
