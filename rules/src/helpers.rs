//! Functions scripts call: line items, decisions, explanations, and the common tariff shapes
//! (time bands, first interval + increments + daily maximum). Each helper that computes money
//! explains itself in the trace with the line that called it.

use std::collections::BTreeSet;

use berth_kernel::rules::DayType;
use berth_kernel::site::Timezone;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use rhai::{Array, Dynamic, Engine, EvalAltResult, INT, Map, NativeCallContext};
use rust_decimal::Decimal;

use crate::answer::amount;
use crate::trace;

type Fallible<T> = Result<T, Box<EvalAltResult>>;

pub(crate) fn register(engine: &mut Engine) {
    // Rhai's core package has `sleep`, which would hold a thread without the deadline noticing.
    engine.register_fn("sleep", |_: INT| -> Fallible<()> { Err("sleep() is not available in rules".into()) });
    engine.register_fn("sleep", |_: Decimal| -> Fallible<()> { Err("sleep() is not available in rules".into()) });
    for kind in ["base", "surcharge", "discount", "fee", "tax"] {
        engine.register_fn(kind, move |context: NativeCallContext, label: &str, amount: INT| {
            line_item(&context, kind, label, Dynamic::from_int(amount))
        });
        engine.register_fn(kind, move |context: NativeCallContext, label: &str, amount: Decimal| {
            line_item(&context, kind, label, Dynamic::from_decimal(amount))
        });
    }
    engine.register_fn("allow", || {
        let mut map = Map::new();
        map.insert("allow".into(), true.into());
        map
    });
    engine.register_fn("deny", |reason: &str| {
        let mut map = Map::new();
        map.insert("allow".into(), false.into());
        map.insert("reason".into(), reason.into());
        map
    });
    engine.register_fn("explain", |context: NativeCallContext, message: &str| {
        trace(context.call_position(), message.to_owned());
    });
    engine.register_fn("increments", |minutes: INT, step_minutes: INT| -> Fallible<INT> {
        if step_minutes <= 0 {
            return Err("increments(): the step must be positive".into());
        }
        Ok(if minutes <= 0 { 0 } else { (minutes - 1) / step_minutes + 1 })
    });
    engine
        .register_fn("percent_of", |amount_minor: INT, percent: INT| percent_of(amount_minor, Decimal::from(percent)));
    engine.register_fn("percent_of", percent_of);
    engine.register_fn("clock", |text: &str| -> Fallible<INT> { clock(text).map(INT::from) });
    engine.register_fn("rate_line", rate_line);
    // `ctx` by reference: a rule passes its whole context, which is not worth a copy per call.
    engine.register_fn("band_price", |context: NativeCallContext, ctx: &mut Map, bands: Array| {
        band_price(&context, ctx, &bands, 0)
    });
    engine.register_fn("band_price", |context: NativeCallContext, ctx: &mut Map, bands: Array, daily_max: INT| {
        band_price(&context, ctx, &bands, daily_max)
    });
    engine.register_fn("time_bands", |ctx: &mut Map, bands: Array| -> Fallible<Array> {
        let stay = Stay::of(ctx)?;
        let bands = parse_bands(&bands)?;
        Ok(split(&stay, &bands)?
            .into_iter()
            .map(|segment| {
                let mut map = Map::new();
                map.insert("date".into(), segment.date.to_string().into());
                map.insert("label".into(), bands[segment.band].label.clone().into());
                map.insert("minutes".into(), Dynamic::from_int(segment.minutes));
                map.insert("amount".into(), Dynamic::from_int(bands[segment.band].charge(segment.minutes)));
                Dynamic::from_map(map)
            })
            .collect())
    });
    engine.register_fn("minutes_at", |ctx: &mut Map, text: &str| -> Fallible<INT> {
        let timezone = site_timezone(ctx)?;
        let at = berth_kernel::rules::parse_local("minutes_at", text, timezone).map_err(|error| error.message)?;
        Ok(at.timestamp().div_euclid(60))
    });
    engine.register_fn("within_opening_hours", |ctx: &mut Map| -> Fallible<bool> { within_opening_hours(ctx) });
}

fn line_item(context: &NativeCallContext, kind: &str, label: &str, amount: Dynamic) -> Map {
    let mut map = Map::new();
    map.insert("kind".into(), kind.into());
    map.insert("label".into(), label.into());
    map.insert("amount".into(), amount.clone());
    let position = context.call_position();
    if let Some(line) = position.line() {
        map.insert("line".into(), Dynamic::from_int(line as INT));
    }
    trace(position, format!("{kind} '{label}': {amount}"));
    map
}

/// `amount × percent / 100`, rounded half away from zero to whole minor units.
fn percent_of(amount_minor: INT, percent: Decimal) -> Fallible<INT> {
    let value = Decimal::from(amount_minor)
        .checked_mul(percent)
        .ok_or_else(|| -> Box<EvalAltResult> { "percent_of(): overflow".into() })?
        / Decimal::from(100);
    match amount(&Dynamic::from_decimal(value)) {
        Some(Ok(rounded)) => Ok(rounded),
        _ => Err("percent_of(): the result is too large".into()),
    }
}

/// `HH:MM` to minutes after midnight (`24:00` is 1440).
fn clock(text: &str) -> Fallible<u32> {
    berth_kernel::site::OpeningHours::parse_clock("clock", text)
        .map(u32::from)
        .map_err(|_| format!("'{text}' is not a time of day (HH:MM)").into())
}

fn int_field(map: &Map, key: &str, helper: &str) -> Fallible<Option<INT>> {
    match map.get(key) {
        None => Ok(None),
        Some(value) if value.is_unit() => Ok(None),
        Some(value) => match amount(value) {
            Some(Ok(int)) => Ok(Some(int)),
            _ => Err(format!("{helper}(): '{key}' must be a whole number").into()),
        },
    }
}

/// First interval + increments + maximum per 24 hours (APDS `RateLine` semantics): the first
/// `first_minutes` cost `first_amount`; each started `step_minutes` after that costs
/// `step_amount`; each 24 hours of the stay cost at most `max_per_day`, and the tariff starts
/// over for the time past each full 24 hours.
fn rate_line(context: NativeCallContext, minutes: INT, spec: Map) -> Fallible<INT> {
    for key in spec.keys() {
        if !matches!(key.as_str(), "first_minutes" | "first_amount" | "step_minutes" | "step_amount" | "max_per_day") {
            return Err(format!(
                "rate_line(): unknown key '{key}' (first_minutes, first_amount, step_minutes, step_amount, max_per_day)"
            )
            .into());
        }
    }
    let required = |key: &str| -> Fallible<INT> {
        int_field(&spec, key, "rate_line")?.ok_or_else(|| format!("rate_line(): '{key}' is required").into())
    };
    let first_minutes = required("first_minutes")?;
    let first_amount = required("first_amount")?;
    let step_minutes = int_field(&spec, "step_minutes", "rate_line")?.unwrap_or(60);
    let step_amount = int_field(&spec, "step_amount", "rate_line")?.unwrap_or(0);
    let max_per_day = int_field(&spec, "max_per_day", "rate_line")?;
    if first_minutes < 0
        || step_minutes <= 0
        || first_amount < 0
        || step_amount < 0
        || max_per_day.is_some_and(|max| max < 0)
    {
        return Err("rate_line(): minutes must be positive and amounts not negative".into());
    }
    let day = |minutes: INT| -> INT {
        if minutes <= 0 {
            return 0;
        }
        let steps =
            if minutes > first_minutes { (minutes - first_minutes + step_minutes - 1) / step_minutes } else { 0 };
        let charge = first_amount.saturating_add(steps.saturating_mul(step_amount));
        max_per_day.map_or(charge, |max| charge.min(max))
    };
    let full_days = minutes.max(0) / 1440;
    let rest = minutes.max(0) % 1440;
    let total = full_days.saturating_mul(day(1440)).saturating_add(day(rest));
    let capped = max_per_day.map_or(String::new(), |max| format!(", at most {max} per 24 h"));
    trace(
        context.call_position(),
        format!(
            "rate_line: {minutes} min = first {first_minutes} min {first_amount} + {step_amount} per {step_minutes} min{capped} → {total}"
        ),
    );
    Ok(total)
}

fn site_timezone(ctx: &Map) -> Fallible<Timezone> {
    ctx.get("site")
        .and_then(|site| site.clone().try_cast::<Map>())
        .and_then(|site| site.get("timezone").and_then(|name| name.clone().into_string().ok()))
        .and_then(|name| Timezone::parse(&name).ok())
        .ok_or_else(|| "pass the rule's ctx: ctx.site.timezone is missing".into())
}

/// The longest stay the band helpers price (quotes are at most 31 days).
const MAX_STAY_DAYS: i64 = 62;

/// A stay read back from `ctx`: its UTC bounds, the site's zone and holidays.
struct Stay {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    timezone: Timezone,
    holidays: BTreeSet<NaiveDate>,
}

impl Stay {
    fn of(ctx: &Map) -> Fallible<Self> {
        let text = |map: &Map, key: &str| map.get(key).and_then(|value| value.clone().into_string().ok());
        let time = |key: &str| -> Fallible<DateTime<Utc>> {
            ctx.get(key)
                .and_then(|value| value.clone().try_cast::<Map>())
                .and_then(|map| text(&map, "iso"))
                .and_then(|iso| DateTime::parse_from_rfc3339(&iso).ok())
                .map(|at| at.with_timezone(&Utc))
                .ok_or_else(|| format!("pass the rule's ctx: ctx.{key} is missing").into())
        };
        let timezone = site_timezone(ctx)?;
        let holidays = ctx
            .get("holidays")
            .and_then(|days| days.clone().into_array().ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|day| day.into_string().ok())
            .filter_map(|day| NaiveDate::parse_from_str(&day, "%Y-%m-%d").ok())
            .collect();
        let (start, end) = (time("start")?, time("end")?);
        if (end - start).num_days() > MAX_STAY_DAYS {
            return Err(format!("stays longer than {MAX_STAY_DAYS} days cannot be priced by bands").into());
        }
        Ok(Self { start, end, timezone, holidays })
    }

    /// The instant a wall-clock minute of `date` happens (1440 is the next midnight). A time
    /// that does not exist (the hour skipped when clocks go forward) is the instant the clocks
    /// jump; a time that happens twice is its first occurrence.
    fn instant(&self, date: NaiveDate, minute: u32) -> DateTime<Utc> {
        let tz = self.timezone.tz();
        let (date, minute) =
            if minute >= 1440 { (date.succ_opt().unwrap_or(date), minute - 1440) } else { (date, minute) };
        let naive = date.and_hms_opt(minute / 60, minute % 60, 0).unwrap_or_default();
        (0..=180)
            .find_map(|skipped| tz.from_local_datetime(&(naive + chrono::Duration::minutes(skipped))).earliest())
            .map_or_else(|| naive.and_utc(), |at| at.with_timezone(&Utc))
    }

    fn day_matches(&self, date: NaiveDate, days: &[String]) -> bool {
        if days.is_empty() {
            return true;
        }
        let day_type = DayType::of(date, &self.holidays).as_str();
        let weekday = berth_kernel::site::weekday_code(date.weekday());
        days.iter().any(|day| day == day_type || day == weekday || day == "all")
    }
}

struct Band {
    label: String,
    from: u32,
    to: u32,
    days: Vec<String>,
    amount: INT,
    per_minutes: INT,
}

impl Band {
    /// Whether the band covers this wall-clock minute of `date`. A band whose `to` is not after
    /// its `from` runs past midnight: its early-morning part belongs to the day it started, so
    /// `days` is checked against the previous date there.
    fn covers(&self, stay: &Stay, date: NaiveDate, minute: u32) -> bool {
        if self.from < self.to {
            (self.from..self.to).contains(&minute) && stay.day_matches(date, &self.days)
        } else {
            (minute >= self.from && stay.day_matches(date, &self.days))
                || (minute < self.to && date.pred_opt().is_some_and(|eve| stay.day_matches(eve, &self.days)))
        }
    }

    /// `amount` per started `per_minutes`.
    fn charge(&self, minutes: INT) -> INT {
        if minutes <= 0 { 0 } else { ((minutes - 1) / self.per_minutes + 1).saturating_mul(self.amount) }
    }
}

/// Most bands one helper call takes.
const MAX_BANDS: usize = 64;

fn parse_bands(bands: &Array) -> Fallible<Vec<Band>> {
    if bands.len() > MAX_BANDS {
        return Err(format!("at most {MAX_BANDS} bands").into());
    }
    bands
        .iter()
        .enumerate()
        .map(|(index, band)| {
            let map = band.clone().try_cast::<Map>().ok_or_else(|| format!("band {index} must be a map"))?;
            let text = |key: &str| map.get(key).and_then(|value| value.clone().into_string().ok());
            for key in map.keys() {
                if !matches!(key.as_str(), "label" | "from" | "to" | "days" | "amount" | "per_minutes") {
                    return Err(format!(
                        "band {index}: unknown key '{key}' (label, from, to, days, amount, per_minutes)"
                    )
                    .into());
                }
            }
            let days = match map.get("days") {
                None => Vec::new(),
                Some(days) => days
                    .clone()
                    .into_array()
                    .map_err(|_| format!("band {index}: days must be an array"))?
                    .into_iter()
                    .map(|day| day.into_string().map_err(|_| format!("band {index}: days must be strings")))
                    .collect::<Result<_, _>>()?,
            };
            let band = Band {
                label: text("label").unwrap_or_else(|| format!("band {index}")),
                from: clock(&text("from").unwrap_or_else(|| "00:00".into()))?,
                to: clock(&text("to").unwrap_or_else(|| "24:00".into()))?,
                days,
                amount: int_field(&map, "amount", "band")?
                    .ok_or_else(|| format!("band {index}: 'amount' is required"))?,
                per_minutes: int_field(&map, "per_minutes", "band")?.unwrap_or(60),
            };
            if band.amount < 0 || band.per_minutes <= 0 {
                return Err(
                    format!("band {index}: amount must not be negative and per_minutes must be positive").into()
                );
            }
            Ok(band)
        })
        .collect()
}

struct Segment {
    date: NaiveDate,
    band: usize,
    minutes: INT,
    end: DateTime<Utc>,
}

/// Cuts the stay into runs of one band within one local day; time no band covers is left out.
/// A run is elapsed time: a stay across a clock change is charged for the time it lasted.
fn split(stay: &Stay, bands: &[Band]) -> Fallible<Vec<Segment>> {
    let tz = stay.timezone.tz();
    let mut segments: Vec<Segment> = Vec::new();
    let mut at = stay.start;
    let mut steps = 0_u32;
    while at < stay.end {
        steps += 1;
        if steps.is_multiple_of(256) && crate::past_deadline() {
            return Err("the rule ran past its time budget (time bands)".into());
        }
        let local = at.with_timezone(&tz);
        let (date, minute) = (local.date_naive(), local.hour() * 60 + local.minute());
        let band = (0..bands.len()).find(|&index| bands[index].covers(stay, date, minute));
        // The next wall-clock minute of this date where any band starts or ends, or midnight.
        let next_minute = bands
            .iter()
            .flat_map(|band| [band.from, band.to])
            .filter(|&cut| cut > minute && cut < 1440)
            .min()
            .unwrap_or(1440);
        // Always move on by at least to the next whole minute.
        let next_whole_minute = at + chrono::Duration::seconds(60 - i64::from(local.second()));
        let next = stay.instant(date, next_minute).max(next_whole_minute);
        let until = next.min(stay.end);
        let seconds = (until - at).num_seconds();
        if let Some(band) = band {
            match segments.last_mut() {
                Some(last) if last.band == band && last.end == at && last.date == date => {
                    last.minutes += seconds;
                    last.end = until;
                }
                _ => segments.push(Segment { date, band, minutes: seconds, end: until }),
            }
        }
        at = until;
    }
    // Seconds to started minutes.
    for segment in &mut segments {
        segment.minutes = (segment.minutes + 59) / 60;
    }
    Ok(segments)
}

/// The stay priced by time bands: each run of a band within a local day costs `amount` per
/// started `per_minutes`; a day costs at most `daily_max` (0: no maximum).
fn band_price(context: &NativeCallContext, ctx: &Map, bands: &Array, daily_max: INT) -> Fallible<INT> {
    let stay = Stay::of(ctx)?;
    let bands = parse_bands(bands)?;
    let position = context.call_position();
    let mut total: INT = 0;
    let segments = split(&stay, &bands)?;
    let mut index = 0;
    while index < segments.len() {
        let date = segments[index].date;
        let mut day_total: INT = 0;
        while index < segments.len() && segments[index].date == date {
            let segment = &segments[index];
            let band = &bands[segment.band];
            let charge = band.charge(segment.minutes);
            trace(
                position,
                format!(
                    "{date} {}: {} min → {} × {} per {} min = {charge}",
                    band.label,
                    segment.minutes,
                    (segment.minutes - 1) / band.per_minutes + 1,
                    band.amount,
                    band.per_minutes
                ),
            );
            day_total = day_total.saturating_add(charge);
            index += 1;
        }
        if daily_max > 0 && day_total > daily_max {
            trace(position, format!("{date}: {day_total} capped at the daily maximum of {daily_max}"));
            day_total = daily_max;
        }
        total = total.saturating_add(day_total);
    }
    Ok(total)
}

/// Whether every minute of the stay falls within the site's opening hours (always, when it
/// has none). A period that closes before it opens runs past midnight.
fn within_opening_hours(ctx: &Map) -> Fallible<bool> {
    let stay = Stay::of(ctx)?;
    let site = ctx.get("site").and_then(|site| site.clone().try_cast::<Map>()).unwrap_or_default();
    let hours = site.get("opening_hours").and_then(|hours| hours.clone().into_array().ok()).unwrap_or_default();
    if hours.is_empty() {
        return Ok(true);
    }
    let bands: Array = hours
        .into_iter()
        .filter_map(|line| line.try_cast::<Map>())
        .map(|line| {
            let mut band = Map::new();
            for key in ["days", "from", "to"] {
                let source = match key {
                    "from" => "opens",
                    "to" => "closes",
                    other => other,
                };
                if let Some(value) = line.get(source) {
                    band.insert(key.into(), value.clone());
                }
            }
            band.insert("amount".into(), Dynamic::from_int(0));
            Dynamic::from_map(band)
        })
        .collect();
    let bands = parse_bands(&bands)?;
    let covered: INT = split(&stay, &bands)?.iter().map(|segment| segment.minutes).sum();
    Ok(covered >= ((stay.end - stay.start).num_seconds() + 59) / 60)
}
