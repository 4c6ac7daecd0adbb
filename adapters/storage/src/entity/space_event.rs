//! `space_events` table: the history of every shown-state change of a space.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "space_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub operator_id: Uuid,
    pub space_id: Uuid,
    pub device_id: Option<Uuid>,
    pub kind: String,
    pub from_status: String,
    pub to_status: String,
    pub at: DateTimeUtc,
    pub recorded_at: DateTimeUtc,
    pub detail: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
