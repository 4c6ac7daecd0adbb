//! Rule sets through their lifecycle (draft → test → publish → rollback, simulate) and quotes:
//! which version is in force for a site, the context it sees, and a checked price.
//!
//! Compiled versions are cached by (rule set, version): versions never change, so an entry is
//! never stale. Scripts run on the blocking pool, never on the reactor.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::auth::{Access, Principal};
use crate::error::{KernelError, KernelResult, ValidationError};
use crate::ids::{DriverId, OperatorId, QuoteId, RuleSetId, SiteId, SpaceId, VehicleId};
use crate::occupancy::{OccupancyProfile, occupancy_profile};
use crate::page::{Page, PageRequest};
use crate::rules::{
    Activation, AdjustmentFacts, AdjustmentSettings, CompiledRules, ContextFixture, DriverFacts, EntryPoint,
    ErrorPolicy, Guardrails, LineItem, LineKind, LocalTime, Occupancy, Params, Price, RuleContext, RuleError, RuleSet,
    RuleTest, RuleVersion, RulesEngine, SiteFacts, SpaceFacts, TestOutcome, TestSetting, TraceStep, VersionStatus,
    evaluate_checked, evaluate_checked_each, guardrail_violations, holidays_between, price_with_params, run_test,
    version_in_force,
};
use crate::service::{Kernel, now, operator_scope};
use crate::site::Currency;
use crate::space::SpaceStatus;
use crate::validate::required_text;
use crate::vehicle_type::VehicleType;

/// How long a quote's price holds.
pub const QUOTE_TTL: Duration = Duration::minutes(15);
/// The longest stay a quote prices.
pub const MAX_QUOTE_DAYS: i64 = 31;
/// The furthest ahead a quote may start.
pub const MAX_LEAD_DAYS: i64 = 366;

/// A rules engine that is not there: every compile fails, saying so.
pub struct NoRules;

impl RulesEngine for NoRules {
    fn compile(&self, _source: &str) -> Result<Arc<dyn CompiledRules>, RuleError> {
        Err(RuleError::new(crate::rules::RuleErrorKind::Compile, "no rules engine is configured"))
    }
}

/// Compiled versions, and what pricing reads on every quote and search, shared by all requests.
#[derive(Default)]
pub struct RuleCache {
    compiled: Mutex<HashMap<(RuleSetId, u32), Arc<dyn CompiledRules>>>,
    /// Published versions (their source and parameters never change).
    published: Mutex<HashMap<(RuleSetId, u32), Arc<RuleVersion>>>,
    /// Each site's rule set and its activations, and when they were read: this node's rule
    /// writes drop them all; another node's appear within [`SITE_RULES_MAX_AGE`].
    site_rules: Mutex<HashMap<(OperatorId, SiteId), CachedSiteRules>>,
    /// Counts this node's rule writes: rules read before one are not kept.
    generation: std::sync::atomic::AtomicU64,
    /// Each site's last-hour occupancy, and when it was computed.
    recent: Mutex<HashMap<SiteId, (std::time::Instant, Option<f64>)>>,
}

const MAX_CACHED_VERSIONS: usize = 4096;
/// How long a site's rule set and activations are reused without reading them again.
pub const SITE_RULES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);
/// Older than this, a site's rules are read again before they price anything.
pub const SITE_RULES_STALE_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// A site's rules as last read (`None`: none priced it), and when.
type CachedSiteRules = (std::time::Instant, Option<Arc<SiteRules>>);

/// The rule set that prices a site, and its activations.
struct SiteRules {
    rule_set: RuleSet,
    activations: Vec<Activation>,
}

impl RuleCache {
    /// After a rule write on this node: what any site's prices come from may have changed.
    fn forget_site_rules(&self) {
        let mut site_rules = self.site_rules.lock().unwrap();
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        site_rules.clear();
    }
}

#[derive(Debug, Clone)]
pub struct RuleSetInput {
    pub name: String,
    pub site_id: Option<SiteId>,
    pub currency: String,
    pub error_policy: ErrorPolicy,
    pub guardrails: Guardrails,
    pub holidays: BTreeSet<NaiveDate>,
    pub adjustment: AdjustmentSettings,
}

#[derive(Debug, Clone, Default)]
pub struct RuleSetPatch {
    pub name: Option<String>,
    pub error_policy: Option<ErrorPolicy>,
    pub guardrails: Option<Guardrails>,
    pub holidays: Option<BTreeSet<NaiveDate>>,
    pub adjustment: Option<AdjustmentSettings>,
}

/// A version with what the engine says of it.
#[derive(Debug, Clone)]
pub struct TestReport {
    pub version: u32,
    pub passed: bool,
    pub outcomes: Vec<TestOutcome>,
}

/// One context priced by a candidate and by the version in force.
#[derive(Debug, Clone)]
pub struct SimulatedCase {
    pub label: String,
    pub active_minor: Option<i64>,
    pub candidate_minor: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SimulationReport {
    pub version: u32,
    pub active_version: Option<u32>,
    pub cases: Vec<SimulatedCase>,
    pub active_revenue_minor: i64,
    pub candidate_revenue_minor: i64,
    /// The simulation's time budget ran out before every context was priced.
    pub truncated: bool,
}

/// What to simulate: given contexts, or the quotes recorded over the last `history_days`.
#[derive(Debug, Clone, Default)]
pub struct SimulationInput {
    pub contexts: Vec<ContextFixture>,
    pub history_days: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct QuoteInput {
    pub site_id: Option<SiteId>,
    pub space_id: Option<SpaceId>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub vehicle_type: Option<VehicleType>,
    pub vehicle_id: Option<VehicleId>,
    /// Operators may vouch for a driver's permits; drivers' own requests carry none.
    pub driver: Option<DriverFacts>,
}

/// What [`Kernel::price_stay`] prices.
#[derive(Debug, Clone)]
pub(crate) struct Stay<'a> {
    pub space: Option<&'a crate::space::Space>,
    /// The site's availability when the caller has loaded it already (search); else loaded here.
    pub availability: Option<&'a crate::ingest::Availability>,
    pub vehicle_type: VehicleType,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub driver: DriverFacts,
}

/// A stay priced by the rules in force.
#[derive(Debug, Clone)]
pub(crate) struct PricedStay {
    pub price: Price,
    pub trace: Vec<TraceStep>,
    pub fallback: bool,
    pub rule_set_id: RuleSetId,
    pub version: u32,
    pub context: RuleContext,
}

/// A stored quote: the price, the rule version that made it, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub id: QuoteId,
    pub operator_id: OperatorId,
    pub site_id: SiteId,
    pub space_id: Option<SpaceId>,
    pub driver_id: Option<DriverId>,
    pub vehicle_type: VehicleType,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub price: Price,
    pub rule_set_id: RuleSetId,
    pub rule_version: u32,
    /// The error policy's fallback price was used because the rule failed.
    pub fallback: bool,
    pub trace: Vec<TraceStep>,
    pub context: RuleContext,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Kernel {
    pub(crate) fn rule_cache(&self) -> &RuleCache {
        &self.rule_cache
    }

    // ----- rule sets --------------------------------------------------------------------------

    pub async fn create_rule_set(&self, caller: &Principal, input: RuleSetInput) -> KernelResult<RuleSet> {
        let operator = operator_scope(caller, Access::Write)?;
        let currency = Currency::parse(&input.currency)?;
        if let Some(site_id) = input.site_id {
            let site = self.store().get_site(operator, site_id).await?.ok_or_else(|| KernelError::not_found("site"))?;
            if site.details.currency != currency {
                return Err(ValidationError::new(
                    "currency",
                    format!("the site charges in {}, not {}", site.details.currency.code(), currency.code()),
                )
                .into());
            }
        }
        validate_settings(&input.error_policy, &input.guardrails)?;
        input.adjustment.validate()?;
        let rule_set = RuleSet {
            id: RuleSetId::new(),
            operator_id: operator,
            site_id: input.site_id,
            name: required_text("name", &input.name, 120)?,
            currency,
            error_policy: input.error_policy,
            guardrails: input.guardrails,
            holidays: input.holidays,
            adjustment: input.adjustment,
            created_at: now(),
        };
        self.store().insert_rule_set(&rule_set).await?;
        self.rule_cache().forget_site_rules();
        Ok(rule_set)
    }

    pub async fn get_rule_set(&self, caller: &Principal, id: RuleSetId) -> KernelResult<RuleSet> {
        let operator = operator_scope(caller, Access::Read)?;
        self.store().get_rule_set(operator, id).await?.ok_or_else(|| KernelError::not_found("rule set"))
    }

    pub async fn list_rule_sets(&self, caller: &Principal, page: PageRequest) -> KernelResult<Page<RuleSet>> {
        let operator = operator_scope(caller, Access::Read)?;
        Ok(self.store().list_rule_sets(operator, page).await?)
    }

    pub async fn update_rule_set(
        &self,
        caller: &Principal,
        id: RuleSetId,
        patch: RuleSetPatch,
    ) -> KernelResult<RuleSet> {
        let operator = operator_scope(caller, Access::Write)?;
        let mut rule_set =
            self.store().get_rule_set(operator, id).await?.ok_or_else(|| KernelError::not_found("rule set"))?;
        if let Some(name) = patch.name {
            rule_set.name = required_text("name", &name, 120)?;
        }
        if let Some(policy) = patch.error_policy {
            rule_set.error_policy = policy;
        }
        if let Some(guardrails) = patch.guardrails {
            rule_set.guardrails = guardrails;
        }
        if let Some(holidays) = patch.holidays {
            rule_set.holidays = holidays;
        }
        if let Some(adjustment) = patch.adjustment {
            adjustment.validate()?;
            rule_set.adjustment = adjustment;
        }
        validate_settings(&rule_set.error_policy, &rule_set.guardrails)?;
        self.store().update_rule_set(&rule_set).await?;
        self.rule_cache().forget_site_rules();
        Ok(rule_set)
    }

    // ----- versions ---------------------------------------------------------------------------

    /// Stores a new draft version. It must compile; its fixtures run on `:test` and `:publish`.
    pub async fn create_rule_version(
        &self,
        caller: &Principal,
        id: RuleSetId,
        source: String,
        tests: Vec<RuleTest>,
        params: Params,
    ) -> KernelResult<RuleVersion> {
        let operator = operator_scope(caller, Access::Write)?;
        self.store().get_rule_set(operator, id).await?.ok_or_else(|| KernelError::not_found("rule set"))?;
        self.add_version(operator, id, source, tests, params).await
    }

    async fn add_version(
        &self,
        operator: OperatorId,
        id: RuleSetId,
        source: String,
        tests: Vec<RuleTest>,
        params: Params,
    ) -> KernelResult<RuleVersion> {
        let rule_set =
            self.store().get_rule_set(operator, id).await?.ok_or_else(|| KernelError::not_found("rule set"))?;
        if serde_json::to_string(&params).map_or(0, |text| text.len()) > MAX_PARAMS_BYTES {
            return Err(ValidationError::new("params", format!("at most {MAX_PARAMS_BYTES} bytes of JSON")).into());
        }
        if tests.len() > crate::rules::MAX_TESTS {
            return Err(ValidationError::new("tests", format!("at most {} test cases", crate::rules::MAX_TESTS)).into());
        }
        self.compile_source(&source).await.map_err(|error| rule_validation("source", &error))?;
        for (index, test) in tests.iter().enumerate() {
            test.context
                .to_context(None, &rule_set.currency.code(), &rule_set.holidays, &params)
                .map_err(|error| error.within(&format!("tests[{index}].context")))?;
        }
        let existing = self.store().list_rule_versions(operator, id).await?;
        let version = RuleVersion {
            rule_set_id: id,
            version: existing.iter().map(|version| version.version).max().unwrap_or(0) + 1,
            source,
            tests,
            params,
            status: VersionStatus::Draft,
            created_at: now(),
            published_at: None,
        };
        self.store().insert_rule_version(operator, &version).await?;
        Ok(version)
    }

    pub async fn get_rule_version(&self, caller: &Principal, id: RuleSetId, version: u32) -> KernelResult<RuleVersion> {
        let operator = operator_scope(caller, Access::Read)?;
        self.store()
            .get_rule_version(operator, id, version)
            .await?
            .ok_or_else(|| KernelError::not_found("rule version"))
    }

    /// Every version of a rule set, and which one is in force now.
    pub async fn list_rule_versions(
        &self,
        caller: &Principal,
        id: RuleSetId,
    ) -> KernelResult<(Vec<RuleVersion>, Vec<Activation>, Option<u32>)> {
        let operator = operator_scope(caller, Access::Read)?;
        self.store().get_rule_set(operator, id).await?.ok_or_else(|| KernelError::not_found("rule set"))?;
        let versions = self.store().list_rule_versions(operator, id).await?;
        let activations = self.store().list_activations(operator, id).await?;
        let in_force = version_in_force(&activations, now());
        Ok((versions, activations, in_force))
    }

    /// Compiles a version and runs its fixtures.
    pub async fn test_rule_version(&self, caller: &Principal, id: RuleSetId, version: u32) -> KernelResult<TestReport> {
        let operator = operator_scope(caller, Access::Read)?;
        self.test_version(operator, id, version).await
    }

    async fn test_version(&self, operator: OperatorId, id: RuleSetId, version: u32) -> KernelResult<TestReport> {
        let (rule_set, rule_version) = self.rule_version(operator, id, version).await?;
        let compiled = self.compiled(&rule_set, &rule_version).await?;
        let site = self.fixture_site(&rule_set).await?;
        let outcomes = tokio::task::spawn_blocking(move || {
            let currency = rule_set.currency.code();
            let setting = TestSetting {
                site: site.as_ref(),
                currency: &currency,
                holidays: &rule_set.holidays,
                guardrails: &rule_set.guardrails,
                params: &rule_version.params,
            };
            rule_version.tests.iter().map(|test| run_test(compiled.as_ref(), test, &setting)).collect::<Vec<_>>()
        })
        .await
        .map_err(|_| KernelError::Unavailable("rule evaluation failed".into()))?;
        Ok(TestReport { version, passed: outcomes.iter().all(|outcome| outcome.passed), outcomes })
    }

    /// Publishes a draft: it must compile, have at least one fixture, pass all of them, and
    /// keep within the guardrails relative to the version in force at `effective_from`.
    pub async fn publish_rule_version(
        &self,
        caller: &Principal,
        id: RuleSetId,
        version: u32,
        effective_from: Option<DateTime<Utc>>,
    ) -> KernelResult<RuleVersion> {
        let operator = operator_scope(caller, Access::Write)?;
        let at = now();
        self.publish(operator, id, version, effective_from.unwrap_or(at).max(at), "publish").await
    }

    async fn publish(
        &self,
        operator: OperatorId,
        id: RuleSetId,
        version: u32,
        effective_from: DateTime<Utc>,
        reason: &str,
    ) -> KernelResult<RuleVersion> {
        let (rule_set, rule_version) = self.rule_version(operator, id, version).await?;
        if rule_version.status != VersionStatus::Draft {
            return Err(KernelError::Conflict(format!(
                "version {version} is already published; versions are immutable"
            )));
        }
        if rule_version.tests.is_empty() {
            return Err(ValidationError::new("tests", "publishing needs at least one test case").into());
        }
        let report = self.test_version(operator, id, version).await?;
        if !report.passed {
            let failures: Vec<String> = report
                .outcomes
                .iter()
                .filter(|outcome| !outcome.passed)
                .map(|outcome| format!("'{}': {}", outcome.name, outcome.message))
                .collect();
            return Err(ValidationError::new("tests", format!("test cases failed: {}", failures.join("; "))).into());
        }
        let activations = self.store().list_activations(operator, id).await?;
        let active = match version_in_force(&activations, effective_from) {
            Some(active_version) => {
                let (_, active) = self.rule_version(operator, id, active_version).await?;
                Some((self.compiled(&rule_set, &active).await?, active.params))
            }
            None => None,
        };
        let candidate = self.compiled(&rule_set, &rule_version).await?;
        let site = self.fixture_site(&rule_set).await?;
        let (tests, params) = (rule_version.tests.clone(), rule_version.params.clone());
        let rails_set = rule_set.clone();
        let violations = tokio::task::spawn_blocking(move || {
            let currency = rails_set.currency.code();
            let setting = TestSetting {
                site: site.as_ref(),
                currency: &currency,
                holidays: &rails_set.holidays,
                guardrails: &rails_set.guardrails,
                params: &params,
            };
            let active = active.as_ref().map(|(rules, params)| (rules.as_ref(), params));
            guardrail_violations((candidate.as_ref(), &params), active, &tests, &setting)
        })
        .await
        .map_err(|_| KernelError::Unavailable("rule evaluation failed".into()))?;
        if !violations.is_empty() {
            return Err(ValidationError::new("guardrails", violations.join("; ")).into());
        }
        // Now, not when publishing began: an activation never takes effect before it exists.
        let at = now();
        let effective_from = effective_from.max(at);
        let activation =
            Activation { rule_set_id: id, version, effective_from, created_at: at, reason: reason.to_owned() };
        self.store().publish_rule_version(operator, id, version, &activation).await?;
        self.rule_cache().forget_site_rules();
        Ok(RuleVersion { status: VersionStatus::Published, published_at: Some(at), ..rule_version })
    }

    /// Puts an earlier published version back in force now; versions scheduled for later are
    /// cancelled.
    pub async fn rollback_rule_set(&self, caller: &Principal, id: RuleSetId, version: u32) -> KernelResult<Activation> {
        let operator = operator_scope(caller, Access::Write)?;
        let (_, rule_version) = self.rule_version(operator, id, version).await?;
        if rule_version.status != VersionStatus::Published {
            return Err(KernelError::Conflict(format!(
                "version {version} was never published; only published versions can be rolled back to"
            )));
        }
        let at = now();
        let activation =
            Activation { rule_set_id: id, version, effective_from: at, created_at: at, reason: "rollback".into() };
        self.store().insert_rollback(operator, &activation).await?;
        self.rule_cache().forget_site_rules();
        Ok(activation)
    }

    /// Prices contexts (given, or recorded quotes of the last days) with `version` and with the
    /// version in force, and reports the differences.
    pub async fn simulate_rule_version(
        &self,
        caller: &Principal,
        id: RuleSetId,
        version: u32,
        input: SimulationInput,
    ) -> KernelResult<SimulationReport> {
        let operator = operator_scope(caller, Access::Read)?;
        let (rule_set, rule_version) = self.rule_version(operator, id, version).await?;
        let mut contexts: Vec<(String, RuleContext)> = Vec::new();
        let site = self.fixture_site(&rule_set).await?;
        for (index, fixture) in input.contexts.iter().enumerate() {
            let ctx = fixture
                .to_context(site.as_ref(), &rule_set.currency.code(), &rule_set.holidays, &Params::new())
                .map_err(|error| error.within(&format!("contexts[{index}]")))?;
            contexts.push((format!("contexts[{index}]"), ctx));
        }
        if let Some(days) = input.history_days {
            if !(1..=366).contains(&days) {
                return Err(ValidationError::new("history_days", "must be between 1 and 366").into());
            }
            let since = now() - Duration::days(i64::from(days));
            for quote in self.store().list_quotes_for_rule_set(operator, id, since, MAX_SIMULATED).await? {
                contexts.push((format!("quote {}", quote.id), quote.context));
            }
        }
        if contexts.is_empty() {
            return Err(ValidationError::new("contexts", "give contexts, history_days or both").into());
        }
        contexts.truncate(MAX_SIMULATED as usize);
        let activations = self.store().list_activations(operator, id).await?;
        let active_version = version_in_force(&activations, now());
        let active = match active_version {
            Some(active_version) => {
                let (_, active) = self.rule_version(operator, id, active_version).await?;
                Some((self.compiled(&rule_set, &active).await?, active.params))
            }
            None => None,
        };
        let candidate = self.compiled(&rule_set, &rule_version).await?;
        let candidate_params = rule_version.params;
        let guardrails = rule_set.guardrails;
        let n_contexts = contexts.len();
        let cases = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let mut cases = Vec::with_capacity(contexts.len());
            for (label, ctx) in contexts {
                // A simulation has a budget of its own: hostile versions cost it, not the server.
                if started.elapsed() > SIMULATION_BUDGET {
                    break;
                }
                // Each version prices the stay with its own parameters.
                let active_minor = active
                    .as_ref()
                    .and_then(|(rules, params)| price_with_params(rules.as_ref(), &ctx, params, &guardrails).ok());
                let (candidate_minor, error) =
                    match price_with_params(candidate.as_ref(), &ctx, &candidate_params, &guardrails) {
                        Ok(total) => (Some(total), None),
                        Err(error) => (None, Some(error.to_string())),
                    };
                cases.push(SimulatedCase { label, active_minor, candidate_minor, error });
            }
            cases
        })
        .await
        .map_err(|_| KernelError::Unavailable("rule evaluation failed".into()))?;
        let revenue = |amounts: &mut dyn Iterator<Item = i64>| amounts.fold(0_i64, i64::saturating_add);
        Ok(SimulationReport {
            version,
            active_version,
            active_revenue_minor: revenue(&mut cases.iter().filter_map(|case| case.active_minor)),
            candidate_revenue_minor: revenue(&mut cases.iter().filter_map(|case| case.candidate_minor)),
            truncated: cases.len() < n_contexts,
            cases,
        })
    }

    // ----- quotes -----------------------------------------------------------------------------

    /// Prices a stay at a site (or one space of it) with the rules in force at its start, and
    /// stores the quote with the version that made it.
    pub async fn create_quote(&self, caller: &Principal, input: QuoteInput) -> KernelResult<Quote> {
        let (operator, driver_id) = self.quote_scope(caller, &input).await?;
        let at = now();
        validate_window(input.start, input.end, at)?;
        let space = match input.space_id {
            Some(space_id) => {
                Some(self.store().get_space(operator, space_id).await?.ok_or_else(|| KernelError::not_found("space"))?)
            }
            None => None,
        };
        let site_id = match (&space, input.site_id) {
            (Some(space), Some(site_id)) if space.site_id != site_id => {
                return Err(ValidationError::new("space_id", "the space is not in that site").into());
            }
            (Some(space), _) => space.site_id,
            (None, Some(site_id)) => site_id,
            (None, None) => return Err(ValidationError::new("site_id", "give a site_id or a space_id").into()),
        };
        let site = self.store().get_site(operator, site_id).await?.ok_or_else(|| KernelError::not_found("site"))?;
        let vehicle_type = match (input.vehicle_type, input.vehicle_id, driver_id) {
            (Some(kind), _, _) => kind,
            (None, Some(vehicle_id), Some(driver)) => {
                self.store()
                    .get_vehicle(driver, vehicle_id)
                    .await?
                    .ok_or_else(|| KernelError::not_found("vehicle"))?
                    .vehicle_type
            }
            (None, Some(_), None) => {
                return Err(ValidationError::new("vehicle_id", "only a driver can quote with their vehicle").into());
            }
            (None, None, _) => VehicleType::Car,
        };
        let driver = match caller {
            Principal::Driver { .. } => DriverFacts::default(),
            _ => input.driver.clone().unwrap_or_default(),
        };
        let stay = Stay {
            space: space.as_ref(),
            availability: None,
            vehicle_type,
            start: input.start,
            end: input.end,
            driver,
        };
        let priced = self.price_stay(matches!(caller, Principal::Driver { .. }), operator, &site, stay, at).await?;
        let quote = Quote {
            id: QuoteId::new(),
            operator_id: operator,
            site_id,
            space_id: space.map(|space| space.id),
            driver_id,
            vehicle_type,
            start: input.start,
            end: input.end,
            price: priced.price,
            rule_set_id: priced.rule_set_id,
            rule_version: priced.version,
            fallback: priced.fallback,
            trace: priced.trace,
            context: priced.context,
            created_at: at,
            expires_at: at + QUOTE_TTL,
        };
        self.store().insert_quote(&quote).await?;
        self.quote_terms.remember(&quote);
        let fallback = if quote.fallback { "true" } else { "false" };
        metrics::counter!("berth_quotes_total", "fallback" => fallback).increment(1);
        Ok(quote)
    }

    /// The price of a stay at `site` under the version in force at its start, with
    /// `allow_booking` consulted first: a refusal is [`KernelError::NotAllowed`], a failing
    /// policy [`KernelError::RuleFailed`], a failing price the rule set's error policy.
    pub(crate) async fn price_stay(
        &self,
        for_driver: bool,
        operator: OperatorId,
        site: &crate::site::Site,
        stay: Stay<'_>,
        at: DateTime<Utc>,
    ) -> KernelResult<PricedStay> {
        let prepared = self.prepare_stay(operator, site, stay, at).await?;
        let (prepared, evaluated) = tokio::task::spawn_blocking(move || {
            let evaluated = prepared.evaluate();
            (prepared, evaluated)
        })
        .await
        .map_err(|_| KernelError::Unavailable("rule evaluation failed".into()))?;
        prepared.finish(for_driver, site, evaluated)
    }

    /// Prices several stays (search: one per site) with one trip to the blocking pool.
    pub(crate) async fn price_stays(
        &self,
        for_driver: bool,
        stays: Vec<(&crate::site::Site, Stay<'_>)>,
        at: DateTime<Utc>,
    ) -> Vec<KernelResult<PricedStay>> {
        let sites: Vec<&crate::site::Site> = stays.iter().map(|(site, _)| *site).collect();
        let prepared = futures_util::future::join_all(
            stays.into_iter().map(|(site, stay)| self.prepare_stay(site.operator_id, site, stay, at)),
        )
        .await;
        let evaluated = tokio::task::spawn_blocking(move || {
            prepared
                .into_iter()
                .map(|prepared| {
                    prepared.map(|prepared| {
                        let evaluated = prepared.evaluate();
                        (prepared, evaluated)
                    })
                })
                .collect::<Vec<_>>()
        })
        .await;
        match evaluated {
            Ok(evaluated) => sites
                .into_iter()
                .zip(evaluated)
                .map(|(site, outcome)| {
                    outcome.and_then(|(prepared, evaluated)| prepared.finish(for_driver, site, evaluated))
                })
                .collect(),
            Err(_) => sites.iter().map(|_| Err(KernelError::Unavailable("rule evaluation failed".into()))).collect(),
        }
    }

    /// Everything the rules need to price a stay: the version in force and its context.
    async fn prepare_stay(
        &self,
        operator: OperatorId,
        site: &crate::site::Site,
        stay: Stay<'_>,
        at: DateTime<Utc>,
    ) -> KernelResult<PreparedStay> {
        let site_id = site.id;
        let Stay { space, availability, vehicle_type, start: stay_start, end: stay_end, driver } = stay;
        let site_rules = self.site_rules(operator, site_id).await?.ok_or_else(|| {
            KernelError::Conflict(format!("site {site_id} has no rule set; its operator has not published prices"))
        })?;
        let (rule_set, activations) = (&site_rules.rule_set, &site_rules.activations);
        if rule_set.currency != site.details.currency {
            return Err(KernelError::Conflict(format!(
                "the rule set for this site prices in {}, but the site charges in {}",
                rule_set.currency.code(),
                site.details.currency.code()
            )));
        }
        let version = version_in_force(activations, stay_start.max(at)).ok_or_else(|| {
            KernelError::Conflict(format!("rule set '{}' has no published version in force then", rule_set.name))
        })?;
        let rule_version = self.published_version(operator, rule_set.id, version).await?;
        let compiled = self.compiled(rule_set, &rule_version).await?;

        let loaded;
        let availability = match availability {
            Some(availability) => availability,
            None => {
                loaded = self.site_availability_for(operator, site.id).await?;
                &loaded
            }
        };
        let availability = self.occupancy_with_recent(operator, site, availability).await?;
        let timezone = site.details.timezone;
        let local = |at: DateTime<Utc>| LocalTime::new(at, timezone, &rule_set.holidays);
        let (start, end) = (local(stay_start), local(stay_end));
        let ctx = RuleContext {
            site: SiteFacts::of(site, availability.total),
            space: space.map(SpaceFacts::of),
            vehicle_type: vehicle_type.as_str().to_owned(),
            start,
            end,
            now: local(at),
            occupancy: availability,
            driver,
            booking: None,
            holidays: holidays_between(&rule_set.holidays, &start, &end),
            params: rule_version.params.clone(),
            adjustment: None,
        };

        Ok(PreparedStay { site_rules, version, compiled, ctx })
    }
}

/// A stay ready for the rules: see [`Kernel::price_stay`].
struct PreparedStay {
    site_rules: Arc<SiteRules>,
    version: u32,
    compiled: Arc<dyn CompiledRules>,
    ctx: RuleContext,
}

/// What `allow_booking` and `price` answered.
type StayAnswers = (Result<crate::rules::Checked, RuleError>, Result<crate::rules::Checked, RuleError>);

impl PreparedStay {
    /// Runs `allow_booking` and `price` (blocking: call it off the async workers).
    fn evaluate(&self) -> StayAnswers {
        let entries = [EntryPoint::AllowBooking, EntryPoint::Price];
        let mut checked =
            evaluate_checked_each(self.compiled.as_ref(), &entries, &self.ctx, &self.site_rules.rule_set.guardrails)
                .into_iter();
        let unanswered = || Err(RuleError::answer("no answer"));
        (checked.next().unwrap_or_else(unanswered), checked.next().unwrap_or_else(unanswered))
    }

    /// The price from the answers, or why there is none.
    fn finish(self, for_driver: bool, site: &crate::site::Site, evaluated: StayAnswers) -> KernelResult<PricedStay> {
        let Self { site_rules, version, ctx, .. } = self;
        let rule_set = &site_rules.rule_set;
        let is_driver = for_driver;
        let rule_failed = |error: &RuleError| {
            metrics::counter!("berth_rules_errors_total", "kind" => error.kind.as_str()).increment(1);
            tracing::warn!(rule_set = %rule_set.id, version, error = %error, "rule evaluation failed");
            KernelError::RuleFailed(if is_driver {
                "prices for this site are unavailable right now".to_owned()
            } else {
                format!("rule set '{}' version {version} failed: {error}", rule_set.name)
            })
        };
        // A policy that fails never lets a stay through: no fallback for `allow_booking`.
        let decision = evaluated.0.map_err(|error| rule_failed(&error))?;
        if let Some(decision) = decision.decision.filter(|decision| !decision.allow) {
            return Err(KernelError::NotAllowed(
                decision.reason.unwrap_or_else(|| "not allowed by the operator's rules".into()),
            ));
        }
        let (price, trace, fallback) = match evaluated.1 {
            Ok(price) => {
                let mut trace = decision.trace;
                trace.extend(price.trace);
                let price = price.price.ok_or_else(|| KernelError::Unavailable("the rule gave no price".into()))?;
                (price, trace, false)
            }
            Err(error) => {
                match rule_set.error_policy {
                    ErrorPolicy::Deny => return Err(rule_failed(&error)),
                    ErrorPolicy::FallbackPrice { amount_minor } => {
                        let items = vec![LineItem {
                            kind: LineKind::Base,
                            label: "Standard rate".into(),
                            amount_minor,
                            line: None,
                        }];
                        let _ = rule_failed(&error);
                        // The operator sees why; a driver only that the standard rate applies.
                        let trace = vec![if is_driver {
                            TraceStep { line: None, message: "the standard rate applies".to_owned() }
                        } else {
                            TraceStep {
                                line: error.line,
                                message: format!("the rule failed ({error}); the rule set's fallback price applies"),
                            }
                        }];
                        let price = Price { items, total_minor: amount_minor, currency: site.details.currency.code() };
                        (price, trace, true)
                    }
                }
            }
        };
        Ok(PricedStay { price, trace, fallback, rule_set_id: rule_set.id, version, context: ctx })
    }
}

impl Kernel {
    /// A quote, for the driver who asked for it or the operator of its site.
    pub async fn get_quote(&self, caller: &Principal, id: QuoteId) -> KernelResult<Quote> {
        let quote = self.store().get_quote(id).await?.ok_or_else(|| KernelError::not_found("quote"))?;
        let visible = match caller {
            Principal::Driver { driver_id } => quote.driver_id == Some(*driver_id),
            Principal::PlatformAdmin { .. } => false,
            _ => operator_scope(caller, Access::Read).is_ok_and(|operator| operator == quote.operator_id),
        };
        if visible { Ok(quote) } else { Err(KernelError::not_found("quote")) }
    }

    // ----- helpers ----------------------------------------------------------------------------

    /// Which operator's site is quoted, and for which driver. Drivers may quote any operator's
    /// site (the site's operator is looked up); operators only their own.
    async fn quote_scope(
        &self,
        caller: &Principal,
        input: &QuoteInput,
    ) -> KernelResult<(OperatorId, Option<DriverId>)> {
        match caller {
            Principal::Driver { driver_id } => {
                let operator = match (input.space_id, input.site_id) {
                    (Some(space), _) => self.store().find_space_operator(space).await?,
                    (None, Some(site)) => self.store().find_site_operator(site).await?,
                    (None, None) => None,
                };
                match operator {
                    Some(operator) => Ok((operator, Some(*driver_id))),
                    None if input.space_id.is_none() && input.site_id.is_none() => {
                        Err(ValidationError::new("site_id", "give a site_id or a space_id").into())
                    }
                    None => Err(KernelError::not_found(if input.space_id.is_some() { "space" } else { "site" })),
                }
            }
            other => Ok((operator_scope(other, Access::Read)?, None)),
        }
    }

    /// The rule set pricing `site` (its own, else the operator-wide one) and its activations:
    /// read again in the background once older than [`SITE_RULES_MAX_AGE`] (the last one
    /// serving meanwhile), and before use once older than [`SITE_RULES_STALE_AGE`].
    async fn site_rules(&self, operator: OperatorId, site: SiteId) -> KernelResult<Option<Arc<SiteRules>>> {
        let key = (operator, site);
        let cached = {
            let mut cache = self.rule_cache().site_rules.lock().unwrap();
            cache.get_mut(&key).and_then(|(read, rules)| {
                let age = read.elapsed();
                if age < SITE_RULES_MAX_AGE {
                    Some((rules.clone(), false))
                } else if age < SITE_RULES_STALE_AGE {
                    // Taken: other requests keep this one until the new one is read.
                    *read = std::time::Instant::now();
                    Some((rules.clone(), true))
                } else {
                    None
                }
            })
        };
        match cached {
            Some((rules, false)) => Ok(rules),
            Some((rules, true)) => {
                let kernel = self.clone();
                tokio::spawn(async move {
                    if let Err(error) = kernel.load_site_rules(operator, site).await {
                        tracing::warn!(%site, %error, "a site's rules could not be read again; the last ones serve");
                    }
                });
                Ok(rules)
            }
            None => self.load_site_rules(operator, site).await,
        }
    }

    async fn load_site_rules(&self, operator: OperatorId, site: SiteId) -> KernelResult<Option<Arc<SiteRules>>> {
        let key = (operator, site);
        let read = std::time::Instant::now();
        let generation = self.rule_cache().generation.load(std::sync::atomic::Ordering::Acquire);
        let sets = self.store().rule_sets_for_site(operator, site).await?;
        let rule_set =
            sets.iter().find(|set| set.site_id == Some(site)).or_else(|| sets.iter().find(|set| set.site_id.is_none()));
        let rules = match rule_set {
            Some(rule_set) => {
                let activations = self.store().list_activations(operator, rule_set.id).await?;
                Some(Arc::new(SiteRules { rule_set: rule_set.clone(), activations }))
            }
            None => None,
        };
        let mut cache = self.rule_cache().site_rules.lock().unwrap();
        if cache.len() >= MAX_CACHED_VERSIONS {
            cache.clear();
        }
        // A rule write since the read may have changed them: keep them for this answer only.
        if self.rule_cache().generation.load(std::sync::atomic::Ordering::Acquire) == generation {
            cache.insert(key, (read, rules.clone()));
        }
        Ok(rules)
    }

    /// A published version, from the cache or the store.
    async fn published_version(
        &self,
        operator: OperatorId,
        id: RuleSetId,
        version: u32,
    ) -> KernelResult<Arc<RuleVersion>> {
        if let Some(found) = self.rule_cache().published.lock().unwrap().get(&(id, version)) {
            return Ok(found.clone());
        }
        let (_, rule_version) = self.rule_version(operator, id, version).await?;
        let rule_version = Arc::new(rule_version);
        let mut cache = self.rule_cache().published.lock().unwrap();
        if cache.len() >= MAX_CACHED_VERSIONS {
            cache.clear();
        }
        cache.insert((id, version), rule_version.clone());
        Ok(rule_version)
    }

    async fn rule_version(
        &self,
        operator: OperatorId,
        id: RuleSetId,
        version: u32,
    ) -> KernelResult<(RuleSet, RuleVersion)> {
        let rule_set =
            self.store().get_rule_set(operator, id).await?.ok_or_else(|| KernelError::not_found("rule set"))?;
        let rule_version = self
            .store()
            .get_rule_version(operator, id, version)
            .await?
            .ok_or_else(|| KernelError::not_found("rule version"))?;
        Ok((rule_set, rule_version))
    }

    async fn compile_source(&self, source: &str) -> Result<Arc<dyn CompiledRules>, RuleError> {
        let engine = self.rules_engine().clone();
        let source = source.to_owned();
        tokio::task::spawn_blocking(move || engine.compile(&source))
            .await
            .unwrap_or_else(|_| Err(RuleError::new(crate::rules::RuleErrorKind::Compile, "the compiler failed")))
    }

    /// The compiled version, from the cache or compiled now.
    async fn compiled(&self, rule_set: &RuleSet, version: &RuleVersion) -> KernelResult<Arc<dyn CompiledRules>> {
        let key = (rule_set.id, version.version);
        if let Some(compiled) = self.rule_cache().compiled.lock().unwrap().get(&key) {
            return Ok(compiled.clone());
        }
        let compiled = self.compile_source(&version.source).await.map_err(|error| rule_validation("source", &error))?;
        let mut cache = self.rule_cache().compiled.lock().unwrap();
        if cache.len() >= MAX_CACHED_VERSIONS {
            cache.clear();
        }
        cache.insert(key, compiled.clone());
        Ok(compiled)
    }

    /// The site fixtures of a site-bound rule set default to.
    async fn fixture_site(&self, rule_set: &RuleSet) -> KernelResult<Option<SiteFacts>> {
        let Some(site_id) = rule_set.site_id else { return Ok(None) };
        let site = self.store().get_site(rule_set.operator_id, site_id).await?;
        let capacity = self.store().count_spaces_in_site(rule_set.operator_id, site_id).await?;
        Ok(site.map(|site| SiteFacts::of(&site, u32::try_from(capacity).unwrap_or(u32::MAX))))
    }

    /// Occupancy now (from `availability`) and over the last hour: computed once per site, then
    /// recomputed in the background each [`RECENT_OCCUPANCY_TTL`] while the last figure serves.
    async fn occupancy_with_recent(
        &self,
        operator: OperatorId,
        site: &crate::site::Site,
        availability: &crate::ingest::Availability,
    ) -> KernelResult<Occupancy> {
        let mut occupancy = occupancy_now(availability);
        let known = {
            let mut recent = self.rule_cache().recent.lock().unwrap();
            recent.get_mut(&site.id).map(|(at, figure)| {
                occupancy.recent_percent = *figure;
                let due = at.elapsed() >= RECENT_OCCUPANCY_TTL;
                if due {
                    // Taken: other requests keep the old figure meanwhile.
                    *at = std::time::Instant::now();
                }
                due
            })
        };
        if known == Some(false) {
            return Ok(occupancy);
        }
        if known == Some(true) {
            let (kernel, site, availability) = (self.clone(), site.clone(), availability.clone());
            tokio::spawn(async move {
                if let Err(error) = kernel.refresh_recent_occupancy(operator, &site, &availability).await {
                    tracing::warn!(site = %site.id, %error, "last-hour occupancy could not be recomputed");
                }
            });
            return Ok(occupancy);
        }
        occupancy.recent_percent = self.refresh_recent_occupancy(operator, site, availability).await?;
        Ok(occupancy)
    }

    async fn refresh_recent_occupancy(
        &self,
        operator: OperatorId,
        site: &crate::site::Site,
        availability: &crate::ingest::Availability,
    ) -> KernelResult<Option<f64>> {
        let to = now();
        let from = to - Duration::hours(1);
        let recent = self.occupancy_history(operator, availability, from, to, site.details.timezone).await?.overall;
        self.rule_cache().recent.lock().unwrap().insert(site.id, (std::time::Instant::now(), recent));
        Ok(recent)
    }
}

const MAX_SIMULATED: u64 = 10_000;
/// Wall-clock budget of one simulation.
const SIMULATION_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);
const MAX_PARAMS_BYTES: usize = 16 * 1024;

/// A rule set's error policy and guardrails, checked together (the fallback must respect the
/// ceiling).
pub fn validate_settings(policy: &ErrorPolicy, guardrails: &Guardrails) -> Result<(), ValidationError> {
    guardrails.validate()?;
    if let ErrorPolicy::FallbackPrice { amount_minor } = policy
        && !(0..=guardrails.max_total_minor).contains(amount_minor)
    {
        return Err(ValidationError::new(
            "error_policy.amount_minor",
            "must be between 0 and the guardrails' max_total_minor",
        ));
    }
    Ok(())
}

fn validate_window(start: DateTime<Utc>, end: DateTime<Utc>, at: DateTime<Utc>) -> Result<(), ValidationError> {
    if end <= start {
        return Err(ValidationError::new("end", "must be after start"));
    }
    if end - start > Duration::days(MAX_QUOTE_DAYS) {
        return Err(ValidationError::new("end", format!("stays longer than {MAX_QUOTE_DAYS} days cannot be quoted")));
    }
    if end <= at {
        return Err(ValidationError::new("end", "is in the past"));
    }
    if start - at > Duration::days(MAX_LEAD_DAYS) {
        return Err(ValidationError::new("start", format!("is more than {MAX_LEAD_DAYS} days ahead")));
    }
    Ok(())
}

/// A rule error as a validation problem on `field`, keeping its position in the message.
fn rule_validation(field: &str, error: &RuleError) -> KernelError {
    ValidationError::new(field, error.to_string()).into()
}

/// What a scheduled adjustment did.
#[derive(Debug, Clone)]
pub struct AdjustReport {
    /// The parameters `adjust(ctx)` proposed, when it proposed a change.
    pub proposed: Option<Params>,
    /// The version made and published for them, and when it takes effect.
    pub version: Option<RuleVersion>,
    pub effective_from: Option<DateTime<Utc>>,
    /// What happened, in words.
    pub message: String,
}

impl AdjustReport {
    fn unchanged(message: impl Into<String>) -> Self {
        Self { proposed: None, version: None, effective_from: None, message: message.into() }
    }
}

impl Kernel {
    /// Runs the rule set's `adjust(ctx)` now: a proposed change becomes a new version (same
    /// script and tests, new parameters), published through the usual checks to take effect
    /// after the notice period.
    pub async fn adjust_rule_set(&self, caller: &Principal, id: RuleSetId) -> KernelResult<AdjustReport> {
        let operator = operator_scope(caller, Access::Write)?;
        self.adjust(operator, id).await
    }

    /// The scheduler's round: every site-bound rule set whose version in force defines
    /// `adjust`. Failures are logged and counted; one rule set never stops the others.
    pub async fn run_scheduled_adjustments(&self) -> KernelResult<Vec<(RuleSetId, Result<AdjustReport, String>)>> {
        let mut results = Vec::new();
        for rule_set in self.store().list_site_rule_sets_everywhere().await? {
            match self.defines_adjust(&rule_set).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    results.push((rule_set.id, Err(error.to_string())));
                    continue;
                }
            }
            let outcome = self.adjust(rule_set.operator_id, rule_set.id).await.map_err(|error| error.to_string());
            match &outcome {
                Ok(report) => {
                    tracing::info!(rule_set = %rule_set.id, message = %report.message, "scheduled adjustment")
                }
                Err(error) => {
                    metrics::counter!("berth_rules_adjustments_failed_total").increment(1);
                    tracing::warn!(rule_set = %rule_set.id, error = %error, "scheduled adjustment failed");
                }
            }
            results.push((rule_set.id, outcome));
        }
        Ok(results)
    }

    /// Whether the version in force now defines `adjust(ctx)`.
    async fn defines_adjust(&self, rule_set: &RuleSet) -> KernelResult<bool> {
        let activations = self.store().list_activations(rule_set.operator_id, rule_set.id).await?;
        let Some(version) = version_in_force(&activations, now()) else { return Ok(false) };
        let (_, rule_version) = self.rule_version(rule_set.operator_id, rule_set.id, version).await?;
        Ok(self.compiled(rule_set, &rule_version).await?.defines(EntryPoint::Adjust))
    }

    async fn adjust(&self, operator: OperatorId, id: RuleSetId) -> KernelResult<AdjustReport> {
        let rule_set =
            self.store().get_rule_set(operator, id).await?.ok_or_else(|| KernelError::not_found("rule set"))?;
        let site_id = rule_set
            .site_id
            .ok_or_else(|| ValidationError::new("site_id", "scheduled adjustments need a rule set bound to a site"))?;
        let site = self.store().get_site(operator, site_id).await?.ok_or_else(|| KernelError::not_found("site"))?;
        let at = now();
        let activations = self.store().list_activations(operator, id).await?;
        if let Some(pending) =
            activations.iter().filter(|activation| activation.effective_from > at).min_by_key(|a| a.effective_from)
        {
            return Ok(AdjustReport::unchanged(format!(
                "version {} is scheduled for {}; no adjustment until it takes effect",
                pending.version, pending.effective_from
            )));
        }
        let version = version_in_force(&activations, at)
            .ok_or_else(|| KernelError::Conflict(format!("rule set '{}' has no version in force", rule_set.name)))?;
        let (_, rule_version) = self.rule_version(operator, id, version).await?;
        let compiled = self.compiled(&rule_set, &rule_version).await?;
        if !compiled.defines(EntryPoint::Adjust) {
            return Err(ValidationError::new("source", format!("version {version} defines no adjust(ctx)")).into());
        }
        let period = Duration::days(i64::from(rule_set.adjustment.period_days));
        let availability = self.site_availability_for(operator, site_id).await?;
        let profile = self.occupancy_history(operator, &availability, at - period, at, site.details.timezone).await?;
        let days_since_change = activations
            .iter()
            .filter(|activation| activation.reason == "adjust" && activation.effective_from <= at)
            .map(|activation| activation.effective_from)
            .max()
            .map(|since| (at - since).num_days());
        let local = LocalTime::new(at, site.details.timezone, &rule_set.holidays);
        let mut occupancy = occupancy_now(&availability);
        occupancy.recent_percent = profile.overall;
        let ctx = RuleContext {
            site: SiteFacts::of(&site, occupancy.total),
            space: None,
            vehicle_type: VehicleType::Car.as_str().to_owned(),
            start: local,
            end: local,
            now: local,
            occupancy,
            driver: DriverFacts::default(),
            booking: None,
            holidays: Vec::new(),
            params: rule_version.params.clone(),
            adjustment: Some(AdjustmentFacts {
                occupancy_by_hour: profile.by_hour,
                period_days: rule_set.adjustment.period_days,
                days_since_change,
            }),
        };
        let guardrails = rule_set.guardrails;
        let checked = tokio::task::spawn_blocking(move || {
            evaluate_checked(compiled.as_ref(), EntryPoint::Adjust, &ctx, &guardrails)
        })
        .await
        .map_err(|_| KernelError::Unavailable("rule evaluation failed".into()))?
        .map_err(|error| KernelError::RuleFailed(format!("adjust() of version {version} failed: {error}")))?;
        let proposed = match checked.params {
            Some(params) if params != rule_version.params => params,
            _ => return Ok(AdjustReport::unchanged(format!("adjust() of version {version} proposed no change"))),
        };
        let draft = self
            .add_version(operator, id, rule_version.source.clone(), rule_version.tests.clone(), proposed.clone())
            .await?;
        let effective_from = at + Duration::days(i64::from(rule_set.adjustment.notice_days));
        let published = match self.publish(operator, id, draft.version, effective_from, "adjust").await {
            Ok(published) => published,
            Err(error) => {
                // The proposal broke a test case or a guardrail: drop it rather than leave a
                // draft behind for every run.
                self.store().delete_draft_version(operator, id, draft.version).await?;
                return Err(error);
            }
        };
        metrics::counter!("berth_rules_adjustments_total").increment(1);
        Ok(AdjustReport {
            message: format!("version {} with the new parameters takes effect on {effective_from}", published.version),
            proposed: Some(proposed),
            version: Some(published),
            effective_from: Some(effective_from),
        })
    }

    /// Time-weighted occupancy of a site's spaces over `[from, to)`.
    async fn occupancy_history(
        &self,
        operator: OperatorId,
        availability: &crate::ingest::Availability,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        timezone: crate::site::Timezone,
    ) -> KernelResult<OccupancyProfile> {
        let spaces: Vec<(SpaceId, SpaceStatus)> =
            availability.spaces.iter().map(|(space, shown)| (space.id, shown.status)).collect();
        let ids: Vec<SpaceId> = spaces.iter().map(|(id, _)| *id).collect();
        let ids_from = crate::live::SpaceEvent::lowest_id_from(from);
        let events = self.store().list_events_between(operator, &ids, ids_from, from, to, MAX_HISTORY_EVENTS).await?;
        if events.len() as u64 >= MAX_HISTORY_EVENTS {
            tracing::warn!(events = events.len(), %from, %to, "occupancy history truncated to the oldest events");
        }
        tokio::task::spawn_blocking(move || occupancy_profile(&spaces, &events, from, to, timezone))
            .await
            .map_err(|_| KernelError::Unavailable("the occupancy computation failed".into()))
    }
}

/// Occupancy now, from live state: occupied share of the spaces whose state is known.
fn occupancy_now(availability: &crate::ingest::Availability) -> Occupancy {
    let count = |status: SpaceStatus| availability.counts.get(&status).copied().unwrap_or(0);
    let total: u64 = availability.counts.values().sum();
    let (free, occupied) = (count(SpaceStatus::Free), count(SpaceStatus::Occupied));
    let known = free + occupied;
    Occupancy {
        percent: if known == 0 { 0.0 } else { occupied as f64 * 100.0 / known as f64 },
        free: u32::try_from(free).unwrap_or(u32::MAX),
        total: u32::try_from(total).unwrap_or(u32::MAX),
        recent_percent: None,
    }
}

/// The most state changes one occupancy computation reads.
const MAX_HISTORY_EVENTS: u64 = 500_000;
/// How long a site's last-hour occupancy is reused by quotes.
const RECENT_OCCUPANCY_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// What a booking rule is asked about: an extension's new end, an overstay's departure.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BookingMoments {
    pub new_end: Option<DateTime<Utc>>,
    pub departed_at: Option<DateTime<Utc>>,
}

/// A policy's answer for a booking: a decision and/or an amount, with its explanation.
#[derive(Debug, Clone)]
pub(crate) struct BookingAnswer {
    pub allow: bool,
    pub reason: Option<String>,
    /// The amount the rule gave, `None` when it gave none (or is not defined).
    pub amount_minor: Option<i64>,
}

impl Kernel {
    /// Runs `entry` for a booking under the rule version it was quoted with (the terms the
    /// driver accepted), over `window` (the stay, or a longer or extra part of it).
    pub(crate) async fn booking_rule(
        &self,
        booking: &crate::booking::Booking,
        entry: EntryPoint,
        facts: Option<BookingMoments>,
        window: (DateTime<Utc>, DateTime<Utc>),
        at: DateTime<Utc>,
    ) -> KernelResult<BookingAnswer> {
        let operator = booking.operator_id;
        let quote = self.store().get_quote(booking.quote_id).await?.ok_or_else(|| KernelError::not_found("quote"))?;
        let rule_set = self
            .store()
            .get_rule_set(operator, quote.rule_set_id)
            .await?
            .ok_or_else(|| KernelError::Unavailable("the booking's rule set is gone".into()))?;
        let (_, version) = self.rule_version(operator, rule_set.id, quote.rule_version).await?;
        let compiled = self.compiled(&rule_set, &version).await?;
        let site = self
            .store()
            .get_site(operator, booking.site_id)
            .await?
            .ok_or_else(|| KernelError::Unavailable("the booking's site is gone".into()))?;
        let space = self.store().get_space(operator, booking.space_id).await?;
        let availability = self.site_availability_for(operator, site.id).await?;
        let occupancy = self.occupancy_with_recent(operator, &site, &availability).await?;
        let local = |at: DateTime<Utc>| LocalTime::new(at, site.details.timezone, &rule_set.holidays);
        let (start, end) = (local(window.0), local(window.1));
        let booking_facts = facts.map(|BookingMoments { new_end, departed_at }| crate::rules::BookingFacts {
            paid_minor: booking.price_minor,
            start: local(booking.start),
            end: local(booking.end),
            new_end: new_end.map(local),
            departed_at: departed_at.map(local),
        });
        let ctx = RuleContext {
            site: SiteFacts::of(&site, occupancy.total),
            space: space.as_ref().map(SpaceFacts::of),
            vehicle_type: quote.vehicle_type.as_str().to_owned(),
            start,
            end,
            now: local(at),
            occupancy,
            driver: quote.context.driver.clone(),
            booking: booking_facts,
            holidays: holidays_between(&rule_set.holidays, &start, &end),
            params: version.params.clone(),
            adjustment: None,
        };
        let guardrails = rule_set.guardrails;
        let checked = tokio::task::spawn_blocking(move || {
            crate::rules::evaluate_checked(compiled.as_ref(), entry, &ctx, &guardrails)
        })
        .await
        .map_err(|_| KernelError::Unavailable("rule evaluation failed".into()))?
        .map_err(|error| {
            metrics::counter!("berth_rules_errors_total", "kind" => error.kind.as_str()).increment(1);
            tracing::warn!(rule_set = %rule_set.id, version = version.version, %error, entry = entry.name(), "booking rule failed");
            KernelError::RuleFailed(format!("the operator's {} rule failed; try again later", entry.name()))
        })?;
        let (allow, reason) = match &checked.decision {
            Some(decision) => (decision.allow, decision.reason.clone()),
            None => (true, None),
        };
        let amount_minor = if checked.defaulted { None } else { checked.price.as_ref().map(|price| price.total_minor) };
        Ok(BookingAnswer { allow, reason, amount_minor })
    }
}
