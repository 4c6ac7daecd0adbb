//! `berth rules test DIR` (run a rule set's fixtures, like `opa test`) and `berth rules explain`
//! (one context through a rule set: line items, decision and the trace of what fired).

use std::fmt::Write as _;
use std::path::Path;

use berth_kernel::rules::{ContextFixture, EntryPoint, evaluate_checked};
use berth_rules::project::RuleProject;
use berth_rules::{Limits, RhaiRules};

/// What `rules test` prints, and how many cases failed (the exit status).
pub struct TestRun {
    pub text: String,
    pub failed: usize,
}

/// Runs the fixtures of every rule set under `dir`.
pub fn test(dir: &Path) -> anyhow::Result<TestRun> {
    let engine = RhaiRules::new(Limits::default());
    let mut text = String::new();
    let (mut passed, mut failed) = (0, 0);
    for project in RuleProject::discover(dir)? {
        let _ = writeln!(text, "{} ({})", project.settings.name, project.dir.display());
        let script = match project.compile(&engine) {
            Ok(script) => script,
            Err(error) => {
                let _ = writeln!(text, "  FAIL compile: {error}");
                failed += 1;
                continue;
            }
        };
        if project.tests.is_empty() {
            let _ = writeln!(text, "  FAIL no test cases in tests.toml (publishing needs at least one)");
            failed += 1;
        }
        for outcome in project.run_tests(script.as_ref()) {
            let mark = if outcome.passed { "PASS" } else { "FAIL" };
            let _ = writeln!(text, "  {mark} {}: {}", outcome.name, outcome.message);
            if outcome.passed {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    let _ = writeln!(text, "{passed} passed, {failed} failed");
    Ok(TestRun { text, failed })
}

/// Runs one context through the rule set in `dir`: a fixture by name, or a context file (JSON
/// or TOML in the fixtures' shape).
pub fn explain(dir: &Path, test: Option<&str>, context: Option<&Path>, entry: Option<&str>) -> anyhow::Result<String> {
    let project = RuleProject::load(dir)?;
    let engine = RhaiRules::new(Limits::default());
    let script = project.compile(&engine)?;
    let (fixture, fixture_entry): (ContextFixture, Option<EntryPoint>) = match (test, context) {
        (Some(name), None) => {
            let test = project.tests.iter().find(|test| test.name == name).ok_or_else(|| {
                anyhow::anyhow!("no test case named '{name}' in {}", dir.join("tests.toml").display())
            })?;
            (test.context.clone(), test.entry)
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)?;
            let fixture = if path.extension().is_some_and(|ext| ext == "toml") {
                toml::from_str(&text)?
            } else {
                serde_json::from_str(&text)?
            };
            (fixture, None)
        }
        _ => anyhow::bail!("give either --test NAME or --context FILE"),
    };
    let settings = &project.settings;
    let ctx = project.setting().context(&fixture)?;
    let entries = match entry {
        Some(name) => vec![EntryPoint::parse(name).ok_or_else(|| {
            let names: Vec<&str> = EntryPoint::ALL.iter().map(|entry| entry.name()).collect();
            anyhow::anyhow!("unknown entry point '{name}' ({})", names.join(", "))
        })?],
        None => fixture_entry.map_or_else(|| vec![EntryPoint::AllowBooking, EntryPoint::Price], |entry| vec![entry]),
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{}: {} → {} ({} min, {}), {}",
        settings.name,
        ctx.start.at.format("%Y-%m-%d %H:%M"),
        ctx.end.at.format("%Y-%m-%d %H:%M"),
        ctx.duration_minutes(),
        ctx.start.day_type.as_str(),
        ctx.vehicle_type
    );
    for entry in entries {
        let _ = writeln!(text, "\n{}(ctx)", entry.name());
        match evaluate_checked(script.as_ref(), entry, &ctx, &settings.guardrails) {
            Err(error) => {
                let _ = writeln!(text, "  error: {error}");
            }
            Ok(checked) => {
                for step in &checked.trace {
                    let line = step.line.map_or_else(|| "    ".to_owned(), |line| format!("{line:>4}"));
                    let _ = writeln!(text, "  {line} | {}", step.message);
                }
                if let Some(decision) = &checked.decision {
                    let verdict = if decision.allow {
                        "allowed".to_owned()
                    } else {
                        format!("denied: {}", decision.reason.clone().unwrap_or_default())
                    };
                    let _ = writeln!(text, "  => {verdict}");
                }
                if entry == EntryPoint::Adjust {
                    let proposal = checked.params.as_ref().map_or_else(
                        || "no change".to_owned(),
                        |params| serde_json::Value::Object(params.clone()).to_string(),
                    );
                    let _ = writeln!(text, "  => {proposal}");
                }
                if let Some(price) = &checked.price {
                    for item in &price.items {
                        let sign = if item.kind == berth_kernel::rules::LineKind::Discount { "-" } else { " " };
                        let _ = writeln!(
                            text,
                            "  {:<10} {:<32} {sign}{}",
                            item.kind.as_str(),
                            item.label,
                            item.amount_minor
                        );
                    }
                    let _ = writeln!(text, "  => total {} {} (minor units)", price.total_minor, price.currency);
                }
            }
        }
    }
    Ok(text)
}
