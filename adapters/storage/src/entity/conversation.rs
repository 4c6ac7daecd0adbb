//! `conversations` table: one driver's conversation on one channel, its dialogue state as JSON,
//! and the lease of the node processing it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub channel: String,
    pub external_user: String,
    pub driver_id: Uuid,
    pub state: String,
    pub timezone: String,
    pub handoff: bool,
    pub handoff_operator_id: Option<Uuid>,
    pub handoff_since: Option<DateTimeUtc>,
    pub lease_holder: Option<String>,
    pub lease_until: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
