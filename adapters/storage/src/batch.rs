//! The ingest writer's batches, written straight through sqlx with fixed SQL: this is the
//! platform's hottest write path, and building each statement through the query builder cost
//! more than the database's own work.
//!
//! - SQLite: multi-row `INSERT … VALUES (…), (…) ON CONFLICT … DO UPDATE` and one
//!   `UPDATE … FROM (VALUES …)` per chunk, in a few chunk sizes so every statement stays prepared.
//!   History rows go to `space_events_recent`, keyed by (slice, id), and move into
//!   `space_events`, keyed by (space, id), about once a second ([`move_recent_history`]).
//! - PostgreSQL: one statement per table per batch, whatever its size, each column bound as an
//!   array and turned back into rows by `UNNEST`.
//!
//! Values are bound as the same Rust types the entities use, so they are stored exactly as the
//! rest of the store writes and reads them.

use std::fmt::Write as _;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use sea_orm::sqlx::postgres::{PgArguments, Postgres};
use sea_orm::sqlx::query::Query;
use sea_orm::sqlx::sqlite::{Sqlite, SqliteArguments};
use sea_orm::sqlx::{self, PgPool, SqlitePool};
use uuid::Uuid;

use crate::entity::{device_health, space_event, space_live};

/// A space's status columns, as the live state shows it.
pub(crate) struct ShownRow {
    pub id: Uuid,
    pub operator_id: Uuid,
    pub status: String,
    pub since: DateTime<Utc>,
    pub confidence: f64,
}

/// One commit's rows: the newest live row per space and health row per device, every event.
#[derive(Default)]
pub(crate) struct Rows {
    pub lives: Vec<space_live::Model>,
    pub events: Vec<space_event::Model>,
    pub shown: Vec<ShownRow>,
    pub healths: Vec<device_health::Model>,
}

const LIVE_COLUMNS: [&str; 15] = [
    "space_id",
    "operator_id",
    "sensed",
    "sensed_since",
    "observed_at",
    "last_seen",
    "last_counter",
    "last_payload",
    "recent_changes",
    "override_status",
    "override_reason",
    "override_until",
    "override_set_at",
    "override_set_by",
    "updated_at",
];

const EVENT_COLUMNS: [&str; 10] =
    ["id", "operator_id", "space_id", "device_id", "kind", "from_status", "to_status", "at", "recorded_at", "detail"];

const HEALTH_COLUMNS: [&str; 11] = [
    "device_id",
    "operator_id",
    "last_seen",
    "battery_mv",
    "temperature_c",
    "last_object",
    "last_error",
    "last_error_at",
    "accepted",
    "rejected",
    "updated_at",
];

/// `ON CONFLICT (key) DO UPDATE SET` every column but the first two (the key and the operator).
fn upsert_tail(columns: &[&str]) -> String {
    let mut tail = format!(" ON CONFLICT ({}) DO UPDATE SET ", columns[0]);
    for (index, column) in columns[2..].iter().enumerate() {
        if index > 0 {
            tail.push_str(", ");
        }
        let _ = write!(tail, "{column} = excluded.{column}");
    }
    tail
}

/// `(?, ?, …), (?, ?, …)`: `rows` rows of `columns` parameters.
fn placeholders(columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

fn insert_sql(table: &str, columns: &[&str], rows: usize, upsert: bool) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES {}", columns.join(", "), placeholders(columns.len(), rows));
    if upsert {
        sql.push_str(&upsert_tail(columns));
    }
    sql
}

/// Rows per SQLite statement at most (bind parameters stay far under SQLite's limit).
const CHUNK: usize = 256;

/// Splits rows into statements of [`CHUNK`] rows and then powers of two, so that only a handful
/// of distinct statements exist and each stays in the driver's prepared-statement cache.
fn statement_chunks<T>(mut rows: &[T]) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    while !rows.is_empty() {
        let size = if rows.len() >= CHUNK { CHUNK } else { 1 << rows.len().ilog2() };
        let (chunk, rest) = rows.split_at(size);
        chunks.push(chunk);
        rows = rest;
    }
    chunks
}

/// One kind of SQLite statement: `build` makes its SQL for a number of rows, once for each
/// chunk size (the powers of two up to [`CHUNK`]) the first time that size is needed.
struct ChunkSql {
    build: fn(usize) -> String,
    sizes: [OnceLock<String>; CHUNK.ilog2() as usize + 1],
}

impl ChunkSql {
    const fn new(build: fn(usize) -> String) -> Self {
        Self { build, sizes: [const { OnceLock::new() }; CHUNK.ilog2() as usize + 1] }
    }

    fn get(&self, rows: usize) -> &str {
        debug_assert!(rows.is_power_of_two() && rows <= CHUNK, "statement_chunks sizes only");
        self.sizes[rows.ilog2() as usize].get_or_init(|| (self.build)(rows))
    }
}

static LIVE_SQL: ChunkSql = ChunkSql::new(sqlite_live_sql);
static EVENT_SQL: ChunkSql = ChunkSql::new(sqlite_event_sql);
static SHOWN_SQL: ChunkSql = ChunkSql::new(sqlite_shown_sql);
static HEALTH_SQL: ChunkSql = ChunkSql::new(sqlite_health_sql);

type SqliteQuery<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

fn bind_live<'q>(query: SqliteQuery<'q>, row: &'q space_live::Model) -> SqliteQuery<'q> {
    query
        .bind(row.space_id)
        .bind(row.operator_id)
        .bind(row.sensed.as_str())
        .bind(row.sensed_since.map(sqlite_time))
        .bind(row.observed_at.map(sqlite_time))
        .bind(row.last_seen.map(sqlite_time))
        .bind(row.last_counter)
        .bind(row.last_payload)
        .bind(row.recent_changes.as_str())
        .bind(row.override_status.as_deref())
        .bind(row.override_reason.as_deref())
        .bind(row.override_until.map(sqlite_time))
        .bind(row.override_set_at.map(sqlite_time))
        .bind(row.override_set_by.as_deref())
        .bind(sqlite_time(row.updated_at))
}

fn bind_event<'q>(query: SqliteQuery<'q>, row: &'q space_event::Model) -> SqliteQuery<'q> {
    query
        .bind(row.id)
        .bind(row.operator_id)
        .bind(row.space_id)
        .bind(row.device_id)
        .bind(row.kind.as_str())
        .bind(row.from_status.as_str())
        .bind(row.to_status.as_str())
        .bind(sqlite_time(row.at))
        .bind(sqlite_time(row.recorded_at))
        .bind(row.detail.as_deref())
}

fn bind_health<'q>(query: SqliteQuery<'q>, row: &'q device_health::Model) -> SqliteQuery<'q> {
    query
        .bind(row.device_id)
        .bind(row.operator_id)
        .bind(row.last_seen.map(sqlite_time))
        .bind(row.battery_mv)
        .bind(row.temperature_c)
        .bind(row.last_object.as_deref())
        .bind(row.last_error.as_deref())
        .bind(row.last_error_at.map(sqlite_time))
        .bind(row.accepted)
        .bind(row.rejected.as_str())
        .bind(sqlite_time(row.updated_at))
}

fn bind_shown<'q>(query: SqliteQuery<'q>, row: &'q ShownRow) -> SqliteQuery<'q> {
    query.bind(row.id).bind(row.operator_id).bind(row.status.as_str()).bind(sqlite_time(row.since)).bind(row.confidence)
}

fn sqlite_live_sql(rows: usize) -> String {
    insert_sql("space_live", &LIVE_COLUMNS, rows, true)
}

fn sqlite_event_sql(rows: usize) -> String {
    let mut columns = EVENT_COLUMNS.to_vec();
    columns.push("slice");
    insert_sql("space_events_recent", &columns, rows, false)
}

/// The slice of the spaces a space's recent history moves with: the top bits of the id's last
/// byte, which is random in a UUIDv7 (and in a v4).
pub(crate) fn history_slice(space: Uuid) -> u8 {
    (u16::from(space.as_bytes()[15]) / (256 / u16::from(HISTORY_SLICES))) as u8
}

fn bind_recent_event<'q>(query: SqliteQuery<'q>, row: &'q space_event::Model) -> SqliteQuery<'q> {
    bind_event(query, row).bind(i16::from(history_slice(row.space_id)))
}

fn sqlite_health_sql(rows: usize) -> String {
    insert_sql("device_health", &HEALTH_COLUMNS, rows, true)
}

/// A space closed by hand stays closed in its own columns; the operator must match too.
fn sqlite_shown_sql(rows: usize) -> String {
    format!(
        "UPDATE spaces SET status = v.column3, status_since = v.column4, confidence = v.column5 \
         FROM (VALUES {}) AS v WHERE spaces.id = v.column1 AND spaces.operator_id = v.column2 \
         AND spaces.status <> 'closed'",
        placeholders(5, rows)
    )
}

/// Runs `rows` through statements of [`statement_chunks`] sizes.
async fn sqlite_rows<T>(
    tx: &mut sqlx::SqliteConnection,
    rows: &[T],
    sql: &'static ChunkSql,
    bind: for<'q> fn(SqliteQuery<'q>, &'q T) -> SqliteQuery<'q>,
) -> Result<(), sqlx::Error> {
    for chunk in statement_chunks(rows) {
        let mut query = sqlx::query(sql.get(chunk.len()));
        for row in chunk {
            query = bind(query, row);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

pub(crate) async fn write_sqlite(pool: &SqlitePool, rows: &Rows) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlite_rows(&mut tx, &rows.lives, &LIVE_SQL, bind_live).await?;
    sqlite_rows(&mut tx, &rows.events, &EVENT_SQL, bind_recent_event).await?;
    sqlite_rows(&mut tx, &rows.shown, &SHOWN_SQL, bind_shown).await?;
    sqlite_rows(&mut tx, &rows.healths, &HEALTH_SQL, bind_health).await?;
    tx.commit().await
}

/// Slices of the spaces whose recent history moves together (see [`move_recent_history`]). A
/// move's time follows the pages it touches, about one per space of the slice: with 32 slices of
/// 2,000 spaces (and whole-slice moves), `berth bench ingest`'s p99 at 5,000 uplinks/s was
/// 14–36 ms from second to second once settled, against 22–60 ms with 8. Rows keep the slice
/// they were written with, so changing this needs no migration.
pub(crate) const HISTORY_SLICES: u8 = 32;

/// Moves the rows of one slice of the spaces ([`history_slice`]) from `space_events_recent` into
/// `space_events`, in one transaction, sorted by space and id: all of them, or the oldest
/// `limit` when there are more. Returns whether the slice is now empty.
///
/// Why: on SQLite `space_events` is keyed by (space, id) (migration m0009; before, its index
/// `space_events_by_space` was), so a commit's history rows land on one page per space. Written
/// at each commit, that was a page per space per commit (2,000 spaces: 8 MB of WAL for every
/// commit, each page read back and copied into the database file), most of the ingest writer's
/// time. Moved about once a second, each page is written about once a second and the rows arrive
/// in key order; a slice at a time, spread over the second, so no commit waits for a whole
/// second's move. The limit keeps a move after a burst (when the slices hold seconds of rows)
/// from holding up the commits behind it for long: the rest moves in later pieces.
pub(crate) async fn move_recent_history(pool: &SqlitePool, slice: u8, limit: usize) -> Result<bool, sqlx::Error> {
    static SQL: OnceLock<[String; 5]> = OnceLock::new();
    let [boundary, insert_all, delete_all, insert_before, delete_before] = SQL.get_or_init(|| {
        let columns = EVENT_COLUMNS.join(", ");
        let insert = |filter: &str| {
            format!(
                "INSERT INTO space_events ({columns}) SELECT {columns} FROM space_events_recent \
                 WHERE {filter} ORDER BY space_id, id"
            )
        };
        [
            "SELECT id FROM space_events_recent WHERE slice = ? ORDER BY id LIMIT 1 OFFSET ?".to_owned(),
            insert("slice = ?"),
            "DELETE FROM space_events_recent WHERE slice = ?".to_owned(),
            insert("slice = ? AND id < ?"),
            "DELETE FROM space_events_recent WHERE slice = ? AND id < ?".to_owned(),
        ]
    });
    let slice = i16::from(slice);
    let mut tx = pool.begin().await?;
    // Ids are UUIDv7, so the `limit` oldest rows are those before the first one left.
    let first_left: Option<Uuid> = sqlx::query_scalar(boundary)
        .bind(slice)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_optional(&mut *tx)
        .await?;
    match first_left {
        None => {
            sqlx::query(insert_all).bind(slice).execute(&mut *tx).await?;
            sqlx::query(delete_all).bind(slice).execute(&mut *tx).await?;
        }
        Some(first_left) => {
            sqlx::query(insert_before).bind(slice).bind(first_left).execute(&mut *tx).await?;
            sqlx::query(delete_before).bind(slice).bind(first_left).execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    Ok(first_left.is_none())
}

/// `INSERT INTO table (columns) SELECT * FROM UNNEST($1::type[], …)`, upserting when asked.
fn unnest_insert_sql(table: &str, columns: &[&str], types: &[&str], upsert: bool) -> String {
    let arrays: Vec<String> = types.iter().enumerate().map(|(index, ty)| format!("${}::{ty}[]", index + 1)).collect();
    let mut sql = format!("INSERT INTO {table} ({}) SELECT * FROM UNNEST({})", columns.join(", "), arrays.join(", "));
    if upsert {
        sql.push_str(&upsert_tail(columns));
    }
    sql
}

/// Each column of `rows` as one array parameter.
fn column<T, V>(rows: &[T], value: impl Fn(&T) -> V) -> Vec<V> {
    rows.iter().map(value).collect()
}

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

fn pg_lives<'q>(sql: &'q str, rows: &[space_live::Model]) -> PgQuery<'q> {
    sqlx::query(sql)
        .bind(column(rows, |r| r.space_id))
        .bind(column(rows, |r| r.operator_id))
        .bind(column(rows, |r| r.sensed.clone()))
        .bind(column(rows, |r| r.sensed_since))
        .bind(column(rows, |r| r.observed_at))
        .bind(column(rows, |r| r.last_seen))
        .bind(column(rows, |r| r.last_counter))
        .bind(column(rows, |r| r.last_payload))
        .bind(column(rows, |r| r.recent_changes.clone()))
        .bind(column(rows, |r| r.override_status.clone()))
        .bind(column(rows, |r| r.override_reason.clone()))
        .bind(column(rows, |r| r.override_until))
        .bind(column(rows, |r| r.override_set_at))
        .bind(column(rows, |r| r.override_set_by.clone()))
        .bind(column(rows, |r| r.updated_at))
}

fn pg_events<'q>(sql: &'q str, rows: &[space_event::Model]) -> PgQuery<'q> {
    sqlx::query(sql)
        .bind(column(rows, |r| r.id))
        .bind(column(rows, |r| r.operator_id))
        .bind(column(rows, |r| r.space_id))
        .bind(column(rows, |r| r.device_id))
        .bind(column(rows, |r| r.kind.clone()))
        .bind(column(rows, |r| r.from_status.clone()))
        .bind(column(rows, |r| r.to_status.clone()))
        .bind(column(rows, |r| r.at))
        .bind(column(rows, |r| r.recorded_at))
        .bind(column(rows, |r| r.detail.clone()))
}

fn pg_healths<'q>(sql: &'q str, rows: &[device_health::Model]) -> PgQuery<'q> {
    sqlx::query(sql)
        .bind(column(rows, |r| r.device_id))
        .bind(column(rows, |r| r.operator_id))
        .bind(column(rows, |r| r.last_seen))
        .bind(column(rows, |r| r.battery_mv))
        .bind(column(rows, |r| r.temperature_c))
        .bind(column(rows, |r| r.last_object.clone()))
        .bind(column(rows, |r| r.last_error.clone()))
        .bind(column(rows, |r| r.last_error_at))
        .bind(column(rows, |r| r.accepted))
        .bind(column(rows, |r| r.rejected.clone()))
        .bind(column(rows, |r| r.updated_at))
}

fn pg_shown<'q>(sql: &'q str, rows: &[ShownRow]) -> PgQuery<'q> {
    sqlx::query(sql)
        .bind(column(rows, |r| r.id))
        .bind(column(rows, |r| r.operator_id))
        .bind(column(rows, |r| r.status.clone()))
        .bind(column(rows, |r| r.since))
        .bind(column(rows, |r| r.confidence))
}

const PG_SHOWN: &str = "UPDATE spaces SET status = v.status, status_since = v.since, confidence = v.confidence \
     FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::float8[]) \
     AS v(id, operator_id, status, since, confidence) \
     WHERE spaces.id = v.id AND spaces.operator_id = v.operator_id AND spaces.status <> 'closed'";

pub(crate) async fn write_postgres(pool: &PgPool, rows: &Rows) -> Result<(), sqlx::Error> {
    static SQL: OnceLock<[String; 3]> = OnceLock::new();
    let [lives, events, healths] = SQL.get_or_init(|| {
        [
            unnest_insert_sql(
                "space_live",
                &LIVE_COLUMNS,
                &[
                    "uuid",
                    "uuid",
                    "text",
                    "timestamptz",
                    "timestamptz",
                    "timestamptz",
                    "int8",
                    "int8",
                    "text",
                    "text",
                    "text",
                    "timestamptz",
                    "timestamptz",
                    "text",
                    "timestamptz",
                ],
                true,
            ),
            unnest_insert_sql(
                "space_events",
                &EVENT_COLUMNS,
                &["uuid", "uuid", "uuid", "uuid", "text", "text", "text", "timestamptz", "timestamptz", "text"],
                false,
            ),
            unnest_insert_sql(
                "device_health",
                &HEALTH_COLUMNS,
                &[
                    "uuid",
                    "uuid",
                    "timestamptz",
                    "int8",
                    "float8",
                    "text",
                    "text",
                    "timestamptz",
                    "int8",
                    "text",
                    "timestamptz",
                ],
                true,
            ),
        ]
    });
    let mut tx = pool.begin().await?;
    if !rows.lives.is_empty() {
        pg_lives(lives, &rows.lives).execute(&mut *tx).await?;
    }
    if !rows.events.is_empty() {
        pg_events(events, &rows.events).execute(&mut *tx).await?;
    }
    if !rows.shown.is_empty() {
        pg_shown(PG_SHOWN, &rows.shown).execute(&mut *tx).await?;
    }
    if !rows.healths.is_empty() {
        pg_healths(healths, &rows.healths).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// A time as the SQLite driver stores it (`to_rfc3339_opts(AutoSi, false)`:
/// `2026-11-26T21:15:55.123+00:00`), written directly: chrono's general formatter was the
/// largest single cost of binding a batch.
pub(crate) fn sqlite_time(time: DateTime<Utc>) -> String {
    rfc3339(time, "+00:00")
}

fn rfc3339(time: DateTime<Utc>, zone: &str) -> String {
    let mut text = String::with_capacity(36);
    push_rfc3339(&mut text, time, zone);
    text
}

/// Appends `time` as [`rfc3339`] writes it, digit by digit (the formatting machinery cost more
/// than the rest of a row's binding).
fn push_rfc3339(out: &mut String, time: DateTime<Utc>, zone: &str) {
    use chrono::{Datelike, Timelike};
    let nanos = time.nanosecond();
    let year = time.year();
    if nanos >= 1_000_000_000 || !(0..=9999).contains(&year) {
        // Leap seconds and far years: chrono's own (rare) formatting.
        out.push_str(&time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, zone == "Z"));
        return;
    }
    let mut digits = [0u8; 30];
    let mut at = 0;
    let mut put = |value: u32, width: u32| {
        for place in (0..width).rev() {
            digits[at] = b'0' + (value / 10u32.pow(place) % 10) as u8;
            at += 1;
        }
    };
    put(year as u32, 4);
    put(time.month(), 2);
    put(time.day(), 2);
    put(time.hour(), 2);
    put(time.minute(), 2);
    put(time.second(), 2);
    let fraction = if nanos == 0 {
        0
    } else if nanos.is_multiple_of(1_000_000) {
        put(nanos / 1_000_000, 3);
        3
    } else if nanos.is_multiple_of(1_000) {
        put(nanos / 1_000, 6);
        6
    } else {
        put(nanos, 9);
        9
    };
    let text = |range: std::ops::Range<usize>| std::str::from_utf8(&digits[range]).expect("invariant: ASCII digits");
    out.push_str(text(0..4));
    for (separator, start) in [('-', 4), ('-', 6), ('T', 8), (':', 10), (':', 12)] {
        out.push(separator);
        out.push_str(text(start..start + 2));
    }
    if fraction > 0 {
        out.push('.');
        out.push_str(text(14..14 + fraction));
    }
    out.push_str(zone);
}

/// Times as a JSON array of RFC 3339 strings (what `serde_json` reads back as
/// `Vec<DateTime<Utc>>`), without the serializer's per-character escaping: these strings have
/// nothing to escape.
pub(crate) fn times_json(times: &[DateTime<Utc>]) -> String {
    let mut json = String::with_capacity(2 + times.len() * 40);
    json.push('[');
    for (index, time) in times.iter().enumerate() {
        if index > 0 {
            json.push(',');
        }
        json.push('"');
        push_rfc3339(&mut json, *time, "Z");
        json.push('"');
    }
    json.push(']');
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_come_in_few_sizes() {
        let rows: Vec<u32> = (0..600).collect();
        let sizes: Vec<usize> = statement_chunks(&rows).iter().map(|chunk| chunk.len()).collect();
        assert_eq!(sizes, [256, 256, 64, 16, 8]);
        assert!(statement_chunks::<u32>(&[]).is_empty());
    }

    #[test]
    fn times_read_back() {
        let times = vec![
            DateTime::parse_from_rfc3339("2026-11-26T21:15:55.123456789Z").unwrap().to_utc(),
            DateTime::parse_from_rfc3339("2026-11-26T21:16:00Z").unwrap().to_utc(),
        ];
        let json = times_json(&times);
        assert_eq!(serde_json::from_str::<Vec<DateTime<Utc>>>(&json).unwrap(), times);
        assert_eq!(times_json(&[]), "[]");
        assert_eq!(json, serde_json::to_string(&times).unwrap());
    }

    #[test]
    fn times_are_written_as_the_driver_writes_them() {
        let base = DateTime::parse_from_rfc3339("2026-11-26T21:15:55Z").unwrap().to_utc();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut times = vec![base, DateTime::UNIX_EPOCH];
        for nanos in [0, 1, 999, 1_000, 120_000, 1_000_000, 5_000_000, 999_999_999] {
            times.push(base + chrono::Duration::nanoseconds(nanos));
        }
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let nanos = (seed % 1_000_000_000) as i64;
            let nanos = match seed % 4 {
                0 => nanos - nanos % 1_000_000,
                1 => nanos - nanos % 1_000,
                _ => nanos,
            };
            times.push(
                base + chrono::Duration::seconds((seed >> 34) as i64 % 400_000_000)
                    + chrono::Duration::nanoseconds(nanos),
            );
        }
        for time in times {
            assert_eq!(sqlite_time(time), time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false), "{time:?}");
            assert_eq!(rfc3339(time, "Z"), time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true), "{time:?}");
        }
    }

    #[test]
    fn each_chunk_size_has_its_own_sql() {
        for rows in [1, 2, 64, CHUNK] {
            assert_eq!(LIVE_SQL.get(rows), sqlite_live_sql(rows));
            assert_eq!(SHOWN_SQL.get(rows), sqlite_shown_sql(rows));
        }
        assert_eq!(LIVE_SQL.get(4).matches("(?,").count(), 4);
    }

    #[test]
    fn upserts_update_all_but_key_and_operator() {
        let sql = insert_sql("t", &["k", "o", "a", "b"], 2, true);
        assert_eq!(
            sql,
            "INSERT INTO t (k, o, a, b) VALUES (?, ?, ?, ?), (?, ?, ?, ?) \
             ON CONFLICT (k) DO UPDATE SET a = excluded.a, b = excluded.b"
        );
    }
}
