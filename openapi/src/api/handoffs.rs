//! `/v1/handoffs`: conversations drivers asked a person to pick up, for the team of the operator
//! whose car park they were about (the platform admin sees those about none). Any key of the
//! operator reads them from the driver's request on; an operator admin key replies through the
//! driver's channel and hands them back to the bot.

use berth_kernel::conversation::{ChatMessage, Conversation};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::chat::{ChatMessageDto, message_dto, parse_conversation_id};
use super::{ApiTags, Created, Deleted};
use crate::problem::{ApiError, ApiResult};
use crate::state::{AppState, BerthAuth};

pub struct HandoffsApi;

/// A conversation handed to a person.
#[derive(Debug, Object)]
pub struct HandoffView {
    pub conversation_id: String,
    /// `web`, `telegram`, `whatsapp`.
    pub channel: String,
    /// The driver's timezone (times in the conversation are in it).
    pub timezone: String,
    pub created_at: DateTime<Utc>,
    /// When the bot last answered in it.
    pub updated_at: DateTime<Utc>,
    /// The messages since the driver asked for a person, oldest first (in a list: the latest
    /// 20; otherwise the latest 200).
    pub messages: Vec<ChatMessageDto>,
}

/// The handed-off conversations, most recently active first.
#[derive(Debug, Object)]
pub struct HandoffList {
    pub items: Vec<HandoffView>,
}

/// A person's reply to the driver.
#[derive(Debug, Object)]
pub struct HandoffReplyRequest {
    /// 1 to 4,096 characters.
    pub text: String,
    /// The name the driver sees it from (default "Car park team"), at most 60 characters.
    pub author: Option<String>,
}

/// The stored reply, and whether the driver's channel took it.
#[derive(Debug, Object)]
pub struct HandoffReplyResult {
    pub message: ChatMessageDto,
    /// The channel took it (the web chat always does: the driver reads it from the conversation).
    pub delivered: bool,
    /// Why not (WhatsApp outside its 24-hour window without a template, the channel down).
    pub delivery_error: Option<String>,
}

fn view(conversation: Conversation, messages: Vec<ChatMessage>) -> HandoffView {
    HandoffView {
        conversation_id: conversation.id.to_string(),
        channel: conversation.channel,
        timezone: conversation.timezone,
        created_at: conversation.created_at,
        updated_at: conversation.updated_at,
        messages: messages.into_iter().map(message_dto).collect(),
    }
}

#[OpenApi(tag = "ApiTags::Chat")]
impl HandoffsApi {
    /// The conversations handed to the caller's team (any key of the operator, staff included;
    /// the platform admin: those about no operator's car park), each with its latest messages
    /// since the driver asked for a person.
    #[oai(path = "/v1/handoffs", method = "get", operation_id = "listHandoffs")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        /// 1-100 (default 50).
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<HandoffList>> {
        let limit = limit.0.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request("limit: must be between 1 and 100"));
        }
        let handoffs = state.kernel.list_handoffs(&auth.0, limit).await?;
        Ok(Json(HandoffList {
            items: handoffs.into_iter().map(|(conversation, messages)| view(conversation, messages)).collect(),
        }))
    }

    /// One handed-off conversation with its messages (up to 200, oldest first).
    #[oai(path = "/v1/handoffs/:conversation_id", method = "get", operation_id = "getHandoff")]
    async fn get(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        conversation_id: Path<String>,
    ) -> ApiResult<Json<HandoffView>> {
        let id = parse_conversation_id(&conversation_id.0)?;
        let (conversation, messages) = state.kernel.handoff_conversation(&auth.0, id).await?;
        Ok(Json(view(conversation, messages)))
    }

    /// Replies to the driver as a person, through their channel (on WhatsApp outside the
    /// 24-hour window, as the configured template). Operator admin keys (and the platform
    /// admin for its own). The reply is stored even when the channel refuses it; `delivered`
    /// says which.
    #[oai(path = "/v1/handoffs/:conversation_id/replies", method = "post", operation_id = "replyToHandoff")]
    async fn reply(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        conversation_id: Path<String>,
        body: Json<HandoffReplyRequest>,
    ) -> ApiResult<Created<HandoffReplyResult>> {
        let id = parse_conversation_id(&conversation_id.0)?;
        let reply = state.kernel.reply_to_handoff(&auth.0, id, &body.0.text, body.0.author.as_deref()).await?;
        Ok(Created::Created(Json(HandoffReplyResult {
            message: message_dto(reply.message),
            delivered: reply.delivery_error.is_none(),
            delivery_error: reply.delivery_error.map(|error| error.to_string()),
        })))
    }

    /// Hands the conversation back to the bot; it leaves the list. Operator admin keys.
    #[oai(path = "/v1/handoffs/:conversation_id", method = "delete", operation_id = "closeHandoff")]
    async fn close(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        conversation_id: Path<String>,
    ) -> ApiResult<Deleted> {
        let id = parse_conversation_id(&conversation_id.0)?;
        state.kernel.close_handoff(&auth.0, id).await?;
        Ok(Deleted::NoContent)
    }
}
