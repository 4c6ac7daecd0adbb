//! `payments` table: each payment of a booking and where it stands at its provider.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "payments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub booking_id: Uuid,
    pub operator_id: Uuid,
    pub driver_id: Uuid,
    pub purpose: String,
    pub label: String,
    pub provider: Option<String>,
    pub provider_ref: Option<String>,
    pub status: String,
    pub amount_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub currency: String,
    pub payment_method: Option<String>,
    pub action_url: Option<String>,
    pub capture_on_authorize: bool,
    pub failure: Option<String>,
    pub reverts_end_to: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
