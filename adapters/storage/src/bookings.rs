//! The kernel's `BookingStore`. No two live bookings of a space overlap: on PostgreSQL the
//! `bookings_no_overlap` exclusion constraint refuses the insert; on SQLite the check and the
//! insert run in one transaction under the store's booking lock (SQLite has one writer anyway).
//! Both first check under a lock (PostgreSQL: an advisory lock per space), so a refused
//! request writes nothing.

use async_trait::async_trait;
use berth_kernel::StoreError;
use berth_kernel::booking::{Booking, BookingOwner, BookingStatus, OVERLAP};
use berth_kernel::ids::{BookingId, DriverId, OperatorId, QuoteId, SiteId, SpaceId, VehicleId};
use berth_kernel::page::{Page, PageRequest};
use berth_kernel::payment::{Payment, PaymentCommand};
use berth_kernel::ports::{BookingStore, StoreResult};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QuerySelect, QueryTrait, Statement, TransactionTrait,
};

use crate::entity::booking;
use crate::{SqlStore, backend, corrupt, fetch_page};

const QUOTE_USED: &str = "this quote was already used for a booking";

pub(crate) fn live() -> Vec<&'static str> {
    BookingStatus::LIVE.iter().map(|status| status.as_str()).collect()
}

pub(crate) fn to_row(booking: &Booking) -> booking::Model {
    booking::Model {
        id: booking.id.as_uuid(),
        operator_id: booking.operator_id.as_uuid(),
        site_id: booking.site_id.as_uuid(),
        space_id: booking.space_id.as_uuid(),
        driver_id: booking.driver_id.as_uuid(),
        vehicle_id: booking.vehicle_id.map(|vehicle| vehicle.as_uuid()),
        plate: booking.plate.clone(),
        quote_id: booking.quote_id.as_uuid(),
        start_at: booking.start,
        end_at: booking.end,
        status: booking.status.as_str().to_owned(),
        price_minor: booking.price_minor,
        currency: booking.currency.clone(),
        hold_expires_at: booking.hold_expires_at,
        arrived_at: booking.arrived_at,
        departed_at: booking.departed_at,
        cancel_reason: booking.cancel_reason.clone(),
        version: booking.version,
        created_at: booking.created_at,
        updated_at: booking.updated_at,
    }
}

pub(crate) fn from_row(row: booking::Model) -> StoreResult<Booking> {
    Ok(Booking {
        id: BookingId::from_uuid(row.id),
        operator_id: OperatorId::from_uuid(row.operator_id),
        site_id: SiteId::from_uuid(row.site_id),
        space_id: SpaceId::from_uuid(row.space_id),
        driver_id: DriverId::from_uuid(row.driver_id),
        vehicle_id: row.vehicle_id.map(VehicleId::from_uuid),
        plate: row.plate,
        quote_id: QuoteId::from_uuid(row.quote_id),
        start: row.start_at,
        end: row.end_at,
        status: BookingStatus::parse(&row.status)
            .ok_or_else(|| corrupt("bookings", row.id, format!("status '{}'", row.status)))?,
        price_minor: row.price_minor,
        currency: row.currency,
        hold_expires_at: row.hold_expires_at,
        arrived_at: row.arrived_at,
        departed_at: row.departed_at,
        cancel_reason: row.cancel_reason,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// What an insert failure means: an overlap (PostgreSQL's exclusion constraint), a quote used
/// twice, or a real failure.
pub(crate) fn insert_error(error: DbErr) -> StoreError {
    let text = error.to_string();
    if text.contains("bookings_no_overlap") || text.contains("23P01") {
        return StoreError::Conflict(OVERLAP.to_owned());
    }
    match backend(error) {
        StoreError::Conflict(_) => StoreError::Conflict(QUOTE_USED.to_owned()),
        other => other,
    }
}

/// SQLite's half of the no-overlap guarantee, run in the writer's transaction: another live
/// booking of the space overlapping `booking`'s window is [`OVERLAP`].
pub(crate) async fn refuse_overlap(txn: &DatabaseTransaction, booking: &Booking) -> StoreResult<()> {
    let overlapping = overlapping(booking).count(txn).await.map_err(backend)?;
    if overlapping > 0 {
        return Err(StoreError::Conflict(OVERLAP.to_owned()));
    }
    Ok(())
}

/// The other live bookings of `booking`'s space whose windows overlap its own.
fn overlapping(booking: &Booking) -> sea_orm::Select<booking::Entity> {
    booking::Entity::find()
        .filter(booking::Column::SpaceId.eq(booking.space_id.as_uuid()))
        .filter(booking::Column::Id.ne(booking.id.as_uuid()))
        .filter(booking::Column::Status.is_in(live()))
        .filter(booking::Column::StartAt.lt(booking.end))
        .filter(booking::Column::EndAt.gt(booking.start))
}

/// Marks holds of `space` that ran out before `at` as expired, so they stop blocking.
async fn expire_holds(txn: &DatabaseTransaction, space: SpaceId, at: DateTime<Utc>) -> Result<(), DbErr> {
    booking::Entity::update_many()
        .col_expr(booking::Column::Status, Expr::value(BookingStatus::Expired.as_str()))
        .col_expr(booking::Column::UpdatedAt, Expr::value(at))
        .filter(booking::Column::SpaceId.eq(space.as_uuid()))
        .filter(booking::Column::Status.eq(BookingStatus::PendingPayment.as_str()))
        .filter(booking::Column::HoldExpiresAt.lte(at))
        .exec(txn)
        .await
        .map(|_| ())
}

/// Whether `booking`'s quote was used already, and whether a live booking of its space (a hold
/// that ran out by `at` excluded) overlaps its window: one query.
async fn refuse_if_standing(db: &impl ConnectionTrait, booking: &Booking, at: DateTime<Utc>) -> StoreResult<()> {
    let (used, overlapping) = standing(db, booking, at).await.map_err(backend)?;
    if used {
        return Err(StoreError::Conflict(QUOTE_USED.to_owned()));
    }
    if overlapping {
        return Err(StoreError::Conflict(OVERLAP.to_owned()));
    }
    Ok(())
}

async fn standing(db: &impl ConnectionTrait, booking: &Booking, at: DateTime<Utc>) -> Result<(bool, bool), DbErr> {
    let used = booking::Entity::find()
        .select_only()
        .expr(Expr::val(1))
        .filter(booking::Column::QuoteId.eq(booking.quote_id.as_uuid()))
        .into_query();
    let lapsed = sea_orm::sea_query::Condition::all()
        .add(booking::Column::Status.eq(BookingStatus::PendingPayment.as_str()))
        .add(booking::Column::HoldExpiresAt.lte(at));
    let overlapping = overlapping(booking).select_only().expr(Expr::val(1)).filter(lapsed.not()).into_query();
    let query = sea_orm::sea_query::Query::select()
        .expr_as(Expr::exists(used), sea_orm::sea_query::Alias::new("used"))
        .expr_as(Expr::exists(overlapping), sea_orm::sea_query::Alias::new("overlapping"))
        .to_owned();
    let row = db
        .query_one(db.get_database_backend().build(&query))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("a SELECT without FROM answered no row".into()))?;
    Ok((row.try_get::<bool>("", "used")?, row.try_get::<bool>("", "overlapping")?))
}

#[async_trait]
impl BookingStore for SqlStore {
    async fn insert_booking(
        &self,
        booking: &Booking,
        at: DateTime<Utc>,
        payments: &[Payment],
        commands: &[PaymentCommand],
    ) -> StoreResult<()> {
        // A booking already committed over the window refuses at once, without a transaction or
        // a lock (a contended space refuses most requests); otherwise the check is repeated
        // under the lock, where it decides.
        refuse_if_standing(&self.db, booking, at).await?;
        let sqlite = self.db.get_database_backend() == DbBackend::Sqlite;
        let _writer = if sqlite { Some(self.booking_writer.lock().await) } else { None };
        let txn = self.db.begin().await.map_err(backend)?;
        if !sqlite {
            // Bookings of one space queue here, so each sees the ones before it committed and
            // the exclusion constraint answers at once, instead of concurrent inserts waiting on
            // each other until PostgreSQL breaks the deadlock.
            let lock = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                [booking.space_id.to_string().into()],
            );
            txn.execute(lock).await.map_err(backend)?;
        }
        // Refused before anything is written. The exclusion constraint stays the guarantee on
        // PostgreSQL; this check, under the lock, is SQLite's.
        refuse_if_standing(&txn, booking, at).await?;
        // Holds that ran out no longer count; mark them so the constraint agrees.
        expire_holds(&txn, booking.space_id, at).await.map_err(backend)?;
        booking::Entity::insert(to_row(booking).into_active_model())
            .exec_without_returning(&txn)
            .await
            .map_err(insert_error)?;
        crate::payments::write_payments(&txn, payments, commands, &[]).await?;
        txn.commit().await.map_err(insert_error)
    }

    async fn get_booking(&self, id: BookingId) -> StoreResult<Option<Booking>> {
        booking::Entity::find_by_id(id.as_uuid()).one(&self.db).await.map_err(backend)?.map(from_row).transpose()
    }

    async fn booked_spaces(
        &self,
        sites: &[SiteId],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<(SiteId, SpaceId)>> {
        if sites.is_empty() {
            return Ok(Vec::new());
        }
        let holding = sea_orm::sea_query::Condition::any()
            .add(booking::Column::Status.ne(BookingStatus::PendingPayment.as_str()))
            .add(booking::Column::HoldExpiresAt.gt(at));
        let rows: Vec<(uuid::Uuid, uuid::Uuid)> = booking::Entity::find()
            .select_only()
            .columns([booking::Column::SiteId, booking::Column::SpaceId])
            .filter(booking::Column::SiteId.is_in(sites.iter().map(|site| site.as_uuid())))
            .filter(booking::Column::Status.is_in(live()))
            .filter(holding)
            .filter(booking::Column::StartAt.lt(end))
            .filter(booking::Column::EndAt.gt(start))
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(backend)?;
        Ok(rows.into_iter().map(|(site, space)| (SiteId::from_uuid(site), SpaceId::from_uuid(space))).collect())
    }

    async fn list_bookings(&self, owner: BookingOwner, page: PageRequest) -> StoreResult<Page<Booking>> {
        let select = match owner {
            BookingOwner::Driver(driver) => {
                booking::Entity::find().filter(booking::Column::DriverId.eq(driver.as_uuid()))
            }
            BookingOwner::Operator(operator) => {
                booking::Entity::find().filter(booking::Column::OperatorId.eq(operator.as_uuid()))
            }
        };
        fetch_page(&self.db, select, booking::Column::Id, page, from_row, |booking| booking.id.as_uuid()).await
    }
}
