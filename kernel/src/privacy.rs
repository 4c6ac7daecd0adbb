//! A driver's own data: an export of everything berth keeps about them, and erasure that leaves
//! operators' financial records whole (amounts, dates, receipts) without the person in them.
//! Plates on finished bookings are kept only for the retention period.

use chrono::{DateTime, Duration, Utc};

use crate::auth::Principal;
use crate::booking::{Booking, BookingOwner, BookingStatus};
use crate::driver::{Driver, Vehicle};
use crate::error::{KernelError, KernelResult};
use crate::page::PageRequest;
use crate::payment::{Payment, ReceiptLine};
use crate::service::{Kernel, now};

/// Everything berth keeps about one driver.
#[derive(Debug, Clone)]
pub struct DriverExport {
    pub driver: Driver,
    pub vehicles: Vec<Vehicle>,
    pub bookings: Vec<BookingRecord>,
    /// Every chat conversation with all its messages.
    pub conversations: Vec<(crate::conversation::Conversation, Vec<crate::conversation::ChatMessage>)>,
    pub exported_at: DateTime<Utc>,
}

/// A booking with its payments and receipt.
#[derive(Debug, Clone)]
pub struct BookingRecord {
    pub booking: Booking,
    pub payments: Vec<Payment>,
    pub receipt: Vec<ReceiptLine>,
}

impl Kernel {
    fn own_driver(caller: &Principal) -> KernelResult<crate::ids::DriverId> {
        match caller {
            Principal::Driver { driver_id } => Ok(*driver_id),
            _ => Err(KernelError::Forbidden("only a driver has driver data".into())),
        }
    }

    /// Everything about the calling driver: profile, vehicles, bookings with payments and
    /// receipts.
    pub async fn export_driver_data(&self, caller: &Principal) -> KernelResult<DriverExport> {
        let driver_id = Self::own_driver(caller)?;
        let driver = self.get_driver(caller).await?;
        let vehicles = self.all_vehicles_of(driver_id).await?;
        let mut bookings = Vec::new();
        for booking in self.all_bookings_of(driver_id).await? {
            let payments = self.store().list_payments(booking.id).await?;
            let receipt = self.store().list_receipt(booking.id).await?;
            bookings.push(BookingRecord { booking, payments, receipt });
        }
        let mut conversations = Vec::new();
        for conversation in self.store().list_conversations(driver_id).await? {
            let mut messages = Vec::new();
            loop {
                let after = messages.last().map(|message: &crate::conversation::ChatMessage| message.id);
                let page = self.store().list_messages(conversation.id, after, 1000).await?;
                let done = page.len() < 1000;
                messages.extend(page);
                if done {
                    break;
                }
            }
            conversations.push((conversation, messages));
        }
        Ok(DriverExport { driver, vehicles, bookings, conversations, exported_at: now() })
    }

    /// Erases the calling driver's personal data and account. Refused while a booking is
    /// pending, confirmed or active (cancel or finish it first): its operator still needs to
    /// know whose car it is.
    pub async fn erase_driver_data(&self, caller: &Principal) -> KernelResult<()> {
        let driver_id = Self::own_driver(caller)?;
        self.get_driver(caller).await?;
        let bookings = self.all_bookings_of(driver_id).await?;
        if let Some(live) = bookings.iter().find(|booking| BookingStatus::LIVE.contains(&booking.status)) {
            return Err(KernelError::Conflict(format!(
                "booking {} is {}; cancel it or let it finish before erasing your data",
                live.id,
                live.status.as_str()
            )));
        }
        self.store().erase_driver(driver_id).await?;
        metrics::counter!("berth_driver_erasures_total").increment(1);
        tracing::info!(driver = %driver_id, "driver data erased");
        Ok(())
    }

    /// Every vehicle of a driver, page after page.
    pub(crate) async fn all_vehicles_of(&self, driver_id: crate::ids::DriverId) -> KernelResult<Vec<Vehicle>> {
        let mut vehicles = Vec::new();
        let mut after = None;
        loop {
            let page = self.store().list_vehicles(driver_id, PageRequest { after, limit: 1000 }).await?;
            vehicles.extend(page.items);
            after = page.next_after;
            if after.is_none() {
                return Ok(vehicles);
            }
        }
    }

    /// Every booking of a driver, page after page.
    pub(crate) async fn all_bookings_of(&self, driver_id: crate::ids::DriverId) -> KernelResult<Vec<Booking>> {
        let mut bookings = Vec::new();
        let mut after = None;
        loop {
            let owner = BookingOwner::Driver(driver_id);
            let page = self.store().list_bookings(owner, PageRequest { after, limit: 1000 }).await?;
            bookings.extend(page.items);
            after = page.next_after;
            if after.is_none() {
                return Ok(bookings);
            }
        }
    }

    /// Erases plates of bookings that ended more than `retention` ago.
    pub async fn forget_old_plates(&self, retention: Duration) -> KernelResult<u64> {
        let forgotten = self.store().forget_plates(now() - retention).await?;
        if forgotten > 0 {
            metrics::counter!("berth_plates_forgotten_total").increment(forgotten);
        }
        Ok(forgotten)
    }
}
