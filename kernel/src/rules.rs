//! Operator rules: rule sets and their immutable versions, the context a rule sees, what a rule
//! may answer and how answers are checked, the fixtures a version must pass, and the port to the
//! engine that runs scripts.
//!
//! Deliberately absent: any script engine. `berth-rules` implements [`RulesEngine`]; the kernel
//! only builds contexts, validates answers and decides which version applies.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ids::{OperatorId, RuleSetId, SiteId, SpaceId};
use crate::site::{Currency, Site, Timezone, weekday_code};
use crate::space::Space;

/// The functions a rule set may define. Each is optional; [`EntryPoint::default_answer`] says
/// what applies when it is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryPoint {
    /// `price(ctx)`: line items for the stay. Absent: free (one `base` item of 0).
    Price,
    /// `allow_booking(ctx)`: allow, or deny with a reason a driver can read. Absent: allow.
    AllowBooking,
    /// `cancellation_fee(ctx)`: what cancelling costs. Absent: nothing.
    CancellationFee,
    /// `extension(ctx)`: whether a stay may be extended to `ctx.booking.new_end`, optionally with
    /// its own price. Absent: allowed, priced as `price` of the longer stay minus what was paid.
    Extension,
    /// `overstay_fee(ctx)`: what staying past the end costs. Absent: `price` of the extra time.
    OverstayFee,
    /// `adjust(ctx)`: on a schedule, new parameters for the next version (or `()`: no change).
    /// Absent: the rule set is never adjusted.
    Adjust,
}

impl EntryPoint {
    pub const ALL: [EntryPoint; 6] = [
        EntryPoint::Price,
        EntryPoint::AllowBooking,
        EntryPoint::CancellationFee,
        EntryPoint::Extension,
        EntryPoint::OverstayFee,
        EntryPoint::Adjust,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EntryPoint::Price => "price",
            EntryPoint::AllowBooking => "allow_booking",
            EntryPoint::CancellationFee => "cancellation_fee",
            EntryPoint::Extension => "extension",
            EntryPoint::OverstayFee => "overstay_fee",
            EntryPoint::Adjust => "adjust",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|entry| entry.name() == text)
    }

    /// Whether the answer is money (line items) rather than a decision.
    pub fn answers_money(self) -> bool {
        matches!(self, EntryPoint::Price | EntryPoint::CancellationFee | EntryPoint::OverstayFee)
    }
}

// ----- context ---------------------------------------------------------------------------------

/// Weekday, weekend or a holiday of the rule set's calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayType {
    Weekday,
    Weekend,
    Holiday,
}

impl DayType {
    pub fn as_str(self) -> &'static str {
        match self {
            DayType::Weekday => "weekday",
            DayType::Weekend => "weekend",
            DayType::Holiday => "holiday",
        }
    }

    pub fn of(date: NaiveDate, holidays: &BTreeSet<NaiveDate>) -> Self {
        if holidays.contains(&date) {
            DayType::Holiday
        } else if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
            DayType::Weekend
        } else {
            DayType::Weekday
        }
    }
}

/// A moment in the site's time zone, with the day type of its date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalTime {
    pub at: DateTime<FixedOffset>,
    pub day_type: DayType,
}

impl LocalTime {
    pub fn new(at: DateTime<Utc>, timezone: Timezone, holidays: &BTreeSet<NaiveDate>) -> Self {
        let local = at.with_timezone(&timezone.tz());
        let at = local.fixed_offset();
        Self { at, day_type: DayType::of(at.date_naive(), holidays) }
    }

    pub fn utc(&self) -> DateTime<Utc> {
        self.at.with_timezone(&Utc)
    }

    pub fn minute_of_day(&self) -> u32 {
        self.at.hour() * 60 + self.at.minute()
    }

    pub fn weekday(&self) -> &'static str {
        weekday_code(self.at.weekday())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningFacts {
    pub days: Vec<String>,
    pub opens: String,
    pub closes: String,
}

/// What a rule knows of the site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFacts {
    #[serde(default)]
    pub id: Option<SiteId>,
    #[serde(default = "test_site_name")]
    pub name: String,
    #[serde(default = "off_street")]
    pub kind: String,
    #[serde(default = "utc")]
    pub timezone: String,
    /// Set from the rule set when a fixture leaves it out.
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub capacity: u32,
    #[serde(default)]
    pub max_stay_minutes: Option<u32>,
    #[serde(default)]
    pub max_height_cm: Option<u32>,
    #[serde(default = "cars")]
    pub allowed_vehicle_types: Vec<String>,
    /// Empty: open around the clock.
    #[serde(default)]
    pub opening_hours: Vec<OpeningFacts>,
}

fn test_site_name() -> String {
    "Test site".into()
}
fn off_street() -> String {
    "off_street".into()
}
fn utc() -> String {
    "UTC".into()
}
fn cars() -> Vec<String> {
    vec!["car".into()]
}

impl SiteFacts {
    pub fn of(site: &Site, capacity: u32) -> Self {
        let details = &site.details;
        Self {
            id: Some(site.id),
            name: details.name.clone(),
            kind: details.kind.as_str().to_owned(),
            timezone: details.timezone.name().to_owned(),
            currency: details.currency.code(),
            capacity,
            max_stay_minutes: details.max_stay_minutes,
            max_height_cm: details.max_height_cm,
            allowed_vehicle_types: details.allowed_vehicle_types.iter().map(|kind| kind.as_str().to_owned()).collect(),
            opening_hours: details
                .opening_hours
                .iter()
                .map(|hours| OpeningFacts {
                    days: hours.days.iter().map(|day| weekday_code(*day).to_owned()).collect(),
                    opens: crate::site::OpeningHours::format_clock(hours.opens_min),
                    closes: crate::site::OpeningHours::format_clock(hours.closes_min),
                })
                .collect(),
        }
    }
}

/// What a rule knows of the space, when the quote is for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceFacts {
    #[serde(default)]
    pub id: Option<SpaceId>,
    #[serde(default)]
    pub code: String,
    #[serde(default = "standard")]
    pub category: String,
    #[serde(default = "car")]
    pub vehicle_type: String,
    #[serde(default)]
    pub ev_charger: bool,
    #[serde(default)]
    pub accessible: bool,
}

fn standard() -> String {
    "standard".into()
}
fn car() -> String {
    "car".into()
}

impl SpaceFacts {
    pub fn of(space: &Space) -> Self {
        Self {
            id: Some(space.id),
            code: space.details.code.clone(),
            category: space.details.category.as_str().to_owned(),
            vehicle_type: space.details.vehicle_type.as_str().to_owned(),
            ev_charger: space.details.ev_charger,
            accessible: space.details.accessible,
        }
    }
}

/// Occupancy of the site (or zone) as percentages 0-100.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Occupancy {
    /// Occupied share of spaces whose state is known, now.
    #[serde(default)]
    pub percent: f64,
    #[serde(default)]
    pub free: u32,
    #[serde(default)]
    pub total: u32,
    /// Time-weighted average over the last hour, when history is available.
    #[serde(default)]
    pub recent_percent: Option<f64>,
}

/// What a rule knows of the driver. Operators vouch for permits; a driver's own request
/// carries none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DriverFacts {
    #[serde(default)]
    pub permits: Vec<String>,
    #[serde(default)]
    pub accessible: bool,
}

/// The booking a cancellation, extension or overstay is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingFacts {
    /// What the booking has been charged so far.
    pub paid_minor: i64,
    pub start: LocalTime,
    pub end: LocalTime,
    /// Extension: the requested new end.
    pub new_end: Option<LocalTime>,
    /// Overstay: when the vehicle left.
    pub departed_at: Option<LocalTime>,
}

/// Everything a rule sees. There is no other input: no clock, no I/O.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleContext {
    pub site: SiteFacts,
    pub space: Option<SpaceFacts>,
    pub vehicle_type: String,
    pub start: LocalTime,
    pub end: LocalTime,
    /// When the question is asked (lead time is `start - now`).
    pub now: LocalTime,
    pub occupancy: Occupancy,
    pub driver: DriverFacts,
    pub booking: Option<BookingFacts>,
    /// The operator calendar's holidays from the start date to the end date.
    pub holidays: Vec<NaiveDate>,
    /// The version's parameters (a fixture may set its own).
    #[serde(default)]
    pub params: Params,
    /// For `adjust` only: how the site was used over the review period.
    #[serde(default)]
    pub adjustment: Option<AdjustmentFacts>,
}

/// A version's parameters: named values its script reads as `ctx.params`, which scheduled
/// adjustments change from one version to the next.
pub type Params = serde_json::Map<String, serde_json::Value>;

/// What `adjust(ctx)` reviews.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentFacts {
    /// Time-weighted occupancy (0-100) per local hour of the day over the period; `None` where
    /// no space's state was known.
    #[serde(default)]
    pub occupancy_by_hour: Vec<Option<f64>>,
    #[serde(default)]
    pub period_days: u32,
    /// Days since the last adjustment took effect; `None` if there never was one.
    #[serde(default)]
    pub days_since_change: Option<i64>,
}

impl RuleContext {
    pub fn duration_minutes(&self) -> i64 {
        (self.end.at - self.start.at).num_minutes()
    }

    pub fn lead_time_minutes(&self) -> i64 {
        (self.start.at - self.now.at).num_minutes()
    }
}

// ----- answers ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Base,
    Surcharge,
    /// Written as a positive amount; subtracted from the total.
    Discount,
    Fee,
    Tax,
}

impl LineKind {
    pub const ALL: [LineKind; 5] =
        [LineKind::Base, LineKind::Surcharge, LineKind::Discount, LineKind::Fee, LineKind::Tax];

    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Base => "base",
            LineKind::Surcharge => "surcharge",
            LineKind::Discount => "discount",
            LineKind::Fee => "fee",
            LineKind::Tax => "tax",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub kind: LineKind,
    pub label: String,
    /// Minor units of the site's currency, never negative (a discount is subtracted).
    pub amount_minor: i64,
    /// The script line that produced it.
    #[serde(default)]
    pub line: Option<u32>,
}

/// Line items as a rule returned them, before [`Guardrails::check_price`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PriceAnswer {
    pub items: Vec<LineItem>,
    /// A total the rule stated itself; must equal the sum of the items.
    pub stated_total_minor: Option<i64>,
    /// A currency the rule stated itself; must be the site's.
    pub currency: Option<String>,
}

/// A checked price: items and their total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub items: Vec<LineItem>,
    pub total_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allow: bool,
    /// Why not, in words for the driver.
    pub reason: Option<String>,
}

impl Decision {
    pub fn allow() -> Self {
        Self { allow: true, reason: None }
    }
}

/// One entry point's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleAnswer {
    Money(PriceAnswer),
    Decision {
        decision: Decision,
        price: Option<PriceAnswer>,
    },
    /// `adjust`: new parameters, or `None` for no change.
    Params(Option<Params>),
}

/// A line of the explanation: what fired, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    pub line: Option<u32>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub answer: RuleAnswer,
    pub trace: Vec<TraceStep>,
    /// The entry point was not defined and its documented default applied.
    pub defaulted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleErrorKind {
    /// The script does not compile.
    Compile,
    /// The script failed while running (a thrown error, division by zero, a type mismatch).
    Runtime,
    /// The script hit a limit: operations, call depth, sizes.
    Limit,
    /// The script ran past its time budget.
    Timeout,
    /// The script answered something that is not a valid answer (wrong type, negative, above
    /// the ceiling, wrong currency).
    Answer,
}

impl RuleErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleErrorKind::Compile => "compile",
            RuleErrorKind::Runtime => "runtime",
            RuleErrorKind::Limit => "limit",
            RuleErrorKind::Timeout => "timeout",
            RuleErrorKind::Answer => "answer",
        }
    }
}

/// A rule failure, with the script position where there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct RuleError {
    pub kind: RuleErrorKind,
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

impl RuleError {
    pub fn new(kind: RuleErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), line: None, column: None }
    }

    pub fn answer(message: impl Into<String>) -> Self {
        Self::new(RuleErrorKind::Answer, message)
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error", self.kind.as_str())?;
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, " at line {line}, column {column}")?,
            (Some(line), None) => write!(f, " at line {line}")?,
            _ => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// A compiled rule version, shared by concurrent evaluations.
pub trait CompiledRules: Send + Sync {
    fn defines(&self, entry: EntryPoint) -> bool;
    /// Runs `entry` (or its default) within the engine's limits.
    fn evaluate(&self, entry: EntryPoint, ctx: &RuleContext) -> Result<Evaluation, RuleError>;
    /// Runs several entry points on one context, in order (an engine may prepare the context once).
    fn evaluate_each(&self, entries: &[EntryPoint], ctx: &RuleContext) -> Vec<Result<Evaluation, RuleError>> {
        entries.iter().map(|&entry| self.evaluate(entry, ctx)).collect()
    }
}

/// The port to the script engine.
pub trait RulesEngine: Send + Sync {
    fn compile(&self, source: &str) -> Result<Arc<dyn CompiledRules>, RuleError>;
}

// ----- rule sets and versions ------------------------------------------------------------------

/// What happens when a rule fails at evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum ErrorPolicy {
    /// No price, no booking: the caller gets a clear refusal.
    Deny,
    /// Quote this amount (one `base` item) and say so in the trace.
    FallbackPrice { amount_minor: i64 },
}

/// Limits a version must respect to be published, and that every answer must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guardrails {
    /// No price may exceed this total (minor units), ever.
    pub max_total_minor: i64,
    /// At publish: the hourly rate of every fixture of an hour or more must be at least this.
    pub min_hourly_minor: Option<i64>,
    /// At publish: the hourly rate of every fixture of an hour or more must be at most this.
    pub max_hourly_minor: Option<i64>,
    /// At publish: no fixture's price may move more than this percentage from the active
    /// version's price for the same context.
    pub max_step_percent: Option<u32>,
}

impl Default for Guardrails {
    fn default() -> Self {
        Self { max_total_minor: 100_000, min_hourly_minor: None, max_hourly_minor: None, max_step_percent: None }
    }
}

impl Guardrails {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(1..=MAX_TOTAL_CEILING).contains(&self.max_total_minor) {
            return Err(ValidationError::new(
                "guardrails.max_total_minor",
                format!("must be between 1 and {MAX_TOTAL_CEILING}"),
            ));
        }
        if let (Some(min), Some(max)) = (self.min_hourly_minor, self.max_hourly_minor)
            && min > max
        {
            return Err(ValidationError::new("guardrails.min_hourly_minor", "must not exceed max_hourly_minor"));
        }
        if self.min_hourly_minor.is_some_and(|min| min < 0) {
            return Err(ValidationError::new("guardrails.min_hourly_minor", "must not be negative"));
        }
        Ok(())
    }

    /// Turns a rule's line items into a price, or says why they are not one.
    pub fn check_price(&self, answer: &PriceAnswer, currency: &str) -> Result<Price, RuleError> {
        if answer.items.len() > MAX_LINE_ITEMS {
            return Err(RuleError::answer(format!("{} line items; at most {MAX_LINE_ITEMS}", answer.items.len())));
        }
        if let Some(stated) = &answer.currency
            && !stated.eq_ignore_ascii_case(currency)
        {
            return Err(RuleError::answer(format!("price in {stated}, but the site charges in {currency}")));
        }
        let mut total: i64 = 0;
        for item in &answer.items {
            if item.amount_minor < 0 {
                return Err(RuleError::answer(format!(
                    "line item '{}' is negative ({}); amounts are positive and discounts are subtracted",
                    item.label, item.amount_minor
                )));
            }
            let signed = if item.kind == LineKind::Discount { -item.amount_minor } else { item.amount_minor };
            total = total.checked_add(signed).ok_or_else(|| RuleError::answer("the total overflows"))?;
        }
        if let Some(stated) = answer.stated_total_minor
            && stated != total
        {
            return Err(RuleError::answer(format!("stated total {stated} is not the sum of the line items ({total})")));
        }
        if total < 0 {
            return Err(RuleError::answer(format!("total is negative ({total}): discounts exceed charges")));
        }
        if total > self.max_total_minor {
            return Err(RuleError::answer(format!(
                "total {total} is above the rule set's ceiling of {}",
                self.max_total_minor
            )));
        }
        Ok(Price { items: answer.items.clone(), total_minor: total, currency: currency.to_owned() })
    }
}

pub const MAX_LINE_ITEMS: usize = 32;
/// The highest ceiling a rule set may set (ten billion in major units of a two-digit currency):
/// keeps every sum of prices far from overflow.
pub const MAX_TOTAL_CEILING: i64 = 1_000_000_000_000;
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;
pub const MAX_TESTS: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    pub id: RuleSetId,
    pub operator_id: OperatorId,
    /// `None`: every site of the operator without a rule set of its own.
    pub site_id: Option<SiteId>,
    pub name: String,
    pub currency: Currency,
    pub error_policy: ErrorPolicy,
    pub guardrails: Guardrails,
    /// The operator's calendar: these dates are `holiday` day types.
    pub holidays: BTreeSet<NaiveDate>,
    pub adjustment: AdjustmentSettings,
    pub created_at: DateTime<Utc>,
}

/// How scheduled adjustments (`adjust(ctx)`) run for a rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentSettings {
    /// The review period: occupancy over this many days before the adjustment.
    pub period_days: u32,
    /// An adjusted version takes effect this many days after it is made.
    pub notice_days: u32,
}

impl Default for AdjustmentSettings {
    fn default() -> Self {
        Self { period_days: 28, notice_days: 7 }
    }
}

impl AdjustmentSettings {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(1..=366).contains(&self.period_days) {
            return Err(ValidationError::new("adjustment.period_days", "must be between 1 and 366"));
        }
        // At least a day: drivers get notice, and a pending change keeps nodes from stacking another.
        if !(1..=366).contains(&self.notice_days) {
            return Err(ValidationError::new("adjustment.notice_days", "must be between 1 and 366"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    Draft,
    Published,
}

impl VersionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Draft => "draft",
            VersionStatus::Published => "published",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "draft" => Some(VersionStatus::Draft),
            "published" => Some(VersionStatus::Published),
            _ => None,
        }
    }
}

/// A version's script and fixtures never change after creation; only its status does.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleVersion {
    pub rule_set_id: RuleSetId,
    pub version: u32,
    pub source: String,
    pub tests: Vec<RuleTest>,
    pub params: Params,
    pub status: VersionStatus,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
}

/// A version becoming the one in force from `effective_from`: a publish or a rollback.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    pub rule_set_id: RuleSetId,
    pub version: u32,
    pub effective_from: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// `publish` or `rollback`.
    pub reason: String,
}

/// The version in force at `at`: the activation with the latest `effective_from` not after `at`
/// (the later-made one on a tie).
pub fn version_in_force(activations: &[Activation], at: DateTime<Utc>) -> Option<u32> {
    activations
        .iter()
        .filter(|activation| activation.effective_from <= at)
        .max_by_key(|activation| (activation.effective_from, activation.created_at))
        .map(|activation| activation.version)
}

// ----- fixtures --------------------------------------------------------------------------------

/// One test case of a rule version: a context and what must come out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTest {
    pub name: String,
    #[serde(default)]
    pub entry: Option<EntryPoint>,
    pub context: ContextFixture,
    #[serde(default)]
    pub expect: Expectation,
}

/// A context written by hand: times are local to the site (`2026-03-02T09:00`) unless they carry
/// an offset; everything left out takes a documented default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ContextFixture {
    pub start: String,
    pub end: String,
    /// Default: one hour before `start`.
    #[serde(default)]
    pub now: Option<String>,
    /// Default: `car`.
    #[serde(default)]
    pub vehicle_type: Option<String>,
    #[serde(default)]
    pub site: Option<SiteFacts>,
    #[serde(default)]
    pub space: Option<SpaceFacts>,
    #[serde(default)]
    pub occupancy: Option<Occupancy>,
    #[serde(default)]
    pub driver: Option<DriverFacts>,
    #[serde(default)]
    pub booking: Option<BookingFixture>,
    /// Default: the version's parameters.
    #[serde(default)]
    pub params: Option<Params>,
    /// For `adjust` test cases.
    #[serde(default)]
    pub adjustment: Option<AdjustmentFacts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BookingFixture {
    #[serde(default)]
    pub paid_minor: i64,
    #[serde(default)]
    pub new_end: Option<String>,
    #[serde(default)]
    pub departed_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    #[serde(default)]
    pub total_minor: Option<i64>,
    #[serde(default)]
    pub allow: Option<bool>,
    /// The denial reason contains this text.
    #[serde(default)]
    pub reason_contains: Option<String>,
    /// The evaluation fails with an error whose message contains this text.
    #[serde(default)]
    pub error_contains: Option<String>,
    /// `adjust` proposes exactly these parameters (`{}`: no change).
    #[serde(default)]
    pub params: Option<Params>,
}

impl ContextFixture {
    /// The context this fixture describes, for a rule set in `currency` with `holidays`.
    pub fn to_context(
        &self,
        default_site: Option<&SiteFacts>,
        currency: &str,
        holidays: &BTreeSet<NaiveDate>,
        params: &Params,
    ) -> Result<RuleContext, ValidationError> {
        let mut site = self.site.clone().or_else(|| default_site.cloned()).unwrap_or_else(|| SiteFacts {
            id: None,
            name: test_site_name(),
            kind: off_street(),
            timezone: utc(),
            currency: String::new(),
            capacity: 100,
            max_stay_minutes: None,
            max_height_cm: None,
            allowed_vehicle_types: cars(),
            opening_hours: Vec::new(),
        });
        if site.currency.is_empty() {
            site.currency = currency.to_owned();
        }
        let timezone = Timezone::parse(&site.timezone).map_err(|error| error.within("site"))?;
        let time = |field: &str, text: &str| {
            parse_local(field, text, timezone).map(|at| LocalTime::new(at, timezone, holidays))
        };
        let start = time("start", &self.start)?;
        let end = time("end", &self.end)?;
        if end.at <= start.at {
            return Err(ValidationError::new("end", "must be after start"));
        }
        let now = match &self.now {
            Some(text) => time("now", text)?,
            None => LocalTime::new(start.utc() - chrono::Duration::hours(1), timezone, holidays),
        };
        let booking = match &self.booking {
            None => None,
            Some(fixture) => Some(BookingFacts {
                paid_minor: fixture.paid_minor,
                start,
                end,
                new_end: fixture.new_end.as_deref().map(|text| time("booking.new_end", text)).transpose()?,
                departed_at: fixture
                    .departed_at
                    .as_deref()
                    .map(|text| time("booking.departed_at", text))
                    .transpose()?,
            }),
        };
        let occupancy = self.occupancy.clone().unwrap_or(Occupancy {
            percent: 0.0,
            free: site.capacity,
            total: site.capacity,
            recent_percent: None,
        });
        Ok(RuleContext {
            vehicle_type: self.vehicle_type.clone().unwrap_or_else(car),
            space: self.space.clone(),
            start,
            end,
            now,
            occupancy,
            driver: self.driver.clone().unwrap_or_default(),
            booking,
            holidays: holidays_between(holidays, &start, &end),
            params: self.params.clone().unwrap_or_else(|| params.clone()),
            adjustment: self.adjustment.clone(),
            site,
        })
    }
}

/// The holidays of `calendar` from the local date of `start` to that of `end`.
pub fn holidays_between(calendar: &BTreeSet<NaiveDate>, start: &LocalTime, end: &LocalTime) -> Vec<NaiveDate> {
    calendar.range(start.at.date_naive()..=end.at.date_naive()).copied().collect()
}

/// `2026-03-02T09:00[:ss]` in `timezone`, or any RFC 3339 time.
pub fn parse_local(field: &str, text: &str, timezone: Timezone) -> Result<DateTime<Utc>, ValidationError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| ValidationError::new(field, format!("'{text}' is not a time (2026-03-02T09:00 or RFC 3339)")))?;
    timezone
        .tz()
        .from_local_datetime(&naive)
        .earliest()
        .map(|at| at.with_timezone(&Utc))
        .ok_or_else(|| ValidationError::new(field, format!("'{text}' does not exist in {}", timezone.name())))
}

/// What one fixture produced, and whether that is what it expected.
#[derive(Debug, Clone, PartialEq)]
pub struct TestOutcome {
    pub name: String,
    pub passed: bool,
    /// Why it failed, or what it produced.
    pub message: String,
    pub price: Option<Price>,
    pub decision: Option<Decision>,
}

/// The answer of one entry point, checked: a price for money entry points, a decision (with an
/// optional price) otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub price: Option<Price>,
    pub decision: Option<Decision>,
    /// `adjust`: the proposed parameters, `None` for no change.
    pub params: Option<Params>,
    pub trace: Vec<TraceStep>,
    pub defaulted: bool,
}

/// Runs `entry` and checks its answer against `guardrails` in the site's currency.
pub fn evaluate_checked(
    rules: &dyn CompiledRules,
    entry: EntryPoint,
    ctx: &RuleContext,
    guardrails: &Guardrails,
) -> Result<Checked, RuleError> {
    check_answer(rules.evaluate(entry, ctx)?, ctx, guardrails)
}

/// [`evaluate_checked`] for several entry points on one context, in order.
pub fn evaluate_checked_each(
    rules: &dyn CompiledRules,
    entries: &[EntryPoint],
    ctx: &RuleContext,
    guardrails: &Guardrails,
) -> Vec<Result<Checked, RuleError>> {
    rules
        .evaluate_each(entries, ctx)
        .into_iter()
        .map(|evaluation| evaluation.and_then(|evaluation| check_answer(evaluation, ctx, guardrails)))
        .collect()
}

fn check_answer(evaluation: Evaluation, ctx: &RuleContext, guardrails: &Guardrails) -> Result<Checked, RuleError> {
    let (price, decision, params) = match evaluation.answer {
        RuleAnswer::Money(answer) => (Some(guardrails.check_price(&answer, &ctx.site.currency)?), None, None),
        RuleAnswer::Decision { decision, price } => (
            price.as_ref().map(|answer| guardrails.check_price(answer, &ctx.site.currency)).transpose()?,
            Some(decision),
            None,
        ),
        RuleAnswer::Params(params) => (None, None, params),
    };
    Ok(Checked { price, decision, params, trace: evaluation.trace, defaulted: evaluation.defaulted })
}

/// Runs one fixture. Without an explicit `entry`, a fixture that expects a decision runs
/// `allow_booking`, any other `price`.
pub fn run_test(rules: &dyn CompiledRules, test: &RuleTest, setting: &TestSetting<'_>) -> TestOutcome {
    let failed =
        |message: String| TestOutcome { name: test.name.clone(), passed: false, message, price: None, decision: None };
    let ctx = match setting.context(&test.context) {
        Ok(ctx) => ctx,
        Err(error) => return failed(format!("bad context: {error}")),
    };
    let expect = &test.expect;
    let entry = test.entry.unwrap_or(if expect.allow.is_some() || expect.reason_contains.is_some() {
        EntryPoint::AllowBooking
    } else if expect.params.is_some() {
        EntryPoint::Adjust
    } else {
        EntryPoint::Price
    });
    let checked = match evaluate_checked(rules, entry, &ctx, setting.guardrails) {
        Ok(checked) => checked,
        Err(error) => {
            return match &expect.error_contains {
                Some(wanted) if error.to_string().contains(wanted.as_str()) => TestOutcome {
                    name: test.name.clone(),
                    passed: true,
                    message: format!("failed as expected: {error}"),
                    price: None,
                    decision: None,
                },
                _ => failed(error.to_string()),
            };
        }
    };
    let mut problems = Vec::new();
    if let Some(wanted) = &expect.error_contains {
        problems.push(format!("expected an error containing '{wanted}', but it succeeded"));
    }
    if let Some(wanted) = expect.total_minor {
        match &checked.price {
            Some(price) if price.total_minor == wanted => {}
            Some(price) => problems.push(format!("total is {}, expected {wanted}", price.total_minor)),
            None => problems.push(format!("no price, expected a total of {wanted}")),
        }
    }
    if let Some(wanted) = expect.allow {
        let actual = checked.decision.as_ref().map(|decision| decision.allow);
        if actual != Some(wanted) {
            problems.push(format!("allow is {actual:?}, expected {wanted}"));
        }
    }
    if let Some(wanted) = &expect.params {
        let proposed = checked.params.clone().unwrap_or_default();
        if &proposed != wanted {
            problems.push(format!(
                "adjust proposed {}, expected {}",
                serde_json::Value::Object(proposed),
                serde_json::Value::Object(wanted.clone())
            ));
        }
    }
    if let Some(wanted) = &expect.reason_contains {
        let reason = checked.decision.as_ref().and_then(|decision| decision.reason.clone()).unwrap_or_default();
        if !reason.contains(wanted.as_str()) {
            problems.push(format!("reason '{reason}' does not contain '{wanted}'"));
        }
    }
    let produced = match (&checked.price, &checked.decision, &checked.params) {
        (Some(price), _, _) => format!("total {} {}", price.total_minor, price.currency),
        (None, Some(decision), _) if decision.allow => "allowed".to_owned(),
        (None, Some(decision), _) => format!("denied: {}", decision.reason.clone().unwrap_or_default()),
        (None, None, Some(params)) => format!("adjust to {}", serde_json::Value::Object(params.clone())),
        (None, None, None) if entry == EntryPoint::Adjust => "no change".to_owned(),
        (None, None, None) => "no answer".to_owned(),
    };
    TestOutcome {
        name: test.name.clone(),
        passed: problems.is_empty(),
        message: if problems.is_empty() { produced } else { problems.join("; ") },
        price: checked.price,
        decision: checked.decision,
    }
}

/// The total `rules` charges for the stay in `ctx` with the version parameters `params`: how
/// two versions are compared on the same stay.
pub fn price_with_params(
    rules: &dyn CompiledRules,
    ctx: &RuleContext,
    params: &Params,
    guardrails: &Guardrails,
) -> Result<i64, RuleError> {
    let ctx = RuleContext { params: params.clone(), ..ctx.clone() };
    evaluate_checked(rules, EntryPoint::Price, &ctx, guardrails)
        .map(|checked| checked.price.map_or(0, |price| price.total_minor))
}

/// Where fixtures' contexts come from: the rule set's site, currency, calendar and guardrails,
/// and the version's parameters.
#[derive(Debug, Clone, Copy)]
pub struct TestSetting<'a> {
    pub site: Option<&'a SiteFacts>,
    pub currency: &'a str,
    pub holidays: &'a BTreeSet<NaiveDate>,
    pub guardrails: &'a Guardrails,
    pub params: &'a Params,
}

impl TestSetting<'_> {
    pub fn context(&self, fixture: &ContextFixture) -> Result<RuleContext, ValidationError> {
        fixture.to_context(self.site, self.currency, self.holidays, self.params)
    }
}

/// Why publishing would break a guardrail, for each fixture that does; empty when it would not.
/// `active` prices the same stays with the version in force (and its parameters), for the step
/// check. Fixtures' own parameters are ignored here: the question is what each version charges.
pub fn guardrail_violations(
    candidate: (&dyn CompiledRules, &Params),
    active: Option<(&dyn CompiledRules, &Params)>,
    tests: &[RuleTest],
    setting: &TestSetting<'_>,
) -> Vec<String> {
    let guardrails = setting.guardrails;
    let price_with = |rules: &dyn CompiledRules, params: &Params, fixture: &ContextFixture| {
        let fixture = ContextFixture { params: None, ..fixture.clone() };
        let ctx = setting.context(&fixture).ok()?;
        let total = price_with_params(rules, &ctx, params, guardrails).ok()?;
        Some((total, ctx.duration_minutes()))
    };
    let mut violations = Vec::new();
    for test in tests {
        let prices_a_stay = test.entry.is_none_or(|entry| entry == EntryPoint::Price)
            && test.expect.error_contains.is_none()
            && test.expect.params.is_none();
        if !prices_a_stay {
            continue;
        }
        let Some((new_total, minutes)) = price_with(candidate.0, candidate.1, &test.context) else { continue };
        if minutes >= 60 {
            let hourly = new_total * 60 / minutes;
            if let Some(min) = guardrails.min_hourly_minor
                && hourly < min
            {
                violations.push(format!("'{}': {hourly} per hour is below the floor of {min}", test.name));
            }
            if let Some(max) = guardrails.max_hourly_minor
                && hourly > max
            {
                violations.push(format!("'{}': {hourly} per hour is above the ceiling of {max}", test.name));
            }
        }
        if let (Some(step), Some((active, active_params))) = (guardrails.max_step_percent, active)
            && let Some((old_total, _)) = price_with(active, active_params, &test.context)
            && old_total > 0
        {
            let moved = (i128::from(new_total) - i128::from(old_total)).abs() * 100;
            if moved > i128::from(old_total) * i128::from(step) {
                violations.push(format!(
                    "'{}': {old_total} → {new_total} moves more than {step}% from the active version",
                    test.name
                ));
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activation(version: u32, from: i64, made: i64) -> Activation {
        Activation {
            rule_set_id: RuleSetId::new(),
            version,
            effective_from: DateTime::from_timestamp(from, 0).unwrap(),
            created_at: DateTime::from_timestamp(made, 0).unwrap(),
            reason: "publish".into(),
        }
    }

    #[test]
    fn the_latest_effective_activation_is_in_force_and_a_rollback_wins_a_tie() {
        let activations = [activation(1, 0, 0), activation(2, 100, 10), activation(1, 100, 20), activation(3, 500, 30)];
        let at = |secs| version_in_force(&activations, DateTime::from_timestamp(secs, 0).unwrap());
        assert_eq!(at(50), Some(1));
        assert_eq!(at(100), Some(1), "the rollback made later wins at the same time");
        assert_eq!(at(499), Some(1));
        assert_eq!(at(500), Some(3), "a scheduled version takes over when due");
        assert_eq!(version_in_force(&activations[1..], DateTime::from_timestamp(10, 0).unwrap()), None);
    }

    fn item(kind: LineKind, amount_minor: i64) -> LineItem {
        LineItem { kind, label: kind.as_str().into(), amount_minor, line: None }
    }

    #[test]
    fn prices_are_summed_with_discounts_subtracted_and_checked() {
        let rails = Guardrails { max_total_minor: 1_000, ..Guardrails::default() };
        let answer = PriceAnswer {
            items: vec![item(LineKind::Base, 600), item(LineKind::Discount, 100), item(LineKind::Tax, 50)],
            ..PriceAnswer::default()
        };
        assert_eq!(rails.check_price(&answer, "EUR").unwrap().total_minor, 550);

        let negative = PriceAnswer { items: vec![item(LineKind::Base, -1)], ..PriceAnswer::default() };
        assert!(rails.check_price(&negative, "EUR").unwrap_err().message.contains("negative"));
        let too_much = PriceAnswer { items: vec![item(LineKind::Base, 1_001)], ..PriceAnswer::default() };
        assert!(rails.check_price(&too_much, "EUR").unwrap_err().message.contains("ceiling"));
        let below_zero = PriceAnswer {
            items: vec![item(LineKind::Base, 100), item(LineKind::Discount, 200)],
            ..PriceAnswer::default()
        };
        assert!(rails.check_price(&below_zero, "EUR").unwrap_err().message.contains("discounts exceed"));
        let wrong_total = PriceAnswer { stated_total_minor: Some(5), ..answer.clone() };
        assert!(rails.check_price(&wrong_total, "EUR").unwrap_err().message.contains("not the sum"));
        let dollars = PriceAnswer { currency: Some("USD".into()), ..answer };
        assert!(rails.check_price(&dollars, "EUR").unwrap_err().message.contains("USD"));
        let overflow = PriceAnswer {
            items: vec![item(LineKind::Base, i64::MAX), item(LineKind::Fee, 1)],
            ..PriceAnswer::default()
        };
        assert!(rails.check_price(&overflow, "EUR").unwrap_err().message.contains("overflows"));
    }

    #[test]
    fn fixture_times_are_local_to_the_site_and_days_typed_by_the_calendar() {
        let fixture = ContextFixture {
            start: "2026-12-25T09:00".into(),
            end: "2026-12-25T11:30".into(),
            site: Some(SiteFacts {
                id: None,
                name: "Lisbon".into(),
                kind: off_street(),
                timezone: "Europe/Lisbon".into(),
                currency: String::new(),
                capacity: 10,
                max_stay_minutes: None,
                max_height_cm: None,
                allowed_vehicle_types: cars(),
                opening_hours: vec![],
            }),
            ..ContextFixture::default()
        };
        let holidays: BTreeSet<NaiveDate> = [NaiveDate::from_ymd_opt(2026, 12, 25).unwrap()].into();
        let ctx = fixture.to_context(None, "EUR", &holidays, &Params::new()).unwrap();
        assert_eq!(ctx.start.at.to_rfc3339(), "2026-12-25T09:00:00+00:00");
        assert_eq!(ctx.start.day_type, DayType::Holiday);
        assert_eq!(ctx.duration_minutes(), 150);
        assert_eq!(ctx.lead_time_minutes(), 60);
        assert_eq!(ctx.site.currency, "EUR");

        let inverted = ContextFixture { end: "2026-12-25T08:00".into(), ..fixture };
        assert_eq!(inverted.to_context(None, "EUR", &holidays, &Params::new()).unwrap_err().field, "end");
    }
}
