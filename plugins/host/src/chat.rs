//! Chat-channel plugins: verify and parse an inbound webhook, render and send a message.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_kernel::chat as kernel;
use berth_kernel::conversation::MessageBody;
use chrono::{DateTime, Utc};

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

    /// The body to answer the channel's subscription check with, or its refusal.
    pub fn verify_subscription(&self, query: &[(String, String)]) -> Result<Result<String, ChannelError>, PluginError> {
        self.runner.call(|bindings, store| {
            let answer = bindings.berth_plugin_channel().call_verify_subscription(store, query)?;
            if let Ok(body) = &answer
                && let Err(error) = self.runner.check_output_size("subscription answer", body.len())
            {
                return Ok(Err(error));
            }
            Ok(Ok(answer))
        })
    }

    /// Sends a message; returns the channel's message id.
    pub fn send(&self, message: &OutboundMessage) -> Result<Result<String, ChannelError>, PluginError> {
        self.runner.call(|bindings, store| Ok(Ok(bindings.berth_plugin_channel().call_send(store, message)?)))
    }

    /// A value of the plugin's configuration (`timezone`, say).
    pub fn config_value(&self, key: &str) -> Option<&str> {
        self.runner.config_value(key)
    }
}

/// A chat-channel plugin as the kernel's [`kernel::ChatChannel`]. Calls run on tokio's blocking
/// pool (wasmtime runs synchronously, and the HTTP import blocks); a fault of the plugin (a
/// trap, its deadline, its memory limit, quarantine) is [`kernel::ChannelError::Unavailable`].
pub struct PluginChannel {
    name: String,
    plugin: Arc<ChatPlugin>,
    timezone: Option<String>,
}

impl std::fmt::Debug for PluginChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginChannel").field("name", &self.name).finish_non_exhaustive()
    }
}

impl PluginChannel {
    /// `name` is the plugin's id: the channel's name in webhook URLs and conversations. The
    /// plugin's `timezone` setting, when it has one, is the channel's default timezone.
    pub fn new(name: impl Into<String>, plugin: Arc<ChatPlugin>) -> Self {
        let timezone = plugin.config_value("timezone").filter(|zone| !zone.is_empty()).map(str::to_owned);
        Self { name: name.into(), plugin, timezone }
    }

    async fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&ChatPlugin) -> Result<Result<T, ChannelError>, PluginError> + Send + 'static,
    ) -> Result<T, kernel::ChannelError> {
        let plugin = self.plugin.clone();
        let outcome = tokio::task::spawn_blocking(move || call(&plugin)).await.map_err(|join_error| {
            kernel::ChannelError::Unavailable(format!(
                "chat plugin {}: the call did not finish: {join_error}",
                self.name
            ))
        })?;
        match outcome {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(ChannelError::SignatureInvalid(reason))) => Err(kernel::ChannelError::Unauthenticated(reason)),
            Ok(Err(ChannelError::InvalidRequest(reason))) => Err(kernel::ChannelError::Malformed(reason)),
            Ok(Err(ChannelError::Unavailable(reason))) => Err(kernel::ChannelError::Unavailable(reason)),
            Err(fault) => {
                tracing::warn!(channel = %self.name, error = %fault, "chat plugin call faulted");
                Err(kernel::ChannelError::Unavailable(format!("chat plugin {}: {fault}", self.name)))
            }
        }
    }
}

#[async_trait::async_trait]
impl kernel::ChatChannel for PluginChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn default_timezone(&self) -> Option<&str> {
        self.timezone.as_deref()
    }

    async fn read_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<kernel::ChannelInbound>, kernel::ChannelError> {
        let webhook = Webhook { headers: headers.to_vec(), body: body.to_vec() };
        let messages = self.call(move |plugin| plugin.verify_and_parse(&webhook)).await?;
        Ok(messages
            .into_iter()
            .filter_map(|message| {
                // A pressed button says what its payload says; a message with nothing berth
                // reads (a sticker) is no message.
                let text = message.button_payload.or(message.text).unwrap_or_default();
                let location = message.location.map(|point| (point.lat, point.lon));
                if text.trim().is_empty() && location.is_none() {
                    tracing::debug!(channel = %self.name, "a message with neither text nor location; skipped");
                    return None;
                }
                Some(kernel::ChannelInbound {
                    external_user: message.chat_id,
                    message_id: message.message_id,
                    text,
                    location,
                    acknowledge: None,
                })
            })
            .collect())
    }

    async fn verify_subscription(&self, query: &[(String, String)]) -> Result<String, kernel::ChannelError> {
        let query = query.to_vec();
        self.call(move |plugin| plugin.verify_subscription(&query)).await
    }

    async fn send(
        &self,
        external_user: &str,
        body: &MessageBody,
        last_inbound: Option<DateTime<Utc>>,
    ) -> Result<(), kernel::ChannelError> {
        let mut buttons: Vec<Button> = body
            .choices
            .iter()
            .map(|choice| Button { label: choice.label.clone(), payload: Some(choice.reply.clone()), url: None })
            .collect();
        if let Some(link) = &body.link {
            buttons.push(Button { label: "Pay".into(), payload: None, url: Some(link.clone()) });
        }
        let message = OutboundMessage {
            chat_id: external_user.to_owned(),
            text: body.text.clone(),
            buttons,
            last_inbound_ms: last_inbound.and_then(|at| u64::try_from(at.timestamp_millis()).ok()),
        };
        self.call(move |plugin| plugin.send(&message)).await.map(|_| ())
    }
}
