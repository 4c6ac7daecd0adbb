//! `berth nlu train|eval|parse`: train the language model, measure it on a held-out split (ours
//! or the SNIPS/ATIS benchmarks), and try a message.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use berth_nlu::data::{TrainingData, load_dir, load_paths};
use berth_nlu::{Nlu, TrainOptions};
use chrono::{DateTime, Utc};

/// Training data: the files or directories given, or the bundled parking data.
fn training_data(data: &[PathBuf]) -> anyhow::Result<TrainingData> {
    if data.is_empty() { Ok(berth_nlu::parking::training_data()) } else { Ok(load_paths(data)?) }
}

fn train_timed(data: &TrainingData) -> anyhow::Result<(Nlu, f64)> {
    let started = Instant::now();
    let nlu = Nlu::train(data, TrainOptions::default())?;
    Ok((nlu, started.elapsed().as_secs_f64()))
}

/// Trains a model and writes it to `out`; answers what to print.
pub fn train(data: &[PathBuf], out: &Path) -> anyhow::Result<String> {
    let data = training_data(data)?;
    let (nlu, seconds) = train_timed(&data)?;
    let bytes = nlu.to_bytes();
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    let started = Instant::now();
    Nlu::from_bytes(&bytes)?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(format!(
        "trained on {} examples ({} intents, {} entity types) in {seconds:.2} s\nwrote {} ({} KiB); loads in {load_ms:.1} ms\n",
        data.examples.len(),
        nlu.intents().len(),
        nlu.entities().len(),
        out.display(),
        bytes.len() / 1024
    ))
}

/// Trains on DIR's training split and reports on its test split (default: the bundled parking data).
pub fn eval(dir: Option<&Path>) -> anyhow::Result<String> {
    let (train, test) = match dir {
        Some(dir) => load_dir(dir)?,
        None => (
            berth_nlu::parking::training_data(),
            TrainingData::from_rasa_yaml(berth_nlu::parking::TEST_YAML).context("the bundled test split")?,
        ),
    };
    if test.examples.is_empty() {
        anyhow::bail!("no test split (test.jsonl or test.yml) to report on");
    }
    let (nlu, seconds) = train_timed(&train)?;
    let report = berth_nlu::eval::evaluate(&nlu, &test.examples);
    let mut text = String::new();
    let source = dir.map_or_else(|| "the bundled parking data".to_owned(), |dir| dir.display().to_string());
    let _ = writeln!(text, "data                {source}");
    let _ = writeln!(text, "trained on          {} examples in {seconds:.2} s", train.examples.len());
    let _ = write!(text, "{report}");
    Ok(text)
}

/// Parses one message with the bundled model and prints the answer as JSON.
pub fn parse(text: &str, reference: Option<DateTime<Utc>>, timezone: &str) -> anyhow::Result<String> {
    let timezone = berth_kernel::language::parse_timezone(timezone)?;
    let (nlu, _) = train_timed(&berth_nlu::parking::training_data())?;
    let parse = nlu.parse(text, reference.unwrap_or_else(Utc::now), timezone);
    Ok(serde_json::to_string_pretty(&parse)? + "\n")
}
