//! `space_live` table: the sensed state of a space (one row per space heard from).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "space_live")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub space_id: Uuid,
    pub operator_id: Uuid,
    pub sensed: String,
    pub sensed_since: Option<DateTimeUtc>,
    pub observed_at: Option<DateTimeUtc>,
    pub last_seen: Option<DateTimeUtc>,
    pub last_counter: Option<i64>,
    pub last_payload: Option<i64>,
    /// JSON array of RFC 3339 times.
    pub recent_changes: String,
    pub override_status: Option<String>,
    pub override_reason: Option<String>,
    pub override_until: Option<DateTimeUtc>,
    pub override_set_at: Option<DateTimeUtc>,
    pub override_set_by: Option<String>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
