//! Normalisers: turn an entity's text into a value the kernel can use. Times resolve against a
//! reference instant in the user's timezone ("tomorrow at 9", "in 2 hours", "until 6pm", "friday
//! at half past 5"); an end time resolves after the start found before it. Durations become
//! ISO 8601 (`PT2H30M`), money integer minor units, plates upper case without separators.

use std::sync::LazyLock;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// What an entity type's values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Time,
    Duration,
    Money,
    Plate,
}

impl Kind {
    /// The default for an entity type's name: `*_time` times, `duration`, `*price*`, `*plate*`.
    pub fn by_name(name: &str) -> Option<Kind> {
        if name.ends_with("_time") || name == "time" {
            Some(Kind::Time)
        } else if name == "duration" {
            Some(Kind::Duration)
        } else if name.contains("price") || name == "money" || name == "amount" {
            Some(Kind::Money)
        } else if name.contains("plate") {
            Some(Kind::Plate)
        } else {
            None
        }
    }
}

/// "Now", where the user is.
#[derive(Debug, Clone, Copy)]
pub struct Reference {
    pub now: DateTime<Tz>,
}

impl Reference {
    pub fn new(now: DateTime<Utc>, timezone: Tz) -> Self {
        Self { now: now.with_timezone(&timezone) }
    }
}

/// A normalised value.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalised {
    Time(DateTime<Tz>),
    Duration { minutes: i64 },
    Money { amount_minor: i64, currency: Option<&'static str> },
    Plate(String),
}

impl Normalised {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Normalised::Time(time) => serde_json::Value::String(time.to_rfc3339()),
            Normalised::Duration { minutes } => serde_json::Value::String(iso_duration(*minutes)),
            Normalised::Money { amount_minor, currency } => {
                serde_json::json!({ "amount_minor": amount_minor, "currency": currency })
            }
            Normalised::Plate(plate) => serde_json::Value::String(plate.clone()),
        }
    }
}

/// `PT2H30M`, `P1DT2H`.
pub fn iso_duration(minutes: i64) -> String {
    let (days, hours, mins) = (minutes / 1440, minutes % 1440 / 60, minutes % 60);
    let mut text = String::from("P");
    if days > 0 {
        text.push_str(&format!("{days}D"));
    }
    if hours > 0 || mins > 0 || days == 0 {
        text.push('T');
        if hours > 0 {
            text.push_str(&format!("{hours}H"));
        }
        if mins > 0 || hours == 0 {
            text.push_str(&format!("{mins}M"));
        }
    }
    text
}

/// Normalises `text` as `kind`; `anchor` is the time found earlier in the utterance.
pub fn normalise(kind: Kind, text: &str, reference: &Reference, anchor: Option<DateTime<Tz>>) -> Option<Normalised> {
    let text = text.trim().to_lowercase();
    match kind {
        Kind::Time => time(&text, reference, anchor).map(Normalised::Time),
        Kind::Duration => duration_minutes(&text).map(|minutes| Normalised::Duration { minutes }),
        Kind::Money => money(&text),
        Kind::Plate => plate(&text).map(Normalised::Plate),
    }
}

fn number_word(word: &str) -> Option<i64> {
    const WORDS: [&str; 13] =
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];
    match word {
        "a" | "an" => Some(1),
        "couple" | "a couple" | "a couple of" | "couple of" => Some(2),
        "few" | "a few" => Some(3),
        _ => WORDS.iter().position(|known| *known == word).map(|idx| idx as i64).or_else(|| word.parse().ok()),
    }
}

static DURATION_PART: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        (?P<number>\d+(?:[.,]\d+)?|a\ couple\ of|couple\ of|a\ few|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)?
        \s*(?P<half>and\ a\ half\s*)?
        (?P<unit>minutes?|mins?|m\b|hours?|hrs?|h\b|days?|d\b|weeks?|wks?|nights?)
        (?P<half_after>\s+and\s+a\s+half)?",
    )
    .unwrap()
});

/// `2h30`: hours and minutes without units after the minutes.
static HOURS_MINUTES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(\d{1,2})\s*h\s*(\d{1,2})$").unwrap());

/// Minutes in a duration: "2 hours", "90 mins", "an hour and a half", "1.5h", "2h30", "half an hour".
pub fn duration_minutes(text: &str) -> Option<i64> {
    let text = text.trim_start_matches("for ").trim();
    if (text.contains("half an hour") || text.contains("half hour")) && !text.contains("and a half") {
        let hours = text
            .split("half")
            .next()
            .and_then(|before| before.trim().trim_end_matches(" and").split_whitespace().last().and_then(number_word));
        return Some(30 + hours.unwrap_or(0) * 60);
    }
    if text.contains("quarter of an hour") || text.contains("quarter hour") {
        return Some(15);
    }
    if let Some(caps) = HOURS_MINUTES.captures(text) {
        return Some(caps[1].parse::<i64>().ok()? * 60 + caps[2].parse::<i64>().ok()?);
    }
    let mut total_tenths = 0i64;
    let mut found = false;
    for caps in DURATION_PART.captures_iter(text) {
        let unit = &caps["unit"];
        let per_unit = match unit.chars().next()? {
            'm' => 1,
            'h' => 60,
            'd' | 'n' => 1440,
            'w' => 10080,
            _ => return None,
        };
        let tenths = match caps.name("number").map(|number| number.as_str().replace(',', ".")) {
            None => 10,
            Some(number) => match number.split_once('.') {
                Some((whole, fraction)) => {
                    let digit = fraction.chars().next()?.to_digit(10)? as i64;
                    whole.parse::<i64>().ok()? * 10 + digit
                }
                None => number_word(&number)? * 10,
            },
        };
        let half = if caps.name("half").is_some() || caps.name("half_after").is_some() { 5 } else { 0 };
        total_tenths += (tenths + half) * per_unit;
        found = true;
    }
    found.then_some(total_tenths / 10).filter(|&minutes| minutes > 0)
}

static CLOCK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        (?P<noon>noon|midday|midnight)
        | \b(?P<rel>half|quarter|\d{1,2})\s+(?P<dir>past|to|after)\s+(?P<rel_hour>\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)
        | \b(?P<hour>\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)
          (?:[:.h](?P<minute>\d{2}))?
          \s*(?P<ampm>a\.?m\.?|p\.?m\.?|o'?clock|hrs)?
          (?:\s+(?:in\s+the\s+)?(?P<part>morning|afternoon|evening|night))?",
    )
    .unwrap()
});

static RELATIVE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:in|within)\s+(?P<span>.+?)(?:\s+(?:from now|time))?$").unwrap());

fn weekday(word: &str) -> Option<Weekday> {
    let days = [
        ("mon", Weekday::Mon),
        ("tue", Weekday::Tue),
        ("wed", Weekday::Wed),
        ("thu", Weekday::Thu),
        ("fri", Weekday::Fri),
        ("sat", Weekday::Sat),
        ("sun", Weekday::Sun),
    ];
    days.iter().find(|(prefix, _)| word.starts_with(prefix)).map(|&(_, day)| day)
}

fn month(word: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    if word.len() < 3 {
        return None;
    }
    MONTHS.iter().position(|prefix| word.starts_with(prefix)).map(|idx| idx as u32 + 1)
}

static DAY_OF_MONTH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:the\s+(?P<d3>\d{1,2})(?:st|nd|rd|th)(?:\s+of\s+(?P<m3>[a-z]{3,9}))?|(?P<d1>\d{1,2})(?:st|nd|rd|th)?(?:\s+of)?\s+(?P<m1>[a-z]{3,9})|(?P<m2>[a-z]{3,9})\s+(?P<d2>\d{1,2})(?:st|nd|rd|th)?|(?P<d4>\d{1,2})/(?P<m4>\d{1,2}))\b").unwrap()
});

/// The day the text names, if it names one, and the text with a written date taken out (so
/// "3rd december at 14:00" leaves "at 14:00" for the clock).
fn day(text: &str, today: NaiveDate) -> (Option<NaiveDate>, String) {
    let words: Vec<&str> = text.split(|ch: char| !ch.is_alphanumeric()).filter(|word| !word.is_empty()).collect();
    if text.contains("day after tomorrow") {
        return (today.succ_opt().and_then(|day| day.succ_opt()), text.to_owned());
    }
    if words.iter().any(|word| matches!(*word, "tomorrow" | "tmrw" | "tmr" | "tomorow" | "tommorow" | "tommorrow")) {
        return (today.succ_opt(), text.to_owned());
    }
    if words.iter().any(|word| matches!(*word, "today" | "tonight" | "tonite" | "now")) {
        return (Some(today), text.to_owned());
    }
    for caps in DAY_OF_MONTH.captures_iter(text) {
        let number = |name: &str| caps.name(name).and_then(|found| found.as_str().parse::<u32>().ok());
        let month_named = |name: &str| caps.name(name).and_then(|found| month(found.as_str()));
        let (day, month_number) = if let Some(d) = number("d3") {
            (Some(d), caps.name("m3").map_or(Some(today.month()), |_| month_named("m3")))
        } else if caps.name("d1").is_some() {
            (number("d1"), month_named("m1"))
        } else if caps.name("d2").is_some() {
            (number("d2"), month_named("m2"))
        } else {
            (number("d4"), number("m4"))
        };
        let (Some(day), Some(month_number)) = (day, month_number) else { continue };
        let rest = text.replace(&caps[0], " ");
        let Some(this_year) = NaiveDate::from_ymd_opt(today.year(), month_number, day) else { return (None, rest) };
        let date = if this_year >= today {
            Some(this_year)
        } else if caps.name("d3").is_some() && caps.name("m3").is_none() {
            // "the 3rd" without a month: the next 3rd.
            let next_month =
                if today.month() == 12 { (today.year() + 1, 1) } else { (today.year(), today.month() + 1) };
            NaiveDate::from_ymd_opt(next_month.0, next_month.1, day)
        } else {
            NaiveDate::from_ymd_opt(today.year() + 1, month_number, day)
        };
        return (date, rest);
    }
    let next = words.contains(&"next");
    for word in &words {
        if word.len() >= 3
            && let Some(target) = weekday(word)
            && (word.ends_with("day") || word.len() <= 4)
        {
            let mut ahead =
                (7 + target.num_days_from_monday() as i64 - today.weekday().num_days_from_monday() as i64) % 7;
            if next && ahead == 0 {
                ahead = 7;
            }
            return (today.checked_add_signed(Duration::days(ahead)), text.to_owned());
        }
    }
    (None, text.to_owned())
}

/// Hour and minute the text names, and whether it said am or pm (or was a 24-hour time).
fn clock(text: &str) -> Option<(u32, u32, bool)> {
    let caps = CLOCK.captures(text)?;
    if let Some(noon) = caps.name("noon") {
        return Some(if noon.as_str() == "midnight" { (0, 0, true) } else { (12, 0, true) });
    }
    if let Some(rel) = caps.name("rel") {
        let hour = number_word(&caps["rel_hour"])? as u32;
        let minutes = match rel.as_str() {
            "half" => 30,
            "quarter" => 15,
            number => number.parse().ok()?,
        };
        return if &caps["dir"] == "to" {
            Some(((hour + 23) % 24, 60 - minutes, false))
        } else {
            Some((hour, minutes, false))
        };
    }
    let mut hour = number_word(&caps["hour"])? as u32;
    let minute: u32 = caps.name("minute").map_or(Some(0), |minute| minute.as_str().parse().ok())?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let marker = caps.name("ampm").map(|marker| marker.as_str().replace('.', ""));
    let part = caps.name("part").map(|part| part.as_str());
    let explicit = match (marker.as_deref(), part) {
        (Some("pm"), _) | (_, Some("afternoon" | "evening" | "night")) if hour < 12 => {
            hour += 12;
            true
        }
        (Some("am"), _) | (_, Some("morning")) if hour == 12 => {
            hour = 0;
            true
        }
        (Some("am" | "pm"), _) | (_, Some(_)) => true,
        _ => hour >= 13 || hour == 0 || caps.name("minute").is_some_and(|_| caps["hour"].starts_with('0')),
    };
    Some((hour, minute, explicit))
}

fn at(date: NaiveDate, hour: u32, minute: u32, timezone: Tz) -> Option<DateTime<Tz>> {
    let naive = date.and_time(NaiveTime::from_hms_opt(hour, minute, 0)?);
    timezone.from_local_datetime(&naive).earliest()
}

/// A point in time: relative ("in 2 hours", "now"), a day and/or a clock time.
pub fn time(text: &str, reference: &Reference, anchor: Option<DateTime<Tz>>) -> Option<DateTime<Tz>> {
    let mut text = text.trim();
    for prefix in
        ["from ", "until ", "till ", "til ", "untill ", "to ", "at ", "by ", "on ", "for ", "starting ", "arriving "]
    {
        text = text.strip_prefix(prefix).unwrap_or(text);
    }
    let now = reference.now;
    let timezone = now.timezone();
    if matches!(text, "now" | "right now" | "asap" | "straight away" | "immediately" | "right away") {
        return Some(now);
    }
    if let Some(caps) = RELATIVE.captures(text)
        && let Some(minutes) = duration_minutes(&caps["span"])
    {
        return Some(now + Duration::minutes(minutes));
    }
    let base = anchor.unwrap_or(now);
    let (named_day, rest) = day(text, now.date_naive());
    let clock_time = clock(&rest);
    let (hour, minute, explicit) = match clock_time {
        Some(found) => found,
        None => {
            let hour = if text.contains("morning") {
                8
            } else if text.contains("afternoon") {
                13
            } else if text.contains("evening") || text.contains("tonight") || text.contains("tonite") {
                18
            } else if text.contains("night") {
                21
            } else if named_day.is_some() {
                8
            } else {
                return None;
            };
            (hour, 0, true)
        }
    };
    match named_day {
        Some(date) => {
            // A named day without am/pm: small hours are afternoons (nobody parks at 3 in the night).
            let hour = if !explicit && (1..=6).contains(&hour) { hour + 12 } else { hour };
            let found = at(date, hour, minute, timezone)?;
            if anchor.is_some_and(|anchor| found <= anchor) && date == base.date_naive() {
                at(date.succ_opt()?, hour, minute, timezone)
            } else {
                Some(found)
            }
        }
        None => {
            // No day: the first such time after the start (or after now).
            let date = base.date_naive();
            let mut candidates = vec![at(date, hour, minute, timezone)?];
            if !explicit && hour < 12 {
                candidates.push(at(date, hour + 12, minute, timezone)?);
            }
            candidates.push(at(date.succ_opt()?, hour, minute, timezone)?);
            candidates.into_iter().find(|candidate| *candidate > base)
        }
    }
}

static MONEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        (?P<pre>[£$€])?\s*(?P<whole>\d+)(?:[.,](?P<fraction>\d{1,2}))?\s*
        (?P<unit>p\b|pence|cents?|pounds?|quid|dollars?|bucks|euros?|gbp|usd|eur)?",
    )
    .unwrap()
});

/// An amount in minor units: "£7.50", "10 quid", "50p", "5 dollars", "under 12".
pub fn money(text: &str) -> Option<Normalised> {
    let caps = MONEY.captures(text)?;
    let whole: i64 = caps["whole"].parse().ok()?;
    let fraction: i64 = match caps.name("fraction") {
        Some(fraction) if fraction.as_str().len() == 1 => fraction.as_str().parse::<i64>().ok()? * 10,
        Some(fraction) => fraction.as_str().parse().ok()?,
        None => 0,
    };
    let unit = caps.name("unit").map(|unit| unit.as_str());
    let currency = match (caps.name("pre").map(|pre| pre.as_str()), unit) {
        (Some("£"), _) | (_, Some("p" | "pence" | "pound" | "pounds" | "quid" | "gbp")) => Some("GBP"),
        (Some("$"), _) | (_, Some("cent" | "cents" | "dollar" | "dollars" | "bucks" | "usd")) => Some("USD"),
        (Some("€"), _) | (_, Some("euro" | "euros" | "eur")) => Some("EUR"),
        _ => None,
    };
    let amount_minor = match unit {
        Some("p" | "pence" | "cent" | "cents") => whole,
        _ => whole.checked_mul(100)?.checked_add(fraction)?,
    };
    Some(Normalised::Money { amount_minor, currency })
}

/// A licence plate, upper case without spaces or dashes; it must mix letters and digits.
pub fn plate(text: &str) -> Option<String> {
    let plate: String = text.chars().filter(|ch| ch.is_alphanumeric()).flat_map(char::to_uppercase).collect();
    let valid = (2..=10).contains(&plate.len())
        && plate.chars().any(|ch| ch.is_ascii_digit())
        && plate.chars().any(|ch| ch.is_alphabetic());
    valid.then_some(plate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thursday 26 November 2026, 14:10 in London.
    fn reference() -> Reference {
        Reference::new(Utc.with_ymd_and_hms(2026, 11, 26, 14, 10, 0).unwrap(), chrono_tz::Europe::London)
    }

    fn time_of(text: &str, anchor: Option<&str>) -> String {
        let reference = reference();
        let anchor = anchor.map(|anchor| time(anchor, &reference, None).unwrap());
        time(text, &reference, anchor).map_or_else(|| "none".into(), |time| time.format("%a %d %H:%M").to_string())
    }

    #[test]
    fn times_resolve_in_the_users_timezone() {
        let cases = [
            ("tomorrow at 9", None, "Fri 27 09:00"),
            ("tomorrow at 9pm", None, "Fri 27 21:00"),
            ("in 2 hours", None, "Thu 26 16:10"),
            ("in half an hour", None, "Thu 26 14:40"),
            ("until 6pm", None, "Thu 26 18:00"),
            ("until 6", None, "Thu 26 18:00"),
            ("at 9", None, "Thu 26 21:00"),
            ("at 9am", None, "Fri 27 09:00"),
            ("8", None, "Thu 26 20:00"),
            ("10:30", Some("tomorrow at 8"), "Fri 27 10:30"),
            ("6pm", Some("tomorrow at 9"), "Fri 27 18:00"),
            ("friday at half past 5", None, "Fri 27 17:30"),
            ("next thursday", None, "Thu 03 08:00"),
            ("monday morning", None, "Mon 30 08:00"),
            ("tonight", None, "Thu 26 18:00"),
            ("noon tomorrow", None, "Fri 27 12:00"),
            ("now", None, "Thu 26 14:10"),
            ("quarter to 7", None, "Thu 26 18:45"),
            ("the 3rd", None, "Thu 03 08:00"),
            ("the 30th", None, "Mon 30 08:00"),
            ("3rd december at 14:00", None, "Thu 03 14:00"),
            ("21:15", None, "Thu 26 21:15"),
            ("banana", None, "none"),
        ];
        for (text, anchor, expected) in cases {
            assert_eq!(time_of(text, anchor), expected, "{text}");
        }
    }

    #[test]
    fn daylight_saving_is_the_zones_not_ours() {
        // 29 March 2026: London moves from GMT to BST at 01:00.
        let reference = Reference::new(Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap(), chrono_tz::Europe::London);
        let found = time("tomorrow at 9", &reference, None).unwrap();
        assert_eq!(found.to_rfc3339(), "2026-03-29T09:00:00+01:00");
    }

    #[test]
    fn durations_money_and_plates() {
        for (text, minutes) in [
            ("2 hours", 120),
            ("for 3 hrs", 180),
            ("90 mins", 90),
            ("an hour and a half", 90),
            ("1.5h", 90),
            ("2h30", 150),
            ("half an hour", 30),
            ("two and a half hours", 150),
            ("a day", 1440),
            ("2 nights", 2880),
            ("45m", 45),
        ] {
            assert_eq!(duration_minutes(text), Some(minutes), "{text}");
        }
        assert_eq!(duration_minutes("soon"), None);
        assert_eq!(iso_duration(150), "PT2H30M");
        assert_eq!(iso_duration(60), "PT1H");
        assert_eq!(iso_duration(1500), "P1DT1H");
        assert_eq!(money("£7.50"), Some(Normalised::Money { amount_minor: 750, currency: Some("GBP") }));
        assert_eq!(money("10 quid"), Some(Normalised::Money { amount_minor: 1000, currency: Some("GBP") }));
        assert_eq!(money("50p"), Some(Normalised::Money { amount_minor: 50, currency: Some("GBP") }));
        assert_eq!(money("5 dollars"), Some(Normalised::Money { amount_minor: 500, currency: Some("USD") }));
        assert_eq!(money("12"), Some(Normalised::Money { amount_minor: 1200, currency: None }));
        assert_eq!(money("cheap"), None);
        assert_eq!(plate("ab12 cde").as_deref(), Some("AB12CDE"));
        assert_eq!(plate("B-MW 1234").as_deref(), Some("BMW1234"));
        assert_eq!(plate("hello"), None);
    }
}
