//! Reminders: a driver who talks to us on a chat channel hears about a confirmed booking shortly
//! before it starts, in the conversation they last used (on WhatsApp outside the 24-hour
//! window, as the channel's template). Each booking is reminded once, whichever node and
//! however many passes: the message is stored under a key of its own.

use chrono::Duration;

use crate::service::now;
use crate::{Kernel, KernelResult};

impl Kernel {
    /// Reminds the drivers of confirmed bookings starting within `lead`; answers how many
    /// reminders were stored (each is sent through its channel; one the channel refused stays in
    /// the conversation and is logged, not sent again).
    pub async fn send_booking_reminders(&self, lead: Duration, limit: u32) -> KernelResult<u32> {
        let at = now();
        let mut sent = 0;
        for booking in self.store().list_bookings_starting(at, at + lead, limit).await? {
            let conversations = self.store().list_conversations(booking.driver_id).await?;
            let key = format!("reminder:{}", booking.id);
            // Once per booking, even when the driver has since moved to another channel.
            let mut reminded = false;
            for conversation in &conversations {
                reminded |= self.store().message_key_exists(conversation.id, &key).await?;
            }
            let Some(conversation) = conversations.into_iter().max_by_key(|conversation| conversation.updated_at)
            else {
                continue;
            };
            if reminded {
                continue;
            }
            let body = self.reminder_body(&booking, &conversation.timezone).await;
            if let Some((_, delivered)) = self.post_to_conversation(&conversation, body, Some(key)).await? {
                sent += 1;
                if delivered.is_ok() {
                    metrics::counter!("berth_chat_reminders_total", "channel" => conversation.channel.clone())
                        .increment(1);
                }
            }
        }
        Ok(sent)
    }
}
