//! What a script returned, read into the kernel's answer types. Anything that is not a valid
//! answer is an `answer` error naming what was expected and what came back.

use berth_kernel::rules::{Decision, EntryPoint, LineItem, LineKind, PriceAnswer, RuleError};
use rhai::{Dynamic, Map};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

/// Money entry points may return an amount (one `base` item), one item, an array of items, or
/// `#{ items: [...], total: 0, currency: "EUR" }` (`total` and `currency` optional).
pub(crate) fn price(entry: EntryPoint, value: Dynamic) -> Result<PriceAnswer, RuleError> {
    let name = entry.name();
    if let Some(amount) = amount(&value) {
        let amount_minor = amount.map_err(|message| RuleError::answer(format!("{name}() returned {message}")))?;
        let label = if entry == EntryPoint::Price { "Parking" } else { "Fee" };
        return Ok(PriceAnswer {
            items: vec![LineItem { kind: LineKind::Base, label: label.into(), amount_minor, line: None }],
            ..PriceAnswer::default()
        });
    }
    if value.is_array() {
        return Ok(PriceAnswer { items: items(name, value)?, ..PriceAnswer::default() });
    }
    if let Some(map) = value.clone().try_cast::<Map>() {
        if map.contains_key("kind") {
            return Ok(PriceAnswer { items: vec![item(name, 0, &map)?], ..PriceAnswer::default() });
        }
        return from_map(name, &map);
    }
    Err(RuleError::answer(format!(
        "{name}() must return an amount in minor units, line items or #{{ items: [...] }}; it returned {}",
        describe(&value)
    )))
}

fn from_map(name: &str, map: &Map) -> Result<PriceAnswer, RuleError> {
    for key in map.keys() {
        if !matches!(key.as_str(), "items" | "total" | "currency") {
            return Err(RuleError::answer(format!(
                "{name}() returned a map with '{key}'; expected items, total and currency"
            )));
        }
    }
    let items = match map.get("items") {
        Some(items) => self::items(name, items.clone())?,
        None => return Err(RuleError::answer(format!("{name}() returned a map without items"))),
    };
    let stated_total_minor = match map.get("total") {
        None => None,
        Some(total) => Some(
            amount(total)
                .unwrap_or_else(|| Err(format!("a {} total", describe(total))))
                .map_err(|message| RuleError::answer(format!("{name}() total: {message}")))?,
        ),
    };
    let currency = match map.get("currency") {
        None => None,
        Some(currency) => Some(
            currency
                .clone()
                .into_string()
                .map_err(|_| RuleError::answer(format!("{name}() currency must be a string like \"EUR\"")))?,
        ),
    };
    Ok(PriceAnswer { items, stated_total_minor, currency })
}

fn items(name: &str, value: Dynamic) -> Result<Vec<LineItem>, RuleError> {
    let array =
        value.into_array().map_err(|got| RuleError::answer(format!("{name}() items must be an array, not {got}")))?;
    array
        .iter()
        .enumerate()
        .map(|(index, element)| match element.clone().try_cast::<Map>() {
            Some(map) => item(name, index, &map),
            None => Err(RuleError::answer(format!(
                "{name}() item {index} is {}; use base(label, amount), surcharge(...), discount(...), fee(...) or tax(...)",
                describe(element)
            ))),
        })
        .collect()
}

fn item(name: &str, index: usize, map: &Map) -> Result<LineItem, RuleError> {
    let bad = |message: String| RuleError::answer(format!("{name}() item {index}: {message}"));
    let kind_text = map.get("kind").and_then(|kind| kind.clone().into_string().ok()).unwrap_or_default();
    let kind = LineKind::parse(&kind_text)
        .ok_or_else(|| bad(format!("kind '{kind_text}' is not base, surcharge, discount, fee or tax")))?;
    let label = map.get("label").and_then(|label| label.clone().into_string().ok()).unwrap_or_default();
    if label.is_empty() || label.chars().count() > 80 {
        return Err(bad("label must be 1-80 characters".into()));
    }
    let amount_minor = match map.get("amount") {
        Some(value) => amount(value)
            .unwrap_or_else(|| Err(describe(value)))
            .map_err(|message| bad(format!("amount is {message}")))?,
        None => return Err(bad("no amount".into())),
    };
    let line = map.get("line").and_then(|line| line.as_int().ok()).and_then(|line| u32::try_from(line).ok());
    Ok(LineItem { kind, label, amount_minor, line })
}

/// An integer, or a decimal rounded half away from zero to whole minor units. `None` when the
/// value is not a number at all.
pub(crate) fn amount(value: &Dynamic) -> Option<Result<i64, String>> {
    if let Ok(int) = value.as_int() {
        return Some(Ok(int));
    }
    let decimal: Decimal = value.as_decimal().ok()?;
    let rounded = decimal.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    Some(rounded.to_i64().ok_or_else(|| format!("{decimal}, too large for an amount")))
}

/// `allow_booking` and `extension` may return `true`/`false`, `allow()`, `deny("reason")`, or
/// `#{ allow: bool, reason: "...", items: [...] }` (an extension may price itself).
pub(crate) fn decision(entry: EntryPoint, value: Dynamic) -> Result<(Decision, Option<PriceAnswer>), RuleError> {
    let name = entry.name();
    if let Ok(allow) = value.as_bool() {
        let reason = (!allow).then(|| "not allowed by the operator's rules".to_owned());
        return Ok((Decision { allow, reason }, None));
    }
    let Some(map) = value.clone().try_cast::<Map>() else {
        return Err(RuleError::answer(format!(
            "{name}() must return true, false, allow() or deny(\"reason\"); it returned {}",
            describe(&value)
        )));
    };
    let allow = map
        .get("allow")
        .and_then(|allow| allow.as_bool().ok())
        .ok_or_else(|| RuleError::answer(format!("{name}() returned a map without a boolean 'allow'")))?;
    let reason = match map.get("reason") {
        None => None,
        Some(reason) if reason.is_unit() => None,
        Some(reason) => Some(
            reason.clone().into_string().map_err(|_| RuleError::answer(format!("{name}() reason must be a string")))?,
        ),
    };
    if !allow && reason.as_deref().is_none_or(str::is_empty) {
        return Err(RuleError::answer(format!("{name}() denied without a reason; use deny(\"why, for the driver\")")));
    }
    let price = match map.get("items") {
        Some(items) if !items.is_unit() => {
            Some(PriceAnswer { items: self::items(name, items.clone())?, ..PriceAnswer::default() })
        }
        _ => None,
    };
    Ok((Decision { allow, reason: if allow { None } else { reason } }, price))
}

fn describe(value: &Dynamic) -> String {
    if value.is_unit() {
        return "nothing (a missing return?)".to_owned();
    }
    match value.type_name() {
        "string" | "bool" => format!("{} {value:?}", value.type_name()),
        other => other.replace("rhai::", "").replace("rust_decimal::", ""),
    }
}

/// `adjust` returns the next version's parameters as a map, or `()` for no change.
pub(crate) fn params(value: Dynamic) -> Result<Option<berth_kernel::rules::Params>, RuleError> {
    if value.is_unit() {
        return Ok(None);
    }
    let Some(map) = value.clone().try_cast::<Map>() else {
        return Err(RuleError::answer(format!(
            "adjust() must return a map of parameters or () for no change; it returned {}",
            describe(&value)
        )));
    };
    let mut params = berth_kernel::rules::Params::new();
    for (key, value) in map {
        params.insert(
            key.to_string(),
            to_json(&value).map_err(|message| RuleError::answer(format!("adjust() {key}: {message}")))?,
        );
    }
    Ok(Some(params))
}

fn to_json(value: &Dynamic) -> Result<serde_json::Value, String> {
    if value.is_unit() {
        return Ok(serde_json::Value::Null);
    }
    if let Ok(int) = value.as_int() {
        return Ok(int.into());
    }
    if let Ok(decimal) = value.as_decimal() {
        return match decimal.to_i64().filter(|int| Decimal::from(*int) == decimal) {
            Some(int) => Ok(int.into()),
            None => decimal
                .to_string()
                .parse::<serde_json::Number>()
                .map(serde_json::Value::Number)
                .map_err(|_| format!("{decimal} is not a JSON number")),
        };
    }
    if let Ok(flag) = value.as_bool() {
        return Ok(flag.into());
    }
    if value.is_string() {
        return Ok(value.clone().into_string().unwrap_or_default().into());
    }
    if let Some(items) = value.clone().try_cast::<rhai::Array>() {
        return items.iter().map(to_json).collect::<Result<Vec<_>, _>>().map(serde_json::Value::Array);
    }
    if let Some(map) = value.clone().try_cast::<Map>() {
        let mut object = serde_json::Map::new();
        for (key, value) in map {
            object.insert(key.to_string(), to_json(&value)?);
        }
        return Ok(serde_json::Value::Object(object));
    }
    Err(format!("{} cannot be a parameter", describe(value)))
}
