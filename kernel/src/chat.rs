//! Chat intake: a message from any channel is stored first (once per channel message id), then
//! its conversation is processed under a lease, so one conversation answers one message at a
//! time, in the order they were stored, even when several nodes receive its messages. A
//! message stored but not yet answered (a crash in between) is answered by the next message's
//! processing.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use crate::auth::Principal;
use crate::conversation::{ChatMessage, Conversation, Direction, MessageBody};
use crate::ids::{ConversationId, DriverId, MessageId};
use crate::language::{IntentScore, Understanding, check_text_length, parse_timezone};
use crate::service::now;
use crate::{Kernel, KernelError, KernelResult, ValidationError};

/// How long a node may hold a conversation; a crashed holder's lease runs out after this.
const LEASE_SECS: i64 = 30;
/// How long a message waits for its conversation's lease before the caller gets an error.
const LEASE_WAIT: StdDuration = StdDuration::from_secs(10);

/// A message as a channel hands it in.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// `web`, `telegram` or `whatsapp`.
    pub channel: String,
    /// The channel's id of the user.
    pub external_user: String,
    /// The driver account behind that user (the channel resolved or created it).
    pub driver_id: DriverId,
    /// The channel's id of the message, for dedup.
    pub channel_message_id: Option<String>,
    pub text: String,
    pub location: Option<(f64, f64)>,
    /// The user's IANA timezone, when the channel knows it.
    pub timezone: Option<String>,
}

/// A message as a channel's webhook (or poller) delivered it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInbound {
    /// Where replies go and whose conversation it is: a Telegram chat id, a WhatsApp number.
    pub external_user: String,
    /// The channel's id of the update, for dedup (a Telegram `update_id`, a WhatsApp `wamid`).
    pub message_id: String,
    pub text: String,
    pub location: Option<(f64, f64)>,
    /// What to acknowledge at the channel once stored (a Telegram callback query id).
    pub acknowledge: Option<String>,
}

/// Why a channel refused a webhook or a send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The webhook is not from the channel (secret token or signature wrong or missing).
    #[error("{0}")]
    Unauthenticated(String),
    /// The body is not a webhook this channel understands.
    #[error("{0}")]
    Malformed(String),
    /// The channel's API refused or could not be reached.
    #[error("{0}")]
    Unavailable(String),
}

/// A chat channel: reads its webhooks and sends replies. Implemented by adapters (Telegram) and
/// chat-channel plugins (WhatsApp); the kernel never sees their wire formats.
#[async_trait::async_trait]
pub trait ChatChannel: Send + Sync {
    /// `telegram`, `whatsapp`.
    fn name(&self) -> &str;
    /// Checks a webhook's authenticity on the raw request and reads the messages in it (status
    /// updates and other events read as none).
    async fn read_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<ChannelInbound>, ChannelError>;
    /// Answers the channel's subscription check of the webhook URL (a `GET` with its query, as
    /// WhatsApp's `hub.challenge`): the body to answer with.
    async fn verify_subscription(&self, _query: &[(String, String)]) -> Result<String, ChannelError> {
        Err(ChannelError::Malformed(format!("the {} channel has no subscription check", self.name())))
    }
    /// The timezone replies are written in when the channel cannot tell the user's (Telegram
    /// cannot); `None`: UTC.
    fn default_timezone(&self) -> Option<&str> {
        None
    }
    /// Tells the channel a message was received (stops a button's spinner).
    async fn acknowledge(&self, _inbound: &ChannelInbound) -> Result<(), ChannelError> {
        Ok(())
    }
    /// Sends one message to a user. `last_inbound` is when the user last wrote, for channels
    /// that allow free-form messages only for a while after (WhatsApp's 24 hours).
    async fn send(
        &self,
        external_user: &str,
        body: &MessageBody,
        last_inbound: Option<DateTime<Utc>>,
    ) -> Result<(), ChannelError>;
}

/// What one incoming message led to.
#[derive(Debug, Clone)]
pub struct ChatTurn {
    pub conversation_id: ConversationId,
    pub inbound_id: MessageId,
    /// The message was stored before (a redelivery): nothing new was said.
    pub duplicate: bool,
    /// The replies to this message.
    pub replies: Vec<ChatMessage>,
}

impl Kernel {
    /// A driver's message on the web channel: the caller is the driver.
    pub async fn chat_web(
        &self,
        caller: &Principal,
        text: &str,
        client_message_id: Option<String>,
        location: Option<(f64, f64)>,
        timezone: Option<String>,
    ) -> KernelResult<ChatTurn> {
        let Principal::Driver { driver_id } = caller else {
            return Err(KernelError::Forbidden("web chat is for drivers".into()));
        };
        self.receive_chat(Incoming {
            channel: "web".into(),
            external_user: driver_id.to_string(),
            driver_id: *driver_id,
            channel_message_id: client_message_id,
            text: text.to_owned(),
            location,
            timezone,
        })
        .await
    }

    /// Stores a message, then answers its conversation's waiting messages in order.
    pub async fn receive_chat(&self, incoming: Incoming) -> KernelResult<ChatTurn> {
        let mut turn = self.accept_chat(incoming).await?;
        if turn.duplicate {
            return Ok(turn);
        }
        self.process_conversation(turn.conversation_id).await?;
        turn.replies = self.replies_to(turn.conversation_id, turn.inbound_id).await?;
        Ok(turn)
    }

    /// Checks and stores a message (once per channel message id) without answering it.
    async fn accept_chat(&self, incoming: Incoming) -> KernelResult<ChatTurn> {
        check_text_length(&incoming.text)?;
        if incoming.text.trim().is_empty() && incoming.location.is_none() {
            return Err(ValidationError::new("text", "say something (or share a location)").into());
        }
        if let Some((lat, lon)) = incoming.location {
            crate::geo::GeoPoint::new(lat, lon).map_err(|error| error.within("location"))?;
        }
        if let Some(id) = &incoming.channel_message_id
            && (id.is_empty() || id.len() > 200)
        {
            return Err(ValidationError::new("message_id", "1 to 200 characters").into());
        }
        let timezone = match &incoming.timezone {
            Some(name) => parse_timezone(name)?.name().to_owned(),
            None => "UTC".to_owned(),
        };
        let at = now();
        let new = Conversation {
            id: ConversationId::new(),
            channel: incoming.channel.clone(),
            external_user: incoming.external_user.clone(),
            driver_id: incoming.driver_id,
            state: serde_json::json!({}),
            timezone: timezone.clone(),
            handoff: false,
            handoff_operator: None,
            handoff_since: None,
            created_at: at,
            updated_at: at,
        };
        let conversation = self.store().find_or_create_conversation(&new).await?;
        if conversation.driver_id != incoming.driver_id {
            return Err(KernelError::not_found("conversation"));
        }
        // Messages are answered in the order of their ids (time-ordered). Given and stored one
        // at a time per conversation, a message's id is later than that of every message stored
        // before it on this node: two deliveries racing cannot store the earlier id last, after
        // the conversation already answered the later one.
        let arrival = self.chat_arrivals.of(&conversation.id);
        let _arriving = arrival.lock().await;
        let at = now();
        let inbound = ChatMessage {
            id: MessageId::new(),
            conversation_id: conversation.id,
            direction: Direction::Inbound,
            channel_message_id: incoming.channel_message_id.clone(),
            body: MessageBody {
                text: incoming.text.clone(),
                location: incoming.location,
                timezone: incoming.timezone.as_ref().map(|_| timezone),
                ..MessageBody::default()
            },
            processed: false,
            created_at: at,
        };
        let duplicate = !self.store().record_message(&inbound).await?;
        if !duplicate {
            self.signal_chat(conversation.id);
        }
        Ok(ChatTurn { conversation_id: conversation.id, inbound_id: inbound.id, duplicate, replies: Vec::new() })
    }

    /// A channel's webhook: authenticate and read it, store each message (once per channel
    /// message id), acknowledge, and answer in the background; the caller answers the channel
    /// at once. Answers how many messages were new.
    pub async fn chat_webhook(&self, channel: &str, headers: &[(String, String)], body: &[u8]) -> KernelResult<usize> {
        let adapter = self.chat_channel(channel)?;
        let inbound = adapter.read_webhook(headers, body).await.map_err(|error| channel_error(error, "body"))?;
        let mut n_new = 0;
        for message in inbound {
            let driver = self.driver_for_external_subject(channel, &message.external_user, None).await?;
            let accepted = self
                .accept_chat(Incoming {
                    channel: channel.to_owned(),
                    external_user: message.external_user.clone(),
                    driver_id: driver.id,
                    channel_message_id: Some(message.message_id.clone()),
                    text: message.text.clone(),
                    location: message.location,
                    timezone: adapter.default_timezone().map(str::to_owned),
                })
                .await;
            // One message berth cannot take (too long, a location off the map) must not hold
            // back the others of its webhook, which the channel would send again and again.
            let turn = match accepted {
                Err(KernelError::Validation(error)) => {
                    tracing::warn!(channel, message = %message.message_id, %error, "a chat message was refused");
                    continue;
                }
                other => other?,
            };
            if let Err(error) = adapter.acknowledge(&message).await {
                tracing::warn!(channel, error = %error, "acknowledging a chat message failed");
            }
            if turn.duplicate {
                continue;
            }
            n_new += 1;
            let kernel = self.clone();
            let channel = channel.to_owned();
            let external_user = message.external_user;
            tokio::spawn(async move {
                if let Err(error) = kernel.answer_and_deliver(&channel, turn.conversation_id, &external_user).await {
                    tracing::warn!(channel, conversation = %turn.conversation_id, error = %error, "answering a chat message failed");
                }
            });
        }
        Ok(n_new)
    }

    /// A channel's subscription check of its webhook URL: the body to answer with.
    pub async fn chat_subscription(&self, channel: &str, query: &[(String, String)]) -> KernelResult<String> {
        let adapter = self.chat_channel(channel)?;
        adapter.verify_subscription(query).await.map_err(|error| channel_error(error, "query"))
    }

    /// The channel adapter of this name: a built-in one, else a chat-channel plugin of that id.
    fn chat_channel(&self, name: &str) -> KernelResult<std::sync::Arc<dyn ChatChannel>> {
        self.chat_channels
            .iter()
            .find(|channel| channel.name() == name)
            .cloned()
            .or_else(|| self.plugins().chat_channel(name))
            .ok_or_else(|| KernelError::not_found("chat channel"))
    }

    /// A chat channel replies go out through.
    pub fn with_chat_channel(mut self, channel: std::sync::Arc<dyn ChatChannel>) -> Self {
        let mut channels = self.chat_channels.to_vec();
        channels.retain(|known| known.name() != channel.name());
        channels.push(channel);
        self.chat_channels = channels.into();
        self
    }

    /// Answers the conversation's waiting messages and sends the replies to its user through
    /// its channel.
    async fn answer_and_deliver(
        &self,
        channel: &str,
        conversation: ConversationId,
        external_user: &str,
    ) -> KernelResult<()> {
        let adapter = self.chat_channel(channel)?;
        for (reply, inbound_at) in self.process_conversation(conversation).await? {
            if let Err(error) = deliver(adapter.as_ref(), external_user, &reply.body, Some(inbound_at)).await {
                tracing::warn!(channel, conversation = %conversation, error = %error, "sending a chat reply failed");
            }
        }
        Ok(())
    }

    /// Tells the listeners of a conversation (web chat streams) it has new messages.
    pub(crate) fn signal_chat(&self, conversation: ConversationId) {
        // No listener is not an error.
        let _ = self.chat_signal.send(conversation);
    }

    /// Conversations with new messages on this node, as they come (a lagging receiver misses
    /// some; its reader looks at the store again).
    pub fn chat_changes(&self) -> tokio::sync::broadcast::Receiver<ConversationId> {
        self.chat_signal.subscribe()
    }

    /// A message from us outside a turn (a person's reply after a handoff, a reminder): stored
    /// once per `key`, then sent through the conversation's channel (the web chat reads it from
    /// the store). Answers the stored message, or `None` when `key` was stored before, and
    /// whether the channel took it.
    pub(crate) async fn post_to_conversation(
        &self,
        conversation: &Conversation,
        body: MessageBody,
        key: Option<String>,
    ) -> KernelResult<Option<(ChatMessage, Result<(), ChannelError>)>> {
        let message = ChatMessage {
            id: MessageId::new(),
            conversation_id: conversation.id,
            direction: Direction::Outbound,
            channel_message_id: key,
            body,
            processed: true,
            created_at: now(),
        };
        if !self.store().record_message(&message).await? {
            return Ok(None);
        }
        self.signal_chat(conversation.id);
        if conversation.channel == "web" {
            return Ok(Some((message, Ok(()))));
        }
        let last_inbound = self.store().last_inbound_at(conversation.id).await?;
        let sent = match self.chat_channel(&conversation.channel) {
            Ok(adapter) => deliver(adapter.as_ref(), &conversation.external_user, &message.body, last_inbound).await,
            Err(_) => Err(ChannelError::Unavailable(format!("the {} channel is not configured", conversation.channel))),
        };
        if let Err(error) = &sent {
            tracing::warn!(channel = %conversation.channel, conversation = %conversation.id, error = %error, "sending a chat message failed");
        }
        Ok(Some((message, sent)))
    }

    /// Answers the messages stored but never answered (the node that took them stopped first),
    /// and sends the replies through their channels. Run at start-up; answers how many
    /// conversations it answered.
    pub async fn answer_waiting_conversations(&self) -> KernelResult<usize> {
        let mut answered = 0;
        for id in self.store().conversations_waiting(1000).await? {
            let Some(conversation) = self.store().get_conversation(id).await? else { continue };
            let outcome = if conversation.channel == "web" {
                self.process_conversation(id).await.map(|_| ())
            } else {
                self.answer_and_deliver(&conversation.channel, id, &conversation.external_user).await
            };
            match outcome {
                Ok(()) => answered += 1,
                Err(error) => {
                    tracing::warn!(conversation = %id, error = %error, "answering a waiting conversation failed");
                }
            }
        }
        Ok(answered)
    }

    /// The replies stored for an inbound message (whichever node answered it).
    async fn replies_to(&self, conversation: ConversationId, inbound: MessageId) -> KernelResult<Vec<ChatMessage>> {
        let messages = self.store().list_messages(conversation, Some(inbound), 200).await?;
        Ok(messages.into_iter().filter(|message| message.body.in_reply_to == Some(inbound)).collect())
    }

    /// Answers every stored, unanswered message of the conversation, oldest first, under its
    /// lease; answers the replies it made, each with when the message it answers came in.
    async fn process_conversation(&self, id: ConversationId) -> KernelResult<Vec<(ChatMessage, DateTime<Utc>)>> {
        let holder = self.take_conversation(id).await?;
        let outcome = self.answer_waiting(id).await;
        self.store().release_conversation(id, &holder).await?;
        outcome
    }

    /// Waits for the conversation's lease (up to [`LEASE_WAIT`]); answers the holder name to
    /// give it back with.
    pub(crate) async fn take_conversation(&self, id: ConversationId) -> KernelResult<String> {
        let holder = MessageId::new().to_string();
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        let mut pause = StdDuration::from_millis(5);
        loop {
            let at = now();
            if self.store().lease_conversation(id, &holder, at + Duration::seconds(LEASE_SECS), at).await? {
                return Ok(holder);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(KernelError::Unavailable("the conversation is busy; try again".into()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(StdDuration::from_millis(200));
        }
    }

    async fn answer_waiting(&self, id: ConversationId) -> KernelResult<Vec<(ChatMessage, DateTime<Utc>)>> {
        let mut answered = Vec::new();
        let mut conversation =
            self.store().get_conversation(id).await?.ok_or_else(|| KernelError::not_found("conversation"))?;
        for inbound in self.store().unprocessed_inbound(id).await? {
            if let Some(timezone) = &inbound.body.timezone {
                conversation.timezone = timezone.clone();
            }
            let at = now();
            // "Tomorrow at 9" means the day after the message was written, even when it is
            // answered later (by the start-up pass after a crash).
            let understanding = self.understand_message(&inbound, inbound.created_at, &conversation.timezone);
            let bodies = self.dialogue_turn(&mut conversation, &understanding, inbound.body.location, at).await;
            if conversation.handoff && conversation.handoff_since.is_none() {
                conversation.handoff_since = Some(inbound.created_at);
            }
            conversation.updated_at = at;
            let replies: Vec<ChatMessage> = bodies
                .into_iter()
                .map(|mut body| {
                    body.in_reply_to = Some(inbound.id);
                    body.intent = Some(understanding.intent.name.clone());
                    ChatMessage {
                        id: MessageId::new(),
                        conversation_id: id,
                        direction: Direction::Outbound,
                        channel_message_id: None,
                        body,
                        processed: true,
                        created_at: at,
                    }
                })
                .collect();
            self.store().save_turn(&conversation, inbound.id, &replies).await?;
            self.signal_chat(id);
            answered.extend(replies.into_iter().map(|reply| (reply, inbound.created_at)));
        }
        Ok(answered)
    }

    /// What an inbound message means; a shared location needs no model.
    fn understand_message(&self, inbound: &ChatMessage, at: DateTime<Utc>, timezone: &str) -> Understanding {
        let unclear = Understanding {
            text: inbound.body.text.clone(),
            intent: IntentScore { name: crate::language::FALLBACK_INTENT.to_owned(), confidence: 0.0 },
            intent_ranking: Vec::new(),
            entities: Vec::new(),
        };
        if inbound.body.text.trim().is_empty() {
            return Understanding { intent: IntentScore { name: "inform".into(), confidence: 1.0 }, ..unclear };
        }
        let (Some(language), Ok(timezone)) = (self.language.as_ref(), parse_timezone(timezone)) else {
            return unclear;
        };
        language.understand(&inbound.body.text, at, timezone)
    }

    /// A conversation of the calling driver, with its messages after `after`.
    pub async fn chat_messages(
        &self,
        caller: &Principal,
        conversation: ConversationId,
        after: Option<MessageId>,
        limit: u32,
    ) -> KernelResult<(Conversation, Vec<ChatMessage>)> {
        let found = self.store().get_conversation(conversation).await?;
        let conversation = match (found, caller) {
            (Some(found), Principal::Driver { driver_id }) if found.driver_id == *driver_id => found,
            _ => return Err(KernelError::not_found("conversation")),
        };
        let messages = self.store().list_messages(conversation.id, after, limit.clamp(1, 200)).await?;
        Ok((conversation, messages))
    }
}

/// A channel's refusal as the kernel's error; `what` names the part of the request at fault.
fn channel_error(error: ChannelError, what: &str) -> KernelError {
    match error {
        ChannelError::Unauthenticated(message) => KernelError::Unauthenticated(message),
        ChannelError::Malformed(message) => ValidationError::new(what, message).into(),
        ChannelError::Unavailable(message) => KernelError::Unavailable(message),
    }
}

/// How often a send the channel could not take now is tried, and the pauses in between.
const SEND_PAUSES: [StdDuration; 2] = [StdDuration::from_millis(250), StdDuration::from_secs(1)];

/// Sends through a channel, trying again after a pause when it was unavailable.
async fn deliver(
    channel: &dyn ChatChannel,
    external_user: &str,
    body: &MessageBody,
    last_inbound: Option<DateTime<Utc>>,
) -> Result<(), ChannelError> {
    let mut pauses = SEND_PAUSES.iter();
    loop {
        match channel.send(external_user, body, last_inbound).await {
            Err(ChannelError::Unavailable(reason)) => match pauses.next() {
                Some(pause) => {
                    tracing::debug!(channel = channel.name(), %reason, "chat channel unavailable; trying again");
                    tokio::time::sleep(*pause).await;
                }
                None => return Err(ChannelError::Unavailable(reason)),
            },
            other => return other,
        }
    }
}
