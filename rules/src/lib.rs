//! berth's rules engine: operators' pricing and policy scripts in Rhai, sandboxed.
//!
//! Every limit Rhai has is set (operations, call depth, expression depth, string, array and map
//! sizes, functions), plus a wall-clock deadline checked from `on_progress`. There is no I/O, no
//! clock, no `eval` and no `import`: everything a rule knows comes in its context. A script is
//! compiled once per version and its AST shared by concurrent evaluations.
//!
//! Deliberately absent: deciding which version applies and checking answers against guardrails.
//! That is the kernel's (`berth_kernel::rules`); this crate only compiles and runs scripts.

mod answer;
mod context;
mod helpers;
pub mod project;

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_kernel::rules::{
    CompiledRules, Decision, EntryPoint, Evaluation, LineItem, LineKind, PriceAnswer, RuleAnswer, RuleContext,
    RuleError, RuleErrorKind, RulesEngine, TraceStep,
};
use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Position, Scope};

/// The budgets every evaluation runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rhai operations per evaluation (a realistic tariff needs a few thousand).
    pub max_operations: u64,
    /// Wall-clock budget per evaluation.
    pub timeout: Duration,
    pub max_call_depth: usize,
    pub max_expression_depth: usize,
    pub max_string_bytes: usize,
    pub max_array_len: usize,
    pub max_map_len: usize,
    pub max_functions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 500_000,
            timeout: Duration::from_millis(50),
            max_call_depth: 24,
            max_expression_depth: 64,
            max_string_bytes: 4 * 1024,
            max_array_len: 1_000,
            max_map_len: 200,
            max_functions: 100,
        }
    }
}

/// Most trace lines one evaluation keeps (a loop that explains itself cannot grow it further).
const MAX_TRACE_STEPS: usize = 200;

thread_local! {
    /// The evaluation running on this thread: its deadline and what it explained so far. Rhai
    /// evaluates synchronously, so one slot per thread is exact.
    static RUN: RefCell<Run> = const { RefCell::new(Run { deadline: None, trace: Vec::new() }) };
}

struct Run {
    deadline: Option<Instant>,
    trace: Vec<TraceStep>,
}

/// Whether the evaluation on this thread ran past its deadline (for helpers that loop).
pub(crate) fn past_deadline() -> bool {
    RUN.with(|run| run.borrow().deadline.is_some_and(|deadline| Instant::now() >= deadline))
}

pub(crate) fn trace(position: Position, message: String) {
    RUN.with(|run| {
        let mut run = run.borrow_mut();
        if run.trace.len() < MAX_TRACE_STEPS {
            run.trace.push(TraceStep { line: position.line().map(|line| line as u32), message });
        }
    });
}

/// The Rhai engine with berth's limits and helpers; compiles rule sources.
pub struct RhaiRules {
    engine: Arc<Engine>,
    timeout: Duration,
}

impl RhaiRules {
    pub fn new(limits: Limits) -> Self {
        let mut engine = Engine::new();
        engine.set_max_operations(limits.max_operations);
        engine.set_max_call_levels(limits.max_call_depth);
        engine.set_max_expr_depths(limits.max_expression_depth, limits.max_expression_depth);
        engine.set_max_string_size(limits.max_string_bytes);
        engine.set_max_array_size(limits.max_array_len);
        engine.set_max_map_size(limits.max_map_len);
        engine.set_max_functions(limits.max_functions);
        engine.set_max_modules(0);
        engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
        engine.set_strict_variables(true);
        engine.disable_symbol("eval");
        engine.on_print(|text| trace(Position::NONE, text.to_owned()));
        engine.on_debug(|text, _, position| trace(position, text.to_owned()));
        engine.on_progress(|operations| {
            if operations % 1024 != 0 {
                return None;
            }
            past_deadline().then(|| Dynamic::from("timeout"))
        });
        helpers::register(&mut engine);
        Self { engine: Arc::new(engine), timeout: limits.timeout }
    }

    /// Compiles `source` into a shareable version, checking its entry points' shapes.
    pub fn compile_rules(&self, source: &str) -> Result<Arc<Script>, RuleError> {
        if source.len() > berth_kernel::rules::MAX_SOURCE_BYTES {
            return Err(RuleError::new(
                RuleErrorKind::Compile,
                format!("the script is {} bytes; at most {}", source.len(), berth_kernel::rules::MAX_SOURCE_BYTES),
            ));
        }
        let ast = self.engine.compile(source).map_err(|error| {
            let position = error.position();
            with_position(RuleError::new(RuleErrorKind::Compile, error.err_type().to_string()), position)
        })?;
        let mut defined = Vec::new();
        for function in ast.iter_functions() {
            let Some(entry) = EntryPoint::parse(function.name) else { continue };
            if function.params.len() != 1 {
                return Err(RuleError::new(
                    RuleErrorKind::Compile,
                    format!(
                        "{}() must take exactly one parameter, the context: fn {}(ctx)",
                        function.name, function.name
                    ),
                ));
            }
            defined.push(entry);
        }
        Ok(Arc::new(Script { engine: self.engine.clone(), ast, defined, timeout: self.timeout }))
    }
}

impl RulesEngine for RhaiRules {
    fn compile(&self, source: &str) -> Result<Arc<dyn CompiledRules>, RuleError> {
        self.compile_rules(source).map(|script| script as Arc<dyn CompiledRules>)
    }
}

/// One compiled rule version.
pub struct Script {
    engine: Arc<Engine>,
    ast: AST,
    defined: Vec<EntryPoint>,
    timeout: Duration,
}

impl Script {
    fn call(&self, entry: EntryPoint, argument: Dynamic) -> Result<(Dynamic, Vec<TraceStep>), RuleError> {
        RUN.with(|run| {
            let mut run = run.borrow_mut();
            run.deadline = Some(Instant::now() + self.timeout);
            run.trace.clear();
        });
        let options = CallFnOptions::new().eval_ast(true).rewind_scope(true);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.engine.call_fn_with_options::<Dynamic>(
                options,
                &mut Scope::new(),
                &self.ast,
                entry.name(),
                (argument,),
            )
        }));
        let trace = RUN.with(|run| {
            let mut run = run.borrow_mut();
            run.deadline = None;
            std::mem::take(&mut run.trace)
        });
        match outcome {
            Ok(Ok(value)) => Ok((value, trace)),
            Ok(Err(error)) => Err(runtime_error(*error)),
            Err(_) => Err(RuleError::new(RuleErrorKind::Runtime, "the rule engine failed on this script")),
        }
    }
}

impl CompiledRules for Script {
    fn defines(&self, entry: EntryPoint) -> bool {
        self.defined.contains(&entry)
    }

    fn evaluate(&self, entry: EntryPoint, ctx: &RuleContext) -> Result<Evaluation, RuleError> {
        self.evaluate_each(&[entry], ctx).pop().unwrap_or_else(|| Ok(default_answer(entry)))
    }

    /// The context is turned into its script form once for all the entry points.
    fn evaluate_each(&self, entries: &[EntryPoint], ctx: &RuleContext) -> Vec<Result<Evaluation, RuleError>> {
        let mut argument = None;
        entries
            .iter()
            .map(|&entry| {
                if !self.defines(entry) {
                    return Ok(default_answer(entry));
                }
                let argument = argument.get_or_insert_with(|| context::to_dynamic(ctx)).clone();
                self.evaluate_with(entry, argument)
            })
            .collect()
    }
}

impl Script {
    fn evaluate_with(&self, entry: EntryPoint, argument: Dynamic) -> Result<Evaluation, RuleError> {
        let (value, trace) = self.call(entry, argument)?;
        let answer = if entry.answers_money() {
            RuleAnswer::Money(answer::price(entry, value)?)
        } else if entry == EntryPoint::Adjust {
            RuleAnswer::Params(answer::params(value)?)
        } else {
            let (decision, price) = answer::decision(entry, value)?;
            RuleAnswer::Decision { decision, price }
        };
        Ok(Evaluation { answer, trace, defaulted: false })
    }
}

/// What an entry point a script does not define answers. Extension and overstay defaults need
/// `price` over another window, which the caller (bookings) computes; here they are neutral.
fn default_answer(entry: EntryPoint) -> Evaluation {
    let note = |message: &str| vec![TraceStep { line: None, message: message.to_owned() }];
    let (answer, trace) = match entry {
        EntryPoint::Price => (
            RuleAnswer::Money(PriceAnswer {
                items: vec![LineItem { kind: LineKind::Base, label: "Free".into(), amount_minor: 0, line: None }],
                ..PriceAnswer::default()
            }),
            note("price() is not defined: parking is free"),
        ),
        EntryPoint::CancellationFee | EntryPoint::OverstayFee => {
            (RuleAnswer::Money(PriceAnswer::default()), note(&format!("{}() is not defined: no charge", entry.name())))
        }
        EntryPoint::Adjust => (RuleAnswer::Params(None), note("adjust() is not defined: no scheduled adjustment")),
        EntryPoint::AllowBooking | EntryPoint::Extension => (
            RuleAnswer::Decision { decision: Decision::allow(), price: None },
            note(&format!("{}() is not defined: allowed", entry.name())),
        ),
    };
    Evaluation { answer, trace, defaulted: true }
}

fn with_position(mut error: RuleError, position: Position) -> RuleError {
    error.line = position.line().map(|line| line as u32);
    error.column = position.position().map(|column| column as u32);
    error
}

/// Classifies a Rhai error and finds the innermost script position (an error inside a called
/// function is wrapped once per call level).
fn runtime_error(error: EvalAltResult) -> RuleError {
    let mut error = error;
    while let EvalAltResult::ErrorInFunctionCall(_, _, inner, _) = error {
        error = *inner;
    }
    let position = error.position();
    let kind = match &error {
        EvalAltResult::ErrorTerminated(..) => RuleErrorKind::Timeout,
        EvalAltResult::ErrorTooManyOperations(..)
        | EvalAltResult::ErrorStackOverflow(..)
        | EvalAltResult::ErrorDataTooLarge(..)
        | EvalAltResult::ErrorTooManyModules(..) => RuleErrorKind::Limit,
        _ => RuleErrorKind::Runtime,
    };
    let message = match &error {
        EvalAltResult::ErrorTerminated(..) => "the rule ran past its time budget".to_owned(),
        EvalAltResult::ErrorTooManyOperations(..) => {
            "the rule ran too many operations (a loop that never ends?)".to_owned()
        }
        EvalAltResult::ErrorStackOverflow(..) => "the rule calls functions too deeply".to_owned(),
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        other => strip_position(&other.to_string()),
    };
    with_position(RuleError::new(kind, message), position)
}

/// Rhai appends ` (line L, position C)` to messages; the position is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" (line ") {
        Some(at) if message.ends_with(')') => message[..at].to_owned(),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests;
