//! The booking dialogue: what the bot says next, given what it understood and what it asked
//! before. A form collects location → window → vehicle, shows priced options, confirms, books
//! and hands over the payment link; extend, cancel and status have short flows of their own;
//! the driver may correct a slot or ask a price at any point and the form picks up where it
//! was. Every fact it states (places, prices, availability, bookings) comes from the kernel's
//! services as the driver, so the operator's rules apply and nothing is invented.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::booking::{Booking, BookingInput, BookingStatus};
use crate::conversation::{Choice, Conversation, MessageBody};
use crate::ids::{BookingId, DriverId, OperatorId, QuoteId, SiteId};
use crate::language::Understanding;
use crate::page::PageRequest;
use crate::pricing::QuoteInput;
use crate::search::{SearchOrder, SearchQuery};
use crate::vehicle_type::VehicleType;
use crate::{Kernel, KernelError};

/// How far from a named place the bot looks for parking.
const SEARCH_RADIUS_M: f64 = 2_000.0;
/// Options shown at once (WhatsApp allows three reply buttons).
const MAX_OPTIONS: usize = 3;
/// Messages in a row the bot did not understand before it offers a person.
const UNCLEAR_FALLBACKS_BEFORE_HUMAN: u8 = 2;

/// What the bot knows of the stay being arranged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BookingForm {
    /// What the driver called the place.
    pub location: Option<String>,
    /// Where to search: a site's or a shared location's coordinates.
    pub point: Option<(f64, f64)>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub duration_minutes: Option<i64>,
    pub plate: Option<String>,
    pub vehicle_type: Option<VehicleType>,
    pub max_price_minor: Option<i64>,
    pub ev: Option<bool>,
    pub accessible: Option<bool>,
}

impl BookingForm {
    fn window(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let start = self.start?;
        let end = self.end.or_else(|| self.duration_minutes.map(|minutes| start + Duration::minutes(minutes)))?;
        (end > start).then_some((start, end))
    }
}

/// An option shown to the driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShownOption {
    pub site_id: SiteId,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub free_spaces: u32,
}

/// What the bot asked last, so the next message is read as its answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    #[default]
    Idle,
    AskLocation,
    AskStart,
    AskEnd,
    AskPlate,
    Choose,
    Confirm {
        quote_id: QuoteId,
    },
    ConfirmCancel {
        booking_id: BookingId,
    },
    ConfirmExtend {
        booking_id: BookingId,
        end: DateTime<Utc>,
    },
    OfferHuman,
}

/// The dialogue's state, kept with the conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DialogueState {
    #[serde(default)]
    pub step: Step,
    #[serde(default)]
    pub form: BookingForm,
    #[serde(default)]
    pub options: Vec<ShownOption>,
    #[serde(default)]
    pub chosen: Option<ShownOption>,
    /// Messages in a row the bot did not understand.
    #[serde(default)]
    pub unclear: u8,
    /// The booking this conversation made or last talked about.
    #[serde(default)]
    pub booking_id: Option<BookingId>,
}

/// A reply, with the buttons it offers.
fn say(text: impl Into<String>) -> MessageBody {
    MessageBody { text: text.into(), ..MessageBody::default() }
}

fn with_choices(mut body: MessageBody, choices: &[(&str, &str)]) -> MessageBody {
    body.choices = choices
        .iter()
        .map(|(label, reply)| Choice { label: (*label).to_owned(), reply: (*reply).to_owned() })
        .collect();
    body
}

/// `£4.50`, `€12.00`, `7.00 CHF`.
pub fn money(amount_minor: i64, currency: &str) -> String {
    let exponent = crate::site::Currency::parse(currency).map_or(2, |currency| currency.minor_unit_digits());
    let divisor = 10i64.pow(exponent as u32);
    let (whole, fraction) = (amount_minor / divisor, (amount_minor % divisor).abs());
    let number = if exponent == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{fraction:0width$}", width = exponent as usize)
    };
    match currency {
        "GBP" => format!("£{number}"),
        "EUR" => format!("€{number}"),
        "USD" => format!("${number}"),
        other => format!("{number} {other}"),
    }
}

/// `Fri 27 Nov 09:00` in the driver's timezone.
fn when(time: DateTime<Utc>, timezone: Tz) -> String {
    time.with_timezone(&timezone).format("%a %-d %b %H:%M").to_string()
}

fn clock(time: DateTime<Utc>, timezone: Tz) -> String {
    time.with_timezone(&timezone).format("%H:%M").to_string()
}

fn entity<'a>(understanding: &'a Understanding, name: &str) -> Option<&'a serde_json::Value> {
    understanding.entities.iter().find(|entity| entity.entity == name).map(|entity| &entity.value)
}

fn entity_text<'a>(understanding: &'a Understanding, name: &str) -> Option<&'a str> {
    understanding.entities.iter().find(|entity| entity.entity == name).map(|entity| entity.text.as_str())
}

fn entity_time(understanding: &Understanding, name: &str) -> Option<DateTime<Utc>> {
    entity(understanding, name)?
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.to_utc())
}

/// Minutes of an ISO 8601 duration as the normaliser writes them (`P1DT2H30M`).
fn duration_minutes(value: &serde_json::Value) -> Option<i64> {
    let text = value.as_str()?.strip_prefix('P')?;
    let (days, time) = match text.split_once('T') {
        Some((days, time)) => (days, time),
        None => (text, ""),
    };
    let mut minutes = 0;
    if let Some(days) = days.strip_suffix('D') {
        minutes += days.parse::<i64>().ok()? * 1440;
    }
    let mut number = String::new();
    for ch in time.chars() {
        match ch {
            '0'..='9' => number.push(ch),
            'H' => minutes += std::mem::take(&mut number).parse::<i64>().ok()? * 60,
            'M' => minutes += std::mem::take(&mut number).parse::<i64>().ok()?,
            _ => return None,
        }
    }
    (minutes > 0).then_some(minutes)
}

/// Which of the shown options a reply picks: `2`, `the second`, `option 3`, or a site's name.
fn pick_option(text: &str, options: &[ShownOption]) -> Option<usize> {
    let lower = text.to_lowercase();
    const ORDINALS: [&str; 3] = ["first", "second", "third"];
    for (idx, ordinal) in ORDINALS.iter().enumerate().take(options.len()) {
        if lower.split(|ch: char| !ch.is_alphanumeric()).any(|word| word == *ordinal || word == (idx + 1).to_string()) {
            return Some(idx);
        }
    }
    options.iter().position(|option| lower.contains(&option.name.to_lowercase()))
}

/// Lower case words separated by single spaces.
fn words_only(text: &str) -> String {
    text.to_lowercase()
        .split(|ch: char| !ch.is_alphanumeric() && ch != '\'')
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// How well a text names a site: how many of its words (longer than two letters, not "near" or
/// "parking") appear in the site's name or address, when at least half of them do; else 0.
fn place_score(text: &str, site: &crate::site::Site) -> usize {
    let address = &site.details.address;
    let haystack = format!(
        "{} {} {} {}",
        site.details.name,
        address.street.as_deref().unwrap_or(""),
        address.locality.as_deref().unwrap_or(""),
        address.postal_code.as_deref().unwrap_or("")
    )
    .to_lowercase();
    let words: Vec<String> = text
        .to_lowercase()
        .split(|ch: char| !ch.is_alphanumeric() && ch != '\'')
        .filter(|word| word.len() > 2 && !matches!(*word, "the" | "near" | "car" | "park" | "parking"))
        .map(str::to_owned)
        .collect();
    if words.is_empty() {
        return 0;
    }
    let found = words.iter().filter(|word| haystack.contains(word.as_str())).count();
    if found * 2 >= words.len() { found } else { 0 }
}

impl Kernel {
    /// Where a place the driver named is: the best-matching site's coordinates.
    async fn resolve_place(&self, text: &str) -> Result<Option<(f64, f64, String)>, KernelError> {
        let sites = self.store().list_all_sites().await?;
        Ok(sites
            .iter()
            .map(|site| (place_score(text, site), site))
            .filter(|(score, _)| *score > 0)
            .max_by_key(|(score, _)| *score)
            .map(|(_, site)| (site.details.location.lat(), site.details.location.lon(), site.details.name.clone())))
    }

    /// A car park whose whole name (or its area) appears in a message the model found no place
    /// in: "book Trindade at 9" names a site even when the model has never seen the word.
    async fn place_in_message(&self, text: &str) -> Result<Option<(f64, f64, String)>, KernelError> {
        let padded = format!(" {} ", words_only(text));
        let sites = self.store().list_all_sites().await?;
        let named = |name: &str| {
            let name = words_only(name);
            (name.len() > 2 && padded.contains(&format!(" {name} "))).then_some(name.len())
        };
        Ok(sites
            .iter()
            .filter_map(|site| {
                let by_name = named(&site.details.name);
                let by_area = site.details.address.locality.as_deref().and_then(named);
                by_name.map(|length| (length + 1000, site)).or(by_area.map(|length| (length, site)))
            })
            .max_by_key(|(length, _)| *length)
            .map(|(_, site)| (site.details.location.lat(), site.details.location.lon(), site.details.name.clone())))
    }

    /// One turn of the dialogue: the replies to `understanding` (or to a shared location).
    pub(crate) async fn dialogue_turn(
        &self,
        conversation: &mut Conversation,
        understanding: &Understanding,
        location: Option<(f64, f64)>,
        now: DateTime<Utc>,
    ) -> Vec<MessageBody> {
        let timezone: Tz = conversation.timezone.parse().unwrap_or(chrono_tz::UTC);
        let mut state: DialogueState = serde_json::from_value(conversation.state.clone()).unwrap_or_default();
        let driver = conversation.driver_id;
        let offered_person = matches!(state.step, Step::OfferHuman);
        let replies = match self.respond(&mut state, driver, understanding, location, now, timezone).await {
            Ok(replies) => replies,
            Err(error) => {
                tracing::warn!(conversation = %conversation.id, error = %error, "dialogue step failed");
                let text = match error {
                    KernelError::Validation(_)
                    | KernelError::Conflict(_)
                    | KernelError::NotAllowed(_)
                    | KernelError::NotFound { .. } => format!("Sorry, that didn't work: {error}."),
                    _ => "Sorry, something went wrong on our side. Please try again in a moment.".to_owned(),
                };
                vec![say(text)]
            }
        };
        if matches!(state.step, Step::OfferHuman) && understanding.intent.name == "human_handoff" {
            state.step = Step::Idle;
        }
        let intent = understanding.intent.name.as_str();
        let wants_person = intent == "human_handoff" || (offered_person && intent == "affirm");
        if wants_person && !conversation.handoff {
            conversation.handoff = true;
            conversation.handoff_operator = self.team_for(&state, driver, now).await;
        }
        conversation.state = serde_json::to_value(&state).unwrap_or_default();
        replies
    }

    /// Whose team a handoff goes to: the operator of the car park the conversation is about (the
    /// option chosen or shown, the booking it talked about, the car park at the place being
    /// booked, else the driver's next booking); `None`: the platform's.
    async fn team_for(&self, state: &DialogueState, driver: DriverId, now: DateTime<Utc>) -> Option<OperatorId> {
        let site = state.chosen.as_ref().or(state.options.first()).map(|option| option.site_id);
        if let Some(site) = site
            && let Ok(Some(operator)) = self.store().find_site_operator(site).await
        {
            return Some(operator);
        }
        if let Some(booking) = state.booking_id
            && let Ok(Some(booking)) = self.store().get_booking(booking).await
        {
            return Some(booking.operator_id);
        }
        // The car park nearest the place the form is about, within a kilometre.
        if let Some(point) = state.form.point.and_then(|(lat, lon)| crate::geo::GeoPoint::new(lat, lon).ok())
            && let Ok(sites) = self.sites_within(point, 1000.0).await
            && let Some((site, _)) = sites.iter().min_by(|a, b| a.1.total_cmp(&b.1))
        {
            return Some(site.operator_id);
        }
        let upcoming = self.upcoming_bookings(driver, now).await.ok()?;
        upcoming.first().map(|booking| booking.operator_id)
    }

    async fn respond(
        &self,
        state: &mut DialogueState,
        driver: DriverId,
        understanding: &Understanding,
        location: Option<(f64, f64)>,
        now: DateTime<Utc>,
        timezone: Tz,
    ) -> Result<Vec<MessageBody>, KernelError> {
        let caller = Principal::Driver { driver_id: driver };
        let form_open = matches!(
            state.step,
            Step::AskLocation | Step::AskStart | Step::AskEnd | Step::AskPlate | Step::Choose | Step::Confirm { .. }
        );
        // While a booking is being arranged, "make it 3 hours instead" changes the form; it
        // extends a booking only when nothing is being arranged.
        let intent = match understanding.intent.name.as_str() {
            "extend_booking" if form_open => "inform",
            other => other,
        };
        let text = understanding.text.as_str();

        if let Some((lat, lon)) = location {
            state.form.point = Some((lat, lon));
            state.form.location = Some("your location".to_owned());
            state.unclear = 0;
            return self.advance_form(state, &caller, now, timezone).await;
        }
        // Answers to a question the bot asked come first: "2" picks an option, "yes" confirms.
        if matches!(state.step, Step::Choose)
            && let Some(idx) = pick_option(text, &state.options)
        {
            state.unclear = 0;
            state.chosen = Some(state.options[idx].clone());
            return self.offer_quote(state, &caller, timezone).await;
        }
        match (&state.step, intent) {
            (Step::Confirm { quote_id }, "affirm") => {
                let quote_id = *quote_id;
                state.unclear = 0;
                return self.book(state, &caller, quote_id, timezone).await;
            }
            (Step::ConfirmCancel { booking_id }, "affirm") => {
                let booking_id = *booking_id;
                state.step = Step::Idle;
                let booking = self.cancel_booking(&caller, booking_id, Some("cancelled in chat".into())).await?;
                return Ok(vec![say(format!(
                    "Cancelled: {} at {}. {}",
                    when(booking.start, timezone),
                    self.site_name(&booking).await,
                    "Any refund due goes back to how you paid."
                ))]);
            }
            (Step::ConfirmExtend { booking_id, end }, "affirm") => {
                let (booking_id, end) = (*booking_id, *end);
                state.step = Step::Idle;
                let booking = self.extend_booking(&caller, booking_id, end).await?;
                let mut reply = say(format!("Done: you can stay until {}.", when(booking.end, timezone)));
                reply.link = self.payment_link(&booking).await;
                if reply.link.is_some() {
                    reply.text.push_str(" Pay for the extra time here:");
                }
                return Ok(vec![reply]);
            }
            (Step::OfferHuman, "affirm") => {
                state.step = Step::Idle;
                return Ok(vec![say(
                    "I've asked someone from the car park's team to pick this up; they'll reply here.",
                )]);
            }
            (
                Step::Confirm { .. } | Step::ConfirmCancel { .. } | Step::ConfirmExtend { .. } | Step::OfferHuman,
                "deny",
            ) => {
                let was_confirming_booking = matches!(state.step, Step::Confirm { .. });
                state.step = Step::Idle;
                state.unclear = 0;
                return Ok(vec![say(if was_confirming_booking {
                    "OK, I haven't booked anything. Tell me what to change (place, time or vehicle)."
                } else {
                    "OK, I've left it as it is."
                })]);
            }
            _ => {}
        }

        match intent {
            "human_handoff" => {
                state.unclear = 0;
                Ok(vec![say("I've asked someone from the car park's team to pick this up; they'll reply here.")])
            }
            "greet" => {
                state.unclear = 0;
                let mut replies =
                    vec![say("Hi! I can find and book parking, and extend, cancel or check your bookings.")];
                replies.extend(self.reprompt(state));
                Ok(replies)
            }
            "help" => {
                state.unclear = 0;
                let mut replies = vec![with_choices(
                    say(
                        "Tell me where and when you want to park, e.g. \"book near Euston tomorrow at 9 for 2 hours\". \
                         You can also ask me to extend or cancel a booking, or what you have booked.",
                    ),
                    &[("Book parking", "I want to book parking"), ("My bookings", "show my bookings")],
                )];
                replies.extend(self.reprompt(state));
                Ok(replies)
            }
            "goodbye" => {
                *state = DialogueState { booking_id: state.booking_id, ..DialogueState::default() };
                Ok(vec![say("Bye! Message me any time.")])
            }
            "booking_status" => {
                state.unclear = 0;
                let mut replies = vec![self.status(driver, now, timezone).await?];
                replies.extend(self.reprompt(state));
                Ok(replies)
            }
            "cancel_booking" => {
                state.unclear = 0;
                let Some(booking) = self.pick_booking(driver, understanding, now, state).await? else {
                    return Ok(vec![say("You have no upcoming booking to cancel.")]);
                };
                state.booking_id = Some(booking.id);
                state.step = Step::ConfirmCancel { booking_id: booking.id };
                Ok(vec![with_choices(
                    say(format!(
                        "Cancel your booking at {} on {}–{}?",
                        self.site_name(&booking).await,
                        when(booking.start, timezone),
                        clock(booking.end, timezone)
                    )),
                    &[("Yes, cancel", "yes"), ("No, keep it", "no")],
                )])
            }
            "extend_booking" => {
                state.unclear = 0;
                let Some(booking) = self.pick_booking(driver, understanding, now, state).await? else {
                    return Ok(vec![say("You have no booking to extend.")]);
                };
                let new_end = entity_time(understanding, "end_time").or_else(|| {
                    entity(understanding, "duration")
                        .and_then(duration_minutes)
                        .map(|minutes| booking.end + Duration::minutes(minutes))
                });
                let Some(new_end) = new_end.filter(|end| *end > booking.end) else {
                    return Ok(vec![say(format!(
                        "Your booking ends at {}. Until when would you like to stay? (e.g. \"until 7pm\" or \"another hour\")",
                        when(booking.end, timezone)
                    ))]);
                };
                state.booking_id = Some(booking.id);
                state.step = Step::ConfirmExtend { booking_id: booking.id, end: new_end };
                Ok(vec![with_choices(
                    say(format!(
                        "Extend your booking at {} from {} until {}?",
                        self.site_name(&booking).await,
                        clock(booking.end, timezone),
                        when(new_end, timezone)
                    )),
                    &[("Yes, extend", "yes"), ("No", "no")],
                )])
            }
            "ask_price" => {
                state.unclear = 0;
                self.merge_entities(&mut state.form, understanding).await?;
                let mut replies = match (state.form.point, state.form.window()) {
                    (Some(_), Some(_)) => {
                        let hits = self.options(&state.form, &caller).await?;
                        match hits.first() {
                            Some(cheapest) => vec![say(format!(
                                "From {} for that stay ({}).",
                                money(cheapest.price_minor, &cheapest.currency),
                                hits.iter()
                                    .map(|hit| format!("{}: {}", hit.name, money(hit.price_minor, &hit.currency)))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))],
                            None => vec![say("Nothing is free there for that time, so I can't quote a price.")],
                        }
                    }
                    _ => vec![say(
                        "Prices depend on the car park and the time. Tell me where and when, and I'll look them up.",
                    )],
                };
                replies.extend(self.reprompt(state));
                Ok(replies)
            }
            "search_parking" | "book_parking" | "inform" => {
                state.unclear = 0;
                if matches!(
                    state.step,
                    Step::Idle
                        | Step::Confirm { .. }
                        | Step::ConfirmCancel { .. }
                        | Step::ConfirmExtend { .. }
                        | Step::OfferHuman
                ) && intent != "inform"
                {
                    state.form = BookingForm::default();
                    state.options.clear();
                    state.chosen = None;
                }
                if let Some(reply) = self.merge_entities(&mut state.form, understanding).await? {
                    state.step = Step::AskLocation;
                    return Ok(vec![reply]);
                }
                if matches!(state.step, Step::AskPlate)
                    && state.form.plate.is_none()
                    && let Some(plate) =
                        crate::driver::Plate::parse(text).ok().filter(|_| text.split_whitespace().count() <= 3)
                {
                    state.form.plate = Some(plate.as_str().to_owned());
                }
                self.advance_form(state, &caller, now, timezone).await
            }
            _ => {
                state.unclear += 1;
                if state.unclear >= UNCLEAR_FALLBACKS_BEFORE_HUMAN {
                    state.unclear = 0;
                    state.step = Step::OfferHuman;
                    return Ok(vec![with_choices(
                        say("I'm still not getting it, sorry. Shall I pass you to a person from the car park's team?"),
                        &[("Yes, a person please", "yes"), ("No, I'll rephrase", "no")],
                    )]);
                }
                let mut replies = vec![say(
                    "Sorry, I didn't understand that. I can find and book parking, and extend, cancel or check a booking.",
                )];
                replies.extend(self.reprompt(state));
                Ok(replies)
            }
        }
    }

    /// The question of the current step again, after a digression.
    fn reprompt(&self, state: &DialogueState) -> Option<MessageBody> {
        let text = match state.step {
            Step::AskLocation => "Where would you like to park?",
            Step::AskStart => "When will you arrive?",
            Step::AskEnd => "How long will you stay? (e.g. \"2 hours\" or \"until 6pm\")",
            Step::AskPlate => "What's your vehicle's registration?",
            Step::Choose => "Which one would you like? Reply 1, 2 or 3.",
            Step::Confirm { .. } => "Shall I book it? (yes/no)",
            _ => return None,
        };
        Some(say(text))
    }

    /// Copies what the message said into the form (a new value corrects an old one). Answers
    /// a reply when a named place is unknown.
    async fn merge_entities(
        &self,
        form: &mut BookingForm,
        understanding: &Understanding,
    ) -> Result<Option<MessageBody>, KernelError> {
        if let Some(place) = entity_text(understanding, "location") {
            match self.resolve_place(place).await? {
                Some((lat, lon, name)) => {
                    form.point = Some((lat, lon));
                    form.location = Some(name);
                }
                None => {
                    return Ok(Some(say(format!(
                        "I don't know a car park near \"{place}\". Name the car park or area, or share your location."
                    ))));
                }
            }
        }
        if entity_text(understanding, "location").is_none()
            && let Some((lat, lon, name)) = self.place_in_message(&understanding.text).await?
        {
            form.point = Some((lat, lon));
            form.location = Some(name);
        }
        if let Some(start) = entity_time(understanding, "start_time") {
            form.start = Some(start);
        }
        if let Some(end) = entity_time(understanding, "end_time") {
            form.end = Some(end);
            form.duration_minutes = None;
        }
        if let Some(minutes) = entity(understanding, "duration").and_then(duration_minutes) {
            form.duration_minutes = Some(minutes);
            form.end = None;
        }
        if let Some(plate) = entity(understanding, "vehicle_plate").and_then(|value| value.as_str()) {
            form.plate = Some(plate.to_owned());
        }
        if let Some(kind) =
            entity(understanding, "vehicle_type").and_then(|value| value.as_str()).and_then(VehicleType::parse)
        {
            form.vehicle_type = Some(kind);
        }
        if let Some(amount) = entity(understanding, "max_price")
            .and_then(|value| value.get("amount_minor"))
            .and_then(|value| value.as_i64())
        {
            form.max_price_minor = Some(amount);
        }
        if entity(understanding, "ev_charging").is_some() {
            form.ev = Some(true);
        }
        if entity(understanding, "accessible").is_some() {
            form.accessible = Some(true);
        }
        Ok(None)
    }

    /// Asks for what the form still lacks, or shows the options once it has it all.
    async fn advance_form(
        &self,
        state: &mut DialogueState,
        caller: &Principal,
        now: DateTime<Utc>,
        timezone: Tz,
    ) -> Result<Vec<MessageBody>, KernelError> {
        let form = &mut state.form;
        if form.point.is_none() {
            state.step = Step::AskLocation;
            return Ok(vec![say("Where would you like to park? Name a car park or area, or share your location.")]);
        }
        if form.start.is_none() {
            state.step = Step::AskStart;
            return Ok(vec![with_choices(
                say("When will you arrive?"),
                &[("Now", "now"), ("In an hour", "in an hour")],
            )]);
        }
        if form.start.is_some_and(|start| start < now - Duration::minutes(5)) {
            form.start = None;
            state.step = Step::AskStart;
            return Ok(vec![say("That time has passed. When will you arrive?")]);
        }
        if form.window().is_none() {
            if form.end.is_some() {
                form.end = None;
                state.step = Step::AskEnd;
                return Ok(vec![say("The end must be after the start. How long will you stay?")]);
            }
            state.step = Step::AskEnd;
            return Ok(vec![with_choices(
                say("How long will you stay?"),
                &[("1 hour", "1 hour"), ("2 hours", "2 hours"), ("4 hours", "4 hours")],
            )]);
        }
        if form.plate.is_none() {
            let vehicles = self.list_vehicles(caller, PageRequest { after: None, limit: 1 }).await?;
            match vehicles.items.first() {
                Some(vehicle) => {
                    form.plate = Some(vehicle.plate.as_str().to_owned());
                    form.vehicle_type.get_or_insert(vehicle.vehicle_type);
                }
                None => {
                    state.step = Step::AskPlate;
                    return Ok(vec![say("What's your vehicle's registration? (e.g. AB12 CDE)")]);
                }
            }
        }
        let options = self.options(&state.form, caller).await?;
        if options.is_empty() {
            state.step = Step::AskStart;
            return Ok(vec![say(format!(
                "Nothing is free near {} for that time. Try another time, or another place.",
                state.form.location.as_deref().unwrap_or("there")
            ))]);
        }
        let (start, end) = state.form.window().expect("checked above");
        let lines: Vec<String> = options
            .iter()
            .enumerate()
            .map(|(idx, option)| {
                format!(
                    "{}. {}: {} ({} free)",
                    idx + 1,
                    option.name,
                    money(option.price_minor, &option.currency),
                    option.free_spaces
                )
            })
            .collect();
        let mut reply = say(format!(
            "For {} until {}:\n{}\nWhich one would you like?",
            when(start, timezone),
            clock(end, timezone),
            lines.join("\n")
        ));
        reply.choices = options
            .iter()
            .enumerate()
            .map(|(idx, option)| Choice {
                label: format!("{}. {}", idx + 1, option.name),
                reply: (idx + 1).to_string(),
            })
            .collect();
        state.options = options;
        state.step = Step::Choose;
        Ok(vec![reply])
    }

    /// Priced options for the form, cheapest first.
    async fn options(&self, form: &BookingForm, caller: &Principal) -> Result<Vec<ShownOption>, KernelError> {
        let (Some((lat, lon)), Some((start, end))) = (form.point, form.window()) else { return Ok(Vec::new()) };
        let hits = self
            .search(
                caller,
                SearchQuery {
                    lat,
                    lon,
                    radius_m: SEARCH_RADIUS_M,
                    start,
                    end,
                    vehicle_type: form.vehicle_type.unwrap_or(VehicleType::Car),
                    ev: form.ev,
                    accessible: form.accessible,
                    max_price_minor: form.max_price_minor,
                    order: SearchOrder::Price,
                    limit: MAX_OPTIONS as u32,
                },
            )
            .await?;
        Ok(hits
            .into_iter()
            .filter(|hit| hit.free_spaces > 0)
            .filter_map(|hit| {
                let price = hit.price?;
                Some(ShownOption {
                    site_id: hit.site.id,
                    name: hit.site.details.name.clone(),
                    price_minor: price.total_minor,
                    currency: price.currency,
                    free_spaces: hit.free_spaces,
                })
            })
            .take(MAX_OPTIONS)
            .collect())
    }

    /// Quotes the chosen option and asks to confirm.
    async fn offer_quote(
        &self,
        state: &mut DialogueState,
        caller: &Principal,
        timezone: Tz,
    ) -> Result<Vec<MessageBody>, KernelError> {
        let chosen = state.chosen.clone().expect("invariant: offer_quote follows a choice");
        let (start, end) = state.form.window().ok_or_else(|| KernelError::Conflict("the stay has no window".into()))?;
        let quote = self
            .create_quote(
                caller,
                QuoteInput {
                    site_id: Some(chosen.site_id),
                    space_id: None,
                    start,
                    end,
                    vehicle_type: state.form.vehicle_type,
                    vehicle_id: None,
                    driver: None,
                },
            )
            .await?;
        state.step = Step::Confirm { quote_id: quote.id };
        Ok(vec![with_choices(
            say(format!(
                "{} on {} until {} for {}{}. Shall I book it?",
                chosen.name,
                when(start, timezone),
                clock(end, timezone),
                state.form.plate.as_deref().map_or(String::new(), |plate| format!("{plate}, ")),
                money(quote.price.total_minor, &quote.price.currency)
            )),
            &[("Yes, book it", "yes"), ("No", "no")],
        )])
    }

    /// Books the confirmed quote and hands over the payment link when there is one.
    async fn book(
        &self,
        state: &mut DialogueState,
        caller: &Principal,
        quote_id: QuoteId,
        timezone: Tz,
    ) -> Result<Vec<MessageBody>, KernelError> {
        let vehicle_id = match &state.form.plate {
            Some(plate) => Some(self.vehicle_for_plate(caller, plate, state.form.vehicle_type).await?),
            None => None,
        };
        let booking = self
            .create_booking(caller, BookingInput { quote_id, vehicle_id, payment_method: None, provider: None })
            .await?;
        state.booking_id = Some(booking.id);
        let site = self.site_name(&booking).await;
        *state = DialogueState { booking_id: Some(booking.id), ..DialogueState::default() };
        let reference = booking_reference(booking.id);
        let mut reply = match booking.status {
            BookingStatus::Confirmed => say(format!(
                "Booked! {site}, {} until {}. Your reference is {reference}.",
                when(booking.start, timezone),
                clock(booking.end, timezone)
            )),
            _ => say(format!(
                "I'm holding a space at {site} for {} until {} (reference {reference}). It is yours once paid.",
                when(booking.start, timezone),
                clock(booking.end, timezone)
            )),
        };
        reply.link = self.payment_link(&booking).await;
        if reply.link.is_some() {
            reply.text.push_str(" Pay here:");
        }
        Ok(vec![reply])
    }

    /// The page where the booking's latest payment waits, if any.
    async fn payment_link(&self, booking: &Booking) -> Option<String> {
        let payments = self.payments_of(booking).await.ok()?;
        payments.iter().rev().find_map(|payment| payment.action_url.clone())
    }

    /// The reminder of a booking about to start, in the driver's timezone.
    pub(crate) async fn reminder_body(&self, booking: &Booking, timezone: &str) -> MessageBody {
        let timezone: Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
        let text = format!(
            "Reminder: your booking {} at {} starts at {} ({}).",
            booking_reference(booking.id),
            self.site_name(booking).await,
            clock(booking.start, timezone),
            when(booking.start, timezone),
        );
        with_choices(say(text), &[("My bookings", "show my bookings"), ("Cancel it", "cancel my booking")])
    }

    async fn site_name(&self, booking: &Booking) -> String {
        match self.store().get_site(booking.operator_id, booking.site_id).await {
            Ok(Some(site)) => site.details.name,
            _ => "the car park".to_owned(),
        }
    }

    /// The driver's vehicle with this plate, added if new.
    async fn vehicle_for_plate(
        &self,
        caller: &Principal,
        plate: &str,
        vehicle_type: Option<VehicleType>,
    ) -> Result<crate::ids::VehicleId, KernelError> {
        let wanted = crate::driver::Plate::parse(plate)?;
        let driver = crate::service::driver_scope(caller)?;
        if let Some(vehicle) = self.all_vehicles_of(driver).await?.into_iter().find(|vehicle| vehicle.plate == wanted) {
            return Ok(vehicle.id);
        }
        Ok(self.add_vehicle(caller, wanted.as_str(), vehicle_type, None).await?.id)
    }

    /// The booking a cancel/extend/status message means: the one its reference names, the one
    /// this conversation talked about, or the driver's next.
    async fn pick_booking(
        &self,
        driver: DriverId,
        understanding: &Understanding,
        now: DateTime<Utc>,
        state: &DialogueState,
    ) -> Result<Option<Booking>, KernelError> {
        let bookings = self.upcoming_bookings(driver, now).await?;
        if let Some(reference) = entity_text(understanding, "booking_ref") {
            let wanted = reference.to_uppercase().replace('-', "");
            return Ok(bookings.into_iter().find(|booking| booking_reference(booking.id).replace('-', "") == wanted));
        }
        if let Some(id) = state.booking_id
            && let Some(booking) = bookings.iter().find(|booking| booking.id == id)
        {
            return Ok(Some(booking.clone()));
        }
        Ok(bookings.into_iter().next())
    }

    /// The driver's bookings that are not over, soonest first.
    async fn upcoming_bookings(&self, driver: DriverId, now: DateTime<Utc>) -> Result<Vec<Booking>, KernelError> {
        let mut found: Vec<Booking> = self
            .all_bookings_of(driver)
            .await?
            .into_iter()
            .filter(|booking| BookingStatus::LIVE.contains(&booking.status) && booking.end > now)
            .collect();
        found.sort_by_key(|booking| booking.start);
        Ok(found)
    }

    async fn status(&self, driver: DriverId, now: DateTime<Utc>, timezone: Tz) -> Result<MessageBody, KernelError> {
        let bookings = self.upcoming_bookings(driver, now).await?;
        if bookings.is_empty() {
            return Ok(say("You have no upcoming bookings."));
        }
        let mut lines = Vec::new();
        for booking in bookings.iter().take(5) {
            let status = match booking.status {
                BookingStatus::PendingPayment => "waiting for payment",
                BookingStatus::Confirmed => "confirmed",
                BookingStatus::Active => "parked now",
                _ => "",
            };
            lines.push(format!(
                "{}: {}, {} until {} ({status})",
                booking_reference(booking.id),
                self.site_name(booking).await,
                when(booking.start, timezone),
                clock(booking.end, timezone)
            ));
        }
        Ok(say(format!("Your bookings:\n{}", lines.join("\n"))))
    }
}

/// The short reference a driver quotes in chat: `BK-` and the last 6 characters of the id.
pub fn booking_reference(id: BookingId) -> String {
    let simple = id.as_uuid().simple().to_string().to_uppercase();
    format!("BK-{}", &simple[simple.len() - 6..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_durations_read_as_people_write_them() {
        assert_eq!(money(450, "GBP"), "£4.50");
        assert_eq!(money(1200, "EUR"), "€12.00");
        assert_eq!(money(500, "JPY"), "500 JPY");
        assert_eq!(money(705, "CHF"), "7.05 CHF");
        assert_eq!(duration_minutes(&serde_json::json!("PT2H30M")), Some(150));
        assert_eq!(duration_minutes(&serde_json::json!("P1DT1H")), Some(1500));
        assert_eq!(duration_minutes(&serde_json::json!("PT45M")), Some(45));
        assert_eq!(duration_minutes(&serde_json::json!("soon")), None);
    }

    #[test]
    fn options_are_picked_by_number_ordinal_or_name() {
        let option = |name: &str| ShownOption {
            site_id: SiteId::new(),
            name: name.to_owned(),
            price_minor: 100,
            currency: "GBP".into(),
            free_spaces: 1,
        };
        let options = vec![option("Central Garage"), option("Riverside"), option("Station Lot")];
        assert_eq!(pick_option("2", &options), Some(1));
        assert_eq!(pick_option("the first one please", &options), Some(0));
        assert_eq!(pick_option("riverside", &options), Some(1));
        assert_eq!(pick_option("option 3", &options), Some(2));
        assert_eq!(pick_option("hmm", &options), None);
        assert_eq!(pick_option("4", &options), None);
    }

    #[test]
    fn the_state_round_trips_as_json() {
        let state = DialogueState {
            step: Step::ConfirmExtend { booking_id: BookingId::new(), end: Utc::now() },
            form: BookingForm {
                location: Some("Euston".into()),
                duration_minutes: Some(120),
                ..BookingForm::default()
            },
            ..DialogueState::default()
        };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["step"]["step"], "confirm_extend");
        assert_eq!(serde_json::from_value::<DialogueState>(json).unwrap(), state);
        assert_eq!(serde_json::from_value::<DialogueState>(serde_json::json!({})).unwrap(), DialogueState::default());
    }
}
