//! `/v1/chat/web/...`: the web chat channel. A driver sends a message and gets the bot's replies
//! in the answer; the conversation's messages can be read back (a page reload, another tab).

use berth_kernel::chat::ChatTurn;
use berth_kernel::conversation::{ChatMessage, Direction};
use berth_kernel::ids::{ConversationId, MessageId};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};

use super::ApiTags;
use crate::problem::{ApiError, ApiResult};
use crate::state::{AppState, BerthAuth};

pub struct ChatApi;

/// A point shared instead of a place name.
#[derive(Debug, Clone, Copy, Object)]
pub struct ChatLocation {
    pub lat: f64,
    pub lon: f64,
}

/// A driver's message.
#[derive(Debug, Object)]
pub struct WebMessageRequest {
    /// What the driver typed (or a button's `reply`), at most 2,000 characters. May be empty
    /// when `location` is given.
    #[oai(default)]
    pub text: String,
    /// The client's id for this message: send the same id again when retrying, and the
    /// message is answered once (the retry answers `duplicate: true`).
    pub message_id: Option<String>,
    pub location: Option<ChatLocation>,
    /// The driver's IANA timezone (`Europe/London`); replies give times in it. Kept for the
    /// conversation until another is sent. Default `UTC`.
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum DirectionDto {
    Inbound,
    Outbound,
}

/// A button: show `label`; when pressed, send `reply` as the next message.
#[derive(Debug, Object)]
pub struct ChoiceDto {
    pub label: String,
    pub reply: String,
}

/// One message of the conversation.
#[derive(Debug, Object)]
pub struct ChatMessageDto {
    pub id: String,
    pub direction: DirectionDto,
    pub text: String,
    pub choices: Vec<ChoiceDto>,
    /// A page to open (to pay for a booking).
    pub link: Option<String>,
    pub location: Option<ChatLocation>,
    /// The intent the bot understood (on a reply: of the message it answers).
    pub intent: Option<String>,
    /// On a reply: the message it answers.
    pub in_reply_to: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What a message led to.
#[derive(Debug, Object)]
pub struct WebMessageResult {
    pub conversation_id: String,
    /// The stored message's id.
    pub message_id: String,
    /// The message was received before; `replies` is empty (read them from the conversation).
    pub duplicate: bool,
    pub replies: Vec<ChatMessageDto>,
}

/// A conversation's messages, oldest first.
#[derive(Debug, Object)]
pub struct ChatMessages {
    pub conversation_id: String,
    /// The driver asked for a person; the operator's team picks it up.
    pub handoff: bool,
    pub messages: Vec<ChatMessageDto>,
}

pub(crate) fn message_dto(message: ChatMessage) -> ChatMessageDto {
    let body = message.body;
    ChatMessageDto {
        id: message.id.to_string(),
        direction: match message.direction {
            Direction::Inbound => DirectionDto::Inbound,
            Direction::Outbound => DirectionDto::Outbound,
        },
        text: body.text,
        choices: body
            .choices
            .into_iter()
            .map(|choice| ChoiceDto { label: choice.label, reply: choice.reply })
            .collect(),
        link: body.link,
        location: body.location.map(|(lat, lon)| ChatLocation { lat, lon }),
        intent: body.intent,
        in_reply_to: body.in_reply_to.map(|id| id.to_string()),
        created_at: message.created_at,
    }
}

impl From<ChatTurn> for WebMessageResult {
    fn from(turn: ChatTurn) -> Self {
        WebMessageResult {
            conversation_id: turn.conversation_id.to_string(),
            message_id: turn.inbound_id.to_string(),
            duplicate: turn.duplicate,
            replies: turn.replies.into_iter().map(message_dto).collect(),
        }
    }
}

#[OpenApi(tag = "ApiTags::Chat")]
impl ChatApi {
    /// Sends a driver's message to the parking bot and answers its replies: it finds and books
    /// parking (with the payment link when one is needed), extends, cancels and reports
    /// bookings, in the driver's words. Drivers only. Messages of one driver are answered one
    /// at a time, in the order received.
    #[oai(path = "/v1/chat/web/messages", method = "post", operation_id = "sendWebChatMessage")]
    async fn send(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        body: Json<WebMessageRequest>,
    ) -> ApiResult<Json<WebMessageResult>> {
        let body = body.0;
        let turn = state
            .kernel
            .chat_web(
                &auth.0,
                &body.text,
                body.message_id,
                body.location.map(|point| (point.lat, point.lon)),
                body.timezone,
            )
            .await?;
        Ok(Json(turn.into()))
    }

    /// The driver's web conversation's messages after `after` (a message id), oldest first.
    #[oai(
        path = "/v1/chat/web/conversations/:conversation_id/messages",
        method = "get",
        operation_id = "listWebChatMessages"
    )]
    async fn messages(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        conversation_id: Path<String>,
        /// Only messages after this one.
        after: Query<Option<String>>,
        /// 1-200 (default 50).
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<ChatMessages>> {
        let id = ConversationId::parse(&conversation_id.0)
            .map_err(|_| ApiError::from(berth_kernel::KernelError::not_found("conversation")))?;
        let after = after
            .0
            .map(|after| MessageId::parse(&after).map_err(|_| ApiError::bad_request("after: not a message id")))
            .transpose()?;
        let limit = limit.0.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::bad_request("limit: must be between 1 and 200"));
        }
        let (conversation, messages) = state.kernel.chat_messages(&auth.0, id, after, limit).await?;
        Ok(Json(ChatMessages {
            conversation_id: conversation.id.to_string(),
            handoff: conversation.handoff,
            messages: messages.into_iter().map(message_dto).collect(),
        }))
    }
}
