//! `/v1/chat/web/...`: the web chat channel. A driver sends a message and gets the bot's replies
//! in the answer; the conversation's messages can be read back (a page reload, another tab) or
//! followed as Server-Sent Events (messages that come later: a person's reply after a handoff,
//! a reminder, another tab's message).

use berth_kernel::chat::ChatTurn;
use berth_kernel::conversation::{ChatMessage, Direction};
use berth_kernel::ids::{ConversationId, MessageId};
use chrono::{DateTime, Utc};
use std::collections::HashSet;

use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use poem::web::Data;
use poem::web::sse::Event;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::EventStream;
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
    /// On a message a person wrote (the car park's team, after a handoff): who. None for the
    /// bot's messages.
    pub author: Option<String>,
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
        author: body.author,
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
        let id = parse_conversation_id(&conversation_id.0)?;
        let after = parse_cursor(after.0)?;
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

    /// Server-Sent Events of the driver's conversation: a `message` event (a chat message, its
    /// `id` the event id) for every message stored after the point given by `Last-Event-ID` or
    /// `after` (a message id), or after the stream opened. Messages from every node arrive
    /// (this node's at once, others' within 5 s). Reconnect with `Last-Event-ID` to resume.
    #[oai(
        path = "/v1/chat/web/conversations/:conversation_id/stream",
        method = "get",
        operation_id = "streamWebChatMessages"
    )]
    async fn stream(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        conversation_id: Path<String>,
        /// Resume after this message id.
        after: Query<Option<String>>,
        #[oai(name = "Last-Event-ID")] last_event_id: Header<Option<String>>,
    ) -> ApiResult<EventStream<BoxStream<'static, ChatMessageDto>>> {
        let id = parse_conversation_id(&conversation_id.0)?;
        let cursor = parse_cursor(last_event_id.0.or(after.0))?;
        // Subscribe before the first read, so nothing stored in between is missed.
        let changes = state.kernel.chat_changes();
        // Without a cursor: what is stored now is not sent, only what comes after.
        let floor = cursor.unwrap_or_else(|| id_floor(Utc::now() - FOLLOW_LAG));
        let (_, present) = state.kernel.chat_messages(&auth.0, id, Some(floor), 200).await?;
        let seen = present.iter().map(|message| message.id).collect();
        let first: Vec<ChatMessageDto> =
            if cursor.is_some() { present.into_iter().map(message_dto).collect() } else { Vec::new() };
        let follow = Follow {
            kernel: state.kernel.clone(),
            caller: auth.0,
            conversation: id,
            floor,
            seen,
            changes,
            poll: tokio::time::interval(FOLLOW_POLL),
        };
        let stream = futures_util::stream::iter(first).chain(follow.into_stream());
        Ok(EventStream::new(stream.boxed()).keep_alive(std::time::Duration::from_secs(15)).to_event(|message| {
            let data = serde_json::to_string(&poem_openapi::types::ToJSON::to_json(&message)).unwrap_or_default();
            Event::message(data).id(message.id.clone())
        }))
    }
}

/// A conversation id from a path; one that does not parse is a conversation that is not there.
pub(crate) fn parse_conversation_id(text: &str) -> ApiResult<ConversationId> {
    ConversationId::parse(text).map_err(|_| ApiError::from(berth_kernel::KernelError::not_found("conversation")))
}

/// A message id to read after.
fn parse_cursor(text: Option<String>) -> ApiResult<Option<MessageId>> {
    text.map(|text| MessageId::parse(&text).map_err(|_| ApiError::bad_request("after: not a message id"))).transpose()
}

/// How often a followed conversation is read again without a signal (messages stored by other
/// nodes).
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// How far back a followed conversation is read again. A message's id is made just before it is
/// stored, on the clock of the node that stores it, so a message may be stored after one with a
/// later id; re-reading the last seconds (and skipping what was sent) still finds it.
const FOLLOW_LAG: chrono::Duration = chrono::Duration::seconds(10);

/// The smallest message id of a moment: ids are UUIDv7, ordered by their millisecond prefix.
fn id_floor(at: DateTime<Utc>) -> MessageId {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    MessageId::from_uuid(uuid::Uuid::from_bytes(bytes))
}

/// A conversation followed for new messages: read again when this node signals a change to it
/// and every [`FOLLOW_POLL`] (the first tick at once); each read starts [`FOLLOW_LAG`] back and
/// skips what was sent.
struct Follow {
    kernel: berth_kernel::Kernel,
    caller: berth_kernel::auth::Principal,
    conversation: ConversationId,
    /// Reads start after this id.
    floor: MessageId,
    /// Ids after `floor` already sent (or present when the stream opened).
    seen: HashSet<MessageId>,
    changes: tokio::sync::broadcast::Receiver<ConversationId>,
    poll: tokio::time::Interval,
}

impl Follow {
    fn into_stream(self) -> impl futures_util::Stream<Item = ChatMessageDto> + Send + 'static {
        futures_util::stream::unfold(self, |mut follow| async move {
            loop {
                tokio::select! {
                    change = follow.changes.recv() => match change {
                        Ok(id) if id != follow.conversation => continue,
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = follow.poll.tick() => {}
                }
                // The conversation may have gone (the driver erased their data): end the stream.
                let (_, messages) = follow
                    .kernel
                    .chat_messages(&follow.caller, follow.conversation, Some(follow.floor), 200)
                    .await
                    .ok()?;
                let fresh: Vec<ChatMessageDto> =
                    messages.into_iter().filter(|message| follow.seen.insert(message.id)).map(message_dto).collect();
                let floor = id_floor(Utc::now() - FOLLOW_LAG);
                if floor > follow.floor {
                    follow.floor = floor;
                    follow.seen.retain(|id| *id > floor);
                }
                if !fresh.is_empty() {
                    return Some((futures_util::stream::iter(fresh), follow));
                }
            }
        })
        .flatten()
    }
}
