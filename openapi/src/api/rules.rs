//! `/v1/rulesets` (operators' pricing and policy scripts, their versions and lifecycle) and
//! `/v1/quotes` (a price for a stay under the rules in force).

use berth_kernel::ids::{QuoteId, RuleSetId};
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::{ApiTags, Created, page_request};
use crate::problem::ApiResult;
use crate::rules_dto::{
    ActivationView, AdjustReportView, PublishRequest, QuoteCreate, QuoteView, RollbackRequest, RuleSetCreate,
    RuleSetPage, RuleSetUpdate, RuleSetView, SimulateRequest, SimulationView, TestReportView, VersionCreate,
    VersionList, VersionView,
};
use crate::state::{AppState, BerthAuth};

pub struct RulesApi;

#[OpenApi(tag = "ApiTags::Rules")]
impl RulesApi {
    /// Create a rule set for a site, or for every site of the operator (`site_id` absent).
    #[oai(path = "/v1/rulesets", method = "post", operation_id = "createRuleSet")]
    async fn create(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        body: Json<RuleSetCreate>,
    ) -> ApiResult<Created<RuleSetView>> {
        let rule_set = state.kernel.create_rule_set(&auth.0, body.0.into_kernel()?).await?;
        Ok(Created::Created(Json(rule_set.into())))
    }

    /// List rule sets, oldest first.
    #[oai(path = "/v1/rulesets", method = "get", operation_id = "listRuleSets")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        /// Cursor from the previous page's `next_cursor`.
        after: Query<Option<String>>,
        /// Page size, 1-1000 (default 100).
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<RuleSetPage>> {
        let page = state.kernel.list_rule_sets(&auth.0, page_request(after.0, limit.0)?).await?;
        Ok(Json(page.into()))
    }

    /// Get a rule set.
    #[oai(path = "/v1/rulesets/:rule_set_id", method = "get", operation_id = "getRuleSet")]
    async fn get(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        rule_set_id: Path<Uuid>,
    ) -> ApiResult<Json<RuleSetView>> {
        let rule_set = state.kernel.get_rule_set(&auth.0, RuleSetId::from_uuid(rule_set_id.0)).await?;
        Ok(Json(rule_set.into()))
    }

    /// Change a rule set's name, error policy, guardrails or holidays (not its script: add a version).
    #[oai(path = "/v1/rulesets/:rule_set_id", method = "patch", operation_id = "updateRuleSet")]
    async fn update(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        rule_set_id: Path<Uuid>,
        body: Json<RuleSetUpdate>,
    ) -> ApiResult<Json<RuleSetView>> {
        let patch = body.0.into_kernel()?;
        let rule_set = state.kernel.update_rule_set(&auth.0, RuleSetId::from_uuid(rule_set_id.0), patch).await?;
        Ok(Json(rule_set.into()))
    }

    /// Create a draft version: a script that compiles, and its test cases.
    #[oai(path = "/v1/rulesets/:rule_set_id/versions", method = "post", operation_id = "createRuleVersion")]
    async fn create_version(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        rule_set_id: Path<Uuid>,
        body: Json<VersionCreate>,
    ) -> ApiResult<Created<VersionView>> {
        let (tests, params) = (body.0.tests()?, body.0.params()?);
        let version = state
            .kernel
            .create_rule_version(&auth.0, RuleSetId::from_uuid(rule_set_id.0), body.0.source, tests, params)
            .await?;
        Ok(Created::Created(Json(version.into())))
    }

    /// Every version, every activation, and the version in force now.
    #[oai(path = "/v1/rulesets/:rule_set_id/versions", method = "get", operation_id = "listRuleVersions")]
    async fn list_versions(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        rule_set_id: Path<Uuid>,
    ) -> ApiResult<Json<VersionList>> {
        let (versions, activations, in_force) =
            state.kernel.list_rule_versions(&auth.0, RuleSetId::from_uuid(rule_set_id.0)).await?;
        Ok(Json(VersionList {
            versions: versions.into_iter().map(Into::into).collect(),
            activations: activations.into_iter().map(Into::into).collect(),
            in_force,
        }))
    }

    /// Get a version with its script and test cases.
    #[oai(path = "/v1/rulesets/:rule_set_id/versions/:version", method = "get", operation_id = "getRuleVersion")]
    async fn get_version(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        rule_set_id: Path<Uuid>,
        version: Path<u32>,
    ) -> ApiResult<Json<VersionView>> {
        let version = state.kernel.get_rule_version(&auth.0, RuleSetId::from_uuid(rule_set_id.0), version.0).await?;
        Ok(Json(version.into()))
    }

    /// Run a version's test cases (like `opa test`); changes nothing.
    #[oai(path = "/v1/rulesets/:rule_set_id/versions/:version/test", method = "post", operation_id = "testRuleVersion")]
    async fn test_version(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        rule_set_id: Path<Uuid>,
        version: Path<u32>,
    ) -> ApiResult<Json<TestReportView>> {
        let report = state.kernel.test_rule_version(&auth.0, RuleSetId::from_uuid(rule_set_id.0), version.0).await?;
        Ok(Json(report.into()))
    }

    /// Publish a draft: it must compile, pass its test cases and keep within the guardrails.
    /// It takes effect at `effective_from` (default now).
    #[oai(
        path = "/v1/rulesets/:rule_set_id/versions/:version/publish",
        method = "post",
        operation_id = "publishRuleVersion"
    )]
    async fn publish_version(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        rule_set_id: Path<Uuid>,
        version: Path<u32>,
        body: Json<PublishRequest>,
    ) -> ApiResult<Json<VersionView>> {
        let version = state
            .kernel
            .publish_rule_version(&auth.0, RuleSetId::from_uuid(rule_set_id.0), version.0, body.0.effective_from)
            .await?;
        Ok(Json(version.into()))
    }

    /// Price contexts, or the quotes recorded over recent days, with this version and with the
    /// version in force; report the differences and the revenue delta.
    #[oai(
        path = "/v1/rulesets/:rule_set_id/versions/:version/simulate",
        method = "post",
        operation_id = "simulateRuleVersion"
    )]
    async fn simulate_version(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        rule_set_id: Path<Uuid>,
        version: Path<u32>,
        body: Json<SimulateRequest>,
    ) -> ApiResult<Json<SimulationView>> {
        let input = body.0.into_kernel()?;
        let report =
            state.kernel.simulate_rule_version(&auth.0, RuleSetId::from_uuid(rule_set_id.0), version.0, input).await?;
        Ok(Json(report.into()))
    }

    /// Put an earlier published version back in force now (versions scheduled later are cancelled).
    #[oai(path = "/v1/rulesets/:rule_set_id/rollback", method = "post", operation_id = "rollbackRuleSet")]
    async fn rollback(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        rule_set_id: Path<Uuid>,
        body: Json<RollbackRequest>,
    ) -> ApiResult<Json<ActivationView>> {
        let activation =
            state.kernel.rollback_rule_set(&auth.0, RuleSetId::from_uuid(rule_set_id.0), body.0.version).await?;
        Ok(Json(activation.into()))
    }

    /// Run the rule set's `adjust(ctx)` now (it also runs on its schedule). A proposed change
    /// becomes a new version with the new parameters, published through the usual checks, in
    /// force after the notice period.
    #[oai(path = "/v1/rulesets/:rule_set_id/adjust", method = "post", operation_id = "adjustRuleSet")]
    async fn adjust(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        rule_set_id: Path<Uuid>,
    ) -> ApiResult<Json<AdjustReportView>> {
        let report = state.kernel.adjust_rule_set(&auth.0, RuleSetId::from_uuid(rule_set_id.0)).await?;
        Ok(Json(report.into()))
    }

    /// Quote a stay at a site or space: the price under the rules in force, line items, the rule
    /// version, a trace of what fired, and how long the price holds. A stay the rules refuse is
    /// 422 with their reason.
    #[oai(path = "/v1/quotes", method = "post", operation_id = "createQuote")]
    async fn create_quote(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        body: Json<QuoteCreate>,
    ) -> ApiResult<Created<QuoteView>> {
        let quote = state.kernel.create_quote(&auth.0, body.0.into_kernel()).await?;
        Ok(Created::Created(Json(quote.into())))
    }

    /// Get a quote (the driver who asked for it, or the site's operator).
    #[oai(path = "/v1/quotes/:quote_id", method = "get", operation_id = "getQuote")]
    async fn get_quote(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        quote_id: Path<Uuid>,
    ) -> ApiResult<Json<QuoteView>> {
        let quote = state.kernel.get_quote(&auth.0, QuoteId::from_uuid(quote_id.0)).await?;
        Ok(Json(quote.into()))
    }
}
