//! The kernel's [`RuleContext`] as the `ctx` map a script sees. Times are maps of their local
//! parts; percentages are exact decimals; money is integer minor units.

use berth_kernel::rules::{LocalTime, RuleContext};
use chrono::{Datelike, Timelike};
use rhai::{Array, Dynamic, Map};
use rust_decimal::Decimal;

pub(crate) fn to_dynamic(ctx: &RuleContext) -> Dynamic {
    let mut map = Map::new();
    let site = &ctx.site;
    let mut site_map = Map::new();
    site_map.insert("id".into(), site.id.map(|id| Dynamic::from(id.to_string())).unwrap_or(Dynamic::UNIT));
    site_map.insert("name".into(), site.name.clone().into());
    site_map.insert("kind".into(), site.kind.clone().into());
    site_map.insert("timezone".into(), site.timezone.clone().into());
    site_map.insert("currency".into(), site.currency.clone().into());
    site_map.insert("capacity".into(), Dynamic::from_int(site.capacity.into()));
    site_map.insert("max_stay_minutes".into(), optional_int(site.max_stay_minutes.map(i64::from)));
    site_map.insert("max_height_cm".into(), optional_int(site.max_height_cm.map(i64::from)));
    site_map.insert("allowed_vehicle_types".into(), strings(&site.allowed_vehicle_types));
    let hours: Array = site
        .opening_hours
        .iter()
        .map(|hours| {
            let mut line = Map::new();
            line.insert("days".into(), strings(&hours.days));
            line.insert("opens".into(), hours.opens.clone().into());
            line.insert("closes".into(), hours.closes.clone().into());
            Dynamic::from_map(line)
        })
        .collect();
    site_map.insert("opening_hours".into(), Dynamic::from_array(hours));
    map.insert("site".into(), Dynamic::from_map(site_map));

    let space = ctx.space.as_ref().map(|space| {
        let mut space_map = Map::new();
        space_map.insert("id".into(), space.id.map(|id| Dynamic::from(id.to_string())).unwrap_or(Dynamic::UNIT));
        space_map.insert("code".into(), space.code.clone().into());
        space_map.insert("category".into(), space.category.clone().into());
        space_map.insert("vehicle_type".into(), space.vehicle_type.clone().into());
        space_map.insert("ev_charger".into(), space.ev_charger.into());
        space_map.insert("accessible".into(), space.accessible.into());
        Dynamic::from_map(space_map)
    });
    map.insert("space".into(), space.unwrap_or(Dynamic::UNIT));
    map.insert("vehicle_type".into(), ctx.vehicle_type.clone().into());
    map.insert("start".into(), time(&ctx.start));
    map.insert("end".into(), time(&ctx.end));
    map.insert("now".into(), time(&ctx.now));
    map.insert("duration_minutes".into(), Dynamic::from_int(ctx.duration_minutes()));
    map.insert("lead_time_minutes".into(), Dynamic::from_int(ctx.lead_time_minutes()));
    map.insert("day_type".into(), ctx.start.day_type.as_str().into());

    let mut occupancy = Map::new();
    occupancy.insert("percent".into(), Dynamic::from_decimal(percent(ctx.occupancy.percent)));
    occupancy.insert("free".into(), Dynamic::from_int(ctx.occupancy.free.into()));
    occupancy.insert("total".into(), Dynamic::from_int(ctx.occupancy.total.into()));
    occupancy.insert(
        "recent_percent".into(),
        ctx.occupancy.recent_percent.map(|value| Dynamic::from_decimal(percent(value))).unwrap_or(Dynamic::UNIT),
    );
    map.insert("occupancy".into(), Dynamic::from_map(occupancy));

    let mut driver = Map::new();
    driver.insert("permits".into(), strings(&ctx.driver.permits));
    driver.insert("accessible".into(), ctx.driver.accessible.into());
    map.insert("driver".into(), Dynamic::from_map(driver));

    let booking = ctx.booking.as_ref().map(|booking| {
        let mut booking_map = Map::new();
        booking_map.insert("paid_minor".into(), Dynamic::from_int(booking.paid_minor));
        booking_map.insert("start".into(), time(&booking.start));
        booking_map.insert("end".into(), time(&booking.end));
        booking_map
            .insert("minutes_before_start".into(), Dynamic::from_int((booking.start.at - ctx.now.at).num_minutes()));
        booking_map.insert("new_end".into(), booking.new_end.as_ref().map(time).unwrap_or(Dynamic::UNIT));
        booking_map.insert(
            "extension_minutes".into(),
            Dynamic::from_int(booking.new_end.map(|end| (end.at - booking.end.at).num_minutes()).unwrap_or(0)),
        );
        booking_map.insert("departed_at".into(), booking.departed_at.as_ref().map(time).unwrap_or(Dynamic::UNIT));
        booking_map.insert(
            "overstay_minutes".into(),
            Dynamic::from_int(
                booking.departed_at.map(|departed| (departed.at - booking.end.at).num_minutes().max(0)).unwrap_or(0),
            ),
        );
        Dynamic::from_map(booking_map)
    });
    map.insert("booking".into(), booking.unwrap_or(Dynamic::UNIT));
    map.insert("params".into(), json_to_dynamic(&serde_json::Value::Object(ctx.params.clone())));
    let adjustment = ctx.adjustment.as_ref().map(|adjustment| {
        let mut adjustment_map = Map::new();
        let hours: Array = adjustment
            .occupancy_by_hour
            .iter()
            .map(|hour| hour.map(|value| Dynamic::from_decimal(percent(value))).unwrap_or(Dynamic::UNIT))
            .collect();
        adjustment_map.insert("occupancy_by_hour".into(), Dynamic::from_array(hours));
        adjustment_map.insert("period_days".into(), Dynamic::from_int(adjustment.period_days.into()));
        adjustment_map.insert(
            "days_since_change".into(),
            adjustment.days_since_change.map(Dynamic::from_int).unwrap_or(Dynamic::UNIT),
        );
        Dynamic::from_map(adjustment_map)
    });
    map.insert("adjustment".into(), adjustment.unwrap_or(Dynamic::UNIT));
    map.insert(
        "holidays".into(),
        Dynamic::from_array(ctx.holidays.iter().map(|day| Dynamic::from(day.to_string())).collect()),
    );
    Dynamic::from_map(map)
}

/// A local time as the map scripts read: `ctx.start.hour`, `ctx.start.weekday` ("mon"),
/// `ctx.start.day_type`, `ctx.start.minute_of_day`...
pub(crate) fn time(time: &LocalTime) -> Dynamic {
    let at = time.at;
    let mut map = Map::new();
    // Written by hand: chrono's general formatter was a tenth of a quote's cost.
    let offset = at.offset().local_minus_utc();
    let (sign, offset) = if offset < 0 { ('-', -offset) } else { ('+', offset) };
    let date = format!("{:04}-{:02}-{:02}", at.year(), at.month(), at.day());
    let clock = format!("{:02}:{:02}", at.hour(), at.minute());
    let iso = format!("{date}T{clock}:{:02}{sign}{:02}:{:02}", at.second(), offset / 3600, offset % 3600 / 60);
    map.insert("iso".into(), iso.into());
    map.insert("date".into(), date.into());
    map.insert("time".into(), clock.into());
    map.insert("year".into(), Dynamic::from_int(at.year().into()));
    map.insert("month".into(), Dynamic::from_int(at.month().into()));
    map.insert("day".into(), Dynamic::from_int(at.day().into()));
    map.insert("hour".into(), Dynamic::from_int(at.hour().into()));
    map.insert("minute".into(), Dynamic::from_int(at.minute().into()));
    map.insert("minute_of_day".into(), Dynamic::from_int(time.minute_of_day().into()));
    map.insert("weekday".into(), time.weekday().into());
    map.insert("day_type".into(), time.day_type.as_str().into());
    map.insert("epoch_minutes".into(), Dynamic::from_int(at.timestamp().div_euclid(60)));
    Dynamic::from_map(map)
}

fn percent(value: f64) -> Decimal {
    Decimal::from_f64_retain(value).unwrap_or_default().round_dp(2)
}

fn optional_int(value: Option<i64>) -> Dynamic {
    value.map(Dynamic::from_int).unwrap_or(Dynamic::UNIT)
}

fn strings(values: &[String]) -> Dynamic {
    Dynamic::from_array(values.iter().map(|value| Dynamic::from(value.clone())).collect())
}

/// JSON parameters as Rhai values: whole numbers are integers, others exact decimals.
pub(crate) fn json_to_dynamic(value: &serde_json::Value) -> Dynamic {
    match value {
        serde_json::Value::Null => Dynamic::UNIT,
        serde_json::Value::Bool(flag) => (*flag).into(),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(int) => Dynamic::from_int(int),
            None => number
                .to_string()
                .parse::<Decimal>()
                .map(Dynamic::from_decimal)
                .unwrap_or_else(|_| Dynamic::from(number.to_string())),
        },
        serde_json::Value::String(text) => text.clone().into(),
        serde_json::Value::Array(items) => Dynamic::from_array(items.iter().map(json_to_dynamic).collect()),
        serde_json::Value::Object(fields) => {
            Dynamic::from_map(fields.iter().map(|(key, value)| (key.as_str().into(), json_to_dynamic(value))).collect())
        }
    }
}
