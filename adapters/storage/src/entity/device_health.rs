//! `device_health` table: what a device's messages say about it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "device_health")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub device_id: Uuid,
    pub operator_id: Uuid,
    pub last_seen: Option<DateTimeUtc>,
    pub battery_mv: Option<i64>,
    pub temperature_c: Option<f64>,
    pub last_object: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTimeUtc>,
    pub accepted: i64,
    /// JSON object: reason → count.
    pub rejected: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
