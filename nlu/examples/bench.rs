//! Trains on a benchmark's train split and prints intent accuracy and slot F1 on its test split:
//! `cargo run --release -p berth-nlu --example bench -- ../shared/nlu-bench/snips` (`BENCH_SPLIT=valid`
//! reports on the validation split, for tuning; `BENCH_ERRORS=1` lists wrong intents with the
//! top three and their confidences, `BENCH_TABLES=1` prints the full report; `BENCH_C=8` trains
//! the intent SVM with another C; `BENCH_CV=5` reports the intent errors of a 5-fold
//! cross-validation over train and valid together, intent classifier only: ten to twenty times
//! the utterances of the validation split, so a feature's effect shows above the noise).

fn main() {
    for dir in std::env::args().skip(1) {
        let (train, mut test) = berth_nlu::data::load_dir(std::path::Path::new(&dir)).expect("benchmark data");
        if let Ok(folds) = std::env::var("BENCH_CV") {
            cross_validate(&dir, &train, folds.parse().expect("BENCH_CV is a number of folds"));
            continue;
        }
        // `BENCH_SPLIT=valid` reports on the validation split (for tuning) instead of test.
        if let Ok(split) = std::env::var("BENCH_SPLIT") {
            let text =
                std::fs::read_to_string(std::path::Path::new(&dir).join(format!("{split}.jsonl"))).expect("split");
            test = berth_nlu::data::TrainingData::from_bench_jsonl(&text).expect("split parses");
        }
        let started = std::time::Instant::now();
        let options = options();
        let nlu = berth_nlu::Nlu::train(&train, options).expect("trains");
        let trained = started.elapsed();
        let report = berth_nlu::eval::evaluate(&nlu, &test.examples);
        println!(
            "{dir}: intent {:.2}%  slot F1 {:.2}  sentence {:.2}%  (train {:.1} s)",
            100.0 * report.intent_accuracy(),
            100.0 * report.slots.f1(),
            100.0 * report.sentence_accuracy(),
            trained.as_secs_f64()
        );
        if std::env::var_os("BENCH_ERRORS").is_some() {
            for example in &test.examples {
                let analysis = nlu.analyse(&example.text, &example.tokens);
                let predicted = &nlu.intents()[analysis.intent];
                if *predicted != example.intent {
                    let mut ranked: Vec<usize> = (0..analysis.confidences.len()).collect();
                    ranked.sort_by(|&a, &b| analysis.confidences[b].total_cmp(&analysis.confidences[a]));
                    let top: Vec<String> = ranked
                        .iter()
                        .take(3)
                        .map(|&idx| format!("{} {:.2}", nlu.intents()[idx], analysis.confidences[idx]))
                        .collect();
                    println!("  {} -> {predicted}: {}   [{}]", example.intent, example.text, top.join(", "));
                }
            }
        }
        if std::env::var_os("BENCH_SLOT_ERRORS").is_some() {
            for example in &test.examples {
                let analysis = nlu.analyse(&example.text, &example.tokens);
                let predicted: Vec<(usize, usize, String)> = berth_nlu::tagger::spans(&analysis.labels)
                    .into_iter()
                    .map(|(start, end, entity)| (start, end, nlu.entities()[entity].clone()))
                    .collect();
                let gold: Vec<(usize, usize, String)> =
                    example.spans.iter().map(|span| (span.start, span.end, span.entity.clone())).collect();
                if predicted != gold {
                    println!("  {}\n    gold {gold:?}\n    got  {predicted:?}", example.text);
                }
            }
        }
        if std::env::var_os("BENCH_TABLES").is_some() {
            println!("{report}");
        }
    }
}

/// The pipeline's default options, with `BENCH_C` as the intent SVM's C when set.
fn options() -> berth_nlu::TrainOptions {
    let mut options = berth_nlu::TrainOptions::default();
    if let Ok(c) = std::env::var("BENCH_C") {
        match c.parse::<f64>() {
            Ok(c) if c.is_finite() && c > 0.0 => options.svm_c = c,
            _ => panic!("BENCH_C must be a positive number, not {c:?}"),
        }
    }
    options
}

/// Intent errors of a `folds`-fold cross-validation over train and valid together (folds by
/// position). The tagger is not trained: the intent does not depend on it.
fn cross_validate(dir: &str, train: &berth_nlu::data::TrainingData, folds: usize) {
    let text = std::fs::read_to_string(std::path::Path::new(dir).join("valid.jsonl")).expect("valid split");
    let valid = berth_nlu::data::TrainingData::from_bench_jsonl(&text).expect("split parses");
    let all: Vec<_> = train.examples.iter().chain(&valid.examples).collect();
    let mut errors = 0;
    for fold in 0..folds {
        let mut data = train.clone();
        data.examples =
            all.iter().enumerate().filter(|(idx, _)| idx % folds != fold).map(|(_, e)| (*e).clone()).collect();
        let nlu =
            berth_nlu::Nlu::train(&data, berth_nlu::TrainOptions { tagger_epochs: 0, ..options() }).expect("trains");
        for example in all.iter().enumerate().filter(|(idx, _)| idx % folds == fold).map(|(_, e)| e) {
            let analysis = nlu.analyse(&example.text, &example.tokens);
            errors += usize::from(nlu.intents()[analysis.intent] != example.intent);
        }
    }
    println!(
        "{dir}: {folds}-fold cross-validation over train and valid: {errors} intent errors in {} ({:.2}%)",
        all.len(),
        100.0 * (all.len() - errors) as f64 / all.len() as f64
    );
}
