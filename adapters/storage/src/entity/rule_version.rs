//! `rule_versions` table: a version's script and fixtures never change; only `status` and
//! `published_at` do, once.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "rule_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub rule_set_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i64,
    pub operator_id: Uuid,
    pub source: String,
    /// JSON: the kernel's `RuleTest` list.
    pub tests: String,
    /// JSON object: the version's parameters.
    pub params: String,
    pub status: String,
    pub created_at: DateTimeUtc,
    pub published_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
