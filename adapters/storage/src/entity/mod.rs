//! SeaORM entities, one module per table. Rows are plain columns; converting to and from kernel
//! types happens in `convert.rs` so that the schema can change without touching the kernel.

pub mod api_key;
pub mod booking;
pub mod chat_message;
pub mod conversation;
pub mod device;
pub mod device_health;
pub mod driver;
pub mod operator;
pub mod payment;
pub mod payment_command;
pub mod payment_webhook;
pub mod quote;
pub mod receipt_line;
pub mod rule_activation;
pub mod rule_set;
pub mod rule_version;
pub mod site;
pub mod space;
pub mod space_event;
pub mod space_live;
pub mod vehicle;
