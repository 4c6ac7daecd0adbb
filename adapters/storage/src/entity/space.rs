//! `spaces` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "spaces")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub operator_id: Uuid,
    pub site_id: Uuid,
    pub code: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub category: String,
    pub vehicle_type: String,
    pub ev_charger: bool,
    pub accessible: bool,
    pub status: String,
    pub status_since: DateTimeUtc,
    pub confidence: f64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
