//! Handoffs: conversations a driver asked a person to pick up. Each goes to the team of the
//! operator whose car park it was about (the platform's own team when it was about none); that
//! team reads it, replies through the driver's channel, and hands it back to the bot.

use crate::auth::{Access, Principal};
use crate::chat::ChannelError;
use crate::conversation::{ChatMessage, Conversation, MessageBody};
use crate::ids::{ConversationId, OperatorId};
use crate::service::operator_scope;
use crate::{Kernel, KernelError, KernelResult, ValidationError};

/// Most messages shown with each handed-off conversation in a list.
const RECENT_MESSAGES: usize = 20;
/// Longest reply a person may send (WhatsApp's text limit).
pub const MAX_REPLY_CHARS: usize = 4096;
/// Longest name a reply may be signed with.
const MAX_AUTHOR_CHARS: usize = 60;

/// A person's reply and whether the driver's channel took it.
#[derive(Debug, Clone)]
pub struct HandoffReply {
    pub message: ChatMessage,
    /// Why the channel refused or could not take it; the message is stored either way.
    pub delivery_error: Option<ChannelError>,
}

impl Kernel {
    /// Whose handoffs the caller sees: an operator's keys see their team's, the platform admin
    /// the platform's.
    fn handoff_team(caller: &Principal) -> KernelResult<Option<OperatorId>> {
        match caller {
            Principal::PlatformAdmin { .. } => Ok(None),
            other => operator_scope(other, Access::Read).map(Some),
        }
    }

    /// A conversation handed to the caller's team, or not found.
    async fn handed_off(&self, caller: &Principal, id: ConversationId) -> KernelResult<Conversation> {
        let team = Self::handoff_team(caller)?;
        match self.store().get_conversation(id).await? {
            Some(conversation) if conversation.handoff && conversation.handoff_operator == team => Ok(conversation),
            _ => Err(KernelError::not_found("conversation")),
        }
    }

    /// The conversations handed to the caller's team, most recently active first, each with
    /// its latest messages.
    pub async fn list_handoffs(
        &self,
        caller: &Principal,
        limit: u32,
    ) -> KernelResult<Vec<(Conversation, Vec<ChatMessage>)>> {
        let team = Self::handoff_team(caller)?;
        let mut handoffs = Vec::new();
        for conversation in self.store().list_handoffs(team, limit.clamp(1, 100)).await? {
            let mut messages = self.store().list_messages(conversation.id, None, 200).await?;
            let older = messages.len().saturating_sub(RECENT_MESSAGES);
            messages.drain(..older);
            handoffs.push((conversation, messages));
        }
        Ok(handoffs)
    }

    /// A conversation handed to the caller's team, with its messages (200 at most, oldest first).
    pub async fn handoff_conversation(
        &self,
        caller: &Principal,
        id: ConversationId,
    ) -> KernelResult<(Conversation, Vec<ChatMessage>)> {
        let conversation = self.handed_off(caller, id).await?;
        let messages = self.store().list_messages(id, None, 200).await?;
        Ok((conversation, messages))
    }

    /// A person's reply to a handed-off conversation, sent through the driver's channel
    /// (outside WhatsApp's 24-hour window, as its template).
    pub async fn reply_to_handoff(
        &self,
        caller: &Principal,
        id: ConversationId,
        text: &str,
        author: Option<&str>,
    ) -> KernelResult<HandoffReply> {
        let conversation = self.handed_off(caller, id).await?;
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_REPLY_CHARS {
            return Err(ValidationError::new("text", format!("1 to {MAX_REPLY_CHARS} characters")).into());
        }
        let author = author.map(str::trim).filter(|author| !author.is_empty()).unwrap_or("Car park team");
        if author.chars().count() > MAX_AUTHOR_CHARS {
            return Err(ValidationError::new("author", format!("at most {MAX_AUTHOR_CHARS} characters")).into());
        }
        let body = MessageBody { text: text.to_owned(), author: Some(author.to_owned()), ..MessageBody::default() };
        let (message, sent) = self
            .post_to_conversation(&conversation, body, None)
            .await?
            .ok_or_else(|| KernelError::Conflict("the reply was stored already".into()))?;
        Ok(HandoffReply { message, delivery_error: sent.err() })
    }

    /// Hands a conversation back to the bot.
    pub async fn close_handoff(&self, caller: &Principal, id: ConversationId) -> KernelResult<Conversation> {
        let mut conversation = self.handed_off(caller, id).await?;
        // Under the conversation's lease, so a turn being answered cannot write the flag back.
        let holder = self.take_conversation(id).await?;
        let cleared = self.store().set_handoff(id, false, None).await;
        self.store().release_conversation(id, &holder).await?;
        cleared?;
        conversation.handoff = false;
        conversation.handoff_operator = None;
        self.signal_chat(id);
        Ok(conversation)
    }
}
