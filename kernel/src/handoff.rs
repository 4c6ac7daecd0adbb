//! Handoffs: conversations a driver asked a person to pick up. Each goes to the team of the
//! operator whose car park it was about (the platform's own team when it was about none); that
//! team reads it from the driver's request on (any key of the operator), replies through the
//! driver's channel and hands it back to the bot (an operator admin key).

use crate::auth::{Access, Principal};
use crate::chat::ChannelError;
use crate::conversation::{ChatMessage, Conversation, MessageBody};
use crate::ids::{ConversationId, OperatorId};
use crate::service::operator_scope;
use crate::{Kernel, KernelError, KernelResult, ValidationError};

/// Most messages shown with each handed-off conversation in a list.
const RECENT_MESSAGES: u32 = 20;
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
    /// Whose handoffs the caller reads (any key of an operator: its team's) or answers (an
    /// operator admin key); the platform admin has the platform's.
    fn handoff_team(caller: &Principal, access: Access) -> KernelResult<Option<OperatorId>> {
        match caller {
            Principal::PlatformAdmin { .. } => Ok(None),
            other => operator_scope(other, access).map(Some),
        }
    }

    /// A conversation handed to the caller's team, or not found.
    async fn handed_off(&self, caller: &Principal, id: ConversationId, access: Access) -> KernelResult<Conversation> {
        let team = Self::handoff_team(caller, access)?;
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
        let team = Self::handoff_team(caller, Access::Read)?;
        let mut handoffs = Vec::new();
        for conversation in self.store().list_handoffs(team, limit.clamp(1, 100)).await? {
            let messages =
                self.store().latest_messages(conversation.id, conversation.handoff_since, RECENT_MESSAGES).await?;
            handoffs.push((conversation, messages));
        }
        Ok(handoffs)
    }

    /// A conversation handed to the caller's team, with its messages since the driver asked
    /// for a person (the latest 200, oldest first). What came before may concern another
    /// operator's car parks, so the team does not see it.
    pub async fn handoff_conversation(
        &self,
        caller: &Principal,
        id: ConversationId,
    ) -> KernelResult<(Conversation, Vec<ChatMessage>)> {
        let conversation = self.handed_off(caller, id, Access::Read).await?;
        let messages = self.store().latest_messages(id, conversation.handoff_since, 200).await?;
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
        let conversation = self.handed_off(caller, id, Access::Write).await?;
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
        let mut conversation = self.handed_off(caller, id, Access::Write).await?;
        // Under the conversation's lease, so a turn being answered cannot write the flag back.
        let holder = self.take_conversation(id).await?;
        let cleared = self.store().clear_handoff(id).await;
        self.store().release_conversation(id, &holder).await?;
        cleared?;
        conversation.handoff = false;
        conversation.handoff_operator = None;
        conversation.handoff_since = None;
        self.signal_chat(id);
        Ok(conversation)
    }
}
