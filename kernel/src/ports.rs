//! Ports: the traits adapters implement. One [`Store`] made of sub-traits, so a service asks for
//! exactly what it uses while the binary wires a single storage adapter.
//!
//! Tenancy is in the signatures: every operator-scoped method takes the caller's [`OperatorId`]
//! and must return `None` (or do nothing) for rows of any other operator.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::auth::{ApiKey, SecretHash};
use crate::conversation::{ChatMessage, Conversation};
use crate::device::Device;
use crate::driver::{Driver, Email, Vehicle};
use crate::error::StoreError;
use crate::ids::{
    ApiKeyId, BookingId, ConversationId, DeviceId, DriverId, MessageId, OperatorId, PaymentCommandId, PaymentId,
    QuoteId, RuleSetId, SiteId, SpaceId, VehicleId,
};
use crate::live::{DeviceHealth, SpaceEvent, SpaceLive};
use crate::operator::Operator;
use crate::page::{Page, PageRequest};
use crate::payment::{BookingChange, Payment, PaymentCommand, ReceiptLine};
use crate::pricing::Quote;
use crate::rules::{Activation, RuleSet, RuleVersion};
use crate::site::{Site, SiteKind};
use crate::space::{Space, SpaceState, SpaceStatus};
use crate::vehicle_type::VehicleType;

pub type StoreResult<T> = Result<T, StoreError>;

/// The live states every node shares (Redis, when several nodes run): each space's newest
/// committed state with its revision, so a node reading a space that another node changed
/// since starts from that node's state, not from its own older one. A cache in front of the
/// database, never the record: a miss or an error means reading the database.
#[async_trait]
pub trait SharedLiveStates: Send + Sync {
    /// The shared states of `spaces`, in the same order (`None`: not shared).
    async fn load(&self, spaces: &[SpaceId]) -> Result<Vec<Option<crate::live::Revised>>, String>;
    /// Shares committed states. A state replaces the shared one only if its revision is higher.
    async fn share(&self, states: &[(SpaceId, crate::live::Revised)]) -> Result<(), String>;
}

/// Live state: what sensors said, per space, and how devices are doing. Operator-scoped like
/// everything else.
#[async_trait]
pub trait LiveStore: Send + Sync {
    /// The devices these external ids name (ids naming none are left out), each with its
    /// space's site.
    async fn find_devices_by_external_ids(
        &self,
        operator: OperatorId,
        external_ids: &[String],
    ) -> StoreResult<Vec<(Device, Option<SiteId>)>>;
    async fn get_space_live(&self, operator: OperatorId, space: SpaceId) -> StoreResult<Option<SpaceLive>>;
    /// The live rows of these spaces (spaces never heard of have none).
    async fn list_space_live(&self, operator: OperatorId, spaces: &[SpaceId])
    -> StoreResult<Vec<(SpaceId, SpaceLive)>>;
    /// Every space of a site with its live state (default state when never heard).
    async fn list_site_live(&self, operator: OperatorId, site: SiteId) -> StoreResult<Vec<(Space, SpaceLive)>>;
    /// In one transaction: the live row, the history event if any, and the space's status
    /// columns when the shown state changed.
    async fn save_space_live(
        &self,
        operator: OperatorId,
        space: SpaceId,
        live: &SpaceLive,
        event: Option<&SpaceEvent>,
        shown: Option<SpaceState>,
    ) -> StoreResult<()>;
    /// Many uplinks' writes in one transaction: for each space its newest live row and status
    /// columns, every history event, for each device its newest health.
    async fn save_live_batch(&self, batch: &[crate::commit::LiveWrite]) -> StoreResult<()>;
    /// Work a store keeps out of [`LiveStore::save_live_batch`] (SQLite moves its recent
    /// history rows into their indexed table). The ingest writer calls it after each commit,
    /// once that commit's uplinks are answered and published, and again when asked: `Some(d)`
    /// means call again after `d` (at once when zero) unless a commit comes first, `None` not
    /// before the next commit. `busy`: other commits are waiting, so do only what is overdue. A
    /// store logs its own failures (the rows stay readable where they are). The default does
    /// nothing.
    async fn after_commit(&self, busy: bool) -> Option<std::time::Duration> {
        let _ = busy;
        None
    }
    async fn list_space_events(&self, operator: OperatorId, space: SpaceId, limit: u64)
    -> StoreResult<Vec<SpaceEvent>>;
    /// State changes of these spaces with `from <= at < to`, oldest first, at most `limit`.
    /// No such event has an id below `ids_from` ([`SpaceEvent::lowest_id_from`]), so a store
    /// reads each space's history from there on, not from its beginning.
    async fn list_events_between(
        &self,
        operator: OperatorId,
        spaces: &[SpaceId],
        ids_from: uuid::Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<Vec<SpaceEvent>>;
    /// The stored health of these devices (devices never stored have none).
    async fn list_device_health(
        &self,
        operator: OperatorId,
        devices: &[DeviceId],
    ) -> StoreResult<Vec<(DeviceId, DeviceHealth)>>;
    async fn save_device_health(
        &self,
        operator: OperatorId,
        device: DeviceId,
        health: &DeviceHealth,
    ) -> StoreResult<()>;
}

/// Bookings. Whoever implements this guarantees that no two live bookings of a space overlap.
#[async_trait]
pub trait BookingStore: Send + Sync {
    /// Inserts the booking unless a live booking of its space overlaps its window, in which case
    /// it is [`StoreError::Conflict`] with [`crate::booking::OVERLAP`]. Holds that ran out before
    /// `at` are expired first. A quote already used is a conflict too.
    /// The booking's first payment and its authorization command commit with it (the outbox).
    async fn insert_booking(
        &self,
        booking: &crate::booking::Booking,
        at: DateTime<Utc>,
        payments: &[Payment],
        commands: &[PaymentCommand],
    ) -> StoreResult<()>;
    /// Any booking: the kernel checks who may see it.
    async fn get_booking(&self, id: crate::ids::BookingId) -> StoreResult<Option<crate::booking::Booking>>;
    async fn list_bookings(
        &self,
        owner: crate::booking::BookingOwner,
        page: PageRequest,
    ) -> StoreResult<Page<crate::booking::Booking>>;
    /// Spaces of `sites` that a live booking holds for part of `start`..`end` (holds that ran
    /// out by `at` excluded), with their sites.
    async fn booked_spaces(
        &self,
        sites: &[SiteId],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<(SiteId, SpaceId)>>;
}

/// Payments, the outbox of provider calls, the webhook inbox and receipts.
#[async_trait]
pub trait PaymentStore: Send + Sync {
    /// Writes a [`BookingChange`] in one transaction. The booking must still have the version
    /// given, else [`StoreError::Conflict`] with [`crate::payment::STALE`]; a booking whose new
    /// window overlaps another live booking of its space is a conflict with
    /// [`crate::booking::OVERLAP`]; an inbox event seen before is a conflict with
    /// [`crate::payment::DUPLICATE_EVENT`].
    async fn save_booking_change(&self, change: &BookingChange) -> StoreResult<()>;
    async fn get_payment(&self, id: PaymentId) -> StoreResult<Option<Payment>>;
    async fn list_payments(&self, booking: BookingId) -> StoreResult<Vec<Payment>>;
    async fn find_payment_by_provider_ref(&self, provider: &str, provider_ref: &str) -> StoreResult<Option<Payment>>;
    /// Payments that hold or await money and were last updated before `quiet_before`.
    async fn list_payments_to_reconcile(&self, quiet_before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Payment>>;
    async fn list_payment_commands(&self, booking: BookingId) -> StoreResult<Vec<PaymentCommand>>;
    /// Takes up to `limit` pending commands due at `at`, oldest first, leasing each until
    /// `lease_until` (a command is taken by one caller only).
    async fn claim_payment_commands(
        &self,
        at: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<PaymentCommand>>;
    /// Takes one command if it is pending and due.
    async fn claim_payment_command(
        &self,
        id: PaymentCommandId,
        at: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Option<PaymentCommand>>;
    async fn webhook_seen(&self, provider: &str, event_id: &str) -> StoreResult<bool>;
    async fn list_receipt(&self, booking: BookingId) -> StoreResult<Vec<ReceiptLine>>;
    /// Bookings a clock must look at: holds run out by `at`, confirmed bookings whose arrival
    /// window opened, and active ones.
    /// Erases plates of bookings that ended (completed, cancelled, expired, no-show) before
    /// `ended_before`; returns how many.
    async fn forget_plates(&self, ended_before: DateTime<Utc>) -> StoreResult<u64>;
    /// Erases a driver's personal data in one transaction: vehicles deleted; plates, vehicles and
    /// payment-method tokens cleared from their bookings and payments (amounts, dates and
    /// receipts stay for the operators' books); the account itself deleted.
    async fn erase_driver(&self, driver: DriverId) -> StoreResult<()>;
    async fn list_bookings_in_play(&self, at: DateTime<Utc>, limit: u32) -> StoreResult<Vec<crate::booking::Booking>>;
    /// Confirmed bookings starting after `after` and at or before `until`, soonest first.
    async fn list_bookings_starting(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<crate::booking::Booking>>;
}

/// Rule sets, their versions and activations, and quotes.
#[async_trait]
pub trait RuleStore: Send + Sync {
    /// A second rule set for the same site (or a second operator-wide one) is a conflict.
    async fn insert_rule_set(&self, rule_set: &RuleSet) -> StoreResult<()>;
    async fn get_rule_set(&self, operator: OperatorId, id: RuleSetId) -> StoreResult<Option<RuleSet>>;
    async fn list_rule_sets(&self, operator: OperatorId, page: PageRequest) -> StoreResult<Page<RuleSet>>;
    /// Replaces name, policy, guardrails and holidays.
    async fn update_rule_set(&self, rule_set: &RuleSet) -> StoreResult<()>;
    /// The site's own rule set and the operator-wide one, whichever exist.
    async fn rule_sets_for_site(&self, operator: OperatorId, site: SiteId) -> StoreResult<Vec<RuleSet>>;
    /// A version number already taken is a conflict.
    async fn insert_rule_version(&self, operator: OperatorId, version: &RuleVersion) -> StoreResult<()>;
    async fn get_rule_version(
        &self,
        operator: OperatorId,
        id: RuleSetId,
        version: u32,
    ) -> StoreResult<Option<RuleVersion>>;
    async fn list_rule_versions(&self, operator: OperatorId, id: RuleSetId) -> StoreResult<Vec<RuleVersion>>;
    /// Deletes a version that is still a draft (published versions are never deleted).
    async fn delete_draft_version(&self, operator: OperatorId, id: RuleSetId, version: u32) -> StoreResult<()>;
    /// In one transaction: marks the draft published and records its activation. A version
    /// that is no longer a draft is a conflict.
    async fn publish_rule_version(
        &self,
        operator: OperatorId,
        id: RuleSetId,
        version: u32,
        activation: &Activation,
    ) -> StoreResult<()>;
    /// In one transaction: cancels activations scheduled after `activation.effective_from` and
    /// records `activation`.
    async fn insert_rollback(&self, operator: OperatorId, activation: &Activation) -> StoreResult<()>;
    async fn list_activations(&self, operator: OperatorId, id: RuleSetId) -> StoreResult<Vec<Activation>>;
    async fn insert_quote(&self, quote: &Quote) -> StoreResult<()>;
    /// Any operator's quote: the kernel checks who may see it.
    async fn get_quote(&self, id: QuoteId) -> StoreResult<Option<Quote>>;
    /// Quotes made with any version of the rule set since `since`, newest first.
    async fn list_quotes_for_rule_set(
        &self,
        operator: OperatorId,
        id: RuleSetId,
        since: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<Vec<Quote>>;
    /// The operator a site belongs to, for callers (drivers) who see every operator's sites.
    async fn find_site_operator(&self, site: SiteId) -> StoreResult<Option<OperatorId>>;
    /// Every operator's site-bound rule sets, for the adjustment scheduler.
    async fn list_site_rule_sets_everywhere(&self) -> StoreResult<Vec<RuleSet>>;
    async fn find_space_operator(&self, space: SpaceId) -> StoreResult<Option<OperatorId>>;
}

#[async_trait]
pub trait OperatorStore: Send + Sync {
    async fn insert_operator(&self, operator: &Operator) -> StoreResult<()>;
    async fn get_operator(&self, id: OperatorId) -> StoreResult<Option<Operator>>;
    async fn find_operator_by_slug(&self, slug: &str) -> StoreResult<Option<Operator>>;
    async fn list_operators(&self, page: PageRequest) -> StoreResult<Page<Operator>>;
}

#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    /// Finds a key (revoked or not) by the hash of its token.
    async fn find_api_key_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<ApiKey>>;
    /// `operator` `None` lists platform-admin keys.
    async fn list_api_keys(&self, operator: Option<OperatorId>, page: PageRequest) -> StoreResult<Page<ApiKey>>;
    async fn get_api_key(&self, id: ApiKeyId) -> StoreResult<Option<ApiKey>>;
    async fn revoke_api_key(&self, id: ApiKeyId, at: DateTime<Utc>) -> StoreResult<()>;
}

#[derive(Debug, Clone, Default)]
pub struct SiteFilter {
    pub kind: Option<SiteKind>,
}

#[async_trait]
pub trait SiteStore: Send + Sync {
    async fn insert_site(&self, site: &Site) -> StoreResult<()>;
    async fn get_site(&self, operator: OperatorId, id: SiteId) -> StoreResult<Option<Site>>;
    async fn list_sites(&self, operator: OperatorId, filter: &SiteFilter, page: PageRequest)
    -> StoreResult<Page<Site>>;
    /// Replaces details and `updated_at` of a site of `site.operator_id`.
    async fn update_site(&self, site: &Site) -> StoreResult<()>;
    /// Returns whether a row was deleted.
    async fn delete_site(&self, operator: OperatorId, id: SiteId) -> StoreResult<bool>;
    async fn count_spaces_in_site(&self, operator: OperatorId, id: SiteId) -> StoreResult<u64>;
    /// Every operator's sites, for the search index.
    async fn list_all_sites(&self) -> StoreResult<Vec<Site>>;
}

#[derive(Debug, Clone, Default)]
pub struct SpaceFilter {
    pub site_id: Option<SiteId>,
    pub status: Option<SpaceStatus>,
    pub vehicle_type: Option<VehicleType>,
    pub ev_charger: Option<bool>,
    pub accessible: Option<bool>,
}

#[async_trait]
pub trait SpaceStore: Send + Sync {
    /// Inserts all spaces in one transaction: all or none. A duplicate code within a site is
    /// [`StoreError::Conflict`] naming the code.
    async fn insert_spaces(&self, spaces: &[Space]) -> StoreResult<()>;
    async fn get_space(&self, operator: OperatorId, id: SpaceId) -> StoreResult<Option<Space>>;
    async fn list_spaces(
        &self,
        operator: OperatorId,
        filter: &SpaceFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Space>>;
    async fn update_space(&self, space: &Space) -> StoreResult<()>;
    /// Deletes the space and unbinds any device from it.
    async fn delete_space(&self, operator: OperatorId, id: SpaceId) -> StoreResult<bool>;
}

#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub space_id: Option<SpaceId>,
    pub vendor: Option<String>,
    pub bound: Option<bool>,
}

#[async_trait]
pub trait DeviceStore: Send + Sync {
    async fn insert_device(&self, device: &Device) -> StoreResult<()>;
    async fn get_device(&self, operator: OperatorId, id: DeviceId) -> StoreResult<Option<Device>>;
    async fn list_devices(
        &self,
        operator: OperatorId,
        filter: &DeviceFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Device>>;
    async fn update_device(&self, device: &Device) -> StoreResult<()>;
    async fn delete_device(&self, operator: OperatorId, id: DeviceId) -> StoreResult<bool>;
}

#[async_trait]
pub trait DriverStore: Send + Sync {
    /// `password_hash` is the argon2 PHC string, or `None` for externally authenticated drivers.
    async fn insert_driver(&self, driver: &Driver, password_hash: Option<&str>) -> StoreResult<()>;
    async fn get_driver(&self, id: DriverId) -> StoreResult<Option<Driver>>;
    /// The driver and their password hash.
    async fn find_driver_by_email(&self, email: &Email) -> StoreResult<Option<(Driver, Option<String>)>>;
    async fn find_driver_by_external_subject(&self, subject: &str) -> StoreResult<Option<Driver>>;
}

#[async_trait]
pub trait VehicleStore: Send + Sync {
    async fn insert_vehicle(&self, vehicle: &Vehicle) -> StoreResult<()>;
    async fn list_vehicles(&self, driver: DriverId, page: PageRequest) -> StoreResult<Page<Vehicle>>;
    async fn get_vehicle(&self, driver: DriverId, id: VehicleId) -> StoreResult<Option<Vehicle>>;
    async fn delete_vehicle(&self, driver: DriverId, id: VehicleId) -> StoreResult<bool>;
}

/// Conversations over chat channels and their messages. Driver-scoped: a conversation belongs
/// to one driver, and only the kernel's chat services (which derive the driver) reach it.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// The conversation of `(channel, external_user)`: `new` if there is none yet, else the one
    /// stored (whichever node created it first).
    async fn find_or_create_conversation(&self, new: &Conversation) -> StoreResult<Conversation>;
    async fn get_conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>>;
    /// Every conversation of a driver, oldest first (the driver's data export).
    async fn list_conversations(&self, driver: DriverId) -> StoreResult<Vec<Conversation>>;
    /// Takes the conversation's lease for `holder` until `until` when it is free, expired at
    /// `now`, or already `holder`'s; answers whether `holder` has it.
    async fn lease_conversation(
        &self,
        id: ConversationId,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Gives the lease back (only `holder`'s).
    async fn release_conversation(&self, id: ConversationId, holder: &str) -> StoreResult<()>;
    /// Stores a message (an inbound one, or one of ours outside a turn: a person's reply, a
    /// reminder) unless one with its `channel_message_id` is stored already in this
    /// conversation; answers whether it was new.
    async fn record_message(&self, message: &ChatMessage) -> StoreResult<bool>;
    /// Inbound messages not yet processed, oldest first (a restart's pick-up).
    async fn unprocessed_inbound(&self, conversation: ConversationId) -> StoreResult<Vec<ChatMessage>>;
    /// One turn, in one transaction: the conversation's new state, the inbound message marked
    /// processed, and the replies.
    async fn save_turn(
        &self,
        conversation: &Conversation,
        inbound: MessageId,
        replies: &[ChatMessage],
    ) -> StoreResult<()>;
    /// When the user last wrote in the conversation.
    async fn last_inbound_at(&self, conversation: ConversationId) -> StoreResult<Option<DateTime<Utc>>>;
    /// Hands the conversation back to the bot (no team, no handoff time).
    async fn clear_handoff(&self, conversation: ConversationId) -> StoreResult<()>;
    /// Whether a message with this `channel_message_id` is stored in the conversation.
    async fn message_key_exists(&self, conversation: ConversationId, key: &str) -> StoreResult<bool>;
    /// The newest `limit` messages of a conversation stored at or after `since`, oldest first.
    async fn latest_messages(
        &self,
        conversation: ConversationId,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> StoreResult<Vec<ChatMessage>>;
    /// Conversations handed to `operator`'s team (`None`: the platform's), most recently
    /// active first, at most `limit`.
    async fn list_handoffs(&self, operator: Option<OperatorId>, limit: u32) -> StoreResult<Vec<Conversation>>;
    /// Conversations with inbound messages not yet answered (a start-up's pick-up), at most
    /// `limit`.
    async fn conversations_waiting(&self, limit: u32) -> StoreResult<Vec<ConversationId>>;
    /// Messages of a conversation after `after` (oldest first), at most `limit`.
    async fn list_messages(
        &self,
        conversation: ConversationId,
        after: Option<MessageId>,
        limit: u32,
    ) -> StoreResult<Vec<ChatMessage>>;
}

/// Everything the kernel persists.
#[async_trait]
pub trait Store:
    OperatorStore
    + ApiKeyStore
    + SiteStore
    + SpaceStore
    + DeviceStore
    + DriverStore
    + VehicleStore
    + LiveStore
    + RuleStore
    + BookingStore
    + PaymentStore
    + ConversationStore
{
    /// Cheap round trip to the database, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;
}
