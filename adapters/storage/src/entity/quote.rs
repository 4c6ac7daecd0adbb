//! `quotes` table: each quote with the rule version that made it and the context it saw.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "quotes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub operator_id: Uuid,
    pub site_id: Uuid,
    pub space_id: Option<Uuid>,
    pub driver_id: Option<Uuid>,
    pub vehicle_type: String,
    pub start_at: DateTimeUtc,
    pub end_at: DateTimeUtc,
    pub total_minor: i64,
    pub currency: String,
    /// JSON: the line items.
    pub items: String,
    pub rule_set_id: Uuid,
    pub rule_version: i64,
    pub fallback: bool,
    /// JSON: the trace.
    pub trace: String,
    /// JSON: the kernel's `RuleContext`.
    pub context: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
