//! The engine against ordinary, helper-heavy and hostile scripts.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_kernel::rules::{
    ContextFixture, EntryPoint, Guardrails, Occupancy, RuleContext, RuleErrorKind, SiteFacts, evaluate_checked,
};

use super::*;

/// The default limits, with a time budget long enough that the operation limit always trips
/// first, however loaded the machine (the deadline has a test of its own).
fn engine() -> RhaiRules {
    RhaiRules::new(Limits { timeout: Duration::from_secs(30), ..Limits::default() })
}

fn site(timezone: &str) -> SiteFacts {
    SiteFacts {
        id: None,
        name: "Test".into(),
        kind: "off_street".into(),
        timezone: timezone.into(),
        currency: "EUR".into(),
        capacity: 100,
        max_stay_minutes: Some(240),
        max_height_cm: None,
        allowed_vehicle_types: vec!["car".into()],
        opening_hours: vec![],
    }
}

fn ctx(start: &str, end: &str) -> RuleContext {
    ContextFixture {
        start: start.into(),
        end: end.into(),
        site: Some(site("Europe/Lisbon")),
        occupancy: Some(Occupancy { percent: 72.5, free: 20, total: 80, recent_percent: None }),
        ..ContextFixture::default()
    }
    .to_context(
        None,
        "EUR",
        &[chrono::NaiveDate::from_ymd_opt(2026, 12, 25).unwrap()].into_iter().collect(),
        &berth_kernel::rules::Params::new(),
    )
    .unwrap()
}

fn weekday_ctx() -> RuleContext {
    ctx("2026-03-02T09:00", "2026-03-02T11:30")
}

fn total(source: &str, ctx: &RuleContext) -> i64 {
    let script = engine().compile_rules(source).unwrap();
    let checked = evaluate_checked(script.as_ref(), EntryPoint::Price, ctx, &Guardrails::default()).unwrap();
    checked.price.unwrap().total_minor
}

fn price_error(source: &str) -> RuleError {
    let script = engine().compile_rules(source).unwrap();
    evaluate_checked(script.as_ref(), EntryPoint::Price, &weekday_ctx(), &Guardrails::default()).unwrap_err()
}

#[test]
fn a_price_is_line_items_from_the_context() {
    let source = r#"
        fn price(ctx) {
            let hours = increments(ctx.duration_minutes, 60);
            let items = [base("Parking", hours * 250)];
            if ctx.occupancy.percent > 70 { items.push(surcharge("Busy", 100)); }
            if ctx.vehicle_type == "car" && ctx.day_type == "weekday" { items.push(discount("Weekday", 50)); }
            items.push(tax("VAT", percent_of(hours * 250 + 100 - 50, 23)));
            items
        }
    "#;
    // 3 started hours × 250 + 100 - 50 = 800, VAT 23% = 184.
    assert_eq!(total(source, &weekday_ctx()), 984);
    let script = engine().compile_rules(source).unwrap();
    let evaluation = script.evaluate(EntryPoint::Price, &weekday_ctx()).unwrap();
    let RuleAnswer::Money(answer) = evaluation.answer else { panic!("a price answers money") };
    assert_eq!(answer.items[0].line, Some(4), "items remember the line that made them");
    assert!(evaluation.trace.iter().any(|step| step.message.contains("surcharge 'Busy'") && step.line == Some(5)));
}

#[test]
fn decimals_are_exact_and_rounded_half_away_from_zero() {
    assert_eq!(total("fn price(ctx) { 2.5 }", &weekday_ctx()), 3);
    assert_eq!(total("fn price(ctx) { if 0.1 + 0.2 == 0.3 { 1 } else { 2 } }", &weekday_ctx()), 1);
    assert_eq!(total("fn price(ctx) { base(\"Rate\", 1.15 * 100) }", &weekday_ctx()), 115);
    assert_eq!(total("fn price(ctx) { percent_of(999, 12.5) }", &weekday_ctx()), 125);
}

#[test]
fn absent_entry_points_take_their_documented_defaults() {
    let script = engine().compile_rules("fn price(ctx) { 100 }").unwrap();
    let decision = script.evaluate(EntryPoint::AllowBooking, &weekday_ctx()).unwrap();
    assert!(decision.defaulted);
    assert_eq!(decision.answer, RuleAnswer::Decision { decision: Decision::allow(), price: None });
    let fee =
        evaluate_checked(script.as_ref(), EntryPoint::CancellationFee, &weekday_ctx(), &Guardrails::default()).unwrap();
    assert_eq!(fee.price.unwrap().total_minor, 0);
    let free = engine().compile_rules("fn allow_booking(ctx) { true }").unwrap();
    let price = evaluate_checked(free.as_ref(), EntryPoint::Price, &weekday_ctx(), &Guardrails::default()).unwrap();
    assert_eq!(price.price.unwrap().total_minor, 0);
}

#[test]
fn decisions_carry_a_reason_for_the_driver() {
    let source = r#"
        fn allow_booking(ctx) {
            if ctx.duration_minutes > ctx.site.max_stay_minutes { return deny("The maximum stay here is 4 hours"); }
            if ctx.lead_time_minutes < 15 { return deny("Book at least 15 minutes ahead"); }
            if !within_opening_hours(ctx) { return deny("The car park is closed then"); }
            allow()
        }
    "#;
    let script = engine().compile_rules(source).unwrap();
    let decide = |ctx: &RuleContext| match script.evaluate(EntryPoint::AllowBooking, ctx).unwrap().answer {
        RuleAnswer::Decision { decision, .. } => decision,
        other => panic!("{other:?}"),
    };
    assert!(decide(&weekday_ctx()).allow);
    let long = ctx("2026-03-02T09:00", "2026-03-02T14:00");
    assert_eq!(decide(&long).reason.as_deref(), Some("The maximum stay here is 4 hours"));

    let denied_silently = engine().compile_rules("fn allow_booking(ctx) { #{ allow: false } }").unwrap();
    let error = denied_silently.evaluate(EntryPoint::AllowBooking, &weekday_ctx()).unwrap_err();
    assert!(error.message.contains("without a reason"), "{error}");
}

#[test]
fn opening_hours_cover_a_stay_or_not() {
    let source = "fn allow_booking(ctx) { if within_opening_hours(ctx) { allow() } else { deny(\"closed\") } }";
    let script = engine().compile_rules(source).unwrap();
    let mut day = weekday_ctx();
    day.site.opening_hours = vec![berth_kernel::rules::OpeningFacts {
        days: vec!["weekday".into()],
        opens: "08:00".into(),
        closes: "20:00".into(),
    }];
    let allowed = |ctx: &RuleContext| match script.evaluate(EntryPoint::AllowBooking, ctx).unwrap().answer {
        RuleAnswer::Decision { decision, .. } => decision.allow,
        _ => unreachable!(),
    };
    assert!(allowed(&day));
    let mut evening = ctx("2026-03-02T19:00", "2026-03-02T21:00");
    evening.site.opening_hours = day.site.opening_hours.clone();
    assert!(!allowed(&evening));
    let mut saturday = ctx("2026-03-07T10:00", "2026-03-07T11:00");
    saturday.site.opening_hours = day.site.opening_hours.clone();
    assert!(!allowed(&saturday), "weekday hours do not open the weekend");
}

#[test]
fn time_bands_split_a_stay_that_crosses_bands_and_days() {
    let source = r#"
        const BANDS = [
            #{ label: "Day", from: "08:00", to: "18:00", days: ["weekday"], amount: 300 },
            #{ label: "Night", from: "18:00", to: "08:00", amount: 100 },
            #{ label: "Weekend day", from: "08:00", to: "18:00", days: ["weekend", "holiday"], amount: 150 },
        ];
        fn price(ctx) { base("Parking", band_price(ctx, global::BANDS, 1500)) }
    "#;
    // 17:00-19:30: one started hour of Day (300) + 2 started hours of Night (200).
    assert_eq!(total(source, &ctx("2026-03-02T17:00", "2026-03-02T19:30")), 500);
    // Christmas (a holiday, Friday) 09:00-12:00: 3 × 150.
    assert_eq!(total(source, &ctx("2026-12-25T09:00", "2026-12-25T12:00")), 450);
    // Monday 08:00 to Tuesday 08:00: Monday is 10 h Day (3000) + 6 h Night (600), capped at 1500;
    // Tuesday 00:00-08:00 is 8 h Night = 800.
    assert_eq!(total(source, &ctx("2026-03-02T08:00", "2026-03-03T08:00")), 2300);
}

#[test]
fn rate_lines_charge_a_first_interval_then_increments_capped_per_day() {
    let source = r#"
        fn price(ctx) {
            rate_line(ctx.duration_minutes, #{ first_minutes: 60, first_amount: 300, step_minutes: 30, step_amount: 100, max_per_day: 1200 })
        }
    "#;
    assert_eq!(total(source, &ctx("2026-03-02T09:00", "2026-03-02T09:20")), 300);
    assert_eq!(total(source, &ctx("2026-03-02T09:00", "2026-03-02T10:01")), 400);
    assert_eq!(total(source, &ctx("2026-03-02T09:00", "2026-03-02T11:30")), 600);
    assert_eq!(total(source, &ctx("2026-03-02T09:00", "2026-03-02T23:00")), 1200);
    // 26 h: one capped day (1200) and 2 h from the start of the tariff again (300 + 2 × 100).
    assert_eq!(total(source, &ctx("2026-03-02T09:00", "2026-03-03T11:00")), 1700);
    let error = price_error("fn price(ctx) { rate_line(60, #{ first_minutes: 60, first_amout: 1 }) }");
    assert!(error.message.contains("unknown key 'first_amout'"), "{error}");
}

#[test]
fn compile_errors_have_a_line_and_column() {
    let error = engine().compile_rules("fn price(ctx) {\n  let x = ;\n}").err().unwrap();
    assert_eq!((error.kind, error.line, error.column), (RuleErrorKind::Compile, Some(2), Some(11)));
    let arity = engine().compile_rules("fn price() { 1 }").err().unwrap();
    assert!(arity.message.contains("exactly one parameter"), "{arity}");
    let undefined = engine().compile_rules("fn price(ctx) { rate * 2 }").err().unwrap();
    assert!(undefined.message.contains("rate"), "strict variables: {undefined}");
    let no_eval = engine().compile_rules("fn price(ctx) { eval(\"1\") }").err().unwrap();
    assert_eq!(no_eval.kind, RuleErrorKind::Compile);
}

#[test]
fn hostile_scripts_are_contained_with_a_clear_error() {
    let cases = [
        ("fn price(ctx) { loop { } }", RuleErrorKind::Limit, "too many operations"),
        ("fn f(n) { f(n + 1) } fn price(ctx) { f(0) }", RuleErrorKind::Limit, "too deeply"),
        ("fn price(ctx) { let s = \"x\"; loop { s += s; } }", RuleErrorKind::Limit, "too large"),
        ("fn price(ctx) { let a = []; loop { a.push(1); } }", RuleErrorKind::Limit, "too large"),
        ("fn price(ctx) {\n  100 / (ctx.duration_minutes - 150)\n}", RuleErrorKind::Runtime, "Division by zero"),
        ("fn price(ctx) { 0.0 / 0.0 }", RuleErrorKind::Runtime, "Division by zero"),
        ("fn price(ctx) { throw \"no tariff for this\"; }", RuleErrorKind::Runtime, "no tariff"),
        ("fn price(ctx) { timestamp() }", RuleErrorKind::Runtime, "timestamp"),
        ("fn price(ctx) { -500 }", RuleErrorKind::Answer, "negative"),
        ("fn price(ctx) { 1_000_000_000_000 }", RuleErrorKind::Answer, "ceiling"),
        ("fn price(ctx) { \"ten euros\" }", RuleErrorKind::Answer, "string"),
        ("fn price(ctx) { }", RuleErrorKind::Answer, "nothing"),
        ("fn price(ctx) { [base(\"A\", 1), 7] }", RuleErrorKind::Answer, "item 1"),
        ("fn price(ctx) { base(\"A\", 99999999999999999999999.5) }", RuleErrorKind::Answer, "too large"),
        ("fn price(ctx) { #{ items: [base(\"A\", 100)], total: 90 } }", RuleErrorKind::Answer, "not the sum"),
        ("fn price(ctx) { #{ items: [base(\"A\", 100)], currency: \"USD\" } }", RuleErrorKind::Answer, "USD"),
    ];
    for (source, kind, message) in cases {
        let error = price_error(source);
        assert_eq!(error.kind, kind, "{source}: {error}");
        assert!(error.to_string().contains(message), "{source}: {error}");
    }
    // A map grown key by key is stopped by the operation or time budget, whichever comes first.
    let map = price_error("fn price(ctx) { let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; } }");
    assert!(matches!(map.kind, RuleErrorKind::Limit | RuleErrorKind::Timeout), "{map}");
    let division = price_error("fn price(ctx) {\n  100 / (ctx.duration_minutes - 150)\n}");
    assert_eq!(division.line, Some(2), "runtime errors point at the line");
}

#[test]
fn a_script_that_outruns_its_deadline_is_stopped() {
    let slow = RhaiRules::new(Limits { max_operations: 0, timeout: Duration::from_millis(20), ..Limits::default() });
    let script = slow.compile_rules("fn price(ctx) { let i = 0; loop { i += 1; } }").unwrap();
    let started = std::time::Instant::now();
    let error = script.evaluate(EntryPoint::Price, &weekday_ctx()).unwrap_err();
    assert_eq!(error.kind, RuleErrorKind::Timeout, "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The same thread evaluates normally afterwards: the deadline does not leak.
    let fine = slow.compile_rules("fn price(ctx) { 100 }").unwrap();
    assert!(fine.evaluate(EntryPoint::Price, &weekday_ctx()).is_ok());
}

#[test]
fn huge_scripts_and_deep_expressions_do_not_compile() {
    let deep = format!("fn price(ctx) {{ {}1{} }}", "(".repeat(500), ")".repeat(500));
    assert_eq!(engine().compile_rules(&deep).err().unwrap().kind, RuleErrorKind::Compile);
    let huge = format!("fn price(ctx) {{ 1 }} // {}", "x".repeat(70_000));
    assert!(engine().compile_rules(&huge).err().unwrap().message.contains("bytes"));
}

#[test]
fn evaluations_run_concurrently_on_one_compiled_script() {
    let script = engine()
        .compile_rules("fn price(ctx) { base(\"Parking\", increments(ctx.duration_minutes, 30) * 100) }")
        .unwrap();
    std::thread::scope(|scope| {
        for minutes in [30_i64, 60, 90, 120] {
            let script = script.clone();
            scope.spawn(move || {
                let mut ctx = weekday_ctx();
                ctx.end.at = ctx.start.at + chrono::Duration::minutes(minutes);
                for _ in 0..200 {
                    let checked = evaluate_checked(script.as_ref(), EntryPoint::Price, &ctx, &Guardrails::default());
                    assert_eq!(checked.unwrap().price.unwrap().total_minor, minutes / 30 * 100);
                }
            });
        }
    });
}

#[test]
fn every_template_passes_its_own_tests() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let projects = project::RuleProject::discover(&examples).unwrap();
    assert!(projects.len() >= 5, "templates: {}", projects.len());
    let engine = engine();
    for project in projects {
        let script = project.compile(&engine).unwrap();
        let outcomes = project.run_tests(script.as_ref());
        assert!(outcomes.len() >= 3, "{}: too few tests", project.dir.display());
        for outcome in outcomes {
            assert!(outcome.passed, "{} / {}: {}", project.dir.display(), outcome.name, outcome.message);
        }
    }
}

#[test]
fn docs_examples_run() {
    let guide = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/rules.md");
    let text = std::fs::read_to_string(guide).unwrap();
    let blocks: Vec<&str> = text.split("```rhai\n").skip(1).map(|rest| rest.split("```").next().unwrap()).collect();
    assert!(blocks.len() >= 2, "the guide has Rhai examples");
    let mut ctx = weekday_ctx();
    ctx.space = Some(berth_kernel::rules::SpaceFacts {
        id: None,
        code: "EV-1".into(),
        category: "standard".into(),
        vehicle_type: "car".into(),
        ev_charger: true,
        accessible: false,
    });
    for block in blocks {
        let script = engine().compile_rules(block).unwrap_or_else(|error| panic!("{error}\n{block}"));
        for entry in [EntryPoint::Price, EntryPoint::AllowBooking] {
            evaluate_checked(script.as_ref(), entry, &ctx, &Guardrails::default())
                .unwrap_or_else(|error| panic!("{}: {error}\n{block}", entry.name()));
        }
    }
}

/// Golden errors: each `tests/invalid/NAME.rhai` fails (to compile, or on a 150-minute weekday
/// stay) with exactly the message in `NAME.err`. `UPDATE_GOLDEN=1` rewrites the `.err` files.
#[test]
fn invalid_rules_fail_with_the_golden_message() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rhai"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 8);
    let engine = engine();
    for path in scripts {
        let source = std::fs::read_to_string(&path).unwrap();
        let message = match engine.compile_rules(&source) {
            Err(error) => error.to_string(),
            Ok(script) => {
                let entry =
                    if script.defines(EntryPoint::AllowBooking) { EntryPoint::AllowBooking } else { EntryPoint::Price };
                match evaluate_checked(script.as_ref(), entry, &weekday_ctx(), &Guardrails::default()) {
                    Err(error) => error.to_string(),
                    Ok(_) => "no error".to_owned(),
                }
            }
        };
        let golden = path.with_extension("err");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, format!("{message}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        assert_eq!(message, expected.trim_end(), "{}", path.display());
    }
}

#[test]
fn bands_charge_elapsed_time_across_clock_changes_and_overnight_bands_keep_their_day() {
    let night_only_fridays = r#"
        fn price(ctx) {
            band_price(ctx, [#{ label: "Friday night", from: "22:00", to: "06:00", days: ["fri"], amount: 100 }])
        }
    "#;
    // Saturday 01:00-03:00 is part of Friday night; Friday 01:00-03:00 (Thursday night) is not.
    assert_eq!(total(night_only_fridays, &ctx("2026-03-07T01:00", "2026-03-07T03:00")), 200);
    assert_eq!(total(night_only_fridays, &ctx("2026-03-06T01:00", "2026-03-06T03:00")), 0);

    let hourly = "fn price(ctx) { band_price(ctx, [#{ label: \"All day\", amount: 100 }]) }";
    // Lisbon clocks go forward at 01:00 on 2026-03-29 and back at 02:00 on 2026-10-25.
    assert_eq!(total(hourly, &ctx("2026-03-29T00:00", "2026-03-29T03:00")), 200, "two hours elapsed");
    assert_eq!(total(hourly, &ctx("2026-10-25T00:00", "2026-10-25T03:00")), 400, "four hours elapsed");
    // A stay inside the repeated hour is not lost.
    let repeated = ContextFixture {
        start: "2026-10-25T01:15:00+01:00".into(),
        end: "2026-10-25T01:15:00+00:00".into(),
        site: Some(site("Europe/Lisbon")),
        ..ContextFixture::default()
    };
    let repeated = repeated.to_context(None, "EUR", &BTreeSet::new(), &berth_kernel::rules::Params::new()).unwrap();
    assert_eq!(total(hourly, &repeated), 100);
}

#[test]
fn sleep_is_not_available_to_rules() {
    let started = std::time::Instant::now();
    let error = price_error("fn price(ctx) { sleep(5); 1 }");
    assert!(error.message.contains("sleep() is not available"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn times_reach_scripts_as_chrono_writes_them() {
    for (start, timezone) in [("2026-07-02T09:05", "Europe/Lisbon"), ("2026-01-02T23:59", "America/St_Johns")] {
        let mut fixture_site = site(timezone);
        fixture_site.timezone = timezone.into();
        let ctx = ContextFixture {
            start: start.into(),
            end: "2026-12-31T00:00".into(),
            site: Some(fixture_site),
            ..ContextFixture::default()
        }
        .to_context(None, "EUR", &BTreeSet::new(), &berth_kernel::rules::Params::new())
        .unwrap();
        let map = context::time(&ctx.start).cast::<rhai::Map>();
        assert_eq!(map["iso"].clone().into_string().unwrap(), ctx.start.at.to_rfc3339());
        assert_eq!(map["date"].clone().into_string().unwrap(), ctx.start.at.format("%Y-%m-%d").to_string());
        assert_eq!(map["time"].clone().into_string().unwrap(), ctx.start.at.format("%H:%M").to_string());
    }
}
