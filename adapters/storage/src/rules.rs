//! The kernel's `RuleStore`: rule sets, versions, activations and quotes. Structured kernel
//! values (policies, guardrails, fixtures, line items, traces, contexts) are stored as JSON text.

use async_trait::async_trait;
use berth_kernel::StoreError;
use berth_kernel::ids::{DriverId, OperatorId, QuoteId, RuleSetId, SiteId, SpaceId};
use berth_kernel::page::{Page, PageRequest};
use berth_kernel::ports::{RuleStore, StoreResult};
use berth_kernel::pricing::Quote;
use berth_kernel::rules::{Activation, Price, RuleSet, RuleVersion, VersionStatus};
use berth_kernel::site::Currency;
use berth_kernel::vehicle_type::VehicleType;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, TransactionTrait};
use uuid::Uuid;

use crate::entity::{quote, rule_activation, rule_set, rule_version, site, space};
use crate::{SqlStore, backend, conflict_as, corrupt, fetch_page};

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("kernel rule types serialise to JSON")
}

fn from_json<T: serde::de::DeserializeOwned>(table: &str, id: Uuid, what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|error| corrupt(table, id, format!("{what}: {error}")))
}

fn rule_set_to_row(rule_set: &RuleSet) -> rule_set::Model {
    rule_set::Model {
        id: rule_set.id.as_uuid(),
        operator_id: rule_set.operator_id.as_uuid(),
        site_id: rule_set.site_id.map(|site| site.as_uuid()),
        scope: rule_set.site_id.map_or_else(|| "operator".to_owned(), |site| site.to_string()),
        name: rule_set.name.clone(),
        currency: rule_set.currency.code(),
        error_policy: to_json(&rule_set.error_policy),
        guardrails: to_json(&rule_set.guardrails),
        holidays: to_json(&rule_set.holidays),
        adjustment: to_json(&rule_set.adjustment),
        created_at: rule_set.created_at,
    }
}

fn rule_set_from_row(row: rule_set::Model) -> StoreResult<RuleSet> {
    let id = row.id;
    Ok(RuleSet {
        id: RuleSetId::from_uuid(id),
        operator_id: OperatorId::from_uuid(row.operator_id),
        site_id: row.site_id.map(SiteId::from_uuid),
        name: row.name,
        currency: Currency::parse(&row.currency).map_err(|error| corrupt("rule_sets", id, error))?,
        error_policy: from_json("rule_sets", id, "error_policy", &row.error_policy)?,
        guardrails: from_json("rule_sets", id, "guardrails", &row.guardrails)?,
        holidays: from_json("rule_sets", id, "holidays", &row.holidays)?,
        adjustment: from_json("rule_sets", id, "adjustment", &row.adjustment)?,
        created_at: row.created_at,
    })
}

fn version_from_row(row: rule_version::Model) -> StoreResult<RuleVersion> {
    let id = row.rule_set_id;
    Ok(RuleVersion {
        rule_set_id: RuleSetId::from_uuid(id),
        version: u32::try_from(row.version).map_err(|error| corrupt("rule_versions", id, error))?,
        tests: from_json("rule_versions", id, "tests", &row.tests)?,
        params: from_json("rule_versions", id, "params", &row.params)?,
        status: VersionStatus::parse(&row.status)
            .ok_or_else(|| corrupt("rule_versions", id, format!("status '{}'", row.status)))?,
        source: row.source,
        created_at: row.created_at,
        published_at: row.published_at,
    })
}

fn activation_to_row(operator: OperatorId, activation: &Activation) -> rule_activation::Model {
    rule_activation::Model {
        id: Uuid::now_v7(),
        rule_set_id: activation.rule_set_id.as_uuid(),
        operator_id: operator.as_uuid(),
        version: i64::from(activation.version),
        effective_from: activation.effective_from,
        reason: activation.reason.clone(),
        created_at: activation.created_at,
    }
}

fn activation_from_row(row: rule_activation::Model) -> StoreResult<Activation> {
    Ok(Activation {
        rule_set_id: RuleSetId::from_uuid(row.rule_set_id),
        version: u32::try_from(row.version).map_err(|error| corrupt("rule_activations", row.id, error))?,
        effective_from: row.effective_from,
        created_at: row.created_at,
        reason: row.reason,
    })
}

fn quote_from_row(row: quote::Model) -> StoreResult<Quote> {
    let id = row.id;
    Ok(Quote {
        id: QuoteId::from_uuid(id),
        operator_id: OperatorId::from_uuid(row.operator_id),
        site_id: SiteId::from_uuid(row.site_id),
        space_id: row.space_id.map(SpaceId::from_uuid),
        driver_id: row.driver_id.map(DriverId::from_uuid),
        vehicle_type: VehicleType::parse(&row.vehicle_type)
            .ok_or_else(|| corrupt("quotes", id, format!("vehicle type '{}'", row.vehicle_type)))?,
        start: row.start_at,
        end: row.end_at,
        price: Price {
            items: from_json("quotes", id, "items", &row.items)?,
            total_minor: row.total_minor,
            currency: row.currency,
        },
        rule_set_id: RuleSetId::from_uuid(row.rule_set_id),
        rule_version: u32::try_from(row.rule_version).map_err(|error| corrupt("quotes", id, error))?,
        fallback: row.fallback,
        trace: from_json("quotes", id, "trace", &row.trace)?,
        context: from_json("quotes", id, "context", &row.context)?,
        created_at: row.created_at,
        expires_at: row.expires_at,
    })
}

#[async_trait]
impl RuleStore for SqlStore {
    async fn insert_rule_set(&self, rule_set: &RuleSet) -> StoreResult<()> {
        let message = match rule_set.site_id {
            Some(site) => format!("site {site} already has a rule set; add a version to it instead"),
            None => "you already have an operator-wide rule set; add a version to it instead".to_owned(),
        };
        rule_set::Entity::insert(rule_set_to_row(rule_set).into_active_model())
            .exec_without_returning(&self.db)
            .await
            .map_err(conflict_as(message))?;
        Ok(())
    }

    async fn get_rule_set(&self, operator: OperatorId, id: RuleSetId) -> StoreResult<Option<RuleSet>> {
        rule_set::Entity::find_by_id(id.as_uuid())
            .filter(rule_set::Column::OperatorId.eq(operator.as_uuid()))
            .one(&self.db)
            .await
            .map_err(backend)?
            .map(rule_set_from_row)
            .transpose()
    }

    async fn list_rule_sets(&self, operator: OperatorId, page: PageRequest) -> StoreResult<Page<RuleSet>> {
        let select = rule_set::Entity::find().filter(rule_set::Column::OperatorId.eq(operator.as_uuid()));
        fetch_page(&self.db, select, rule_set::Column::Id, page, rule_set_from_row, |set| set.id.as_uuid()).await
    }

    async fn update_rule_set(&self, rule_set: &RuleSet) -> StoreResult<()> {
        let row = rule_set_to_row(rule_set);
        rule_set::Entity::update_many()
            .col_expr(rule_set::Column::Name, Expr::value(row.name))
            .col_expr(rule_set::Column::ErrorPolicy, Expr::value(row.error_policy))
            .col_expr(rule_set::Column::Guardrails, Expr::value(row.guardrails))
            .col_expr(rule_set::Column::Holidays, Expr::value(row.holidays))
            .col_expr(rule_set::Column::Adjustment, Expr::value(row.adjustment))
            .filter(rule_set::Column::Id.eq(row.id))
            .filter(rule_set::Column::OperatorId.eq(row.operator_id))
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn rule_sets_for_site(&self, operator: OperatorId, site: SiteId) -> StoreResult<Vec<RuleSet>> {
        rule_set::Entity::find()
            .filter(rule_set::Column::OperatorId.eq(operator.as_uuid()))
            .filter(rule_set::Column::Scope.is_in([site.to_string(), "operator".to_owned()]))
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(rule_set_from_row)
            .collect()
    }

    async fn insert_rule_version(&self, operator: OperatorId, version: &RuleVersion) -> StoreResult<()> {
        let row = rule_version::Model {
            rule_set_id: version.rule_set_id.as_uuid(),
            version: i64::from(version.version),
            operator_id: operator.as_uuid(),
            source: version.source.clone(),
            tests: to_json(&version.tests),
            params: to_json(&version.params),
            status: version.status.as_str().to_owned(),
            created_at: version.created_at,
            published_at: version.published_at,
        };
        rule_version::Entity::insert(row.into_active_model())
            .exec_without_returning(&self.db)
            .await
            .map_err(conflict_as(format!("version {} was created at the same moment; retry", version.version)))?;
        Ok(())
    }

    async fn get_rule_version(
        &self,
        operator: OperatorId,
        id: RuleSetId,
        version: u32,
    ) -> StoreResult<Option<RuleVersion>> {
        rule_version::Entity::find_by_id((id.as_uuid(), i64::from(version)))
            .filter(rule_version::Column::OperatorId.eq(operator.as_uuid()))
            .one(&self.db)
            .await
            .map_err(backend)?
            .map(version_from_row)
            .transpose()
    }

    async fn list_rule_versions(&self, operator: OperatorId, id: RuleSetId) -> StoreResult<Vec<RuleVersion>> {
        rule_version::Entity::find()
            .filter(rule_version::Column::RuleSetId.eq(id.as_uuid()))
            .filter(rule_version::Column::OperatorId.eq(operator.as_uuid()))
            .order_by_asc(rule_version::Column::Version)
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(version_from_row)
            .collect()
    }

    async fn delete_draft_version(&self, operator: OperatorId, id: RuleSetId, version: u32) -> StoreResult<()> {
        rule_version::Entity::delete_many()
            .filter(rule_version::Column::RuleSetId.eq(id.as_uuid()))
            .filter(rule_version::Column::Version.eq(i64::from(version)))
            .filter(rule_version::Column::OperatorId.eq(operator.as_uuid()))
            .filter(rule_version::Column::Status.eq(VersionStatus::Draft.as_str()))
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn publish_rule_version(
        &self,
        operator: OperatorId,
        id: RuleSetId,
        version: u32,
        activation: &Activation,
    ) -> StoreResult<()> {
        let txn = self.db.begin().await.map_err(backend)?;
        let updated = rule_version::Entity::update_many()
            .col_expr(rule_version::Column::Status, Expr::value(VersionStatus::Published.as_str()))
            .col_expr(rule_version::Column::PublishedAt, Expr::value(activation.created_at))
            .filter(rule_version::Column::RuleSetId.eq(id.as_uuid()))
            .filter(rule_version::Column::Version.eq(i64::from(version)))
            .filter(rule_version::Column::OperatorId.eq(operator.as_uuid()))
            .filter(rule_version::Column::Status.eq(VersionStatus::Draft.as_str()))
            .exec(&txn)
            .await
            .map_err(backend)?;
        if updated.rows_affected == 0 {
            return Err(StoreError::Conflict(format!("version {version} is no longer a draft")));
        }
        rule_activation::Entity::insert(activation_to_row(operator, activation).into_active_model())
            .exec_without_returning(&txn)
            .await
            .map_err(backend)?;
        txn.commit().await.map_err(backend)
    }

    async fn insert_rollback(&self, operator: OperatorId, activation: &Activation) -> StoreResult<()> {
        let txn = self.db.begin().await.map_err(backend)?;
        rule_activation::Entity::delete_many()
            .filter(rule_activation::Column::RuleSetId.eq(activation.rule_set_id.as_uuid()))
            .filter(rule_activation::Column::OperatorId.eq(operator.as_uuid()))
            .filter(rule_activation::Column::EffectiveFrom.gt(activation.effective_from))
            .exec(&txn)
            .await
            .map_err(backend)?;
        rule_activation::Entity::insert(activation_to_row(operator, activation).into_active_model())
            .exec_without_returning(&txn)
            .await
            .map_err(backend)?;
        txn.commit().await.map_err(backend)
    }

    async fn list_activations(&self, operator: OperatorId, id: RuleSetId) -> StoreResult<Vec<Activation>> {
        rule_activation::Entity::find()
            .filter(rule_activation::Column::RuleSetId.eq(id.as_uuid()))
            .filter(rule_activation::Column::OperatorId.eq(operator.as_uuid()))
            .order_by_asc(rule_activation::Column::EffectiveFrom)
            .order_by_asc(rule_activation::Column::CreatedAt)
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(activation_from_row)
            .collect()
    }

    async fn insert_quote(&self, quote: &Quote) -> StoreResult<()> {
        let row = quote::Model {
            id: quote.id.as_uuid(),
            operator_id: quote.operator_id.as_uuid(),
            site_id: quote.site_id.as_uuid(),
            space_id: quote.space_id.map(|space| space.as_uuid()),
            driver_id: quote.driver_id.map(|driver| driver.as_uuid()),
            vehicle_type: quote.vehicle_type.as_str().to_owned(),
            start_at: quote.start,
            end_at: quote.end,
            total_minor: quote.price.total_minor,
            currency: quote.price.currency.clone(),
            items: to_json(&quote.price.items),
            rule_set_id: quote.rule_set_id.as_uuid(),
            rule_version: i64::from(quote.rule_version),
            fallback: quote.fallback,
            trace: to_json(&quote.trace),
            context: to_json(&quote.context),
            created_at: quote.created_at,
            expires_at: quote.expires_at,
        };
        quote::Entity::insert(row.into_active_model()).exec_without_returning(&self.db).await.map_err(backend)?;
        Ok(())
    }

    async fn get_quote(&self, id: QuoteId) -> StoreResult<Option<Quote>> {
        quote::Entity::find_by_id(id.as_uuid()).one(&self.db).await.map_err(backend)?.map(quote_from_row).transpose()
    }

    async fn list_quotes_for_rule_set(
        &self,
        operator: OperatorId,
        id: RuleSetId,
        since: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<Vec<Quote>> {
        quote::Entity::find()
            .filter(quote::Column::RuleSetId.eq(id.as_uuid()))
            .filter(quote::Column::OperatorId.eq(operator.as_uuid()))
            .filter(quote::Column::CreatedAt.gte(since))
            .order_by_desc(quote::Column::CreatedAt)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(quote_from_row)
            .collect()
    }

    async fn find_site_operator(&self, site: SiteId) -> StoreResult<Option<OperatorId>> {
        let row = site::Entity::find_by_id(site.as_uuid()).one(&self.db).await.map_err(backend)?;
        Ok(row.map(|row| OperatorId::from_uuid(row.operator_id)))
    }

    async fn list_site_rule_sets_everywhere(&self) -> StoreResult<Vec<RuleSet>> {
        rule_set::Entity::find()
            .filter(rule_set::Column::SiteId.is_not_null())
            .order_by_asc(rule_set::Column::Id)
            .all(&self.db)
            .await
            .map_err(backend)?
            .into_iter()
            .map(rule_set_from_row)
            .collect()
    }

    async fn find_space_operator(&self, space: SpaceId) -> StoreResult<Option<OperatorId>> {
        let row = space::Entity::find_by_id(space.as_uuid()).one(&self.db).await.map_err(backend)?;
        Ok(row.map(|row| OperatorId::from_uuid(row.operator_id)))
    }
}
