//! `berth bench history`: how long the occupancy reads of pricing take over a long state-change
//! history. It stores `events` changes spread over `days` across one site's spaces, then times
//! the query behind the last hour's occupancy and an adjustment's 28-day profile, read from the
//! window's first possible event id (as the kernel does) and, for comparison, from the start of
//! each space's history.

use std::time::{Duration, Instant};

use anyhow::Context;
use berth_kernel::commit::{LiveWrite, SpaceWrite};
use berth_kernel::ids::{DeviceId, SpaceId};
use berth_kernel::live::{SpaceEvent, SpaceEventKind, SpaceLive};
use berth_kernel::ports::LiveStore;
use berth_kernel::space::SpaceStatus;
use chrono::Utc;

use crate::bench::{ms, percentiles};
use crate::config::{Config, Secret};

/// Changes stored per transaction while loading the history.
const BATCH: usize = 10_000;

pub async fn history(events: usize, spaces: usize, days: u32, database_url: Option<String>) -> anyhow::Result<()> {
    anyhow::ensure!((1..=1000).contains(&spaces), "--spaces must be 1 to 1000");
    anyhow::ensure!(days >= 1, "--days must be at least 1");
    let data_dir = std::env::temp_dir().join(format!("berth-bench-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let result = run(events, spaces, days, database_url, &data_dir).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

async fn run(
    events: usize,
    n_spaces: usize,
    days: u32,
    database_url: Option<String>,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let mut config = Config { data_dir: data_dir.to_path_buf(), ..Config::default() };
    if let Some(url) = database_url {
        config.database.url = Some(Secret::new(url));
    }
    let store = crate::open_store(&config).await?;
    let backend = store.backend_name();
    let kernel = crate::kernel(&config, store.clone());
    let credentials = crate::demo::seed(&kernel, data_dir).await?;
    let admin = kernel.authenticate_api_key(&credentials.operator_admin_key).await?;
    let berth_kernel::auth::Principal::Operator { operator_id: operator, .. } = admin else {
        anyhow::bail!("the demo admin key is not an operator's");
    };
    let garage = credentials.off_street_site_id.parse().context("demo garage id")?;
    crate::bench::add_spaces(&kernel, &admin, garage, n_spaces).await?;
    let filter = berth_kernel::ports::SpaceFilter { site_id: Some(garage), ..Default::default() };
    let page = kernel.list_spaces(&admin, filter, berth_kernel::page::PageRequest::first(1000)).await?;
    let spaces: Vec<SpaceId> = page.items.iter().map(|space| space.id).collect();
    println!("berth bench history: {backend}, {events} state changes over {days} days, {} spaces", spaces.len());

    // The history: evenly spread up to now, each change recorded when it happened.
    let now = Utc::now();
    let span_ms = i64::from(days) * 86_400_000;
    let first_ms = now.timestamp_millis() - span_ms;
    let device = DeviceId::new();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    for index in 0..events {
        let millis = first_ms + (span_ms as i128 * index as i128 / events.max(1) as i128) as i64;
        let at = chrono::DateTime::from_timestamp_millis(millis).context("time in range")?;
        let mut random = [0u8; 10];
        random[2..].copy_from_slice(&(index as u64).to_be_bytes());
        let id = uuid::Builder::from_unix_timestamp_millis(millis as u64, &random).into_uuid();
        let space = spaces[index % spaces.len()];
        let (from, to) = if (index / spaces.len()).is_multiple_of(2) {
            (SpaceStatus::Free, SpaceStatus::Occupied)
        } else {
            (SpaceStatus::Occupied, SpaceStatus::Free)
        };
        let event = SpaceEvent {
            id,
            operator_id: operator,
            space_id: space,
            device_id: None,
            kind: SpaceEventKind::Sensed,
            from,
            to,
            at,
            recorded_at: at,
            detail: None,
        };
        let live = SpaceWrite { space, live: SpaceLive::default(), revision: 0, event: Some(event), shown: None };
        batch.push(LiveWrite { operator, device, health: None, space: Some(live) });
        if batch.len() == BATCH || index + 1 == events {
            store.save_live_batch(&batch).await?;
            batch.clear();
        }
    }
    // The statistics autovacuum keeps in service: without them PostgreSQL scans the table.
    store.analyze().await?;
    println!("  stored (and analysed) in {:.1} s", started.elapsed().as_secs_f64());

    for (label, window) in [("last hour", chrono::Duration::hours(1)), ("last 28 days", chrono::Duration::days(28))] {
        let from = now - window;
        let bounded = time_query(&store, operator, &spaces, SpaceEvent::lowest_id_from(from), from, now).await?;
        let whole = time_query(&store, operator, &spaces, uuid::Uuid::nil(), from, now).await?;
        anyhow::ensure!(bounded.1 == whole.1, "the bound changed the answer: {} vs {} events", bounded.1, whole.1);
        println!(
            "  {label} ({} events): {:.1} ms from the window's first id, {:.1} ms from each space's first event (median of 5)",
            bounded.1,
            ms(bounded.0),
            ms(whole.0)
        );
    }
    Ok(())
}

/// The median time of five reads, and how many events they found.
async fn time_query(
    store: &berth_storage::SqlStore,
    operator: berth_kernel::ids::OperatorId,
    spaces: &[SpaceId],
    ids_from: uuid::Uuid,
    from: chrono::DateTime<Utc>,
    to: chrono::DateTime<Utc>,
) -> anyhow::Result<(Duration, usize)> {
    let mut times = Vec::with_capacity(5);
    let mut found = 0;
    for _ in 0..5 {
        let started = Instant::now();
        found = store.list_events_between(operator, spaces, ids_from, from, to, 1_000_000).await?.len();
        times.push(started.elapsed());
    }
    Ok((percentiles(&mut times).0, found))
}
