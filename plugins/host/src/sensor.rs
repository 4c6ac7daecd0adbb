//! Sensor-decoder plugins: compiled once (`InstancePre`), instantiated into a small pool of
//! stores that are reused across calls and discarded after any fault.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::exports::berth::plugin::decoder as wit;
use crate::{EPOCH_TICK, Limits, PluginError, PluginHost, PluginState, SensorDecoder, SensorDecoderPre, truncate};

pub use wit::{MessageKind, Occupancy, Reading};

/// One uplink for a decoder.
#[derive(Debug, Clone)]
pub struct Uplink {
    pub device_id: String,
    pub model: String,
    pub f_port: u8,
    pub payload: Vec<u8>,
    pub received_at_ms: u64,
}

/// A decoding: the normalised reading and the vendor's object.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub reading: Reading,
    pub object: serde_json::Value,
}

struct Instance {
    store: Store<PluginState>,
    bindings: SensorDecoder,
}

/// A loaded sensor-decoder plugin. Cheap to share; calls may run concurrently.
pub struct SensorPlugin {
    id: Arc<str>,
    limits: Limits,
    config: Arc<BTreeMap<String, String>>,
    pre: SensorDecoderPre<PluginState>,
    idle: Mutex<Vec<Instance>>,
    consecutive_faults: AtomicU32,
    total_faults: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl SensorPlugin {
    /// Compiles and links a component. Fails if it does not implement the `sensor-decoder` world.
    pub fn load(
        host: &PluginHost,
        id: &str,
        wasm: &[u8],
        limits: Limits,
        config: BTreeMap<String, String>,
    ) -> Result<Self, PluginError> {
        let component = Component::new(host.engine(), wasm).map_err(|e| PluginError::Load(format!("{e:#}")))?;
        Self::from_component(host, id, &component, limits, config)
    }

    pub fn from_component(
        host: &PluginHost,
        id: &str,
        component: &Component,
        limits: Limits,
        config: BTreeMap<String, String>,
    ) -> Result<Self, PluginError> {
        let mut linker: Linker<PluginState> = Linker::new(host.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| PluginError::Load(format!("{e:#}")))?;
        SensorDecoder::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Load(format!("{e:#}")))?;
        let instance_pre = linker.instantiate_pre(component).map_err(|e| PluginError::Load(format!("{e:#}")))?;
        let pre = SensorDecoderPre::new(instance_pre)
            .map_err(|e| PluginError::Load(format!("not a sensor-decoder component: {e:#}")))?;
        Ok(Self {
            id: Arc::from(id),
            limits,
            config: Arc::new(config),
            pre,
            idle: Mutex::new(Vec::new()),
            consecutive_faults: AtomicU32::new(0),
            total_faults: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn is_quarantined(&self) -> bool {
        self.consecutive_faults.load(Ordering::Relaxed) >= self.limits.max_consecutive_faults
    }

    pub fn total_faults(&self) -> u64 {
        self.total_faults.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("invariant: last_error lock is never poisoned").clone()
    }

    fn instantiate(&self) -> Result<Instance, PluginError> {
        let mut store =
            Store::new(self.pre.engine(), PluginState::new(self.id.clone(), self.config.clone(), &self.limits));
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        let bindings = self.pre.instantiate(&mut store).map_err(|e| self.classify(e))?;
        Ok(Instance { store, bindings })
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.call_timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
    }

    /// Decodes one uplink. A fault fails this call only; the instance that faulted is dropped.
    pub fn decode(&self, uplink: &Uplink) -> Result<Decoded, PluginError> {
        if self.is_quarantined() {
            return Err(PluginError::Quarantined(self.consecutive_faults.load(Ordering::Relaxed)));
        }
        let result = self.call(uplink);
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

    fn call(&self, uplink: &Uplink) -> Result<Decoded, PluginError> {
        let pooled = self.idle.lock().expect("invariant: pool lock is never poisoned").pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => self.instantiate()?,
        };
        instance.store.data_mut().reset_call_budget();
        instance.store.set_epoch_deadline(self.deadline_ticks());
        let input = wit::Uplink {
            device_id: uplink.device_id.clone(),
            model: uplink.model.clone(),
            f_port: uplink.f_port,
            payload: uplink.payload.clone(),
            received_at_ms: uplink.received_at_ms,
        };
        let outcome = instance.bindings.berth_plugin_decoder().call_decode(&mut instance.store, &input);
        let answer = match outcome {
            Ok(answer) => answer,
            // The instance's state is unknown after a trap: drop it.
            Err(error) => return Err(self.classify(error)),
        };
        let result = match answer {
            Ok(decoded) => self.validate(decoded),
            Err(message) => Err(PluginError::Decode(truncate(message, 1024))),
        };
        if !matches!(&result, Err(error) if error.is_fault()) {
            self.idle.lock().expect("invariant: pool lock is never poisoned").push(instance);
        }
        result
    }

    fn validate(&self, decoded: wit::Decoded) -> Result<Decoded, PluginError> {
        if decoded.object_json.len() > self.limits.max_output_bytes {
            return Err(PluginError::Malformed(format!(
                "decoded object is {} bytes; the limit is {}",
                decoded.object_json.len(),
                self.limits.max_output_bytes
            )));
        }
        let object: serde_json::Value = serde_json::from_str(&decoded.object_json)
            .map_err(|e| PluginError::Malformed(format!("object-json is not JSON: {e}")))?;
        if !object.is_object() {
            return Err(PluginError::Malformed("object-json must be a JSON object".into()));
        }
        let mut reading = decoded.reading;
        if let Some(celsius) = reading.temperature_c {
            if !celsius.is_finite() {
                return Err(PluginError::Malformed(format!("temperature {celsius} is not a number")));
            }
            // A finite but impossible value is the sensor's problem, not the plugin's: the
            // vendor object keeps it, the normalised reading does not.
            if !(PLAUSIBLE_CELSIUS).contains(&celsius) {
                reading.temperature_c = None;
            }
        }
        Ok(Decoded { reading, object })
    }

    fn classify(&self, error: wasmtime::Error) -> PluginError {
        if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            return PluginError::Timeout(self.limits.call_timeout.as_millis() as u64);
        }
        let message = format!("{error:#}");
        if message.contains("forcing trap when growing memory")
            || message.contains("memory") && message.contains("limit")
        {
            return PluginError::MemoryLimit(self.limits.memory_bytes);
        }
        PluginError::Trap(truncate(message, 1024))
    }
}

/// Temperatures a parking sensor can report; anything else is a sensor fault.
const PLAUSIBLE_CELSIUS: std::ops::RangeInclusive<f64> = -60.0..=90.0;
