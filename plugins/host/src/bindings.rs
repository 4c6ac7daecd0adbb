//! Host bindings for the three worlds. The shared imports (log, config, clock, http) are
//! generated once and reused, so one `PluginState` implements them for every world.

pub mod sensor {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sensor-decoder",
    });
}

pub mod payment {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "payment-provider",
        additional_derives: [PartialEq],
        with: {
            "berth:plugin/log": crate::bindings::sensor::berth::plugin::log,
            "berth:plugin/config": crate::bindings::sensor::berth::plugin::config,
            "berth:plugin/clock": crate::bindings::sensor::berth::plugin::clock,
        },
    });
}

pub mod chat {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "chat-channel",
        additional_derives: [PartialEq],
        with: {
            "berth:plugin/log": crate::bindings::sensor::berth::plugin::log,
            "berth:plugin/config": crate::bindings::sensor::berth::plugin::config,
            "berth:plugin/clock": crate::bindings::sensor::berth::plugin::clock,
            "berth:plugin/http": crate::bindings::payment::berth::plugin::http,
        },
    });
}
