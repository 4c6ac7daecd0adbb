//! `/v1/nlu/parse`: what a driver's message means (intent and entities, in Rasa's shape).

use berth_kernel::language::{IntentScore, Understanding, UnderstoodEntity};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::ApiTags;
use crate::problem::ApiResult;
use crate::state::{AppState, BerthAuth};

pub struct NluApi;

/// A message to understand.
#[derive(Debug, Object)]
pub struct ParseRequest {
    /// The message, at most 2,000 characters.
    pub text: String,
    /// "Now" for relative times ("tomorrow at 9", "in 2 hours"); default: the server's clock.
    pub reference_time: Option<DateTime<Utc>>,
    /// The user's IANA timezone (`Europe/London`); times are resolved and answered in it. Default `UTC`.
    pub timezone: Option<String>,
}

/// A ranked intent.
#[derive(Debug, Object)]
pub struct IntentDto {
    pub name: String,
    /// 0 to 1; the ranking's confidences sum to 1.
    pub confidence: f32,
}

/// An entity found in the message.
#[derive(Debug, Object)]
pub struct EntityDto {
    /// `location`, `start_time`, `end_time`, `duration`, `vehicle_plate`, `vehicle_type`,
    /// `booking_ref`, `max_price`, `ev_charging`, `accessible`, or an operator's own.
    pub entity: String,
    /// Normalised: RFC 3339 times in the requested timezone, ISO 8601 durations (`PT2H30M`),
    /// `{amount_minor, currency}` for money, plates upper case without spaces, canonical
    /// synonyms (`motorbike` → `motorcycle`); otherwise the text.
    pub value: serde_json::Value,
    /// Character offset of the first character in `text`.
    pub start: usize,
    /// Character offset one past the last character.
    pub end: usize,
    pub text: String,
    pub confidence: f32,
    /// `tagger` (the trained sequence model) or `regex`.
    pub extractor: String,
}

/// What the message means.
#[derive(Debug, Object)]
pub struct ParseResult {
    pub text: String,
    /// The best intent, or `nlu_fallback` when unsure (below the fallback threshold, or the two
    /// best too close to call).
    pub intent: IntentDto,
    /// Every intent (at most 10), best first.
    pub intent_ranking: Vec<IntentDto>,
    pub entities: Vec<EntityDto>,
}

fn intent_dto(score: IntentScore) -> IntentDto {
    IntentDto { name: score.name, confidence: score.confidence }
}

fn entity_dto(entity: UnderstoodEntity) -> EntityDto {
    EntityDto {
        entity: entity.entity,
        value: entity.value,
        start: entity.start,
        end: entity.end,
        text: entity.text,
        confidence: entity.confidence,
        extractor: entity.extractor,
    }
}

impl From<Understanding> for ParseResult {
    fn from(understanding: Understanding) -> Self {
        ParseResult {
            text: understanding.text,
            intent: intent_dto(understanding.intent),
            intent_ranking: understanding.intent_ranking.into_iter().map(intent_dto).collect(),
            entities: understanding.entities.into_iter().map(entity_dto).collect(),
        }
    }
}

#[OpenApi(tag = "ApiTags::Chat")]
impl NluApi {
    /// Parses a message into an intent and entities with the platform's language model (the
    /// bundled parking domain plus the configured extra training data). Any authenticated caller.
    #[oai(path = "/v1/nlu/parse", method = "post", operation_id = "parseMessage")]
    async fn parse(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        body: Json<ParseRequest>,
    ) -> ApiResult<Json<ParseResult>> {
        let body = body.0;
        let understanding =
            state.kernel.understand(&auth.0, &body.text, body.reference_time, body.timezone.as_deref())?;
        Ok(Json(understanding.into()))
    }
}
