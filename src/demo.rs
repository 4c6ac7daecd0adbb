//! `berth demo`: seeds a demo operator with an off-street garage (Porto) and an on-street zone
//! (Santander), about 300 spaces with realistic coordinates, a demo driver, and keys. Idempotent:
//! a restart finds the operator by slug and prints the credentials saved in the data dir.

use std::path::Path;

use anyhow::Context;
use berth_kernel::Kernel;
use berth_kernel::auth::{ApiKeyKind, OperatorRole, Principal};
use berth_kernel::operator::OperatorInput;
use berth_kernel::service::ApiKeyInput;
use berth_kernel::site::{Address, OpeningHoursInput, SiteInput, SiteKind};
use berth_kernel::space::{SpaceCategory, SpaceInput};
use berth_kernel::vehicle_type::VehicleType;
use serde::{Deserialize, Serialize};

pub const DEMO_SLUG: &str = "demo";
const CREDENTIALS_FILE: &str = "demo-credentials.json";

/// What the demo prints, saved (owner-only) so restarts can print it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoCredentials {
    pub operator_id: String,
    pub platform_admin_key: String,
    pub operator_admin_key: String,
    pub operator_staff_key: String,
    pub integration_key: String,
    pub driver_email: String,
    pub driver_password: String,
    pub off_street_site_id: String,
    pub on_street_site_id: String,
}

/// Seeds the demo data unless it exists; returns the credentials to print.
pub async fn seed(kernel: &Kernel, data_dir: &Path) -> anyhow::Result<DemoCredentials> {
    let credentials_path = data_dir.join(CREDENTIALS_FILE);
    if kernel.store().find_operator_by_slug(DEMO_SLUG).await?.is_some()
        && let Ok(text) = std::fs::read_to_string(&credentials_path)
        && let Ok(credentials) = serde_json::from_str::<DemoCredentials>(&text)
    {
        return Ok(credentials);
    }
    let credentials = match kernel.store().find_operator_by_slug(DEMO_SLUG).await? {
        Some(operator) => {
            // The data is there but the credentials file was lost: issue fresh keys.
            let keys = issue_keys(kernel, operator.id).await?;
            let sites = kernel
                .store()
                .list_sites(operator.id, &Default::default(), berth_kernel::page::PageRequest::first(10))
                .await?;
            let site_id = |kind: SiteKind| {
                sites
                    .items
                    .iter()
                    .find(|site| site.details.kind == kind)
                    .map(|site| site.id.to_string())
                    .unwrap_or_default()
            };
            let driver_password = reset_demo_driver(kernel).await?;
            DemoCredentials {
                operator_id: operator.id.to_string(),
                off_street_site_id: site_id(SiteKind::OffStreet),
                on_street_site_id: site_id(SiteKind::OnStreet),
                driver_email: DEMO_DRIVER_EMAIL.to_owned(),
                driver_password,
                ..keys
            }
        }
        None => seed_fresh(kernel).await?,
    };
    std::fs::create_dir_all(data_dir)?;
    crate::write_private_file(&credentials_path, &serde_json::to_string_pretty(&credentials)?)?;
    ensure_garage_rules(kernel, &credentials).await?;
    Ok(credentials)
}

/// Gives the garage the bundled time-of-day template as its published rule set, unless it has
/// a rule set already (so an operator's own changes survive restarts).
async fn ensure_garage_rules(kernel: &Kernel, credentials: &DemoCredentials) -> anyhow::Result<()> {
    use berth_kernel::ids::SiteId;
    use berth_kernel::pricing::RuleSetInput;

    let operator_admin = kernel.authenticate_api_key(&credentials.operator_admin_key).await?;
    let garage = SiteId::parse(&credentials.off_street_site_id).context("the demo garage's id")?;
    let has_rules = kernel.list_rule_sets(&operator_admin, berth_kernel::page::PageRequest::first(100)).await?;
    if has_rules.items.iter().any(|rule_set| rule_set.site_id == Some(garage)) {
        return Ok(());
    }
    let template = berth_rules::project::RuleProject::from_texts(
        "rules/examples/time-of-day",
        include_str!("../rules/examples/time-of-day/ruleset.toml"),
        include_str!("../rules/examples/time-of-day/rules.rhai"),
        include_str!("../rules/examples/time-of-day/tests.toml"),
    )?;
    let settings = template.settings;
    let rule_set = kernel
        .create_rule_set(
            &operator_admin,
            RuleSetInput {
                name: settings.name,
                site_id: Some(garage),
                currency: settings.currency,
                error_policy: settings.error_policy,
                guardrails: settings.guardrails,
                holidays: settings.holidays,
                adjustment: settings.adjustment,
            },
        )
        .await
        .context("creating the demo garage's rule set")?;
    let version = kernel
        .create_rule_version(&operator_admin, rule_set.id, template.source, template.tests, settings.params)
        .await?;
    kernel
        .publish_rule_version(&operator_admin, rule_set.id, version.version, None)
        .await
        .context("publishing the demo garage's rules")?;
    Ok(())
}

const DEMO_DRIVER_EMAIL: &str = "driver@demo.berth.dev";

async fn reset_demo_driver(kernel: &Kernel) -> anyhow::Result<String> {
    let password = random_password();
    match kernel.register_driver(DEMO_DRIVER_EMAIL, &password, Some("Demo Driver")).await {
        Ok(_) => Ok(password),
        // The driver exists with a password we no longer know; say so rather than guess.
        Err(berth_kernel::KernelError::Conflict(_)) => {
            Ok("(unchanged; delete the data dir to reset the demo)".to_owned())
        }
        Err(error) => Err(error.into()),
    }
}

/// A random secret with a prefix (`sk_test_...`), for the demo's local services.
pub fn random_secret(prefix: &str) -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

fn random_password() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..16).map(|_| rng.sample(rand::distributions::Alphanumeric) as char).collect()
}

async fn issue_keys(kernel: &Kernel, operator_id: berth_kernel::ids::OperatorId) -> anyhow::Result<DemoCredentials> {
    let admin = Principal::PlatformAdmin { key_id: None };
    let (_, platform_admin) = kernel.bootstrap_admin_key("demo platform admin").await?;
    let issue = async |name: &str, kind: ApiKeyKind, role: Option<OperatorRole>| {
        kernel
            .create_api_key(&admin, Some(operator_id), ApiKeyInput { name: name.to_owned(), kind, role })
            .await
            .map(|(_, token)| token.0)
    };
    Ok(DemoCredentials {
        operator_id: operator_id.to_string(),
        platform_admin_key: platform_admin.0,
        operator_admin_key: issue("demo operator admin", ApiKeyKind::Operator, Some(OperatorRole::OperatorAdmin))
            .await?,
        operator_staff_key: issue("demo operator staff", ApiKeyKind::Operator, Some(OperatorRole::OperatorStaff))
            .await?,
        integration_key: issue("demo integration", ApiKeyKind::Integration, None).await?,
        driver_email: String::new(),
        driver_password: String::new(),
        off_street_site_id: String::new(),
        on_street_site_id: String::new(),
    })
}

async fn seed_fresh(kernel: &Kernel) -> anyhow::Result<DemoCredentials> {
    let admin = Principal::PlatformAdmin { key_id: None };
    let operator = kernel
        .create_operator(&admin, OperatorInput { name: "Demo Parking Co.".to_owned(), slug: DEMO_SLUG.to_owned() })
        .await
        .context("creating the demo operator")?;
    let keys = issue_keys(kernel, operator.id).await?;
    let operator_admin = kernel.authenticate_api_key(&keys.operator_admin_key).await?;

    // Parque Trindade, Porto: the FIWARE OffStreetParking example, as a 4-level garage.
    let garage = kernel
        .create_site(
            &operator_admin,
            SiteInput {
                kind: Some(SiteKind::OffStreet),
                name: "Parque Trindade".to_owned(),
                description: Some("Municipal car park near the Trindade metro station and the Town Hall".to_owned()),
                lat: 41.150_691_773,
                lon: -8.609_611_988,
                address: Address {
                    street: Some("Rua de Fernandes Tomás".to_owned()),
                    locality: Some("Porto".to_owned()),
                    postal_code: Some("4000-210".to_owned()),
                    country: Some("PT".to_owned()),
                },
                timezone: "Europe/Lisbon".to_owned(),
                currency: "EUR".to_owned(),
                opening_hours: vec![
                    OpeningHoursInput {
                        days: ["mon", "tue", "wed", "thu", "fri", "sat"].map(str::to_owned).to_vec(),
                        opens: "06:00".to_owned(),
                        closes: "24:00".to_owned(),
                    },
                    OpeningHoursInput {
                        days: vec!["sun".to_owned()],
                        opens: "08:00".to_owned(),
                        closes: "22:00".to_owned(),
                    },
                ],
                max_stay_minutes: Some(8 * 60),
                allowed_vehicle_types: vec![VehicleType::Car, VehicleType::Motorcycle, VehicleType::Van],
                max_height_cm: Some(210),
            },
        )
        .await?;
    kernel.create_spaces(&operator_admin, garage.id, garage_spaces(41.150_691_773, -8.609_611_988)).await?;

    // Zona Centro, Santander: the FIWARE OnStreetParking example, as a blue zone along a street.
    let zone = kernel
        .create_site(
            &operator_admin,
            SiteInput {
                kind: Some(SiteKind::OnStreet),
                name: "Zona Centro — Calle Daoíz y Velarde".to_owned(),
                description: Some("Blue zone: permit hours Mon-Sat 09:00-20:00, 2 h maximum".to_owned()),
                lat: 43.462_966,
                lon: -3.803_561,
                address: Address {
                    street: Some("Calle Daoíz y Velarde".to_owned()),
                    locality: Some("Santander".to_owned()),
                    postal_code: Some("39003".to_owned()),
                    country: Some("ES".to_owned()),
                },
                timezone: "Europe/Madrid".to_owned(),
                currency: "EUR".to_owned(),
                opening_hours: vec![],
                max_stay_minutes: Some(120),
                allowed_vehicle_types: vec![VehicleType::Car, VehicleType::Motorcycle],
                max_height_cm: None,
            },
        )
        .await?;
    kernel.create_spaces(&operator_admin, zone.id, street_spaces(43.462_966, -3.803_561)).await?;

    let driver_password = random_password();
    kernel.register_driver(DEMO_DRIVER_EMAIL, &driver_password, Some("Demo Driver")).await?;
    Ok(DemoCredentials {
        off_street_site_id: garage.id.to_string(),
        on_street_site_id: zone.id.to_string(),
        driver_email: DEMO_DRIVER_EMAIL.to_owned(),
        driver_password,
        ..keys
    })
}

/// Metres to degrees near a latitude (small offsets only).
fn offset(lat: f64, lon: f64, north_m: f64, east_m: f64) -> (f64, f64) {
    let lat_deg = north_m / 111_320.0;
    let lon_deg = east_m / (111_320.0 * lat.to_radians().cos());
    (lat + lat_deg, lon + lon_deg)
}

/// 4 levels × 3 rows × 20 bays = 240 spaces, 2.5 m wide, rows 6 m apart; the first bays of each
/// level are accessible, the last have chargers, row C of level 0 takes motorcycles.
fn garage_spaces(lat: f64, lon: f64) -> Vec<SpaceInput> {
    let mut spaces = Vec::new();
    for level in 0..4 {
        for (row_idx, row) in ["A", "B", "C"].iter().enumerate() {
            for bay in 1..=20 {
                let (space_lat, space_lon) = offset(lat, lon, row_idx as f64 * 6.0, f64::from(bay) * 2.5);
                let motorcycle = level == 0 && *row == "C";
                spaces.push(SpaceInput {
                    code: format!("L{level}-{row}{bay:02}"),
                    lat: Some(space_lat),
                    lon: Some(space_lon),
                    category: Some(if motorcycle { SpaceCategory::Compact } else { SpaceCategory::Standard }),
                    vehicle_type: Some(if motorcycle { VehicleType::Motorcycle } else { VehicleType::Car }),
                    ev_charger: row_idx == 1 && bay > 16,
                    accessible: row_idx == 0 && bay <= 2,
                });
            }
        }
    }
    spaces
}

/// 60 kerbside bays along the street, 5.5 m apart, on both sides.
fn street_spaces(lat: f64, lon: f64) -> Vec<SpaceInput> {
    (0..60)
        .map(|idx| {
            let side = if idx % 2 == 0 { -4.0 } else { 4.0 };
            let (space_lat, space_lon) = offset(lat, lon, side, f64::from(idx / 2) * 5.5 - 80.0);
            SpaceInput {
                code: format!("DV-{:03}", idx + 1),
                lat: Some(space_lat),
                lon: Some(space_lon),
                category: Some(if idx >= 56 { SpaceCategory::Loading } else { SpaceCategory::Standard }),
                vehicle_type: Some(VehicleType::Car),
                ev_charger: idx == 10 || idx == 11,
                accessible: idx < 2,
            }
        })
        .collect()
}
