//! `bookings` table. On PostgreSQL an exclusion constraint keeps live bookings of one space
//! from overlapping; on SQLite the store checks and inserts under one writer.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "bookings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub operator_id: Uuid,
    pub site_id: Uuid,
    pub space_id: Uuid,
    pub driver_id: Uuid,
    pub vehicle_id: Option<Uuid>,
    pub plate: Option<String>,
    pub quote_id: Uuid,
    pub start_at: DateTimeUtc,
    pub end_at: DateTimeUtc,
    pub status: String,
    pub price_minor: i64,
    pub currency: String,
    pub hold_expires_at: Option<DateTimeUtc>,
    pub arrived_at: Option<DateTimeUtc>,
    pub departed_at: Option<DateTimeUtc>,
    pub cancel_reason: Option<String>,
    pub version: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
