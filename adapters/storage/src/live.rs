//! [`LiveStore`]: live space state, its history and device health.

use std::collections::HashSet;

use async_trait::async_trait;
use berth_kernel::StoreError;
use berth_kernel::commit::LiveWrite;
use berth_kernel::device::Device;
use berth_kernel::ids::{DeviceId, OperatorId, SiteId, SpaceId};
use berth_kernel::live::{DeviceHealth, Override, SpaceEvent, SpaceEventKind, SpaceLive};
use berth_kernel::ports::{LiveStore, StoreResult};
use berth_kernel::space::{Space, SpaceState, SpaceStatus};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, TransactionTrait,
};
use uuid::Uuid;

use crate::batch::{Rows, ShownRow};
use crate::convert::{corrupt, device_from_row, space_from_row};
use crate::entity::{device, device_health, space, space_event, space_live};
use crate::{SqlStore, backend};

/// The same query on `space_events_recent`, the newest history rows that SQLite's ingest writer
/// has not moved into `space_events` yet (always empty on PostgreSQL). Run in the transaction
/// that read `space_events`, so a move between the two reads neither hides nor doubles a row.
fn on_recent(
    query: sea_orm::Select<space_event::Entity>,
    db: &impl ConnectionTrait,
) -> sea_orm::SelectorRaw<sea_orm::SelectModel<space_event::Model>> {
    let mut statement = query.build(db.get_database_backend());
    statement.sql = statement.sql.replace("\"space_events\"", "\"space_events_recent\"");
    space_event::Entity::find().from_raw_sql(statement)
}

/// Ids per `IN (…)` list: keeps bind parameters under SQLite's and PostgreSQL's limits.
const IN_LIST_IDS: usize = 500;

impl SqlStore {
    /// The live rows of these spaces, chunked so bind parameters stay under every database's limit.
    async fn live_rows(&self, operator: OperatorId, ids: &[Uuid]) -> StoreResult<Vec<(Uuid, SpaceLive)>> {
        let mut live = Vec::new();
        for chunk in ids.chunks(IN_LIST_IDS) {
            let rows = space_live::Entity::find()
                .filter(space_live::Column::OperatorId.eq(operator.as_uuid()))
                .filter(space_live::Column::SpaceId.is_in(chunk.to_vec()))
                .all(&self.db)
                .await
                .map_err(backend)?;
            for row in rows {
                live.push((row.space_id, live_from_row(row)?));
            }
        }
        Ok(live)
    }
}

fn event_to_row(event: &SpaceEvent) -> space_event::Model {
    space_event::Model {
        id: event.id,
        operator_id: event.operator_id.as_uuid(),
        space_id: event.space_id.as_uuid(),
        device_id: event.device_id.map(|id| id.as_uuid()),
        kind: event.kind.as_str().to_owned(),
        from_status: event.from.as_str().to_owned(),
        to_status: event.to.as_str().to_owned(),
        at: event.at,
        recorded_at: event.recorded_at,
        detail: event.detail.clone(),
    }
}

fn shown_row(operator: OperatorId, space: SpaceId, state: SpaceState) -> ShownRow {
    ShownRow {
        id: space.as_uuid(),
        operator_id: operator.as_uuid(),
        status: state.status.as_str().to_owned(),
        since: state.status_since,
        confidence: state.confidence,
    }
}

impl SqlStore {
    /// SQLite's ingest writer connection (see `WRITER_CACHE_KIB`).
    fn sqlite_writer(&self) -> &sea_orm::sqlx::SqlitePool {
        self.writer.as_ref().unwrap_or_else(|| self.db.get_sqlite_connection_pool())
    }

    /// Writes one commit's rows in one transaction.
    async fn write_rows(&self, rows: &Rows) -> StoreResult<()> {
        let written = match self.db.get_database_backend() {
            sea_orm::DbBackend::Sqlite => {
                let written = crate::batch::write_sqlite(self.sqlite_writer(), rows).await;
                if written.is_ok() {
                    self.recent_history.committed(rows.events.len());
                }
                written
            }
            sea_orm::DbBackend::Postgres => {
                crate::batch::write_postgres(self.db.get_postgres_connection_pool(), rows).await
            }
            sea_orm::DbBackend::MySql => return Err(StoreError::Backend("MySQL is not supported".into())),
        };
        written.map_err(|error| backend(sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(error))))
    }
}

fn health_to_row(
    operator: OperatorId,
    device: DeviceId,
    health: &DeviceHealth,
    at: DateTime<Utc>,
) -> device_health::Model {
    device_health::Model {
        device_id: device.as_uuid(),
        operator_id: operator.as_uuid(),
        last_seen: health.last_seen,
        battery_mv: health.battery_mv.map(i64::from),
        temperature_c: health.temperature_c,
        last_object: health.last_object_json.clone(),
        last_error: health.last_error.clone(),
        last_error_at: health.last_error_at,
        accepted: health.accepted.min(i64::MAX as u64) as i64,
        rejected: serde_json::to_string(&health.rejected).expect("invariant: a map of counts serialises"),
        updated_at: at,
    }
}

fn status(table: &str, id: Uuid, text: &str) -> Result<SpaceStatus, StoreError> {
    SpaceStatus::parse(text).ok_or_else(|| corrupt(table, id, format!("status '{text}'")))
}

fn live_to_row(operator: OperatorId, space: SpaceId, live: &SpaceLive, at: DateTime<Utc>) -> space_live::Model {
    let manual = live.override_.as_ref();
    space_live::Model {
        space_id: space.as_uuid(),
        operator_id: operator.as_uuid(),
        sensed: live.sensed.as_str().to_owned(),
        sensed_since: live.sensed_since,
        observed_at: live.observed_at,
        last_seen: live.last_seen,
        last_counter: live.last_counter.map(i64::from),
        // Stored as the same 64 bits, signed.
        last_payload: live.last_payload.map(|digest| digest as i64),
        recent_changes: crate::batch::times_json(&live.recent_changes),
        override_status: manual.map(|o| o.status.as_str().to_owned()),
        override_reason: manual.map(|o| o.reason.clone()),
        override_until: manual.and_then(|o| o.until),
        override_set_at: manual.map(|o| o.set_at),
        override_set_by: manual.map(|o| o.set_by.clone()),
        updated_at: at,
    }
}

fn live_from_row(row: space_live::Model) -> Result<SpaceLive, StoreError> {
    let id = row.space_id;
    let override_ = match (row.override_status, row.override_set_at) {
        (Some(text), Some(set_at)) => Some(Override {
            status: status("space_live", id, &text)?,
            reason: row.override_reason.unwrap_or_default(),
            until: row.override_until,
            set_at,
            set_by: row.override_set_by.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(SpaceLive {
        sensed: status("space_live", id, &row.sensed)?,
        sensed_since: row.sensed_since,
        observed_at: row.observed_at,
        last_seen: row.last_seen,
        last_counter: row.last_counter.and_then(|counter| u32::try_from(counter).ok()),
        last_payload: row.last_payload.map(|digest| digest as u64),
        recent_changes: serde_json::from_str(&row.recent_changes)
            .map_err(|e| corrupt("space_live", id, format!("recent_changes: {e}")))?,
        override_,
    })
}

fn event_from_row(row: space_event::Model) -> Result<SpaceEvent, StoreError> {
    let id = row.id;
    Ok(SpaceEvent {
        id,
        operator_id: OperatorId::from_uuid(row.operator_id),
        space_id: SpaceId::from_uuid(row.space_id),
        device_id: row.device_id.map(DeviceId::from_uuid),
        kind: SpaceEventKind::parse(&row.kind).ok_or_else(|| corrupt("space_events", id, "kind"))?,
        from: status("space_events", id, &row.from_status)?,
        to: status("space_events", id, &row.to_status)?,
        at: row.at,
        recorded_at: row.recorded_at,
        detail: row.detail,
    })
}

#[async_trait]
impl LiveStore for SqlStore {
    async fn find_devices_by_external_ids(
        &self,
        operator: OperatorId,
        external_ids: &[String],
    ) -> StoreResult<Vec<(Device, Option<SiteId>)>> {
        let mut devices = Vec::new();
        for chunk in external_ids.chunks(IN_LIST_IDS) {
            let rows = device::Entity::find()
                .filter(device::Column::OperatorId.eq(operator.as_uuid()))
                .filter(device::Column::ExternalId.is_in(chunk.iter().map(String::as_str)))
                .all(&self.db)
                .await
                .map_err(backend)?;
            devices.extend(rows.into_iter().map(device_from_row));
        }
        let spaces: Vec<Uuid> = devices.iter().filter_map(|device| device.space_id).map(|id| id.as_uuid()).collect();
        let mut sites = std::collections::HashMap::with_capacity(spaces.len());
        for chunk in spaces.chunks(IN_LIST_IDS) {
            let rows: Vec<(Uuid, Uuid)> = space::Entity::find()
                .select_only()
                .column(space::Column::Id)
                .column(space::Column::SiteId)
                .filter(space::Column::OperatorId.eq(operator.as_uuid()))
                .filter(space::Column::Id.is_in(chunk.to_vec()))
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(backend)?;
            sites.extend(rows);
        }
        Ok(devices
            .into_iter()
            .map(|device| {
                let site =
                    device.space_id.and_then(|space| sites.get(&space.as_uuid())).copied().map(SiteId::from_uuid);
                (device, site)
            })
            .collect())
    }

    async fn get_space_live(&self, operator: OperatorId, space: SpaceId) -> StoreResult<Option<SpaceLive>> {
        let row = space_live::Entity::find_by_id(space.as_uuid())
            .filter(space_live::Column::OperatorId.eq(operator.as_uuid()))
            .one(&self.db)
            .await
            .map_err(backend)?;
        row.map(live_from_row).transpose()
    }

    async fn list_space_live(
        &self,
        operator: OperatorId,
        spaces: &[SpaceId],
    ) -> StoreResult<Vec<(SpaceId, SpaceLive)>> {
        let ids: Vec<Uuid> = spaces.iter().map(|id| id.as_uuid()).collect();
        Ok(self.live_rows(operator, &ids).await?.into_iter().map(|(id, live)| (SpaceId::from_uuid(id), live)).collect())
    }

    async fn list_site_live(&self, operator: OperatorId, site: SiteId) -> StoreResult<Vec<(Space, SpaceLive)>> {
        let spaces = space::Entity::find()
            .filter(space::Column::OperatorId.eq(operator.as_uuid()))
            .filter(space::Column::SiteId.eq(site.as_uuid()))
            .order_by_asc(space::Column::Code)
            .all(&self.db)
            .await
            .map_err(backend)?;
        let ids: Vec<Uuid> = spaces.iter().map(|row| row.id).collect();
        let mut live: std::collections::HashMap<Uuid, SpaceLive> =
            self.live_rows(operator, &ids).await?.into_iter().collect();
        spaces
            .into_iter()
            .map(|row| {
                let state = live.remove(&row.id).unwrap_or_default();
                Ok((space_from_row(row)?, state))
            })
            .collect()
    }

    async fn save_space_live(
        &self,
        operator: OperatorId,
        space: SpaceId,
        live: &SpaceLive,
        event: Option<&SpaceEvent>,
        shown: Option<SpaceState>,
    ) -> StoreResult<()> {
        let at = berth_kernel::service::now();
        let rows = Rows {
            lives: vec![live_to_row(operator, space, live, at)],
            events: event.into_iter().map(event_to_row).collect(),
            shown: shown.into_iter().map(|state| shown_row(operator, space, state)).collect(),
            healths: Vec::new(),
        };
        self.write_rows(&rows).await
    }

    async fn save_live_batch(&self, batch: &[LiveWrite]) -> StoreResult<()> {
        let at = berth_kernel::service::now();
        // Newest per space and per device (read newest first, so each row is built once);
        // every event, in order.
        let mut rows = Rows::default();
        let (mut lives, mut shown, mut healths) = (HashSet::new(), HashSet::new(), HashSet::new());
        for write in batch.iter().rev() {
            if let Some(health) = write.health.as_ref().filter(|_| healths.insert(write.device.as_uuid())) {
                rows.healths.push(health_to_row(write.operator, write.device, health, at));
            }
            let Some(space) = &write.space else { continue };
            if lives.insert(space.space.as_uuid()) {
                rows.lives.push(live_to_row(write.operator, space.space, &space.live, at));
            }
            if let Some(state) = space.shown.filter(|_| shown.insert(space.space.as_uuid())) {
                rows.shown.push(shown_row(write.operator, space.space, state));
            }
        }
        rows.events.extend(batch.iter().filter_map(|write| write.space.as_ref()?.event.as_ref()).map(event_to_row));
        self.write_rows(&rows).await
    }

    /// On SQLite, moves a piece of the recent history slice that is due (see
    /// `batch::move_recent_history` and `RecentHistory`); while `busy`, only an overdue one.
    async fn after_commit(&self, busy: bool) -> Option<std::time::Duration> {
        let writer = self.writer.as_ref()?;
        match self.recent_history.next_move(busy) {
            crate::NextMove::Piece(slice, limit) => {
                let started = std::time::Instant::now();
                let moved = crate::batch::move_recent_history(writer, slice, limit).await;
                let failed = moved.is_err();
                self.recent_history.moved(slice, moved, started.elapsed());
                (!busy && !failed).then_some(std::time::Duration::ZERO)
            }
            // While commits wait, the writer comes back after its next commit anyway.
            crate::NextMove::After(wait) => (!busy).then_some(wait),
            crate::NextMove::Idle => None,
        }
    }

    async fn list_space_events(
        &self,
        operator: OperatorId,
        space: SpaceId,
        limit: u64,
    ) -> StoreResult<Vec<SpaceEvent>> {
        let query = space_event::Entity::find()
            .filter(space_event::Column::OperatorId.eq(operator.as_uuid()))
            .filter(space_event::Column::SpaceId.eq(space.as_uuid()))
            .order_by_desc(space_event::Column::Id)
            .limit(limit);
        let txn = self.db.begin().await.map_err(backend)?;
        let mut rows = query.clone().all(&txn).await.map_err(backend)?;
        rows.extend(on_recent(query, &txn).all(&txn).await.map_err(backend)?);
        txn.commit().await.map_err(backend)?;
        rows.sort_by_key(|row| std::cmp::Reverse(row.id));
        rows.truncate(limit as usize);
        rows.into_iter().map(event_from_row).collect()
    }

    async fn list_events_between(
        &self,
        operator: OperatorId,
        spaces: &[SpaceId],
        ids_from: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<Vec<SpaceEvent>> {
        let mut events = Vec::new();
        let txn = self.db.begin().await.map_err(backend)?;
        for chunk in spaces.chunks(1000) {
            // `space_events` is keyed by (space, id) on SQLite (indexed so on PostgreSQL): the
            // id bound makes each space's part a range from `ids_from` on, not its whole history.
            let query = space_event::Entity::find()
                .filter(space_event::Column::OperatorId.eq(operator.as_uuid()))
                .filter(space_event::Column::SpaceId.is_in(chunk.iter().map(|space| space.as_uuid())))
                .filter(space_event::Column::Id.gte(ids_from))
                .filter(space_event::Column::At.gte(from))
                .filter(space_event::Column::At.lt(to))
                .order_by_asc(space_event::Column::At)
                .limit(limit);
            let mut rows = query.clone().all(&txn).await.map_err(backend)?;
            rows.extend(on_recent(query, &txn).all(&txn).await.map_err(backend)?);
            for row in rows {
                events.push(event_from_row(row)?);
            }
        }
        txn.commit().await.map_err(backend)?;
        events.sort_by_key(|event| event.at);
        events.truncate(limit as usize);
        Ok(events)
    }

    async fn list_device_health(
        &self,
        operator: OperatorId,
        devices: &[DeviceId],
    ) -> StoreResult<Vec<(DeviceId, DeviceHealth)>> {
        let mut healths = Vec::with_capacity(devices.len());
        for chunk in devices.chunks(IN_LIST_IDS) {
            let rows = device_health::Entity::find()
                .filter(device_health::Column::OperatorId.eq(operator.as_uuid()))
                .filter(device_health::Column::DeviceId.is_in(chunk.iter().map(|id| id.as_uuid())))
                .all(&self.db)
                .await
                .map_err(backend)?;
            for row in rows {
                let health = DeviceHealth {
                    last_seen: row.last_seen,
                    battery_mv: row.battery_mv.and_then(|mv| u32::try_from(mv).ok()),
                    temperature_c: row.temperature_c,
                    last_object_json: row.last_object,
                    last_error: row.last_error,
                    last_error_at: row.last_error_at,
                    accepted: row.accepted.max(0) as u64,
                    rejected: serde_json::from_str(&row.rejected)
                        .map_err(|e| corrupt("device_health", row.device_id, format!("rejected: {e}")))?,
                };
                healths.push((DeviceId::from_uuid(row.device_id), health));
            }
        }
        Ok(healths)
    }

    async fn save_device_health(
        &self,
        operator: OperatorId,
        device: DeviceId,
        health: &DeviceHealth,
    ) -> StoreResult<()> {
        let health = health_to_row(operator, device, health, berth_kernel::service::now());
        self.write_rows(&Rows { healths: vec![health], ..Rows::default() }).await
    }
}
