//! The kernel's `ConversationStore`: conversations over chat channels, their leases, and their
//! messages. Dialogue state and message bodies are stored as JSON text; a redelivered inbound
//! message is refused by the `(conversation_id, channel_message_id)` unique index.

use async_trait::async_trait;
use berth_kernel::StoreError;
use berth_kernel::conversation::{ChatMessage, Conversation, Direction};
use berth_kernel::ids::{ConversationId, DriverId, MessageId, OperatorId};
use berth_kernel::ports::{ConversationStore, StoreResult};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Condition, Expr, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, TransactionTrait};

use crate::entity::{chat_message, conversation};
use crate::{SqlStore, backend, corrupt};

fn conversation_to_row(conversation: &Conversation) -> conversation::Model {
    conversation::Model {
        id: conversation.id.as_uuid(),
        channel: conversation.channel.clone(),
        external_user: conversation.external_user.clone(),
        driver_id: conversation.driver_id.as_uuid(),
        state: conversation.state.to_string(),
        timezone: conversation.timezone.clone(),
        handoff: conversation.handoff,
        handoff_operator_id: conversation.handoff_operator.map(|operator| operator.as_uuid()),
        handoff_since: conversation.handoff_since,
        lease_holder: None,
        lease_until: None,
        created_at: conversation.created_at,
        updated_at: conversation.updated_at,
    }
}

fn conversation_from_row(row: conversation::Model) -> StoreResult<Conversation> {
    Ok(Conversation {
        id: ConversationId::from_uuid(row.id),
        state: serde_json::from_str(&row.state)
            .map_err(|error| corrupt("conversations", row.id, format!("state: {error}")))?,
        channel: row.channel,
        external_user: row.external_user,
        driver_id: DriverId::from_uuid(row.driver_id),
        timezone: row.timezone,
        handoff: row.handoff,
        handoff_operator: row.handoff_operator_id.map(OperatorId::from_uuid),
        handoff_since: row.handoff_since,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn message_to_row(message: &ChatMessage) -> chat_message::Model {
    chat_message::Model {
        id: message.id.as_uuid(),
        conversation_id: message.conversation_id.as_uuid(),
        direction: message.direction.as_str().to_owned(),
        channel_message_id: message.channel_message_id.clone(),
        body: serde_json::to_string(&message.body).expect("invariant: a message body serialises to JSON"),
        processed: message.processed,
        created_at: message.created_at,
    }
}

fn message_from_row(row: chat_message::Model) -> StoreResult<ChatMessage> {
    Ok(ChatMessage {
        id: MessageId::from_uuid(row.id),
        conversation_id: ConversationId::from_uuid(row.conversation_id),
        direction: Direction::parse(&row.direction)
            .ok_or_else(|| corrupt("chat_messages", row.id, format!("direction '{}'", row.direction)))?,
        body: serde_json::from_str(&row.body)
            .map_err(|error| corrupt("chat_messages", row.id, format!("body: {error}")))?,
        channel_message_id: row.channel_message_id,
        processed: row.processed,
        created_at: row.created_at,
    })
}

#[async_trait]
impl ConversationStore for SqlStore {
    async fn find_or_create_conversation(&self, new: &Conversation) -> StoreResult<Conversation> {
        let inserted = conversation::Entity::insert(conversation_to_row(new).into_active_model())
            .on_conflict(
                OnConflict::columns([conversation::Column::Channel, conversation::Column::ExternalUser])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(backend)?;
        if inserted == 1 {
            return Ok(new.clone());
        }
        conversation::Entity::find()
            .filter(conversation::Column::Channel.eq(new.channel.as_str()))
            .filter(conversation::Column::ExternalUser.eq(new.external_user.as_str()))
            .one(&self.db)
            .await
            .map_err(backend)?
            .map(conversation_from_row)
            .transpose()?
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "conversation on {} with {} was neither inserted nor found",
                    new.channel, new.external_user
                ))
            })
    }

    async fn get_conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>> {
        conversation::Entity::find_by_id(id.as_uuid())
            .one(&self.db)
            .await
            .map_err(backend)?
            .map(conversation_from_row)
            .transpose()
    }

    async fn list_conversations(&self, driver: DriverId) -> StoreResult<Vec<Conversation>> {
        conversation::Entity::find()
            .filter(conversation::Column::DriverId.eq(driver.as_uuid()))
            .order_by_asc(conversation::Column::Id)
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(conversation_from_row)
            .collect()
    }

    async fn lease_conversation(
        &self,
        id: ConversationId,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let takeable = Condition::any()
            .add(conversation::Column::LeaseHolder.is_null())
            .add(conversation::Column::LeaseUntil.is_null())
            .add(conversation::Column::LeaseUntil.lt(now))
            .add(conversation::Column::LeaseHolder.eq(holder));
        let result = conversation::Entity::update_many()
            .col_expr(conversation::Column::LeaseHolder, Expr::value(holder))
            .col_expr(conversation::Column::LeaseUntil, Expr::value(until))
            .filter(conversation::Column::Id.eq(id.as_uuid()))
            .filter(takeable)
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(result.rows_affected == 1)
    }

    async fn release_conversation(&self, id: ConversationId, holder: &str) -> StoreResult<()> {
        conversation::Entity::update_many()
            .col_expr(conversation::Column::LeaseHolder, Expr::value(Option::<String>::None))
            .col_expr(conversation::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(conversation::Column::Id.eq(id.as_uuid()))
            .filter(conversation::Column::LeaseHolder.eq(holder))
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn record_message(&self, message: &ChatMessage) -> StoreResult<bool> {
        let inserted = chat_message::Entity::insert(message_to_row(message).into_active_model())
            .on_conflict(
                OnConflict::columns([chat_message::Column::ConversationId, chat_message::Column::ChannelMessageId])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(backend)?;
        Ok(inserted == 1)
    }

    async fn unprocessed_inbound(&self, conversation: ConversationId) -> StoreResult<Vec<ChatMessage>> {
        chat_message::Entity::find()
            .filter(chat_message::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(chat_message::Column::Direction.eq(Direction::Inbound.as_str()))
            .filter(chat_message::Column::Processed.eq(false))
            .order_by_asc(chat_message::Column::Id)
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(message_from_row)
            .collect()
    }

    async fn save_turn(
        &self,
        conversation: &Conversation,
        inbound: MessageId,
        replies: &[ChatMessage],
    ) -> StoreResult<()> {
        let row = conversation_to_row(conversation);
        let txn = self.db.begin().await.map_err(backend)?;
        conversation::Entity::update_many()
            .col_expr(conversation::Column::State, Expr::value(row.state))
            .col_expr(conversation::Column::Timezone, Expr::value(row.timezone))
            .col_expr(conversation::Column::Handoff, Expr::value(row.handoff))
            .col_expr(conversation::Column::HandoffOperatorId, Expr::value(row.handoff_operator_id))
            .col_expr(conversation::Column::HandoffSince, Expr::value(row.handoff_since))
            .col_expr(conversation::Column::UpdatedAt, Expr::value(row.updated_at))
            .filter(conversation::Column::Id.eq(row.id))
            .exec(&txn)
            .await
            .map_err(backend)?;
        chat_message::Entity::update_many()
            .col_expr(chat_message::Column::Processed, Expr::value(true))
            .filter(chat_message::Column::Id.eq(inbound.as_uuid()))
            .filter(chat_message::Column::ConversationId.eq(row.id))
            .exec(&txn)
            .await
            .map_err(backend)?;
        if !replies.is_empty() {
            let rows = replies.iter().map(|reply| message_to_row(reply).into_active_model());
            chat_message::Entity::insert_many(rows).exec_without_returning(&txn).await.map_err(backend)?;
        }
        txn.commit().await.map_err(backend)
    }

    async fn last_inbound_at(&self, conversation: ConversationId) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(chat_message::Entity::find()
            .filter(chat_message::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(chat_message::Column::Direction.eq(Direction::Inbound.as_str()))
            .order_by_desc(chat_message::Column::Id)
            .one(&self.db)
            .await
            .map_err(backend)?
            .map(|row| row.created_at))
    }

    async fn clear_handoff(&self, conversation: ConversationId) -> StoreResult<()> {
        conversation::Entity::update_many()
            .col_expr(conversation::Column::Handoff, Expr::value(false))
            .col_expr(conversation::Column::HandoffOperatorId, Expr::value(Option::<uuid::Uuid>::None))
            .col_expr(conversation::Column::HandoffSince, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(conversation::Column::Id.eq(conversation.as_uuid()))
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn message_key_exists(&self, conversation: ConversationId, key: &str) -> StoreResult<bool> {
        let found = chat_message::Entity::find()
            .filter(chat_message::Column::ConversationId.eq(conversation.as_uuid()))
            .filter(chat_message::Column::ChannelMessageId.eq(key))
            .one(&self.db)
            .await
            .map_err(backend)?;
        Ok(found.is_some())
    }

    async fn latest_messages(
        &self,
        conversation: ConversationId,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> StoreResult<Vec<ChatMessage>> {
        let mut select =
            chat_message::Entity::find().filter(chat_message::Column::ConversationId.eq(conversation.as_uuid()));
        if let Some(since) = since {
            select = select.filter(chat_message::Column::CreatedAt.gte(since));
        }
        let mut messages: Vec<ChatMessage> = select
            .order_by_desc(chat_message::Column::Id)
            .limit(u64::from(limit))
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(message_from_row)
            .collect::<StoreResult<_>>()?;
        messages.reverse();
        Ok(messages)
    }

    async fn list_handoffs(&self, operator: Option<OperatorId>, limit: u32) -> StoreResult<Vec<Conversation>> {
        let whose = match operator {
            Some(operator) => conversation::Column::HandoffOperatorId.eq(operator.as_uuid()),
            None => conversation::Column::HandoffOperatorId.is_null(),
        };
        conversation::Entity::find()
            .filter(whose)
            .filter(conversation::Column::Handoff.eq(true))
            .order_by_desc(conversation::Column::UpdatedAt)
            .limit(u64::from(limit))
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(conversation_from_row)
            .collect()
    }

    async fn conversations_waiting(&self, limit: u32) -> StoreResult<Vec<ConversationId>> {
        let rows: Vec<uuid::Uuid> = chat_message::Entity::find()
            .select_only()
            .column(chat_message::Column::ConversationId)
            .distinct()
            .filter(chat_message::Column::Direction.eq(Direction::Inbound.as_str()))
            .filter(chat_message::Column::Processed.eq(false))
            .limit(u64::from(limit))
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(backend)?;
        Ok(rows.into_iter().map(ConversationId::from_uuid).collect())
    }

    async fn list_messages(
        &self,
        conversation: ConversationId,
        after: Option<MessageId>,
        limit: u32,
    ) -> StoreResult<Vec<ChatMessage>> {
        let mut select =
            chat_message::Entity::find().filter(chat_message::Column::ConversationId.eq(conversation.as_uuid()));
        if let Some(after) = after {
            select = select.filter(chat_message::Column::Id.gt(after.as_uuid()));
        }
        select
            .order_by_asc(chat_message::Column::Id)
            .limit(u64::from(limit))
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(message_from_row)
            .collect()
    }
}
