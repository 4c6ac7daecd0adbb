//! Wire types of rule sets, versions, fixtures and quotes. Fixtures and contexts have the same
//! field names on the wire as in the kernel, so they convert through JSON.

use std::collections::BTreeSet;

use berth_kernel::pricing::{Quote, SimulationReport, TestReport};
use berth_kernel::rules::{
    Activation, AdjustmentSettings, EntryPoint, ErrorPolicy, Guardrails, LineItem, LineKind, Params, RuleSet, RuleTest,
    RuleVersion, TraceStep, VersionStatus,
};
use chrono::{DateTime, NaiveDate, Utc};
use poem_openapi::types::{ParseFromJSON, ToJSON};
use poem_openapi::{Enum, Object};
use uuid::Uuid;

use crate::dto::VehicleTypeDto;
use crate::problem::{ApiError, ApiResult};

/// Converts between a wire object and the kernel type with the same JSON shape.
fn wire_to_kernel<W: ToJSON, K: serde::de::DeserializeOwned>(field: &str, wire: &W) -> ApiResult<K> {
    let mut value = wire.to_json().unwrap_or(serde_json::Value::Null);
    drop_nulls(&mut value);
    serde_json::from_value(value).map_err(|error| ApiError::validation(field, format!("{field}: {error}")))
}

/// Absent optional wire fields serialise as `null`; the kernel's defaults apply to missing ones.
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, field| !field.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn kernel_to_wire<K: serde::Serialize, W: ParseFromJSON>(kernel: &K) -> W {
    let value = serde_json::to_value(kernel).ok();
    W::parse_from_json(value).unwrap_or_else(|error| panic!("kernel and wire shapes agree: {}", error.message()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum PolicyDto {
    /// Refuse the quote with a clear problem.
    Deny,
    /// Quote `amount_minor` and say so in the trace.
    FallbackPrice,
}

/// What happens when a rule fails at evaluation.
#[derive(Debug, Clone, Object)]
pub struct ErrorPolicyDto {
    pub policy: PolicyDto,
    /// For `fallback_price`: the amount quoted, in minor units.
    #[oai(skip_serializing_if_is_none)]
    pub amount_minor: Option<i64>,
}

impl ErrorPolicyDto {
    fn into_kernel(self) -> ApiResult<ErrorPolicy> {
        match (self.policy, self.amount_minor) {
            (PolicyDto::Deny, None) => Ok(ErrorPolicy::Deny),
            (PolicyDto::Deny, Some(_)) => Err(ApiError::validation(
                "error_policy.amount_minor",
                "error_policy.amount_minor: only for fallback_price",
            )),
            (PolicyDto::FallbackPrice, Some(amount_minor)) => Ok(ErrorPolicy::FallbackPrice { amount_minor }),
            (PolicyDto::FallbackPrice, None) => Err(ApiError::validation(
                "error_policy.amount_minor",
                "error_policy.amount_minor: fallback_price needs an amount",
            )),
        }
    }
}

impl From<ErrorPolicy> for ErrorPolicyDto {
    fn from(policy: ErrorPolicy) -> Self {
        match policy {
            ErrorPolicy::Deny => Self { policy: PolicyDto::Deny, amount_minor: None },
            ErrorPolicy::FallbackPrice { amount_minor } => {
                Self { policy: PolicyDto::FallbackPrice, amount_minor: Some(amount_minor) }
            }
        }
    }
}

/// Limits every answer and every publish must respect.
#[derive(Debug, Clone, Object)]
pub struct GuardrailsDto {
    /// No price may exceed this total (minor units). Default 100000.
    #[oai(default = "default_max_total")]
    pub max_total_minor: i64,
    /// At publish: each fixture of an hour or more must cost at least this per hour.
    #[oai(skip_serializing_if_is_none)]
    pub min_hourly_minor: Option<i64>,
    /// At publish: each fixture of an hour or more must cost at most this per hour.
    #[oai(skip_serializing_if_is_none)]
    pub max_hourly_minor: Option<i64>,
    /// At publish: no fixture's price may move more than this percentage from the version in force.
    #[oai(skip_serializing_if_is_none)]
    pub max_step_percent: Option<u32>,
}

fn default_max_total() -> i64 {
    Guardrails::default().max_total_minor
}

impl From<GuardrailsDto> for Guardrails {
    fn from(dto: GuardrailsDto) -> Self {
        Self {
            max_total_minor: dto.max_total_minor,
            min_hourly_minor: dto.min_hourly_minor,
            max_hourly_minor: dto.max_hourly_minor,
            max_step_percent: dto.max_step_percent,
        }
    }
}

impl From<Guardrails> for GuardrailsDto {
    fn from(rails: Guardrails) -> Self {
        Self {
            max_total_minor: rails.max_total_minor,
            min_hourly_minor: rails.min_hourly_minor,
            max_hourly_minor: rails.max_hourly_minor,
            max_step_percent: rails.max_step_percent,
        }
    }
}

#[derive(Debug, Object)]
pub struct RuleSetCreate {
    pub name: String,
    /// The site this rule set prices; absent: every site of the operator without its own.
    pub site_id: Option<Uuid>,
    /// ISO 4217; must be the site's currency.
    pub currency: String,
    /// Default: `deny`.
    pub error_policy: Option<ErrorPolicyDto>,
    pub guardrails: Option<GuardrailsDto>,
    /// The operator calendar: dates whose day type is `holiday`.
    #[oai(default)]
    pub holidays: Vec<NaiveDate>,
    /// Scheduled adjustments (`adjust(ctx)`): review period and notice. Default 28 and 7 days.
    pub adjustment: Option<AdjustmentDto>,
}

/// How scheduled adjustments run.
#[derive(Debug, Clone, Object)]
pub struct AdjustmentDto {
    /// Occupancy over this many days is reviewed (1-366).
    pub period_days: u32,
    /// An adjusted version takes effect this many days after it is made (0-366).
    pub notice_days: u32,
}

impl From<AdjustmentDto> for AdjustmentSettings {
    fn from(dto: AdjustmentDto) -> Self {
        Self { period_days: dto.period_days, notice_days: dto.notice_days }
    }
}

impl From<AdjustmentSettings> for AdjustmentDto {
    fn from(settings: AdjustmentSettings) -> Self {
        Self { period_days: settings.period_days, notice_days: settings.notice_days }
    }
}

/// A JSON object of parameters, or a clear problem naming `field`.
fn params_of(field: &str, value: Option<serde_json::Value>) -> ApiResult<Params> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(Params::new()),
        Some(serde_json::Value::Object(params)) => Ok(params),
        Some(_) => Err(ApiError::validation(field, format!("{field}: must be a JSON object of named values"))),
    }
}

impl RuleSetCreate {
    pub fn into_kernel(self) -> ApiResult<berth_kernel::pricing::RuleSetInput> {
        Ok(berth_kernel::pricing::RuleSetInput {
            name: self.name,
            site_id: self.site_id.map(Into::into),
            currency: self.currency,
            error_policy: self.error_policy.map(ErrorPolicyDto::into_kernel).transpose()?.unwrap_or(ErrorPolicy::Deny),
            guardrails: self.guardrails.map(Into::into).unwrap_or_default(),
            holidays: self.holidays.into_iter().collect(),
            adjustment: self.adjustment.map(Into::into).unwrap_or_default(),
        })
    }
}

#[derive(Debug, Object)]
pub struct RuleSetUpdate {
    pub name: Option<String>,
    pub error_policy: Option<ErrorPolicyDto>,
    pub guardrails: Option<GuardrailsDto>,
    pub holidays: Option<Vec<NaiveDate>>,
    pub adjustment: Option<AdjustmentDto>,
}

impl RuleSetUpdate {
    pub fn into_kernel(self) -> ApiResult<berth_kernel::pricing::RuleSetPatch> {
        Ok(berth_kernel::pricing::RuleSetPatch {
            name: self.name,
            error_policy: self.error_policy.map(ErrorPolicyDto::into_kernel).transpose()?,
            guardrails: self.guardrails.map(Into::into),
            holidays: self.holidays.map(|days| days.into_iter().collect::<BTreeSet<_>>()),
            adjustment: self.adjustment.map(Into::into),
        })
    }
}

#[derive(Debug, Object)]
pub struct RuleSetView {
    pub id: Uuid,
    #[oai(skip_serializing_if_is_none)]
    pub site_id: Option<Uuid>,
    pub name: String,
    pub currency: String,
    pub error_policy: ErrorPolicyDto,
    pub guardrails: GuardrailsDto,
    pub holidays: Vec<NaiveDate>,
    pub adjustment: AdjustmentDto,
    pub created_at: DateTime<Utc>,
}

impl From<RuleSet> for RuleSetView {
    fn from(set: RuleSet) -> Self {
        Self {
            id: set.id.as_uuid(),
            site_id: set.site_id.map(|site| site.as_uuid()),
            name: set.name,
            currency: set.currency.code(),
            error_policy: set.error_policy.into(),
            guardrails: set.guardrails.into(),
            holidays: set.holidays.into_iter().collect(),
            adjustment: set.adjustment.into(),
            created_at: set.created_at,
        }
    }
}

page_type!(RuleSetPage of RuleSetView);

// ----- fixtures (same JSON shape as the kernel's) -------------------------------------------

mirror_enum!(
    /// A rule set's function: `price`, `allow_booking`, `cancellation_fee`, `extension`,
    /// `overstay_fee` or `adjust`.
    EntryPointDto <=> EntryPoint { Price, AllowBooking, CancellationFee, Extension, OverstayFee, Adjust }
);

#[derive(Debug, Clone, Object)]
pub struct OpeningFactsDto {
    /// `mon`..`sun`, or `weekday`/`weekend`/`holiday`.
    pub days: Vec<String>,
    /// `HH:MM`.
    pub opens: String,
    /// `HH:MM`; before `opens` runs past midnight.
    pub closes: String,
}

/// Site facts a fixture sees (defaults: the rule set's site, else a test site in UTC).
#[derive(Debug, Clone, Object)]
pub struct SiteFactsDto {
    pub id: Option<Uuid>,
    pub name: Option<String>,
    pub kind: Option<String>,
    /// IANA time zone.
    pub timezone: Option<String>,
    pub currency: Option<String>,
    pub capacity: Option<u32>,
    pub max_stay_minutes: Option<u32>,
    pub max_height_cm: Option<u32>,
    pub allowed_vehicle_types: Option<Vec<String>>,
    pub opening_hours: Option<Vec<OpeningFactsDto>>,
}

#[derive(Debug, Clone, Object)]
pub struct SpaceFactsDto {
    pub id: Option<Uuid>,
    pub code: Option<String>,
    pub category: Option<String>,
    pub vehicle_type: Option<String>,
    pub ev_charger: Option<bool>,
    pub accessible: Option<bool>,
}

#[derive(Debug, Clone, Object)]
pub struct OccupancyDto {
    /// Occupied share of the spaces whose state is known, 0-100.
    pub percent: Option<f64>,
    pub free: Option<u32>,
    pub total: Option<u32>,
    /// Average over the last hour, 0-100.
    pub recent_percent: Option<f64>,
}

/// Driver attributes the operator vouches for.
#[derive(Debug, Clone, Object)]
pub struct DriverFactsDto {
    #[oai(default)]
    pub permits: Vec<String>,
    #[oai(default)]
    pub accessible: bool,
}

#[derive(Debug, Clone, Object)]
pub struct BookingFixtureDto {
    pub paid_minor: Option<i64>,
    pub new_end: Option<String>,
    pub departed_at: Option<String>,
}

/// A context written by hand: times local to the site (`2026-03-02T09:00`) unless they carry an
/// offset.
#[derive(Debug, Clone, Object)]
pub struct ContextFixtureDto {
    pub start: String,
    pub end: String,
    /// Default: one hour before `start`.
    pub now: Option<String>,
    /// Default: `car`.
    pub vehicle_type: Option<String>,
    pub site: Option<SiteFactsDto>,
    pub space: Option<SpaceFactsDto>,
    pub occupancy: Option<OccupancyDto>,
    pub driver: Option<DriverFactsDto>,
    pub booking: Option<BookingFixtureDto>,
    /// Parameters for this case (default: the version's).
    pub params: Option<serde_json::Value>,
    /// For `adjust` cases: what the review saw.
    pub adjustment: Option<AdjustmentFactsDto>,
}

#[derive(Debug, Clone, Object)]
pub struct AdjustmentFactsDto {
    /// 24 percentages (null where unknown), 00:00-01:00 first, local time.
    pub occupancy_by_hour: Option<Vec<Option<f64>>>,
    pub period_days: Option<u32>,
    pub days_since_change: Option<i64>,
}

#[derive(Debug, Clone, Object)]
pub struct ExpectationDto {
    pub total_minor: Option<i64>,
    pub allow: Option<bool>,
    /// The denial reason contains this.
    pub reason_contains: Option<String>,
    /// The evaluation fails with an error containing this.
    pub error_contains: Option<String>,
    /// `adjust` proposes exactly these parameters (`{}`: no change).
    pub params: Option<serde_json::Value>,
}

/// A test case: a context and what must come out. Without `entry`, a case that expects a
/// decision runs `allow_booking`, any other `price`.
#[derive(Debug, Clone, Object)]
pub struct RuleTestDto {
    pub name: String,
    pub entry: Option<EntryPointDto>,
    pub context: ContextFixtureDto,
    pub expect: Option<ExpectationDto>,
}

// ----- versions -----------------------------------------------------------------------------

#[derive(Debug, Object)]
pub struct VersionCreate {
    /// The Rhai script.
    pub source: String,
    #[oai(default)]
    pub tests: Vec<RuleTestDto>,
    /// Named values the script reads as `ctx.params` (a JSON object).
    pub params: Option<serde_json::Value>,
}

impl VersionCreate {
    pub fn params(&self) -> ApiResult<Params> {
        params_of("params", self.params.clone())
    }

    pub fn tests(&self) -> ApiResult<Vec<RuleTest>> {
        self.tests.iter().enumerate().map(|(index, test)| wire_to_kernel(&format!("tests[{index}]"), test)).collect()
    }
}

mirror_enum!(
    /// `draft` until published; a published version never changes.
    VersionStatusDto <=> VersionStatus { Draft, Published }
);

#[derive(Debug, Object)]
pub struct VersionView {
    pub rule_set_id: Uuid,
    pub version: u32,
    pub status: VersionStatusDto,
    pub source: String,
    pub tests: Vec<RuleTestDto>,
    /// The version's parameters.
    pub params: serde_json::Value,
    pub created_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    pub published_at: Option<DateTime<Utc>>,
}

impl From<RuleVersion> for VersionView {
    fn from(version: RuleVersion) -> Self {
        Self {
            rule_set_id: version.rule_set_id.as_uuid(),
            version: version.version,
            status: version.status.into(),
            tests: version.tests.iter().map(kernel_to_wire).collect(),
            params: serde_json::Value::Object(version.params),
            source: version.source,
            created_at: version.created_at,
            published_at: version.published_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ActivationView {
    pub version: u32,
    pub effective_from: DateTime<Utc>,
    /// `publish` or `rollback`.
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

impl From<Activation> for ActivationView {
    fn from(activation: Activation) -> Self {
        Self {
            version: activation.version,
            effective_from: activation.effective_from,
            reason: activation.reason,
            created_at: activation.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct VersionList {
    pub versions: Vec<VersionView>,
    /// Every publish and rollback, oldest first.
    pub activations: Vec<ActivationView>,
    /// The version in force now.
    #[oai(skip_serializing_if_is_none)]
    pub in_force: Option<u32>,
}

#[derive(Debug, Object)]
pub struct TestResultView {
    pub name: String,
    pub passed: bool,
    /// What it produced, or why it failed.
    pub message: String,
    #[oai(skip_serializing_if_is_none)]
    pub total_minor: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub allow: Option<bool>,
}

#[derive(Debug, Object)]
pub struct TestReportView {
    pub version: u32,
    pub passed: bool,
    pub results: Vec<TestResultView>,
}

impl From<TestReport> for TestReportView {
    fn from(report: TestReport) -> Self {
        Self {
            version: report.version,
            passed: report.passed,
            results: report
                .outcomes
                .into_iter()
                .map(|outcome| TestResultView {
                    name: outcome.name,
                    passed: outcome.passed,
                    message: outcome.message,
                    total_minor: outcome.price.map(|price| price.total_minor),
                    allow: outcome.decision.map(|decision| decision.allow),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Object)]
pub struct PublishRequest {
    /// When the version takes effect; default and earliest: now.
    pub effective_from: Option<DateTime<Utc>>,
}

#[derive(Debug, Object)]
pub struct RollbackRequest {
    /// An earlier published version to put back in force now.
    pub version: u32,
}

#[derive(Debug, Object)]
pub struct SimulateRequest {
    #[oai(default)]
    pub contexts: Vec<ContextFixtureDto>,
    /// Also re-price the quotes recorded over this many days (1-366).
    pub history_days: Option<u32>,
}

impl SimulateRequest {
    pub fn into_kernel(self) -> ApiResult<berth_kernel::pricing::SimulationInput> {
        Ok(berth_kernel::pricing::SimulationInput {
            contexts: self
                .contexts
                .iter()
                .enumerate()
                .map(|(index, context)| wire_to_kernel(&format!("contexts[{index}]"), context))
                .collect::<ApiResult<_>>()?,
            history_days: self.history_days,
        })
    }
}

#[derive(Debug, Object)]
pub struct SimulatedCaseView {
    /// `contexts[i]` or `quote <id>`.
    pub label: String,
    #[oai(skip_serializing_if_is_none)]
    pub active_minor: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub candidate_minor: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub delta_minor: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
}

#[derive(Debug, Object)]
pub struct SimulationView {
    pub version: u32,
    #[oai(skip_serializing_if_is_none)]
    pub active_version: Option<u32>,
    pub cases: Vec<SimulatedCaseView>,
    pub active_revenue_minor: i64,
    pub candidate_revenue_minor: i64,
    pub revenue_delta_minor: i64,
    /// The simulation's time budget ran out: `cases` covers only the first contexts.
    pub truncated: bool,
}

impl From<SimulationReport> for SimulationView {
    fn from(report: SimulationReport) -> Self {
        Self {
            version: report.version,
            active_version: report.active_version,
            revenue_delta_minor: report.candidate_revenue_minor.saturating_sub(report.active_revenue_minor),
            truncated: report.truncated,
            active_revenue_minor: report.active_revenue_minor,
            candidate_revenue_minor: report.candidate_revenue_minor,
            cases: report
                .cases
                .into_iter()
                .map(|case| SimulatedCaseView {
                    delta_minor: case.candidate_minor.zip(case.active_minor).map(|(new, old)| new - old),
                    label: case.label,
                    active_minor: case.active_minor,
                    candidate_minor: case.candidate_minor,
                    error: case.error,
                })
                .collect(),
        }
    }
}

// ----- quotes -------------------------------------------------------------------------------

#[derive(Debug, Object)]
pub struct QuoteCreate {
    /// The site; optional when `space_id` is given.
    pub site_id: Option<Uuid>,
    /// A specific space.
    pub space_id: Option<Uuid>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Default: the vehicle's type, else `car`.
    pub vehicle_type: Option<VehicleTypeDto>,
    /// One of the calling driver's vehicles.
    pub vehicle_id: Option<Uuid>,
    /// Operators only: driver attributes they vouch for (permits, accessibility).
    pub driver: Option<DriverFactsDto>,
}

impl QuoteCreate {
    pub fn into_kernel(self) -> berth_kernel::pricing::QuoteInput {
        berth_kernel::pricing::QuoteInput {
            site_id: self.site_id.map(Into::into),
            space_id: self.space_id.map(Into::into),
            start: self.start,
            end: self.end,
            vehicle_type: self.vehicle_type.map(Into::into),
            vehicle_id: self.vehicle_id.map(Into::into),
            driver: self.driver.map(|driver| berth_kernel::rules::DriverFacts {
                permits: driver.permits,
                accessible: driver.accessible,
            }),
        }
    }
}

mirror_enum!(
    /// `base`, `surcharge`, `discount` (subtracted from the total), `fee` or `tax`.
    LineKindDto <=> LineKind { Base, Surcharge, Discount, Fee, Tax }
);

#[derive(Debug, Object)]
pub struct LineItemView {
    pub kind: LineKindDto,
    pub label: String,
    /// Minor units, never negative; discounts are subtracted.
    pub amount_minor: i64,
    /// The rule line that produced it.
    #[oai(skip_serializing_if_is_none)]
    pub line: Option<u32>,
}

impl From<LineItem> for LineItemView {
    fn from(item: LineItem) -> Self {
        Self { kind: item.kind.into(), label: item.label, amount_minor: item.amount_minor, line: item.line }
    }
}

#[derive(Debug, Object)]
pub struct TraceStepView {
    #[oai(skip_serializing_if_is_none)]
    pub line: Option<u32>,
    pub message: String,
}

impl From<TraceStep> for TraceStepView {
    fn from(step: TraceStep) -> Self {
        Self { line: step.line, message: step.message }
    }
}

#[derive(Debug, Object)]
pub struct RuleRef {
    pub rule_set_id: Uuid,
    pub version: u32,
}

#[derive(Debug, Object)]
pub struct QuoteView {
    pub id: Uuid,
    pub site_id: Uuid,
    #[oai(skip_serializing_if_is_none)]
    pub space_id: Option<Uuid>,
    pub vehicle_type: VehicleTypeDto,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub currency: String,
    pub total_minor: i64,
    pub items: Vec<LineItemView>,
    /// The rule version that priced it.
    pub rule: RuleRef,
    /// The rule failed and the rule set's fallback price was quoted.
    pub fallback: bool,
    /// What fired, in order, with script lines.
    pub trace: Vec<TraceStepView>,
    pub created_at: DateTime<Utc>,
    /// The price holds until then.
    pub expires_at: DateTime<Utc>,
}

impl From<Quote> for QuoteView {
    fn from(quote: Quote) -> Self {
        Self {
            id: quote.id.as_uuid(),
            site_id: quote.site_id.as_uuid(),
            space_id: quote.space_id.map(|space| space.as_uuid()),
            vehicle_type: quote.vehicle_type.into(),
            start: quote.start,
            end: quote.end,
            currency: quote.price.currency,
            total_minor: quote.price.total_minor,
            items: quote.price.items.into_iter().map(Into::into).collect(),
            rule: RuleRef { rule_set_id: quote.rule_set_id.as_uuid(), version: quote.rule_version },
            fallback: quote.fallback,
            trace: quote.trace.into_iter().map(Into::into).collect(),
            created_at: quote.created_at,
            expires_at: quote.expires_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct AdjustReportView {
    /// What happened.
    pub message: String,
    /// The parameters `adjust(ctx)` proposed, when it proposed a change.
    #[oai(skip_serializing_if_is_none)]
    pub proposed: Option<serde_json::Value>,
    /// The version made for them.
    #[oai(skip_serializing_if_is_none)]
    pub version: Option<u32>,
    #[oai(skip_serializing_if_is_none)]
    pub effective_from: Option<DateTime<Utc>>,
}

impl From<berth_kernel::pricing::AdjustReport> for AdjustReportView {
    fn from(report: berth_kernel::pricing::AdjustReport) -> Self {
        Self {
            message: report.message,
            proposed: report.proposed.map(serde_json::Value::Object),
            version: report.version.map(|version| version.version),
            effective_from: report.effective_from,
        }
    }
}

// ----- search -------------------------------------------------------------------------------

/// A site that has room for the stay.
#[derive(Debug, Object)]
pub struct SearchHitView {
    pub site: crate::dto::SiteView,
    pub distance_m: f64,
    /// Spaces that fit the vehicle and filters and are free for the window (live state for a
    /// stay starting within 15 minutes).
    pub free_spaces: u32,
    /// Spaces that fit the vehicle and filters.
    pub matching_spaces: u32,
    /// The price under the rules in force, in minor units.
    #[oai(skip_serializing_if_is_none)]
    pub total_minor: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub currency: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub items: Option<Vec<LineItemView>>,
    #[oai(skip_serializing_if_is_none)]
    pub rule_version: Option<u32>,
    /// Why there is no price (no rules published, rules failing).
    #[oai(skip_serializing_if_is_none)]
    pub unpriced: Option<String>,
    /// Mean confidence (0-1) of the free spaces' state.
    pub confidence: f64,
    /// Age in seconds of the oldest sensor reading behind `free_spaces`.
    #[oai(skip_serializing_if_is_none)]
    pub data_age_secs: Option<i64>,
}

impl From<berth_kernel::search::SearchHit> for SearchHitView {
    fn from(hit: berth_kernel::search::SearchHit) -> Self {
        let (total_minor, currency, items) = match hit.price {
            Some(price) => {
                (Some(price.total_minor), Some(price.currency), Some(price.items.into_iter().map(Into::into).collect()))
            }
            None => (None, None, None),
        };
        Self {
            site: hit.site.into(),
            distance_m: (hit.distance_m * 10.0).round() / 10.0,
            free_spaces: hit.free_spaces,
            matching_spaces: hit.matching_spaces,
            total_minor,
            currency,
            items,
            rule_version: hit.rule_version,
            unpriced: hit.unpriced,
            confidence: (hit.confidence * 1000.0).round() / 1000.0,
            data_age_secs: hit.data_age_secs,
        }
    }
}

#[derive(Debug, Object)]
pub struct SearchResults {
    pub items: Vec<SearchHitView>,
}
