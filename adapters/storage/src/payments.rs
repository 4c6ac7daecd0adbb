//! The kernel's `PaymentStore`: payments, the outbox of provider calls, the webhook inbox and
//! receipt lines. A [`BookingChange`] is one transaction, checked against the booking's version,
//! so two changes of one booking never both win.

use async_trait::async_trait;
use berth_kernel::StoreError;
use berth_kernel::booking::{Booking, BookingStatus};
use berth_kernel::ids::{BookingId, DriverId, OperatorId, PaymentCommandId, PaymentId, ReceiptLineId};
use berth_kernel::payment::{
    BookingChange, CommandKind, CommandStatus, DUPLICATE_EVENT, Payment, PaymentCommand, PaymentPurpose, PaymentStatus,
    ReceiptKind, ReceiptLine, STALE,
};
use berth_kernel::ports::{PaymentStore, StoreResult};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Condition, Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
};

use crate::bookings::{from_row as booking_from_row, insert_error, refuse_overlap, to_row as booking_to_row};
use crate::entity::{booking, driver, payment, payment_command, payment_webhook, receipt_line, vehicle};
use crate::{SqlStore, backend, corrupt};

fn payment_row(payment: &Payment) -> payment::Model {
    payment::Model {
        id: payment.id.as_uuid(),
        booking_id: payment.booking_id.as_uuid(),
        operator_id: payment.operator_id.as_uuid(),
        driver_id: payment.driver_id.as_uuid(),
        purpose: payment.purpose.as_str().to_owned(),
        label: payment.label.clone(),
        provider: payment.provider.clone(),
        provider_ref: payment.provider_ref.clone(),
        status: payment.status.as_str().to_owned(),
        amount_minor: payment.amount_minor,
        captured_minor: payment.captured_minor,
        refunded_minor: payment.refunded_minor,
        currency: payment.currency.clone(),
        payment_method: payment.payment_method.clone(),
        action_url: payment.action_url.clone(),
        capture_on_authorize: payment.capture_on_authorize,
        failure: payment.failure.clone(),
        reverts_end_to: payment.reverts_end_to,
        created_at: payment.created_at,
        updated_at: payment.updated_at,
    }
}

fn payment_from_row(row: payment::Model) -> StoreResult<Payment> {
    Ok(Payment {
        id: PaymentId::from_uuid(row.id),
        booking_id: BookingId::from_uuid(row.booking_id),
        operator_id: OperatorId::from_uuid(row.operator_id),
        driver_id: DriverId::from_uuid(row.driver_id),
        purpose: PaymentPurpose::parse(&row.purpose)
            .ok_or_else(|| corrupt("payments", row.id, format!("purpose '{}'", row.purpose)))?,
        label: row.label,
        provider: row.provider,
        provider_ref: row.provider_ref,
        status: PaymentStatus::parse(&row.status)
            .ok_or_else(|| corrupt("payments", row.id, format!("status '{}'", row.status)))?,
        amount_minor: row.amount_minor,
        captured_minor: row.captured_minor,
        refunded_minor: row.refunded_minor,
        currency: row.currency,
        payment_method: row.payment_method,
        action_url: row.action_url,
        capture_on_authorize: row.capture_on_authorize,
        failure: row.failure,
        reverts_end_to: row.reverts_end_to,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn command_row(command: &PaymentCommand) -> payment_command::Model {
    payment_command::Model {
        id: command.id.as_uuid(),
        payment_id: command.payment_id.as_uuid(),
        booking_id: command.booking_id.as_uuid(),
        kind: command.kind.as_str().to_owned(),
        amount_minor: command.amount_minor,
        idempotency_key: command.idempotency_key.clone(),
        status: command.status.as_str().to_owned(),
        attempts: i32::try_from(command.attempts).unwrap_or(i32::MAX),
        next_attempt_at: command.next_attempt_at,
        last_error: command.last_error.clone(),
        created_at: command.created_at,
        updated_at: command.updated_at,
    }
}

fn command_from_row(row: payment_command::Model) -> StoreResult<PaymentCommand> {
    Ok(PaymentCommand {
        id: PaymentCommandId::from_uuid(row.id),
        payment_id: PaymentId::from_uuid(row.payment_id),
        booking_id: BookingId::from_uuid(row.booking_id),
        kind: CommandKind::parse(&row.kind)
            .ok_or_else(|| corrupt("payment_commands", row.id, format!("kind '{}'", row.kind)))?,
        amount_minor: row.amount_minor,
        idempotency_key: row.idempotency_key,
        status: CommandStatus::parse(&row.status)
            .ok_or_else(|| corrupt("payment_commands", row.id, format!("status '{}'", row.status)))?,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        next_attempt_at: row.next_attempt_at,
        last_error: row.last_error,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn line_row(line: &ReceiptLine) -> receipt_line::Model {
    receipt_line::Model {
        id: line.id.as_uuid(),
        booking_id: line.booking_id.as_uuid(),
        payment_id: line.payment_id.as_uuid(),
        kind: line.kind.as_str().to_owned(),
        description: line.description.clone(),
        amount_minor: line.amount_minor,
        currency: line.currency.clone(),
        provider: line.provider.clone(),
        provider_ref: line.provider_ref.clone(),
        at: line.at,
    }
}

fn line_from_row(row: receipt_line::Model) -> StoreResult<ReceiptLine> {
    Ok(ReceiptLine {
        id: ReceiptLineId::from_uuid(row.id),
        booking_id: BookingId::from_uuid(row.booking_id),
        payment_id: PaymentId::from_uuid(row.payment_id),
        kind: ReceiptKind::parse(&row.kind)
            .ok_or_else(|| corrupt("receipt_lines", row.id, format!("kind '{}'", row.kind)))?,
        description: row.description,
        amount_minor: row.amount_minor,
        currency: row.currency,
        provider: row.provider,
        provider_ref: row.provider_ref,
        at: row.at,
    })
}

/// Inserts or updates payments and commands, and inserts receipt lines, inside `txn`. A new
/// command whose idempotency key exists already is the same provider call: it is not added.
pub(crate) async fn write_payments(
    txn: &DatabaseTransaction,
    payments: &[Payment],
    commands: &[PaymentCommand],
    receipt: &[ReceiptLine],
) -> StoreResult<()> {
    for payment in payments {
        payment::Entity::insert(payment_row(payment).into_active_model())
            .on_conflict(
                OnConflict::column(payment::Column::Id)
                    .update_columns([
                        payment::Column::Provider,
                        payment::Column::ProviderRef,
                        payment::Column::Status,
                        payment::Column::AmountMinor,
                        payment::Column::CapturedMinor,
                        payment::Column::RefundedMinor,
                        payment::Column::ActionUrl,
                        payment::Column::Failure,
                        payment::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await
            .map_err(backend)?;
    }
    for command in commands {
        let row = command_row(command);
        let updated = payment_command::Entity::update_many()
            .col_expr(payment_command::Column::Status, Expr::value(row.status.clone()))
            .col_expr(payment_command::Column::Attempts, Expr::value(row.attempts))
            .col_expr(payment_command::Column::NextAttemptAt, Expr::value(row.next_attempt_at))
            .col_expr(payment_command::Column::LastError, Expr::value(row.last_error.clone()))
            .col_expr(payment_command::Column::UpdatedAt, Expr::value(row.updated_at))
            .filter(payment_command::Column::Id.eq(row.id))
            .exec(txn)
            .await
            .map_err(backend)?;
        if updated.rows_affected == 0 {
            payment_command::Entity::insert(row.into_active_model())
                .on_conflict(OnConflict::column(payment_command::Column::IdempotencyKey).do_nothing().to_owned())
                .exec_without_returning(txn)
                .await
                .map_err(backend)?;
        }
    }
    for line in receipt {
        receipt_line::Entity::insert(line_row(line).into_active_model())
            .exec_without_returning(txn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// Rewrites a booking if it still has `expected` as its version.
async fn update_booking(txn: &DatabaseTransaction, booking: &Booking, expected: i64) -> StoreResult<()> {
    let row = booking_to_row(booking);
    let result = booking::Entity::update_many()
        .col_expr(booking::Column::EndAt, Expr::value(row.end_at))
        .col_expr(booking::Column::Status, Expr::value(row.status))
        .col_expr(booking::Column::PriceMinor, Expr::value(row.price_minor))
        .col_expr(booking::Column::HoldExpiresAt, Expr::value(row.hold_expires_at))
        .col_expr(booking::Column::ArrivedAt, Expr::value(row.arrived_at))
        .col_expr(booking::Column::DepartedAt, Expr::value(row.departed_at))
        .col_expr(booking::Column::CancelReason, Expr::value(row.cancel_reason))
        .col_expr(booking::Column::Version, Expr::value(row.version))
        .col_expr(booking::Column::UpdatedAt, Expr::value(row.updated_at))
        .filter(booking::Column::Id.eq(row.id))
        .filter(booking::Column::Version.eq(expected))
        .exec(txn)
        .await
        .map_err(insert_error)?;
    if result.rows_affected == 0 {
        return Err(StoreError::Conflict(STALE.to_owned()));
    }
    Ok(())
}

#[async_trait]
impl PaymentStore for SqlStore {
    async fn save_booking_change(&self, change: &BookingChange) -> StoreResult<()> {
        let sqlite = self.db.get_database_backend() == DbBackend::Sqlite;
        let _writer = if sqlite { Some(self.booking_writer.lock().await) } else { None };
        let txn = self.db.begin().await.map_err(backend)?;
        if let Some((provider, event_id)) = &change.inbox {
            let row = payment_webhook::Model {
                provider: provider.clone(),
                event_id: event_id.clone(),
                received_at: Utc::now(),
            };
            let inserted = payment_webhook::Entity::insert(row.into_active_model())
                .on_conflict(
                    OnConflict::columns([payment_webhook::Column::Provider, payment_webhook::Column::EventId])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await
                .map_err(backend)?;
            if inserted == 0 {
                return Err(StoreError::Conflict(DUPLICATE_EVENT.to_owned()));
            }
        }
        if let Some((booking, expected)) = &change.booking {
            let stays_live = BookingStatus::LIVE.contains(&booking.status);
            if stays_live && !sqlite {
                // Same queue as inserts: an extension and a new booking of the space see each
                // other's commits, and the exclusion constraint answers.
                let lock = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    [booking.space_id.to_string().into()],
                );
                txn.execute(lock).await.map_err(backend)?;
            }
            if stays_live && sqlite {
                refuse_overlap(&txn, booking).await?;
            }
            update_booking(&txn, booking, *expected).await?;
        }
        write_payments(&txn, &change.payments, &change.commands, &change.receipt).await?;
        txn.commit().await.map_err(insert_error)
    }

    async fn get_payment(&self, id: PaymentId) -> StoreResult<Option<Payment>> {
        payment::Entity::find_by_id(id.as_uuid())
            .one(&self.db)
            .await
            .map_err(backend)?
            .map(payment_from_row)
            .transpose()
    }

    async fn list_payments(&self, booking: BookingId) -> StoreResult<Vec<Payment>> {
        payment::Entity::find()
            .filter(payment::Column::BookingId.eq(booking.as_uuid()))
            .order_by_asc(payment::Column::CreatedAt)
            .order_by_asc(payment::Column::Id)
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(payment_from_row)
            .collect()
    }

    async fn find_payment_by_provider_ref(&self, provider: &str, provider_ref: &str) -> StoreResult<Option<Payment>> {
        payment::Entity::find()
            .filter(payment::Column::Provider.eq(provider))
            .filter(payment::Column::ProviderRef.eq(provider_ref))
            .one(&self.db)
            .await
            .map_err(backend)?
            .map(payment_from_row)
            .transpose()
    }

    async fn list_payments_to_reconcile(&self, quiet_before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Payment>> {
        payment::Entity::find()
            .filter(
                payment::Column::Status
                    .is_in([PaymentStatus::RequiresAction.as_str(), PaymentStatus::Authorized.as_str()]),
            )
            .filter(payment::Column::UpdatedAt.lt(quiet_before))
            .filter(payment::Column::ProviderRef.is_not_null())
            .order_by_asc(payment::Column::UpdatedAt)
            .limit(u64::from(limit))
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(payment_from_row)
            .collect()
    }

    async fn list_payment_commands(&self, booking: BookingId) -> StoreResult<Vec<PaymentCommand>> {
        payment_command::Entity::find()
            .filter(payment_command::Column::BookingId.eq(booking.as_uuid()))
            .order_by_asc(payment_command::Column::CreatedAt)
            .order_by_asc(payment_command::Column::Id)
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(command_from_row)
            .collect()
    }

    async fn claim_payment_commands(
        &self,
        at: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<PaymentCommand>> {
        let due = payment_command::Entity::find()
            .filter(payment_command::Column::Status.eq(CommandStatus::Pending.as_str()))
            .filter(payment_command::Column::NextAttemptAt.lte(at))
            .order_by_asc(payment_command::Column::NextAttemptAt)
            .order_by_asc(payment_command::Column::CreatedAt)
            .limit(u64::from(limit))
            .all(&self.db)
            .await
            .map_err(backend)?;
        let mut claimed = Vec::with_capacity(due.len());
        for row in due {
            if let Some(command) =
                self.claim_payment_command(PaymentCommandId::from_uuid(row.id), at, lease_until).await?
            {
                claimed.push(command);
            }
        }
        Ok(claimed)
    }

    async fn claim_payment_command(
        &self,
        id: PaymentCommandId,
        at: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Option<PaymentCommand>> {
        let taken = payment_command::Entity::update_many()
            .col_expr(payment_command::Column::NextAttemptAt, Expr::value(lease_until))
            .filter(payment_command::Column::Id.eq(id.as_uuid()))
            .filter(payment_command::Column::Status.eq(CommandStatus::Pending.as_str()))
            .filter(payment_command::Column::NextAttemptAt.lte(at))
            .exec(&self.db)
            .await
            .map_err(backend)?;
        if taken.rows_affected == 0 {
            return Ok(None);
        }
        payment_command::Entity::find_by_id(id.as_uuid())
            .one(&self.db)
            .await
            .map_err(backend)?
            .map(command_from_row)
            .transpose()
    }

    async fn webhook_seen(&self, provider: &str, event_id: &str) -> StoreResult<bool> {
        let found = payment_webhook::Entity::find_by_id((provider.to_owned(), event_id.to_owned()))
            .one(&self.db)
            .await
            .map_err(backend)?;
        Ok(found.is_some())
    }

    async fn list_receipt(&self, booking: BookingId) -> StoreResult<Vec<ReceiptLine>> {
        receipt_line::Entity::find()
            .filter(receipt_line::Column::BookingId.eq(booking.as_uuid()))
            .order_by_asc(receipt_line::Column::At)
            .order_by_asc(receipt_line::Column::Id)
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(line_from_row)
            .collect()
    }

    async fn forget_plates(&self, ended_before: DateTime<Utc>) -> StoreResult<u64> {
        let ended = BookingStatus::ENDED.map(BookingStatus::as_str);
        let result = booking::Entity::update_many()
            .col_expr(booking::Column::Plate, Expr::value(Option::<String>::None))
            .filter(booking::Column::Plate.is_not_null())
            .filter(booking::Column::Status.is_in(ended))
            .filter(booking::Column::UpdatedAt.lt(ended_before))
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(result.rows_affected)
    }

    async fn erase_driver(&self, driver_id: DriverId) -> StoreResult<()> {
        let txn = self.db.begin().await.map_err(backend)?;
        let id = driver_id.as_uuid();
        booking::Entity::update_many()
            .col_expr(booking::Column::Plate, Expr::value(Option::<String>::None))
            .col_expr(booking::Column::VehicleId, Expr::value(Option::<uuid::Uuid>::None))
            .filter(booking::Column::DriverId.eq(id))
            .exec(&txn)
            .await
            .map_err(backend)?;
        payment::Entity::update_many()
            .col_expr(payment::Column::PaymentMethod, Expr::value(Option::<String>::None))
            .filter(payment::Column::DriverId.eq(id))
            .exec(&txn)
            .await
            .map_err(backend)?;
        vehicle::Entity::delete_many().filter(vehicle::Column::DriverId.eq(id)).exec(&txn).await.map_err(backend)?;
        // Chats are the driver's words: they go with the account.
        let conversations: Vec<uuid::Uuid> = crate::entity::conversation::Entity::find()
            .filter(crate::entity::conversation::Column::DriverId.eq(id))
            .all(&txn)
            .await
            .map_err(backend)?
            .into_iter()
            .map(|conversation| conversation.id)
            .collect();
        crate::entity::chat_message::Entity::delete_many()
            .filter(crate::entity::chat_message::Column::ConversationId.is_in(conversations.clone()))
            .exec(&txn)
            .await
            .map_err(backend)?;
        crate::entity::conversation::Entity::delete_many()
            .filter(crate::entity::conversation::Column::Id.is_in(conversations))
            .exec(&txn)
            .await
            .map_err(backend)?;
        driver::Entity::delete_many().filter(driver::Column::Id.eq(id)).exec(&txn).await.map_err(backend)?;
        txn.commit().await.map_err(backend)
    }

    async fn list_bookings_in_play(&self, at: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Booking>> {
        let early = at + berth_kernel::lifecycle::EARLY_ARRIVAL;
        let condition = Condition::any()
            .add(
                Condition::all()
                    .add(booking::Column::Status.eq(BookingStatus::PendingPayment.as_str()))
                    .add(booking::Column::HoldExpiresAt.lte(at)),
            )
            .add(
                Condition::all()
                    .add(booking::Column::Status.eq(BookingStatus::Confirmed.as_str()))
                    .add(booking::Column::StartAt.lte(early)),
            )
            .add(booking::Column::Status.eq(BookingStatus::Active.as_str()));
        booking::Entity::find()
            .filter(condition)
            .order_by_asc(booking::Column::StartAt)
            .limit(u64::from(limit))
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(booking_from_row)
            .collect()
    }

    async fn list_bookings_starting(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Booking>> {
        booking::Entity::find()
            .filter(booking::Column::Status.eq(BookingStatus::Confirmed.as_str()))
            .filter(booking::Column::StartAt.gt(after))
            .filter(booking::Column::StartAt.lte(until))
            .order_by_asc(booking::Column::StartAt)
            .limit(u64::from(limit))
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(booking_from_row)
            .collect()
    }
}
