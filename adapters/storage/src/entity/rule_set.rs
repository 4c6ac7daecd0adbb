//! `rule_sets` table. `scope` is the site id, or `operator` for an operator-wide rule set, so
//! that one unique index allows one rule set per site and one per operator.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "rule_sets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub operator_id: Uuid,
    pub site_id: Option<Uuid>,
    pub scope: String,
    pub name: String,
    pub currency: String,
    /// JSON: the kernel's `ErrorPolicy`.
    pub error_policy: String,
    /// JSON: the kernel's `Guardrails`.
    pub guardrails: String,
    /// JSON: an array of `YYYY-MM-DD`.
    pub holidays: String,
    /// JSON: the kernel's `AdjustmentSettings`.
    pub adjustment: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
