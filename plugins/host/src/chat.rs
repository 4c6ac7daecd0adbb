//! Chat-channel plugins: verify and parse an inbound webhook, render and send a message.

use std::collections::BTreeMap;

use wasmtime::component::Component;

use crate::bindings::chat::exports::berth::plugin::channel as wit;
use crate::bindings::chat::{ChatChannel, ChatChannelPre};
use crate::http::HttpPolicy;
use crate::runner::{self, Health, Runner};
use crate::{Limits, PluginError, PluginHost, PluginState};

pub use wit::{Button, ChannelError, InboundMessage, OutboundMessage, Webhook};

/// A loaded chat-channel plugin.
pub struct ChatPlugin {
    runner: Runner<ChatChannel>,
}

/// Most messages one webhook may carry.
const MAX_MESSAGES_PER_WEBHOOK: usize = 100;

impl ChatPlugin {
    pub fn load(
        host: &PluginHost,
        id: &str,
        wasm: &[u8],
        limits: Limits,
        config: BTreeMap<String, String>,
        http: HttpPolicy,
    ) -> Result<Self, PluginError> {
        Self::from_component(host, id, &runner::component(host, wasm)?, limits, config, http)
    }

    pub fn from_component(
        host: &PluginHost,
        id: &str,
        component: &Component,
        limits: Limits,
        config: BTreeMap<String, String>,
        http: HttpPolicy,
    ) -> Result<Self, PluginError> {
        let runner = runner::world_runner!(
            host,
            id,
            component,
            limits,
            config,
            Some(http),
            ChatChannel,
            ChatChannelPre<PluginState>,
            "chat-channel"
        );
        Ok(Self { runner })
    }

    pub fn health(&self) -> Health {
        self.runner.health()
    }

    /// The messages in an inbound webhook, or the channel's refusal (a bad signature, say).
    pub fn verify_and_parse(
        &self,
        webhook: &Webhook,
    ) -> Result<Result<Vec<InboundMessage>, ChannelError>, PluginError> {
        self.runner.call(|bindings, store| {
            let answer = bindings.berth_plugin_channel().call_verify_and_parse(store, webhook)?;
            if let Ok(messages) = &answer {
                if messages.len() > MAX_MESSAGES_PER_WEBHOOK {
                    return Ok(Err(PluginError::Malformed(format!(
                        "{} messages from one webhook; the limit is {MAX_MESSAGES_PER_WEBHOOK}",
                        messages.len()
                    ))));
                }
                let n_bytes: usize = messages.iter().map(|m| m.text.as_ref().map_or(0, String::len)).sum();
                if let Err(error) = self.runner.check_output_size("message text", n_bytes) {
                    return Ok(Err(error));
                }
            }
            Ok(Ok(answer))
        })
    }

    /// Sends a message; returns the channel's message id.
    pub fn send(&self, message: &OutboundMessage) -> Result<Result<String, ChannelError>, PluginError> {
        self.runner.call(|bindings, store| Ok(Ok(bindings.berth_plugin_channel().call_send(store, message)?)))
    }
}
