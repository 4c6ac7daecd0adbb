//! Conversations with drivers over chat channels: who is talking on which channel, the dialogue's
//! state, and every message in and out. The store keeps them; a lease makes one conversation
//! process one message at a time, in order, even across nodes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, DriverId, MessageId, OperatorId};

/// The channels berth speaks on.
pub const CHANNELS: [&str; 3] = ["web", "telegram", "whatsapp"];

/// One driver's conversation on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: ConversationId,
    /// `web`, `telegram` or `whatsapp`.
    pub channel: String,
    /// The channel's id of the user (a Telegram chat id, a WhatsApp number, a driver id on the web).
    pub external_user: String,
    pub driver_id: DriverId,
    /// The dialogue's state, opaque to storage.
    pub state: serde_json::Value,
    /// IANA timezone replies are written in.
    pub timezone: String,
    /// Flagged for the operator: the driver asked for a person, or the bot gave up.
    pub handoff: bool,
    /// Whose team the conversation was handed to: the operator of the car park it was about
    /// (`None`: the platform's own team).
    pub handoff_operator: Option<OperatorId>,
    /// When the driver asked for a person: the team sees the conversation from here on.
    pub handoff_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// A button a reply offers; channels render them as they can (Telegram inline keyboards,
/// WhatsApp reply buttons, web chips).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// What the button shows.
    pub label: String,
    /// What pressing it sends back, as if typed.
    pub reply: String,
}

/// What a message carries besides its text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageBody {
    pub text: String,
    /// A shared location (Telegram and WhatsApp location messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<(f64, f64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Choice>,
    /// A page to open (a payment page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The intent the bot understood (on a reply: of the message it answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// On a reply: the inbound message it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<MessageId>,
    /// On an inbound message: the timezone the user's channel said they are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// On an outbound message a person wrote (the operator's team, after a handoff): who;
    /// none for the bot's own messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub direction: Direction,
    /// The channel's id of an inbound message (Telegram `update_id`, WhatsApp `wamid`, the web
    /// client's id): the same id is stored once, so a redelivery is not answered twice.
    pub channel_message_id: Option<String>,
    pub body: MessageBody,
    /// An inbound message is processed once; until then a restart picks it up again.
    pub processed: bool,
    pub created_at: DateTime<Utc>,
}
