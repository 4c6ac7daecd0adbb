//! Storage adapter: implements the kernel's [`Store`] port with SeaORM, on SQLite (the embedded
//! default: one file, WAL, `synchronous=FULL` so an acknowledged write survives a crash, the
//! WAL copied back into the file by a checkpointer of its own) or PostgreSQL. Every
//! operator-scoped query carries `operator_id` in its `WHERE` clause.

mod batch;
mod bookings;
mod conversations;
mod convert;
mod entity;
mod live;
pub mod migration;
mod payments;
mod rules;

use std::time::Duration;

use async_trait::async_trait;
use berth_kernel::StoreError;
use berth_kernel::auth::{ApiKey, SecretHash};
use berth_kernel::device::Device;
use berth_kernel::driver::{Driver, Email, Vehicle};
use berth_kernel::ids::{ApiKeyId, DeviceId, DriverId, OperatorId, SiteId, SpaceId, VehicleId};
use berth_kernel::operator::Operator;
use berth_kernel::page::{Page, PageRequest};
use berth_kernel::ports::{
    ApiKeyStore, DeviceFilter, DeviceStore, DriverStore, OperatorStore, SiteFilter, SiteStore, SpaceFilter, SpaceStore,
    Store, StoreResult, VehicleStore,
};
use berth_kernel::site::Site;
use berth_kernel::space::Space;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbBackend, DbErr, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select,
    SqlErr, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use uuid::Uuid;

use crate::convert::*;
use crate::entity::{api_key, device, driver, operator, site, space, vehicle};

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite://PATH?mode=rwc` or `postgres://user@host:port/db`.
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported database url '{0}': use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] DbErr),
    #[error("migration failed: {0}")]
    Migrate(#[source] DbErr),
}

#[derive(Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    /// SQLite has one writer per file; bookings check for overlaps and insert under this lock so
    /// the check and the write are one step (PostgreSQL has its exclusion constraint instead).
    booking_writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// SQLite's background checkpointer; it stops with the last clone.
    _checkpointer: Option<std::sync::Arc<Checkpointer>>,
    /// The schedule of SQLite's moves of recent history rows into `space_events`.
    recent_history: std::sync::Arc<RecentHistory>,
    /// SQLite (and only SQLite): the connection of the ingest writer's commits and moves (see
    /// [`WRITER_CACHE_KIB`]).
    writer: Option<sea_orm::sqlx::SqlitePool>,
}

/// The page cache of SQLite's ingest writer connection. A connection drops its cache whenever
/// another one wrote since its last transaction, and a pool hands its connections out in turn:
/// with commits spread over the pool, every commit and move read its pages again (from the WAL,
/// by `pread`). On a connection of its own the writer keeps them between its transactions.
const WRITER_CACHE_KIB: u32 = 65_536;

/// How often SQLite's recent history rows move into `space_events` (see
/// `batch::move_recent_history`): when ingest leaves the writer idle, readers scan at most about
/// this much of the newest history without an index (under sustained load, up to
/// [`MOVE_WHEN_BUSY_AFTER`] more).
const MOVE_RECENT_EVERY: Duration = Duration::from_secs(1);

/// Rows a move takes at most while the ingest writer is idle, and at least while it is busy
/// (15–20 ms of work on the machine `berth bench ingest` was measured on): a slice left with
/// seconds of rows after a burst drains in pieces whenever no commit is waiting, paced by
/// [`MOVE_PACE`].
const MOVE_AT_LEAST: usize = 500;

/// While ingest commits are waiting, a slice moves only once it is this much overdue, then up to
/// twice the rows committed since the last piece, so that under sustained load moves keep up.
const MOVE_WHEN_BUSY_AFTER: Duration = Duration::from_secs(5);

/// After a piece, the next waits this many times the piece's duration: moves take at most a
/// quarter of the writer's time, so commits arriving while the backlog of a burst drains (seconds
/// of pieces back to back before) wait behind a piece a quarter of the time at most. `berth bench
/// ingest`'s publish → SSE p99 at 5,000/s after the bursts: 45–115 ms (p50 5–6 ms) against
/// 131–185 ms (p50 10–14 ms) with pieces back to back; 2 and 4 measured no better than 3.
const MOVE_PACE: u32 = 3;

/// The schedule of the moves of recent history: every [`MOVE_RECENT_EVERY`] a round starts, in
/// which slice `i` of the spaces is due from `i / HISTORY_SLICES` of the interval on (so the
/// work spreads over the second) and moves when the ingest writer has nothing queued, or, while
/// it has, once the slice is [`MOVE_WHEN_BUSY_AFTER`] overdue, a piece at a time paced by
/// [`MOVE_PACE`]; and whether moves fail.
struct RecentHistory {
    /// When the last round started, and the next slice of the round under way (none: done).
    round: std::sync::Mutex<(std::time::Instant, Option<u8>)>,
    /// History rows of the live-state commits (nearly always the ingest writer's) since the last
    /// piece: a piece while busy is up to twice that.
    since_piece: std::sync::atomic::AtomicUsize,
    /// When the last piece ended and how long it took ([`MOVE_PACE`]).
    last_piece: std::sync::Mutex<(std::time::Instant, Duration)>,
    /// History rows committed since the round under way (or the last) started: none, and once
    /// that round is over the recent table is empty, so no round starts until a commit.
    since_round: std::sync::atomic::AtomicUsize,
    failing: std::sync::atomic::AtomicBool,
}

/// What [`RecentHistory::next_move`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NextMove {
    /// Move up to this many rows of this slice now.
    Piece(u8, usize),
    /// Nothing now; ask again after this long.
    After(Duration),
    /// Nothing until rows are committed.
    Idle,
}

impl Default for RecentHistory {
    fn default() -> Self {
        Self {
            round: std::sync::Mutex::new((std::time::Instant::now(), None)),
            since_piece: Default::default(),
            last_piece: std::sync::Mutex::new((std::time::Instant::now(), Duration::ZERO)),
            since_round: Default::default(),
            failing: Default::default(),
        }
    }
}

impl RecentHistory {
    /// Records the history rows of a commit.
    fn committed(&self, events: usize) {
        self.since_piece.fetch_add(events, std::sync::atomic::Ordering::Relaxed);
        self.since_round.fetch_add(events, std::sync::atomic::Ordering::Relaxed);
    }

    /// The slice to move now, if any, and how many of its rows at most: [`MOVE_AT_LEAST`] when
    /// the writer is idle, so a commit arriving meanwhile waits little; while `busy`, twice the
    /// rows committed since the last piece (at least that), so overdue moves keep up with the
    /// inflow. No piece until [`MOVE_PACE`] times the last piece's duration has passed since it
    /// ended; otherwise, when the next is due.
    fn next_move(&self, busy: bool) -> NextMove {
        use std::sync::atomic::Ordering;
        let (ended, took) = *self.last_piece.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let paced = (took * MOVE_PACE).saturating_sub(ended.elapsed());
        let mut round = self.round.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (started, next) = &mut *round;
        let slice = match *next {
            Some(slice) => slice,
            None => {
                if self.since_round.load(Ordering::Relaxed) == 0 {
                    return NextMove::Idle;
                }
                let wait = MOVE_RECENT_EVERY.saturating_sub(started.elapsed());
                if !wait.is_zero() {
                    return NextMove::After(wait);
                }
                *started = std::time::Instant::now();
                *next = Some(0);
                self.since_round.store(0, Ordering::Relaxed);
                0
            }
        };
        let mut due = MOVE_RECENT_EVERY * u32::from(slice) / u32::from(batch::HISTORY_SLICES);
        let mut limit = MOVE_AT_LEAST;
        if busy {
            due += MOVE_WHEN_BUSY_AFTER;
            limit = limit.max(2 * self.since_piece.load(Ordering::Relaxed));
        }
        let wait = due.saturating_sub(started.elapsed()).max(paced);
        if wait.is_zero() { NextMove::Piece(slice, limit) } else { NextMove::After(wait) }
    }

    /// Records a move's outcome: the round goes on to the next slice once this one is empty (or
    /// its move failed: a failure is logged once per streak, the rows stay where readers find
    /// them, and the next round moves them).
    fn moved(&self, slice: u8, outcome: Result<bool, sea_orm::sqlx::Error>, took: Duration) {
        use std::sync::atomic::Ordering;
        *self.last_piece.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (std::time::Instant::now(), took);
        self.since_piece.store(0, Ordering::Relaxed);
        let slice_done = match outcome {
            Ok(emptied) => {
                self.failing.store(false, Ordering::Relaxed);
                emptied
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "moving recent history rows failed; retrying every {MOVE_RECENT_EVERY:?}");
                }
                true
            }
        };
        if !slice_done {
            return;
        }
        let mut round = self.round.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        round.1 = (slice + 1 < batch::HISTORY_SLICES).then_some(slice + 1);
    }
}

/// How often SQLite's WAL is copied back into the database file, off the committing connection.
/// A page written by many commits in between (a space's newest history index page, its live
/// row) is copied once: `berth bench ingest` ran 54–60k uplinks/s checkpointing every 200 ms,
/// 63–71k every second (and no faster every 3 s).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// WAL pages at which a committing connection checkpoints by itself: only when the background
/// checkpointer fell far behind (SQLite's default, 1,000, made every large ingest commit copy the
/// WAL back before it could answer).
const CHECKPOINT_BACKSTOP_PAGES: u64 = 100_000;

/// Copies the WAL back into the database file every [`CHECKPOINT_EVERY`] on a pooled connection
/// (so on another thread than the one committing). PASSIVE: it copies what it can without
/// waiting for readers or writers.
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Checkpointer {
    fn start(pool: sea_orm::sqlx::SqlitePool) -> Self {
        Self(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                ticks.tick().await;
                if pool.is_closed() {
                    return;
                }
                match sea_orm::sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                    Ok(_) => failing = false,
                    // Logged once per streak; past the backstop, the committing connection
                    // checkpoints by itself meanwhile.
                    Err(error) if !std::mem::replace(&mut failing, true) => {
                        tracing::warn!(%error, "WAL checkpoint failed; retrying every {CHECKPOINT_EVERY:?}");
                    }
                    Err(_) => {}
                }
            }
        }))
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SqlStore {
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, ConnectError> {
        let is_sqlite = settings.url.starts_with("sqlite:");
        let is_postgres = settings.url.starts_with("postgres://") || settings.url.starts_with("postgresql://");
        if !is_sqlite && !is_postgres {
            return Err(ConnectError::UnsupportedUrl(redact_url(&settings.url)));
        }
        let mut options = ConnectOptions::new(settings.url.clone());
        options
            .max_connections(settings.max_connections)
            .min_connections(1)
            .connect_timeout(settings.connect_timeout)
            .acquire_timeout(settings.connect_timeout)
            // A ping per acquire was a round trip to the driver's thread before every statement;
            // a broken connection still fails its statement and is replaced.
            .test_before_acquire(false)
            .sqlx_logging(false);
        if is_sqlite {
            options.map_sqlx_sqlite_opts(|sqlite| {
                sqlite
                    .create_if_missing(true)
                    .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    // FULL: a committed transaction is on disk before we answer the client.
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    // Pages read through memory maps and a 16 MiB cache per connection, not a
                    // read() call per page; temporary b-trees in memory.
                    .pragma("mmap_size", "268435456")
                    .pragma("cache_size", "-16384")
                    .pragma("temp_store", "memory")
                    .pragma("wal_autocheckpoint", CHECKPOINT_BACKSTOP_PAGES.to_string())
            });
        }
        let db = Database::connect(options).await.map_err(ConnectError::Connect)?;
        let (checkpointer, writer) = if is_sqlite {
            let pool = db.get_sqlite_connection_pool();
            let writer_options = (*pool.connect_options()).clone().pragma("cache_size", format!("-{WRITER_CACHE_KIB}"));
            let writer = sea_orm::sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .acquire_timeout(settings.connect_timeout)
                .test_before_acquire(false)
                .connect_with(writer_options)
                .await
                .map_err(|error| ConnectError::Connect(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(error))))?;
            (Some(std::sync::Arc::new(Checkpointer::start(pool.clone()))), Some(writer))
        } else {
            (None, None)
        };
        Ok(Self {
            db,
            booking_writer: std::sync::Arc::default(),
            _checkpointer: checkpointer,
            recent_history: std::sync::Arc::default(),
            writer,
        })
    }

    /// Applies pending migrations; safe to call on every start.
    pub async fn migrate(&self) -> Result<(), ConnectError> {
        migration::Migrator::up(&self.db, None).await.map_err(ConnectError::Migrate)
    }

    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::Sqlite => "sqlite",
            DbBackend::Postgres => "postgres",
            DbBackend::MySql => "mysql",
        }
    }

    /// Refreshes the query planner's statistics (`ANALYZE`), as autovacuum does in service on
    /// PostgreSQL: after a bulk load, a bench measures the plans a running database would use.
    pub async fn analyze(&self) -> Result<(), StoreError> {
        use sea_orm::ConnectionTrait;
        self.db.execute_unprepared("ANALYZE").await.map(|_| ()).map_err(backend)
    }

    pub async fn close(self) -> Result<(), StoreError> {
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.db.close().await.map_err(backend)
    }
}

/// The URL with any password replaced, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn backend(error: DbErr) -> StoreError {
    match error.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(message)) => StoreError::Conflict(message),
        Some(SqlErr::ForeignKeyConstraintViolation(message)) => StoreError::MissingReference(message),
        _ => StoreError::Backend(error.to_string()),
    }
}

/// Maps a uniqueness violation to a message a user can act on; other errors pass through.
fn conflict_as(message: impl Into<String>) -> impl FnOnce(DbErr) -> StoreError {
    let message = message.into();
    move |error| match backend(error) {
        StoreError::Conflict(_) => StoreError::Conflict(message),
        other => other,
    }
}

async fn fetch_page<E, T>(
    db: &DatabaseConnection,
    select: Select<E>,
    id_column: E::Column,
    page: PageRequest,
    convert: impl Fn(E::Model) -> Result<T, StoreError>,
    id_of: impl Fn(&T) -> Uuid,
) -> StoreResult<Page<T>>
where
    E: EntityTrait,
{
    let mut select = select.order_by_asc(id_column).limit(u64::from(page.limit) + 1);
    if let Some(after) = page.after {
        select = select.filter(id_column.gt(after));
    }
    let rows = select.all(db).await.map_err(backend)?;
    let items = rows.into_iter().map(convert).collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_overfetch(items, page.limit, id_of))
}

#[async_trait]
impl OperatorStore for SqlStore {
    async fn insert_operator(&self, operator: &Operator) -> StoreResult<()> {
        let row = operator::Model {
            id: operator.id.as_uuid(),
            name: operator.name.clone(),
            slug: operator.slug.clone(),
            created_at: operator.created_at,
        };
        operator::Entity::insert(row.into_active_model())
            .exec_without_returning(&self.db)
            .await
            .map_err(conflict_as(format!("an operator with slug '{}' already exists", operator.slug)))?;
        Ok(())
    }

    async fn get_operator(&self, id: OperatorId) -> StoreResult<Option<Operator>> {
        let row = operator::Entity::find_by_id(id.as_uuid()).one(&self.db).await.map_err(backend)?;
        Ok(row.map(operator_from_row))
    }

    async fn find_operator_by_slug(&self, slug: &str) -> StoreResult<Option<Operator>> {
        let row =
            operator::Entity::find().filter(operator::Column::Slug.eq(slug)).one(&self.db).await.map_err(backend)?;
        Ok(row.map(operator_from_row))
    }

    async fn list_operators(&self, page: PageRequest) -> StoreResult<Page<Operator>> {
        fetch_page(
            &self.db,
            operator::Entity::find(),
            operator::Column::Id,
            page,
            |row| Ok(operator_from_row(row)),
            |op| op.id.as_uuid(),
        )
        .await
    }
}

#[async_trait]
impl ApiKeyStore for SqlStore {
    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        let row = api_key::Model {
            id: key.id.as_uuid(),
            operator_id: key.operator_id.map(|id| id.as_uuid()),
            kind: key.kind.as_str().to_owned(),
            role: key.role.map(|role| role.as_str().to_owned()),
            name: key.name.clone(),
            display_prefix: key.display_prefix.clone(),
            secret_hash: hash_to_hex(&key.secret_hash),
            created_at: key.created_at,
            revoked_at: key.revoked_at,
        };
        api_key::Entity::insert(row.into_active_model()).exec_without_returning(&self.db).await.map_err(backend)?;
        Ok(())
    }

    async fn find_api_key_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<ApiKey>> {
        let row = api_key::Entity::find()
            .filter(api_key::Column::SecretHash.eq(hash_to_hex(hash)))
            .one(&self.db)
            .await
            .map_err(backend)?;
        row.map(api_key_from_row).transpose()
    }

    async fn list_api_keys(&self, operator: Option<OperatorId>, page: PageRequest) -> StoreResult<Page<ApiKey>> {
        let select = match operator {
            Some(operator_id) => api_key::Entity::find().filter(api_key::Column::OperatorId.eq(operator_id.as_uuid())),
            None => api_key::Entity::find().filter(api_key::Column::OperatorId.is_null()),
        };
        fetch_page(&self.db, select, api_key::Column::Id, page, api_key_from_row, |key| key.id.as_uuid()).await
    }

    async fn get_api_key(&self, id: ApiKeyId) -> StoreResult<Option<ApiKey>> {
        let row = api_key::Entity::find_by_id(id.as_uuid()).one(&self.db).await.map_err(backend)?;
        row.map(api_key_from_row).transpose()
    }

    async fn revoke_api_key(&self, id: ApiKeyId, at: DateTime<Utc>) -> StoreResult<()> {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(at))
            .filter(api_key::Column::Id.eq(id.as_uuid()))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

fn site_select(operator: OperatorId) -> Select<site::Entity> {
    site::Entity::find().filter(site::Column::OperatorId.eq(operator.as_uuid()))
}

#[async_trait]
impl SiteStore for SqlStore {
    async fn insert_site(&self, site: &Site) -> StoreResult<()> {
        site::Entity::insert(site_to_row(site).into_active_model())
            .exec_without_returning(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get_site(&self, operator: OperatorId, id: SiteId) -> StoreResult<Option<Site>> {
        let row =
            site_select(operator).filter(site::Column::Id.eq(id.as_uuid())).one(&self.db).await.map_err(backend)?;
        row.map(site_from_row).transpose()
    }

    async fn list_sites(
        &self,
        operator: OperatorId,
        filter: &SiteFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Site>> {
        let mut select = site_select(operator);
        if let Some(kind) = filter.kind {
            select = select.filter(site::Column::Kind.eq(kind.as_str()));
        }
        fetch_page(&self.db, select, site::Column::Id, page, site_from_row, |site| site.id.as_uuid()).await
    }

    async fn update_site(&self, site: &Site) -> StoreResult<()> {
        let mut row = site_to_row(site).into_active_model().reset_all();
        // Identity columns are never rewritten by an update.
        row.operator_id = ActiveValue::Unchanged(site.operator_id.as_uuid());
        row.created_at = ActiveValue::NotSet;
        site::Entity::update_many()
            .set(row)
            .filter(site::Column::Id.eq(site.id.as_uuid()))
            .filter(site::Column::OperatorId.eq(site.operator_id.as_uuid()))
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_site(&self, operator: OperatorId, id: SiteId) -> StoreResult<bool> {
        let result = site::Entity::delete_many()
            .filter(site::Column::Id.eq(id.as_uuid()))
            .filter(site::Column::OperatorId.eq(operator.as_uuid()))
            .exec(&self.db)
            .await
            .map_err(conflict_as("site still has spaces"))?;
        Ok(result.rows_affected > 0)
    }

    async fn count_spaces_in_site(&self, operator: OperatorId, id: SiteId) -> StoreResult<u64> {
        space_select(operator).filter(space::Column::SiteId.eq(id.as_uuid())).count(&self.db).await.map_err(backend)
    }

    async fn list_all_sites(&self) -> StoreResult<Vec<Site>> {
        site::Entity::find().all(&self.db).await.map_err(backend)?.into_iter().map(site_from_row).collect()
    }
}

fn space_select(operator: OperatorId) -> Select<space::Entity> {
    space::Entity::find().filter(space::Column::OperatorId.eq(operator.as_uuid()))
}

const SPACE_HAS_BOOKINGS: &str = "the space has bookings; it cannot be deleted while they exist";

/// Rows per INSERT: keeps bind parameters under SQLite's and PostgreSQL's limits.
const INSERT_CHUNK_ROWS: usize = 500;

#[async_trait]
impl SpaceStore for SqlStore {
    async fn insert_spaces(&self, spaces: &[Space]) -> StoreResult<()> {
        let Some(first) = spaces.first() else {
            return Ok(());
        };
        let txn = self.db.begin().await.map_err(backend)?;
        for chunk in spaces.chunks(INSERT_CHUNK_ROWS) {
            let rows = chunk.iter().map(|space| space_to_row(space).into_active_model());
            if let Err(error) = space::Entity::insert_many(rows).exec_without_returning(&txn).await {
                let error = backend(error);
                drop(txn);
                if let StoreError::Conflict(_) = error {
                    return Err(self.describe_code_conflict(first.operator_id, first.site_id, spaces).await);
                }
                return Err(error);
            }
        }
        txn.commit().await.map_err(backend)
    }

    async fn get_space(&self, operator: OperatorId, id: SpaceId) -> StoreResult<Option<Space>> {
        let row =
            space_select(operator).filter(space::Column::Id.eq(id.as_uuid())).one(&self.db).await.map_err(backend)?;
        row.map(space_from_row).transpose()
    }

    async fn list_spaces(
        &self,
        operator: OperatorId,
        filter: &SpaceFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Space>> {
        let mut select = space_select(operator);
        if let Some(site_id) = filter.site_id {
            select = select.filter(space::Column::SiteId.eq(site_id.as_uuid()));
        }
        if let Some(status) = filter.status {
            select = select.filter(space::Column::Status.eq(status.as_str()));
        }
        if let Some(vehicle_type) = filter.vehicle_type {
            select = select.filter(space::Column::VehicleType.eq(vehicle_type.as_str()));
        }
        if let Some(ev_charger) = filter.ev_charger {
            select = select.filter(space::Column::EvCharger.eq(ev_charger));
        }
        if let Some(accessible) = filter.accessible {
            select = select.filter(space::Column::Accessible.eq(accessible));
        }
        fetch_page(&self.db, select, space::Column::Id, page, space_from_row, |space| space.id.as_uuid()).await
    }

    async fn update_space(&self, space: &Space) -> StoreResult<()> {
        let mut row = space_to_row(space).into_active_model().reset_all();
        row.operator_id = ActiveValue::Unchanged(space.operator_id.as_uuid());
        row.site_id = ActiveValue::NotSet;
        row.created_at = ActiveValue::NotSet;
        space::Entity::update_many()
            .set(row)
            .filter(space::Column::Id.eq(space.id.as_uuid()))
            .filter(space::Column::OperatorId.eq(space.operator_id.as_uuid()))
            .exec(&self.db)
            .await
            .map_err(conflict_as(format!("space code '{}' already exists in this site", space.details.code)))?;
        Ok(())
    }

    async fn delete_space(&self, operator: OperatorId, id: SpaceId) -> StoreResult<bool> {
        let txn = self.db.begin().await.map_err(backend)?;
        let bookings = crate::entity::booking::Entity::find()
            .filter(crate::entity::booking::Column::SpaceId.eq(id.as_uuid()))
            .filter(crate::entity::booking::Column::OperatorId.eq(operator.as_uuid()))
            .count(&txn)
            .await
            .map_err(backend)?;
        if bookings > 0 {
            return Err(StoreError::Conflict(SPACE_HAS_BOOKINGS.to_owned()));
        }
        // Explicit rather than relying on ON DELETE SET NULL, which SQLite only honours with
        // foreign keys enabled on that connection.
        device::Entity::update_many()
            .col_expr(device::Column::SpaceId, Expr::value(Option::<Uuid>::None))
            .filter(device::Column::OperatorId.eq(operator.as_uuid()))
            .filter(device::Column::SpaceId.eq(id.as_uuid()))
            .exec(&txn)
            .await
            .map_err(backend)?;
        let result = space::Entity::delete_many()
            .filter(space::Column::Id.eq(id.as_uuid()))
            .filter(space::Column::OperatorId.eq(operator.as_uuid()))
            .exec(&txn)
            .await
            .map_err(|error| match backend(error) {
                // Bookings keep their space: they are financial records.
                StoreError::MissingReference(_) => StoreError::Conflict(SPACE_HAS_BOOKINGS.to_owned()),
                other => other,
            })?;
        txn.commit().await.map_err(backend)?;
        Ok(result.rows_affected > 0)
    }
}

impl SqlStore {
    /// After a uniqueness failure in a batch, finds which code collided so the error can name it.
    async fn describe_code_conflict(&self, operator: OperatorId, site_id: SiteId, spaces: &[Space]) -> StoreError {
        let codes: Vec<&str> = spaces.iter().map(|space| space.details.code.as_str()).collect();
        for chunk in codes.chunks(INSERT_CHUNK_ROWS) {
            let existing = space_select(operator)
                .filter(space::Column::SiteId.eq(site_id.as_uuid()))
                .filter(space::Column::Code.is_in(chunk.iter().copied()))
                .one(&self.db)
                .await;
            match existing {
                Ok(Some(row)) => {
                    return StoreError::Conflict(format!("space code '{}' already exists in this site", row.code));
                }
                Ok(None) => continue,
                Err(error) => return backend(error),
            }
        }
        StoreError::Conflict("a space code in this request already exists in this site".into())
    }
}

fn device_select(operator: OperatorId) -> Select<device::Entity> {
    device::Entity::find().filter(device::Column::OperatorId.eq(operator.as_uuid()))
}

#[async_trait]
impl DeviceStore for SqlStore {
    async fn insert_device(&self, device: &Device) -> StoreResult<()> {
        let message = match device.space_id {
            Some(space_id) => format!(
                "a device with external_id '{}' already exists, or space {space_id} already has a device",
                device.details.external_id
            ),
            None => format!("a device with external_id '{}' already exists", device.details.external_id),
        };
        device::Entity::insert(device_to_row(device).into_active_model())
            .exec_without_returning(&self.db)
            .await
            .map_err(conflict_as(message))?;
        Ok(())
    }

    async fn get_device(&self, operator: OperatorId, id: DeviceId) -> StoreResult<Option<Device>> {
        let row =
            device_select(operator).filter(device::Column::Id.eq(id.as_uuid())).one(&self.db).await.map_err(backend)?;
        Ok(row.map(device_from_row))
    }

    async fn list_devices(
        &self,
        operator: OperatorId,
        filter: &DeviceFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Device>> {
        let mut select = device_select(operator);
        if let Some(space_id) = filter.space_id {
            select = select.filter(device::Column::SpaceId.eq(space_id.as_uuid()));
        }
        if let Some(vendor) = &filter.vendor {
            select = select.filter(device::Column::Vendor.eq(vendor.to_ascii_lowercase()));
        }
        match filter.bound {
            Some(true) => select = select.filter(device::Column::SpaceId.is_not_null()),
            Some(false) => select = select.filter(device::Column::SpaceId.is_null()),
            None => {}
        }
        fetch_page(
            &self.db,
            select,
            device::Column::Id,
            page,
            |row| Ok(device_from_row(row)),
            |device| device.id.as_uuid(),
        )
        .await
    }

    async fn update_device(&self, device: &Device) -> StoreResult<()> {
        let mut row = device_to_row(device).into_active_model().reset_all();
        row.operator_id = ActiveValue::Unchanged(device.operator_id.as_uuid());
        row.created_at = ActiveValue::NotSet;
        let message = match device.space_id {
            Some(space_id) => format!("space {space_id} already has a device bound"),
            None => "device conflicts with another device".to_owned(),
        };
        device::Entity::update_many()
            .set(row)
            .filter(device::Column::Id.eq(device.id.as_uuid()))
            .filter(device::Column::OperatorId.eq(device.operator_id.as_uuid()))
            .exec(&self.db)
            .await
            .map_err(conflict_as(message))?;
        Ok(())
    }

    async fn delete_device(&self, operator: OperatorId, id: DeviceId) -> StoreResult<bool> {
        let result = device::Entity::delete_many()
            .filter(device::Column::Id.eq(id.as_uuid()))
            .filter(device::Column::OperatorId.eq(operator.as_uuid()))
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(result.rows_affected > 0)
    }
}

#[async_trait]
impl DriverStore for SqlStore {
    async fn insert_driver(&self, driver: &Driver, password_hash: Option<&str>) -> StoreResult<()> {
        let row = driver::Model {
            id: driver.id.as_uuid(),
            email: driver.email.as_ref().map(|email| email.as_str().to_owned()),
            password_hash: password_hash.map(str::to_owned),
            display_name: driver.display_name.clone(),
            external_subject: driver.external_subject.clone(),
            created_at: driver.created_at,
        };
        driver::Entity::insert(row.into_active_model())
            .exec_without_returning(&self.db)
            .await
            .map_err(conflict_as("an account with this e-mail or identity already exists"))?;
        Ok(())
    }

    async fn get_driver(&self, id: DriverId) -> StoreResult<Option<Driver>> {
        let row = driver::Entity::find_by_id(id.as_uuid()).one(&self.db).await.map_err(backend)?;
        row.as_ref().map(driver_from_row).transpose()
    }

    async fn find_driver_by_email(&self, email: &Email) -> StoreResult<Option<(Driver, Option<String>)>> {
        let row = driver::Entity::find()
            .filter(driver::Column::Email.eq(email.as_str()))
            .one(&self.db)
            .await
            .map_err(backend)?;
        row.map(|row| Ok((driver_from_row(&row)?, row.password_hash))).transpose()
    }

    async fn find_driver_by_external_subject(&self, subject: &str) -> StoreResult<Option<Driver>> {
        let row = driver::Entity::find()
            .filter(driver::Column::ExternalSubject.eq(subject))
            .one(&self.db)
            .await
            .map_err(backend)?;
        row.as_ref().map(driver_from_row).transpose()
    }
}

#[async_trait]
impl VehicleStore for SqlStore {
    async fn insert_vehicle(&self, vehicle: &Vehicle) -> StoreResult<()> {
        let row = vehicle::Model {
            id: vehicle.id.as_uuid(),
            driver_id: vehicle.driver_id.as_uuid(),
            plate: vehicle.plate.as_str().to_owned(),
            vehicle_type: vehicle.vehicle_type.as_str().to_owned(),
            label: vehicle.label.clone(),
            created_at: vehicle.created_at,
        };
        vehicle::Entity::insert(row.into_active_model())
            .on_conflict(OnConflict::new().do_nothing().to_owned())
            .exec_without_returning(&self.db)
            .await
            .map_err(backend)
            .and_then(|n_inserted| {
                if n_inserted == 0 {
                    Err(StoreError::Conflict("you already registered a vehicle with this plate".into()))
                } else {
                    Ok(())
                }
            })
    }

    async fn list_vehicles(&self, driver: DriverId, page: PageRequest) -> StoreResult<Page<Vehicle>> {
        let select = vehicle::Entity::find().filter(vehicle::Column::DriverId.eq(driver.as_uuid()));
        fetch_page(&self.db, select, vehicle::Column::Id, page, vehicle_from_row, |vehicle| vehicle.id.as_uuid()).await
    }

    async fn get_vehicle(&self, driver: DriverId, id: VehicleId) -> StoreResult<Option<Vehicle>> {
        let row = vehicle::Entity::find()
            .filter(vehicle::Column::Id.eq(id.as_uuid()))
            .filter(vehicle::Column::DriverId.eq(driver.as_uuid()))
            .one(&self.db)
            .await
            .map_err(backend)?;
        row.map(vehicle_from_row).transpose()
    }

    async fn delete_vehicle(&self, driver: DriverId, id: VehicleId) -> StoreResult<bool> {
        let result = vehicle::Entity::delete_many()
            .filter(vehicle::Column::Id.eq(id.as_uuid()))
            .filter(vehicle::Column::DriverId.eq(driver.as_uuid()))
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(result.rows_affected > 0)
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        self.db.ping().await.map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a new SQLite file in `dir`, not migrated.
    async fn sqlite_store(dir: &std::path::Path, max_connections: u32) -> SqlStore {
        let settings = DatabaseSettings {
            url: format!("sqlite://{}", dir.join("berth.db").display()),
            max_connections,
            connect_timeout: Duration::from_secs(10),
        };
        SqlStore::connect(&settings).await.unwrap()
    }

    /// Committing connections leave the WAL to the checkpointer: what migrations write reaches the
    /// database file without another commit, well under the backstop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_copies_the_wal_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.db");
        let store = sqlite_store(dir.path(), 4).await;
        store.migrate().await.unwrap();
        let wal_pages = std::fs::metadata(dir.path().join("berth.db-wal")).unwrap().len() / 4096;
        assert!(
            wal_pages > 20 && wal_pages < CHECKPOINT_BACKSTOP_PAGES,
            "the migrations are in the WAL ({wal_pages} pages)"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(&file).unwrap().len() < 20 * 4096 {
            assert!(std::time::Instant::now() < deadline, "the WAL was never copied back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.close().await.unwrap();
    }

    /// A slice is due from its share of the round on; while the ingest writer is busy, only once
    /// `MOVE_WHEN_BUSY_AFTER` overdue. A piece is `MOVE_AT_LEAST` rows when idle, twice the rows
    /// committed since the last piece (at least that) when busy, the round moves on once a slice
    /// is empty, and no piece starts before `MOVE_PACE` times the last one's duration has passed.
    #[test]
    fn recent_history_waits_for_an_idle_writer_unless_overdue() {
        let history = RecentHistory::default();
        let rewind = |by: Duration| {
            let mut round = history.round.lock().unwrap();
            round.0 -= by;
        };
        let piece = |next: NextMove| match next {
            NextMove::Piece(slice, limit) => Some((slice, limit)),
            NextMove::After(_) | NextMove::Idle => None,
        };
        assert_eq!(history.next_move(false), NextMove::Idle, "nothing committed, nothing to move");
        history.committed(1);
        assert!(
            matches!(history.next_move(false), NextMove::After(_)),
            "the first round starts a second after the store"
        );
        rewind(MOVE_RECENT_EVERY);
        assert_eq!(piece(history.next_move(true)), None, "slice 0 is due, not overdue");
        assert_eq!(piece(history.next_move(false)), Some((0, MOVE_AT_LEAST)));
        history.moved(0, Ok(false), Duration::ZERO);
        history.committed(2_000);
        history.committed(3_000);
        assert_eq!(
            piece(history.next_move(false)),
            Some((0, MOVE_AT_LEAST)),
            "the round stays on a slice until it is empty"
        );
        history.moved(0, Ok(true), Duration::ZERO);
        let next = history.next_move(false);
        assert!(
            matches!(next, NextMove::After(wait) if wait <= MOVE_RECENT_EVERY / 32),
            "slice 1 is due soon: {next:?}"
        );
        rewind(MOVE_RECENT_EVERY / 2);
        assert_eq!(piece(history.next_move(true)), None);
        assert_eq!(piece(history.next_move(false)), Some((1, MOVE_AT_LEAST)));
        rewind(MOVE_WHEN_BUSY_AFTER);
        history.committed(2_000);
        history.committed(3_000);
        assert_eq!(piece(history.next_move(true)), Some((1, 10_000)), "overdue: twice the rows since the last piece");
        history.moved(1, Ok(false), Duration::ZERO);
        history.committed(10);
        assert_eq!(piece(history.next_move(true)), Some((1, MOVE_AT_LEAST)));
        // A piece that took an hour: the next waits three hours, even when idle.
        history.moved(1, Ok(false), Duration::from_secs(3600));
        let NextMove::After(wait) = history.next_move(false) else { panic!("paced") };
        assert!(wait > Duration::from_secs(3 * 3600 - 60), "{wait:?}");
        history.moved(1, Ok(true), Duration::ZERO);
        for slice in 2..batch::HISTORY_SLICES {
            history.moved(slice, Ok(true), Duration::ZERO);
        }
        // The round is over (and its second long past); rows were committed during it, so
        // another round follows at once. Once a round has seen no commit, none starts until one
        // comes.
        assert_eq!(piece(history.next_move(false)), Some((0, MOVE_AT_LEAST)));
        for slice in 0..batch::HISTORY_SLICES {
            history.moved(slice, Ok(true), Duration::ZERO);
        }
        assert_eq!(history.next_move(false), NextMove::Idle);
        history.committed(1);
        assert!(matches!(history.next_move(false), NextMove::After(_)), "the next round, a second after this one");
        rewind(MOVE_RECENT_EVERY);
        assert_eq!(piece(history.next_move(false)), Some((0, MOVE_AT_LEAST)));
    }

    /// A move takes a slice's oldest rows up to its limit and says whether the slice is empty;
    /// each row ends in `space_events` once, and the other slices stay where they were.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recent_history_moves_in_pieces_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path(), 1).await;
        store.migrate().await.unwrap();
        let db = &store.db;
        let pool = db.get_sqlite_connection_pool();
        let count = |sql: &'static str| async move {
            sea_orm::sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap()
        };
        // The rows' spaces do not exist: only the moves are under test.
        sea_orm::sqlx::query("PRAGMA foreign_keys = OFF").execute(pool).await.unwrap();
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        for (index, id) in ids.iter().enumerate() {
            // Rows 0–3 in slice 2, two spaces interleaved; row 4 in slice 3.
            let slice = if index == 4 { 3 } else { 2 };
            let space = Uuid::from_u128(index as u128 % 2);
            sea_orm::sqlx::query(
                "INSERT INTO space_events_recent (slice, id, operator_id, space_id, device_id, kind, from_status, \
                 to_status, at, recorded_at, detail) VALUES (?, ?, ?, ?, NULL, 'change', 'free', 'occupied', \
                 '2026-11-29T00:00:00+00:00', '2026-11-29T00:00:00+00:00', NULL)",
            )
            .bind(slice)
            .bind(id)
            .bind(Uuid::nil())
            .bind(space)
            .execute(pool)
            .await
            .unwrap();
        }
        assert!(!batch::move_recent_history(pool, 2, 3).await.unwrap(), "one row of slice 2 is left");
        let left: Vec<Uuid> = sea_orm::sqlx::query_scalar("SELECT id FROM space_events_recent ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
        assert_eq!(left, [ids[3], ids[4]], "the three oldest of slice 2 moved");
        assert_eq!(count("SELECT count(*) FROM space_events").await, 3);
        assert!(batch::move_recent_history(pool, 2, 3).await.unwrap(), "slice 2 is empty");
        assert!(batch::move_recent_history(pool, 2, 3).await.unwrap(), "an empty slice moves nothing");
        let moved: Vec<Uuid> =
            sea_orm::sqlx::query_scalar("SELECT id FROM space_events ORDER BY id").fetch_all(pool).await.unwrap();
        assert_eq!(moved, ids[..4]);
        assert_eq!(count("SELECT count(*) FROM space_events_recent WHERE slice = 3").await, 1);
        store.close().await.unwrap();
    }

    /// m0009 rebuilds SQLite's history keyed by (space, id) without a rowid, keeping every row;
    /// going down restores the rowid table and its per-space index with the same rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_is_rebuilt_keyed_by_space_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path(), 1).await;
        let db = &store.db;
        let text = |sql: &str| {
            let sql = sql.to_owned();
            async move {
                let rows = db.query_all(sea_orm::Statement::from_string(DbBackend::Sqlite, sql)).await.unwrap();
                rows.iter().map(|row| row.try_get_by_index::<String>(0).unwrap()).collect::<Vec<String>>()
            }
        };
        let schema =
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'space_events' AND sql IS NOT NULL ORDER BY type DESC";
        let history = "SELECT space_id || ' ' || id FROM space_events ORDER BY space_id, id";
        migration::Migrator::up(db, Some(8)).await.unwrap();
        // The rows' spaces do not exist: only the rebuild is under test.
        db.execute_unprepared("PRAGMA foreign_keys = OFF").await.unwrap();
        let rows = [("b", "3"), ("a", "2"), ("b", "1"), ("a", "4")];
        for (space, id) in rows {
            db.execute_unprepared(&format!(
                "INSERT INTO space_events (id, operator_id, space_id, device_id, kind, from_status, to_status, at, \
                 recorded_at, detail) VALUES ('{id}', 'o', '{space}', NULL, 'change', 'free', 'occupied', \
                 '2026-11-29T00:00:00Z', '2026-11-29T00:00:00Z', NULL)"
            ))
            .await
            .unwrap();
        }
        let expected = ["a 2", "a 4", "b 1", "b 3"];
        assert_eq!(text(history).await, expected);

        migration::Migrator::up(db, None).await.unwrap();
        let tables = text(schema).await;
        assert_eq!(tables.len(), 1, "no index beside the table: {tables:?}");
        assert!(tables[0].contains(r#"PRIMARY KEY ("space_id", "id")"#) && tables[0].ends_with("WITHOUT ROWID"));
        assert!(tables[0].contains("ON DELETE CASCADE"), "{}", tables[0]);
        assert_eq!(text(history).await, expected);
        // Stored in key order: the table itself answers a space's history.
        assert_eq!(text("SELECT space_id || ' ' || id FROM space_events").await, expected);

        migration::Migrator::down(db, Some(1)).await.unwrap();
        let tables = text(schema).await;
        assert_eq!(tables.len(), 2, "{tables:?}");
        assert!(!tables[0].contains("WITHOUT ROWID") && tables[1].contains("space_events_by_space"), "{tables:?}");
        assert_eq!(text(history).await, expected);
        migration::Migrator::up(db, None).await.unwrap();
        assert_eq!(text(history).await, expected);
        store.close().await.unwrap();
    }

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(redact_url("postgres://bob:secret@db:5432/x"), "postgres://bob:***@db:5432/x");
        assert_eq!(redact_url("postgres://bob@db/x"), "postgres://bob@db/x");
        assert_eq!(redact_url("sqlite://data/berth.db"), "sqlite://data/berth.db");
    }
}
