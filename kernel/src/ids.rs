//! Typed identifiers. Every id is a UUIDv7 so that ids sort by creation time, which gives cursor
//! pagination a stable order without a separate sequence.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Parses the canonical hyphenated or simple UUID form.
            pub fn parse(text: &str) -> Result<Self, uuid::Error> {
                Uuid::parse_str(text).map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

id_type!(
    /// A tenant: the company that runs sites.
    OperatorId
);
id_type!(
    /// An off-street lot or garage, or an on-street zone.
    SiteId
);
id_type!(
    /// One parking space inside a site.
    SpaceId
);
id_type!(
    /// A sensor (or other field device) registered by an operator.
    DeviceId
);
id_type!(
    /// A driver account, platform-wide.
    DriverId
);
id_type!(
    /// A vehicle that belongs to a driver.
    VehicleId
);
id_type!(
    /// An API key (platform admin, operator or integration).
    ApiKeyId
);
id_type!(
    /// An operator's rule set (pricing and policies), for a site or the whole operator.
    RuleSetId
);
id_type!(
    /// A price quote: what a stay costs under the rules in force, valid for a while.
    QuoteId
);
id_type!(
    /// A driver's booking of a space for a window.
    BookingId
);
id_type!(
    /// A driver's conversation with the bot on one chat channel.
    ConversationId
);
id_type!(
    /// One chat message, in or out.
    MessageId
);
id_type!(
    /// One payment of a booking (the booking itself, an extension, an overstay).
    PaymentId
);
id_type!(
    /// A provider call waiting in the outbox.
    PaymentCommandId
);
id_type!(
    /// One line of a booking's receipt: a charge or a refund.
    ReceiptLineId
);
