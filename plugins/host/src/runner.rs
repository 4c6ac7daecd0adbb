//! What every world shares: a pool of reusable instances (stores are discarded after any
//! fault), per-call deadlines and budgets, fault classification, health counters and
//! quarantine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::http::HttpPolicy;
use crate::{EPOCH_TICK, Limits, MemoryLimitHit, PluginError, PluginHost, PluginState, truncate};

/// A plugin's health, as the registry and the API show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub calls: u64,
    pub faults_total: u64,
    pub consecutive_faults: u32,
    pub quarantined: bool,
    pub last_error: Option<String>,
    pub peak_memory_bytes: u64,
}

type Instantiate<B> = Box<dyn Fn(&mut Store<PluginState>) -> wasmtime::Result<B> + Send + Sync>;

struct Instance<B> {
    store: Store<PluginState>,
    bindings: B,
}

pub(crate) struct Runner<B> {
    id: Arc<str>,
    pub(crate) limits: Limits,
    config: Arc<BTreeMap<String, String>>,
    http: Option<Arc<HttpPolicy>>,
    engine: wasmtime::Engine,
    instantiate: Instantiate<B>,
    idle: Mutex<Vec<Instance<B>>>,
    calls: AtomicU64,
    consecutive_faults: AtomicU32,
    total_faults: AtomicU64,
    peak_memory: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A linker with WASI (nothing granted) and the world's imports, via `add`.
pub(crate) fn linker(
    host: &PluginHost,
    add: impl FnOnce(&mut Linker<PluginState>) -> wasmtime::Result<()>,
) -> Result<Linker<PluginState>, PluginError> {
    let mut linker: Linker<PluginState> = Linker::new(host.engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| PluginError::Load(format!("{e:#}")))?;
    add(&mut linker).map_err(|e| PluginError::Load(format!("{e:#}")))?;
    Ok(linker)
}

/// Links a component against one world (its generated `World` and `WorldPre` types) and returns
/// the runner for it. A macro because the generated types share no trait.
macro_rules! world_runner {
    ($host:expr, $id:expr, $component:expr, $limits:expr, $config:expr, $http:expr, $world:ty, $pre:ty, $name:literal) => {{
        let linker = $crate::runner::linker($host, |linker| {
            <$world>::add_to_linker::<_, $crate::runner::SelfHost>(linker, $crate::runner::state)
        })?;
        let instance_pre = $crate::runner::instantiate_pre(&linker, $component, $name)?;
        let pre = <$pre>::new(instance_pre)
            .map_err(|e| $crate::PluginError::Load(format!(concat!("not a ", $name, " component: {:#}"), e)))?;
        let instantiate = Box::new(move |store: &mut wasmtime::Store<_>| pre.instantiate(store));
        $crate::runner::Runner::new($host, $id, $limits, $config, $http, instantiate)
    }};
}
pub(crate) use world_runner;

/// Links a component against a world's imports; the error says which world was expected.
pub(crate) fn instantiate_pre(
    linker: &Linker<PluginState>,
    component: &Component,
    world: &str,
) -> Result<wasmtime::component::InstancePre<PluginState>, PluginError> {
    linker.instantiate_pre(component).map_err(|e| {
        PluginError::Load(format!("not a {world} component (its imports do not match the {world} world): {e:#}"))
    })
}

/// The `HasSelf` projection every generated `add_to_linker` wants.
pub(crate) fn state(state: &mut PluginState) -> &mut PluginState {
    state
}

pub(crate) type SelfHost = HasSelf<PluginState>;

impl<B> Runner<B> {
    pub(crate) fn new(
        host: &PluginHost,
        id: &str,
        limits: Limits,
        config: BTreeMap<String, String>,
        http: Option<HttpPolicy>,
        instantiate: Instantiate<B>,
    ) -> Self {
        Self {
            id: Arc::from(id),
            limits,
            config: Arc::new(config),
            http: http.map(Arc::new),
            engine: host.engine().clone(),
            instantiate,
            idle: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            consecutive_faults: AtomicU32::new(0),
            total_faults: AtomicU64::new(0),
            peak_memory: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn is_quarantined(&self) -> bool {
        self.consecutive_faults.load(Ordering::Relaxed) >= self.limits.max_consecutive_faults
    }

    pub(crate) fn health(&self) -> Health {
        Health {
            calls: self.calls.load(Ordering::Relaxed),
            faults_total: self.total_faults.load(Ordering::Relaxed),
            consecutive_faults: self.consecutive_faults.load(Ordering::Relaxed),
            quarantined: self.is_quarantined(),
            last_error: self.last_error.lock().expect("invariant: last_error lock is never poisoned").clone(),
            peak_memory_bytes: self.peak_memory.load(Ordering::Relaxed),
        }
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.call_timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
    }

    fn new_instance(&self) -> Result<Instance<B>, PluginError> {
        let state = PluginState::new(self.id.clone(), self.config.clone(), self.http.clone(), &self.limits);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(self.deadline_ticks());
        let bindings = (self.instantiate)(&mut store).map_err(|e| self.classify(e))?;
        Ok(Instance { store, bindings })
    }

    /// Runs one call on a pooled instance. `call` returns the plugin's answer, already
    /// validated: an `Err` that is a fault discards the instance and counts towards quarantine.
    pub(crate) fn call<R>(
        &self,
        call: impl FnOnce(&B, &mut Store<PluginState>) -> wasmtime::Result<Result<R, PluginError>>,
    ) -> Result<R, PluginError> {
        if self.is_quarantined() {
            return Err(PluginError::Quarantined(self.consecutive_faults.load(Ordering::Relaxed)));
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.call_on_instance(call);
        match &result {
            Err(error) if error.is_fault() => {
                self.consecutive_faults.fetch_add(1, Ordering::Relaxed);
                self.total_faults.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().expect("invariant: last_error lock is never poisoned") =
                    Some(error.to_string());
            }
            _ => self.consecutive_faults.store(0, Ordering::Relaxed),
        }
        result
    }

    fn call_on_instance<R>(
        &self,
        call: impl FnOnce(&B, &mut Store<PluginState>) -> wasmtime::Result<Result<R, PluginError>>,
    ) -> Result<R, PluginError> {
        let pooled = self.idle.lock().expect("invariant: pool lock is never poisoned").pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => self.new_instance()?,
        };
        instance.store.data_mut().reset_call_budget();
        instance.store.set_epoch_deadline(self.deadline_ticks());
        // A host function that panics (wasmtime-wasi's blocking shims do when a call is made on an
        // async worker thread) unwinds through the guest back to here: this call fails, the
        // instance is dropped, the process carries on.
        let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            call(&instance.bindings, &mut instance.store)
        })) {
            Ok(outcome) => outcome,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(plugin = &*self.id, %message, "a host function panicked during a plugin call");
                return Err(PluginError::Trap(truncate(format!("host function panicked: {message}"), 1024)));
            }
        };
        self.peak_memory.fetch_max(instance.store.data().limiter.memory_peak as u64, Ordering::Relaxed);
        let result = match outcome {
            Ok(answer) => answer,
            // The instance's state is unknown after a trap: drop it.
            Err(error) => return Err(self.classify(error)),
        };
        if !matches!(&result, Err(error) if error.is_fault()) {
            self.idle.lock().expect("invariant: pool lock is never poisoned").push(instance);
        }
        result
    }

    fn classify(&self, error: wasmtime::Error) -> PluginError {
        if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            return PluginError::Timeout(self.limits.call_timeout.as_millis() as u64);
        }
        if error.downcast_ref::<MemoryLimitHit>().is_some() {
            return PluginError::MemoryLimit(self.limits.memory_bytes);
        }
        PluginError::Trap(truncate(format!("{error:#}"), 1024))
    }

    /// A value of the plugin's configuration.
    pub(crate) fn config_value(&self, key: &str) -> Option<&str> {
        self.config.get(key).map(String::as_str)
    }

    /// Checks an output's size against the plugin's limit.
    pub(crate) fn check_output_size(&self, what: &str, n_bytes: usize) -> Result<(), PluginError> {
        if n_bytes > self.limits.max_output_bytes {
            return Err(PluginError::Malformed(format!(
                "{what} is {n_bytes} bytes; the limit is {}",
                self.limits.max_output_bytes
            )));
        }
        Ok(())
    }
}

/// Compiles (or loads from cache) and links a component for one world.
pub(crate) fn component(host: &PluginHost, wasm: &[u8]) -> Result<Component, PluginError> {
    host.compile(wasm).map(|(component, _)| component)
}
