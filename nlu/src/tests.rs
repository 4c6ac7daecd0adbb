//! Pipeline tests on a small parking set: training, parsing, serialisation.

use chrono::TimeZone;

use super::*;

fn small_data() -> TrainingData {
    TrainingData::from_rasa_yaml(
        r#"
nlu:
- intent: book_parking
  examples: |
    - book a space near [Euston](location) for [2 hours](duration)
    - I need parking at [King's Cross](location) [tomorrow at 9](start_time)
    - reserve a spot in [Camden](location) from [8](start_time) to [10:30](end_time)
    - park my car near [Soho](location) for [3 hours](duration)
    - can I book parking at [Paddington](location) [tonight](start_time)
    - book me in at [Victoria](location) [until 6pm](end_time)
- intent: cancel_booking
  examples: |
    - cancel my booking
    - cancel booking [BK-1234](booking_ref)
    - I don't need the space any more
    - please cancel it
- intent: greet
  examples: |
    - hi
    - hello there
    - good morning
- regex: vehicle_plate
  examples: |
    - \b[a-z]{2}[0-9]{2} ?[a-z]{3}\b
"#,
    )
    .unwrap()
}

#[test]
fn a_small_model_parses_intents_entities_and_times() {
    let nlu = Nlu::train(&small_data(), TrainOptions::default()).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 26, 14, 10, 0).unwrap();
    let parse = nlu.parse("book a space near Euston for 3 hours", now, chrono_tz::Europe::London);
    assert_eq!(parse.intent.name, "book_parking");
    let found: Vec<(&str, &str)> =
        parse.entities.iter().map(|entity| (entity.entity.as_str(), entity.text.as_str())).collect();
    assert_eq!(found, [("location", "Euston"), ("duration", "3 hours")]);
    assert_eq!(parse.entities[1].value, serde_json::json!("PT3H"));
    assert_eq!((parse.entities[0].start, parse.entities[0].end), (18, 24));

    let parse = nlu.parse("cancel my booking please, car AB12 CDE", now, chrono_tz::Europe::London);
    assert_eq!(parse.intent.name, "cancel_booking");
    let plate = parse.entities.iter().find(|entity| entity.entity == "vehicle_plate").unwrap();
    assert_eq!((plate.value.clone(), plate.extractor.as_str()), (serde_json::json!("AB12CDE"), "regex"));

    let ranked: f32 = parse.intent_ranking.iter().map(|score| score.confidence).sum();
    assert!((ranked - 1.0).abs() < 1e-3, "confidences sum to one: {ranked}");
    assert_eq!(nlu.parse("", now, chrono_tz::UTC).intent.name, FALLBACK_INTENT);
}

#[test]
fn a_serialised_model_answers_the_same() {
    let nlu = Nlu::train(&small_data(), TrainOptions::default()).unwrap();
    let loaded = Nlu::from_bytes(&nlu.to_bytes()).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 26, 14, 10, 0).unwrap();
    for text in ["reserve a spot in Camden from 8 to 10:30", "hello", "cancel booking BK-99, plate ab12cde"] {
        let (a, b) = (nlu.parse(text, now, chrono_tz::UTC), loaded.parse(text, now, chrono_tz::UTC));
        assert_eq!((a.intent, a.entities), (b.intent, b.entities), "{text}");
    }
    assert!(Nlu::from_bytes(b"not a model").is_err());
}
