//! Trains on a benchmark's train split and prints intent accuracy and slot F1 on its test split:
//! `cargo run --release -p berth-nlu --example bench -- ../shared/nlu-bench/snips` (`BENCH_SPLIT=valid`
//! reports on the validation split, for tuning; `BENCH_ERRORS=1` lists wrong intents with the
//! top three and their confidences, `BENCH_TABLES=1` prints the full report; `BENCH_C=8` trains
//! the intent SVM with another C).

fn main() {
    for dir in std::env::args().skip(1) {
        let (train, mut test) = berth_nlu::data::load_dir(std::path::Path::new(&dir)).expect("benchmark data");
        // `BENCH_SPLIT=valid` reports on the validation split (for tuning) instead of test.
        if let Ok(split) = std::env::var("BENCH_SPLIT") {
            let text =
                std::fs::read_to_string(std::path::Path::new(&dir).join(format!("{split}.jsonl"))).expect("split");
            test = berth_nlu::data::TrainingData::from_bench_jsonl(&text).expect("split parses");
        }
        let started = std::time::Instant::now();
        let mut options = berth_nlu::TrainOptions::default();
        if let Ok(c) = std::env::var("BENCH_C") {
            match c.parse::<f64>() {
                Ok(c) if c.is_finite() && c > 0.0 => options.svm_c = c,
                _ => panic!("BENCH_C must be a positive number, not {c:?}"),
            }
        }
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
