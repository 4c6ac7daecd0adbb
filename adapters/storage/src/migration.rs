//! Schema migrations. Each migration is append-only: never edit one that has shipped, add another.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Spine),
            Box::new(M0002Live),
            Box::new(M0003Rules),
            Box::new(M0004Bookings),
            Box::new(M0005Payments),
            Box::new(M0006Conversations),
            Box::new(M0007Handoffs),
            Box::new(M0008RecentHistory),
            Box::new(M0009HistoryBySpace),
        ]
    }
}

#[derive(DeriveIden)]
enum Operators {
    Table,
    Id,
    Name,
    Slug,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    OperatorId,
    Kind,
    Role,
    Name,
    DisplayPrefix,
    SecretHash,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Sites {
    Table,
    Id,
    OperatorId,
    Kind,
    Name,
    Description,
    Lat,
    Lon,
    Address,
    Timezone,
    Currency,
    OpeningHours,
    MaxStayMinutes,
    AllowedVehicleTypes,
    MaxHeightCm,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Spaces {
    Table,
    Id,
    OperatorId,
    SiteId,
    Code,
    Lat,
    Lon,
    Category,
    VehicleType,
    EvCharger,
    Accessible,
    Status,
    StatusSince,
    Confidence,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Devices {
    Table,
    Id,
    OperatorId,
    ExternalId,
    Vendor,
    Model,
    Name,
    SpaceId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Drivers {
    Table,
    Id,
    Email,
    PasswordHash,
    DisplayName,
    ExternalSubject,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Vehicles {
    Table,
    Id,
    DriverId,
    Plate,
    VehicleType,
    Label,
    CreatedAt,
}

struct M0001Spine;

impl MigrationName for M0001Spine {
    fn name(&self) -> &str {
        "m0001_spine"
    }
}

fn id_pk<T: IntoIden>(column: T) -> ColumnDef {
    ColumnDef::new(column).uuid().not_null().primary_key().to_owned()
}

fn timestamp<T: IntoIden>(column: T) -> ColumnDef {
    ColumnDef::new(column).timestamp_with_time_zone().not_null().to_owned()
}

fn text<T: IntoIden>(column: T) -> ColumnDef {
    ColumnDef::new(column).text().not_null().to_owned()
}

fn text_null<T: IntoIden>(column: T) -> ColumnDef {
    ColumnDef::new(column).text().null().to_owned()
}

fn fk(
    from_table: impl IntoIden + 'static,
    from_column: impl IntoIden + 'static,
    to_table: impl IntoIden + 'static,
    to_column: impl IntoIden + 'static,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create().from(from_table, from_column).to(to_table, to_column).on_delete(on_delete).to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Spine {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Operators::Table)
                    .col(id_pk(Operators::Id))
                    .col(text(Operators::Name))
                    .col(text(Operators::Slug).unique_key().to_owned())
                    .col(timestamp(Operators::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(id_pk(ApiKeys::Id))
                    .col(ColumnDef::new(ApiKeys::OperatorId).uuid().null())
                    .col(text(ApiKeys::Kind))
                    .col(text_null(ApiKeys::Role))
                    .col(text(ApiKeys::Name))
                    .col(text(ApiKeys::DisplayPrefix))
                    .col(text(ApiKeys::SecretHash).unique_key().to_owned())
                    .col(timestamp(ApiKeys::CreatedAt))
                    .col(ColumnDef::new(ApiKeys::RevokedAt).timestamp_with_time_zone().null())
                    .foreign_key(&mut fk(
                        ApiKeys::Table,
                        ApiKeys::OperatorId,
                        Operators::Table,
                        Operators::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_keys_operator")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::OperatorId)
                    .col(ApiKeys::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Sites::Table)
                    .col(id_pk(Sites::Id))
                    .col(ColumnDef::new(Sites::OperatorId).uuid().not_null())
                    .col(text(Sites::Kind))
                    .col(text(Sites::Name))
                    .col(text_null(Sites::Description))
                    .col(ColumnDef::new(Sites::Lat).double().not_null())
                    .col(ColumnDef::new(Sites::Lon).double().not_null())
                    .col(text(Sites::Address))
                    .col(text(Sites::Timezone))
                    .col(text(Sites::Currency))
                    .col(text(Sites::OpeningHours))
                    .col(ColumnDef::new(Sites::MaxStayMinutes).integer().null())
                    .col(text(Sites::AllowedVehicleTypes))
                    .col(ColumnDef::new(Sites::MaxHeightCm).integer().null())
                    .col(timestamp(Sites::CreatedAt))
                    .col(timestamp(Sites::UpdatedAt))
                    .foreign_key(&mut fk(
                        Sites::Table,
                        Sites::OperatorId,
                        Operators::Table,
                        Operators::Id,
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sites_operator")
                    .table(Sites::Table)
                    .col(Sites::OperatorId)
                    .col(Sites::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Spaces::Table)
                    .col(id_pk(Spaces::Id))
                    .col(ColumnDef::new(Spaces::OperatorId).uuid().not_null())
                    .col(ColumnDef::new(Spaces::SiteId).uuid().not_null())
                    .col(text(Spaces::Code))
                    .col(ColumnDef::new(Spaces::Lat).double().null())
                    .col(ColumnDef::new(Spaces::Lon).double().null())
                    .col(text(Spaces::Category))
                    .col(text(Spaces::VehicleType))
                    .col(ColumnDef::new(Spaces::EvCharger).boolean().not_null())
                    .col(ColumnDef::new(Spaces::Accessible).boolean().not_null())
                    .col(text(Spaces::Status))
                    .col(timestamp(Spaces::StatusSince))
                    .col(ColumnDef::new(Spaces::Confidence).double().not_null())
                    .col(timestamp(Spaces::CreatedAt))
                    .col(timestamp(Spaces::UpdatedAt))
                    .foreign_key(&mut fk(
                        Spaces::Table,
                        Spaces::OperatorId,
                        Operators::Table,
                        Operators::Id,
                        ForeignKeyAction::Restrict,
                    ))
                    .foreign_key(&mut fk(
                        Spaces::Table,
                        Spaces::SiteId,
                        Sites::Table,
                        Sites::Id,
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("spaces_site_code")
                    .table(Spaces::Table)
                    .col(Spaces::SiteId)
                    .col(Spaces::Code)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("spaces_site").table(Spaces::Table).col(Spaces::SiteId).col(Spaces::Id).to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("spaces_operator")
                    .table(Spaces::Table)
                    .col(Spaces::OperatorId)
                    .col(Spaces::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Devices::Table)
                    .col(id_pk(Devices::Id))
                    .col(ColumnDef::new(Devices::OperatorId).uuid().not_null())
                    .col(text(Devices::ExternalId))
                    .col(text(Devices::Vendor))
                    .col(text(Devices::Model))
                    .col(text_null(Devices::Name))
                    .col(ColumnDef::new(Devices::SpaceId).uuid().null())
                    .col(timestamp(Devices::CreatedAt))
                    .col(timestamp(Devices::UpdatedAt))
                    .foreign_key(&mut fk(
                        Devices::Table,
                        Devices::OperatorId,
                        Operators::Table,
                        Operators::Id,
                        ForeignKeyAction::Restrict,
                    ))
                    .foreign_key(&mut fk(
                        Devices::Table,
                        Devices::SpaceId,
                        Spaces::Table,
                        Spaces::Id,
                        ForeignKeyAction::SetNull,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("devices_operator_external")
                    .table(Devices::Table)
                    .col(Devices::OperatorId)
                    .col(Devices::ExternalId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("devices_space").table(Devices::Table).col(Devices::SpaceId).unique().to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Drivers::Table)
                    .col(id_pk(Drivers::Id))
                    .col(text_null(Drivers::Email).unique_key().to_owned())
                    .col(text_null(Drivers::PasswordHash))
                    .col(text_null(Drivers::DisplayName))
                    .col(text_null(Drivers::ExternalSubject).unique_key().to_owned())
                    .col(timestamp(Drivers::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Vehicles::Table)
                    .col(id_pk(Vehicles::Id))
                    .col(ColumnDef::new(Vehicles::DriverId).uuid().not_null())
                    .col(text(Vehicles::Plate))
                    .col(text(Vehicles::VehicleType))
                    .col(text_null(Vehicles::Label))
                    .col(timestamp(Vehicles::CreatedAt))
                    .foreign_key(&mut fk(
                        Vehicles::Table,
                        Vehicles::DriverId,
                        Drivers::Table,
                        Drivers::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("vehicles_driver_plate")
                    .table(Vehicles::Table)
                    .col(Vehicles::DriverId)
                    .col(Vehicles::Plate)
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum SpaceLive {
    Table,
    SpaceId,
    OperatorId,
    Sensed,
    SensedSince,
    ObservedAt,
    LastSeen,
    LastCounter,
    LastPayload,
    RecentChanges,
    OverrideStatus,
    OverrideReason,
    OverrideUntil,
    OverrideSetAt,
    OverrideSetBy,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum SpaceEvents {
    Table,
    /// `space_events_recent`: the same columns, without the per-space index.
    #[sea_orm(iden = "space_events_recent")]
    Recent,
    /// In `space_events_recent`: which slice of the spaces a row moves with.
    Slice,
    Id,
    OperatorId,
    SpaceId,
    DeviceId,
    Kind,
    FromStatus,
    ToStatus,
    At,
    RecordedAt,
    Detail,
}

#[derive(DeriveIden)]
enum DeviceHealth {
    Table,
    DeviceId,
    OperatorId,
    LastSeen,
    BatteryMv,
    TemperatureC,
    LastObject,
    LastError,
    LastErrorAt,
    Accepted,
    Rejected,
    UpdatedAt,
}

/// Live state: the sensed state of each space, its history, and device health.
struct M0002Live;

impl MigrationName for M0002Live {
    fn name(&self) -> &str {
        "m0002_live"
    }
}

fn timestamp_null<T: IntoIden>(column: T) -> ColumnDef {
    ColumnDef::new(column).timestamp_with_time_zone().null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for M0002Live {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SpaceLive::Table)
                    .col(id_pk(SpaceLive::SpaceId))
                    .col(ColumnDef::new(SpaceLive::OperatorId).uuid().not_null())
                    .col(text(SpaceLive::Sensed))
                    .col(timestamp_null(SpaceLive::SensedSince))
                    .col(timestamp_null(SpaceLive::ObservedAt))
                    .col(timestamp_null(SpaceLive::LastSeen))
                    .col(ColumnDef::new(SpaceLive::LastCounter).big_integer().null())
                    .col(ColumnDef::new(SpaceLive::LastPayload).big_integer().null())
                    .col(text(SpaceLive::RecentChanges))
                    .col(text_null(SpaceLive::OverrideStatus))
                    .col(text_null(SpaceLive::OverrideReason))
                    .col(timestamp_null(SpaceLive::OverrideUntil))
                    .col(timestamp_null(SpaceLive::OverrideSetAt))
                    .col(text_null(SpaceLive::OverrideSetBy))
                    .col(timestamp(SpaceLive::UpdatedAt))
                    .foreign_key(&mut fk(
                        SpaceLive::Table,
                        SpaceLive::SpaceId,
                        Spaces::Table,
                        Spaces::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SpaceEvents::Table)
                    .col(id_pk(SpaceEvents::Id))
                    .col(ColumnDef::new(SpaceEvents::OperatorId).uuid().not_null())
                    .col(ColumnDef::new(SpaceEvents::SpaceId).uuid().not_null())
                    .col(ColumnDef::new(SpaceEvents::DeviceId).uuid().null())
                    .col(text(SpaceEvents::Kind))
                    .col(text(SpaceEvents::FromStatus))
                    .col(text(SpaceEvents::ToStatus))
                    .col(timestamp(SpaceEvents::At))
                    .col(timestamp(SpaceEvents::RecordedAt))
                    .col(text_null(SpaceEvents::Detail))
                    .foreign_key(&mut fk(
                        SpaceEvents::Table,
                        SpaceEvents::SpaceId,
                        Spaces::Table,
                        Spaces::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("space_events_by_space")
                    .table(SpaceEvents::Table)
                    .col(SpaceEvents::SpaceId)
                    .col(SpaceEvents::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DeviceHealth::Table)
                    .col(id_pk(DeviceHealth::DeviceId))
                    .col(ColumnDef::new(DeviceHealth::OperatorId).uuid().not_null())
                    .col(timestamp_null(DeviceHealth::LastSeen))
                    .col(ColumnDef::new(DeviceHealth::BatteryMv).big_integer().null())
                    .col(ColumnDef::new(DeviceHealth::TemperatureC).double().null())
                    .col(text_null(DeviceHealth::LastObject))
                    .col(text_null(DeviceHealth::LastError))
                    .col(timestamp_null(DeviceHealth::LastErrorAt))
                    .col(ColumnDef::new(DeviceHealth::Accepted).big_integer().not_null())
                    .col(text(DeviceHealth::Rejected))
                    .col(timestamp(DeviceHealth::UpdatedAt))
                    .foreign_key(&mut fk(
                        DeviceHealth::Table,
                        DeviceHealth::DeviceId,
                        Devices::Table,
                        Devices::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [DeviceHealth::Table.into_iden(), SpaceEvents::Table.into_iden(), SpaceLive::Table.into_iden()] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum RuleSets {
    Table,
    Id,
    OperatorId,
    SiteId,
    Scope,
    Name,
    Currency,
    ErrorPolicy,
    Guardrails,
    Holidays,
    Adjustment,
    CreatedAt,
}

#[derive(DeriveIden)]
enum RuleVersions {
    Table,
    RuleSetId,
    Version,
    OperatorId,
    Source,
    Tests,
    Params,
    Status,
    CreatedAt,
    PublishedAt,
}

#[derive(DeriveIden)]
enum RuleActivations {
    Table,
    Id,
    RuleSetId,
    OperatorId,
    Version,
    EffectiveFrom,
    Reason,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Quotes {
    Table,
    Id,
    OperatorId,
    SiteId,
    SpaceId,
    DriverId,
    VehicleType,
    StartAt,
    EndAt,
    TotalMinor,
    Currency,
    Items,
    RuleSetId,
    RuleVersion,
    Fallback,
    Trace,
    Context,
    CreatedAt,
    ExpiresAt,
}

/// Operator rules: rule sets, immutable versions, activations, and the quotes they made.
struct M0003Rules;

impl MigrationName for M0003Rules {
    fn name(&self) -> &str {
        "m0003_rules"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003Rules {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RuleSets::Table)
                    .col(id_pk(RuleSets::Id))
                    .col(ColumnDef::new(RuleSets::OperatorId).uuid().not_null())
                    .col(ColumnDef::new(RuleSets::SiteId).uuid().null())
                    .col(text(RuleSets::Scope))
                    .col(text(RuleSets::Name))
                    .col(text(RuleSets::Currency))
                    .col(text(RuleSets::ErrorPolicy))
                    .col(text(RuleSets::Guardrails))
                    .col(text(RuleSets::Holidays))
                    .col(text(RuleSets::Adjustment))
                    .col(timestamp(RuleSets::CreatedAt))
                    .foreign_key(&mut fk(
                        RuleSets::Table,
                        RuleSets::OperatorId,
                        Operators::Table,
                        Operators::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        RuleSets::Table,
                        RuleSets::SiteId,
                        Sites::Table,
                        Sites::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("rule_sets_one_per_scope")
                    .table(RuleSets::Table)
                    .col(RuleSets::OperatorId)
                    .col(RuleSets::Scope)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RuleVersions::Table)
                    .col(ColumnDef::new(RuleVersions::RuleSetId).uuid().not_null())
                    .col(ColumnDef::new(RuleVersions::Version).big_integer().not_null())
                    .col(ColumnDef::new(RuleVersions::OperatorId).uuid().not_null())
                    .col(text(RuleVersions::Source))
                    .col(text(RuleVersions::Tests))
                    .col(text(RuleVersions::Params))
                    .col(text(RuleVersions::Status))
                    .col(timestamp(RuleVersions::CreatedAt))
                    .col(timestamp_null(RuleVersions::PublishedAt))
                    .primary_key(Index::create().col(RuleVersions::RuleSetId).col(RuleVersions::Version))
                    .foreign_key(&mut fk(
                        RuleVersions::Table,
                        RuleVersions::RuleSetId,
                        RuleSets::Table,
                        RuleSets::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RuleActivations::Table)
                    .col(id_pk(RuleActivations::Id))
                    .col(ColumnDef::new(RuleActivations::RuleSetId).uuid().not_null())
                    .col(ColumnDef::new(RuleActivations::OperatorId).uuid().not_null())
                    .col(ColumnDef::new(RuleActivations::Version).big_integer().not_null())
                    .col(timestamp(RuleActivations::EffectiveFrom))
                    .col(text(RuleActivations::Reason))
                    .col(timestamp(RuleActivations::CreatedAt))
                    .foreign_key(&mut fk(
                        RuleActivations::Table,
                        RuleActivations::RuleSetId,
                        RuleSets::Table,
                        RuleSets::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("rule_activations_by_set")
                    .table(RuleActivations::Table)
                    .col(RuleActivations::RuleSetId)
                    .col(RuleActivations::EffectiveFrom)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Quotes::Table)
                    .col(id_pk(Quotes::Id))
                    .col(ColumnDef::new(Quotes::OperatorId).uuid().not_null())
                    .col(ColumnDef::new(Quotes::SiteId).uuid().not_null())
                    .col(ColumnDef::new(Quotes::SpaceId).uuid().null())
                    .col(ColumnDef::new(Quotes::DriverId).uuid().null())
                    .col(text(Quotes::VehicleType))
                    .col(timestamp(Quotes::StartAt))
                    .col(timestamp(Quotes::EndAt))
                    .col(ColumnDef::new(Quotes::TotalMinor).big_integer().not_null())
                    .col(text(Quotes::Currency))
                    .col(text(Quotes::Items))
                    .col(ColumnDef::new(Quotes::RuleSetId).uuid().not_null())
                    .col(ColumnDef::new(Quotes::RuleVersion).big_integer().not_null())
                    .col(ColumnDef::new(Quotes::Fallback).boolean().not_null())
                    .col(text(Quotes::Trace))
                    .col(text(Quotes::Context))
                    .col(timestamp(Quotes::CreatedAt))
                    .col(timestamp(Quotes::ExpiresAt))
                    .foreign_key(&mut fk(
                        Quotes::Table,
                        Quotes::SiteId,
                        Sites::Table,
                        Sites::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quotes_by_rule_set")
                    .table(Quotes::Table)
                    .col(Quotes::RuleSetId)
                    .col(Quotes::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Quotes::Table.into_iden(),
            RuleActivations::Table.into_iden(),
            RuleVersions::Table.into_iden(),
            RuleSets::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Bookings {
    Table,
    Id,
    OperatorId,
    SiteId,
    SpaceId,
    DriverId,
    VehicleId,
    QuoteId,
    StartAt,
    EndAt,
    Status,
    PriceMinor,
    Currency,
    HoldExpiresAt,
    ArrivedAt,
    DepartedAt,
    CancelReason,
    Version,
    Plate,
    CreatedAt,
    UpdatedAt,
}

/// Bookings, and on PostgreSQL the constraint that live bookings of a space never overlap.
struct M0004Bookings;

impl MigrationName for M0004Bookings {
    fn name(&self) -> &str {
        "m0004_bookings"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0004Bookings {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Bookings::Table)
                    .col(id_pk(Bookings::Id))
                    .col(ColumnDef::new(Bookings::OperatorId).uuid().not_null())
                    .col(ColumnDef::new(Bookings::SiteId).uuid().not_null())
                    .col(ColumnDef::new(Bookings::SpaceId).uuid().not_null())
                    .col(ColumnDef::new(Bookings::DriverId).uuid().not_null())
                    .col(ColumnDef::new(Bookings::VehicleId).uuid().null())
                    .col(ColumnDef::new(Bookings::QuoteId).uuid().not_null().unique_key())
                    .col(timestamp(Bookings::StartAt))
                    .col(timestamp(Bookings::EndAt))
                    .col(text(Bookings::Status))
                    .col(ColumnDef::new(Bookings::PriceMinor).big_integer().not_null())
                    .col(text(Bookings::Currency))
                    .col(timestamp_null(Bookings::HoldExpiresAt))
                    .col(timestamp(Bookings::CreatedAt))
                    .col(timestamp(Bookings::UpdatedAt))
                    .foreign_key(&mut fk(
                        Bookings::Table,
                        Bookings::SpaceId,
                        Spaces::Table,
                        Spaces::Id,
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("bookings_by_space_and_time")
                    .table(Bookings::Table)
                    .col(Bookings::SpaceId)
                    .col(Bookings::StartAt)
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            let db = manager.get_connection();
            db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS btree_gist").await?;
            db.execute_unprepared(
                "ALTER TABLE bookings ADD CONSTRAINT bookings_no_overlap EXCLUDE USING gist \
                 (space_id WITH =, tstzrange(start_at, end_at, '[)') WITH &&) \
                 WHERE (status IN ('pending_payment', 'confirmed', 'active'))",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Bookings::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Payments {
    Table,
    Id,
    BookingId,
    OperatorId,
    DriverId,
    Purpose,
    Label,
    Provider,
    ProviderRef,
    Status,
    AmountMinor,
    CapturedMinor,
    RefundedMinor,
    Currency,
    PaymentMethod,
    ActionUrl,
    CaptureOnAuthorize,
    Failure,
    RevertsEndTo,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PaymentCommands {
    Table,
    Id,
    PaymentId,
    BookingId,
    Kind,
    AmountMinor,
    IdempotencyKey,
    Status,
    Attempts,
    NextAttemptAt,
    LastError,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PaymentWebhooks {
    Table,
    Provider,
    EventId,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum ReceiptLines {
    Table,
    Id,
    BookingId,
    PaymentId,
    Kind,
    Description,
    AmountMinor,
    Currency,
    Provider,
    ProviderRef,
    At,
}

/// Payments: each booking's payments, the outbox of provider calls, the webhook inbox and the
/// receipt lines; bookings learn arrival, departure, why they were cancelled, and a version.
struct M0005Payments;

impl MigrationName for M0005Payments {
    fn name(&self) -> &str {
        "m0005_payments"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0005Payments {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per statement.
        for column in [
            timestamp_null(Bookings::ArrivedAt),
            timestamp_null(Bookings::DepartedAt),
            text_null(Bookings::CancelReason),
            text_null(Bookings::Plate),
            ColumnDef::new(Bookings::Version).big_integer().not_null().default(0).to_owned(),
        ] {
            let mut column = column;
            manager.alter_table(Table::alter().table(Bookings::Table).add_column(&mut column).to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Payments::Table)
                    .col(id_pk(Payments::Id))
                    .col(ColumnDef::new(Payments::BookingId).uuid().not_null())
                    .col(ColumnDef::new(Payments::OperatorId).uuid().not_null())
                    .col(ColumnDef::new(Payments::DriverId).uuid().not_null())
                    .col(text(Payments::Purpose))
                    .col(text(Payments::Label))
                    .col(text_null(Payments::Provider))
                    .col(text_null(Payments::ProviderRef))
                    .col(text(Payments::Status))
                    .col(ColumnDef::new(Payments::AmountMinor).big_integer().not_null())
                    .col(ColumnDef::new(Payments::CapturedMinor).big_integer().not_null())
                    .col(ColumnDef::new(Payments::RefundedMinor).big_integer().not_null())
                    .col(text(Payments::Currency))
                    .col(text_null(Payments::PaymentMethod))
                    .col(text_null(Payments::ActionUrl))
                    .col(ColumnDef::new(Payments::CaptureOnAuthorize).boolean().not_null())
                    .col(text_null(Payments::Failure))
                    .col(timestamp_null(Payments::RevertsEndTo))
                    .col(timestamp(Payments::CreatedAt))
                    .col(timestamp(Payments::UpdatedAt))
                    .foreign_key(&mut fk(
                        Payments::Table,
                        Payments::BookingId,
                        Bookings::Table,
                        Bookings::Id,
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            ("payments_by_booking_label", vec![Payments::BookingId, Payments::Label]),
            ("payments_by_provider_ref", vec![Payments::Provider, Payments::ProviderRef]),
        ] {
            let mut index = Index::create().name(name).table(Payments::Table).to_owned();
            for column in columns {
                index.col(column);
            }
            if name == "payments_by_booking_label" {
                index.unique();
            }
            manager.create_index(index).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("payments_by_status_and_update")
                    .table(Payments::Table)
                    .col(Payments::Status)
                    .col(Payments::UpdatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PaymentCommands::Table)
                    .col(id_pk(PaymentCommands::Id))
                    .col(ColumnDef::new(PaymentCommands::PaymentId).uuid().not_null())
                    .col(ColumnDef::new(PaymentCommands::BookingId).uuid().not_null())
                    .col(text(PaymentCommands::Kind))
                    .col(ColumnDef::new(PaymentCommands::AmountMinor).big_integer().not_null())
                    .col(ColumnDef::new(PaymentCommands::IdempotencyKey).text().not_null().unique_key())
                    .col(text(PaymentCommands::Status))
                    .col(ColumnDef::new(PaymentCommands::Attempts).integer().not_null())
                    .col(timestamp(PaymentCommands::NextAttemptAt))
                    .col(text_null(PaymentCommands::LastError))
                    .col(timestamp(PaymentCommands::CreatedAt))
                    .col(timestamp(PaymentCommands::UpdatedAt))
                    .foreign_key(&mut fk(
                        PaymentCommands::Table,
                        PaymentCommands::PaymentId,
                        Payments::Table,
                        Payments::Id,
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("payment_commands_due")
                    .table(PaymentCommands::Table)
                    .col(PaymentCommands::Status)
                    .col(PaymentCommands::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("payment_commands_by_booking")
                    .table(PaymentCommands::Table)
                    .col(PaymentCommands::BookingId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PaymentWebhooks::Table)
                    .col(text(PaymentWebhooks::Provider))
                    .col(text(PaymentWebhooks::EventId))
                    .col(timestamp(PaymentWebhooks::ReceivedAt))
                    .primary_key(Index::create().col(PaymentWebhooks::Provider).col(PaymentWebhooks::EventId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ReceiptLines::Table)
                    .col(id_pk(ReceiptLines::Id))
                    .col(ColumnDef::new(ReceiptLines::BookingId).uuid().not_null())
                    .col(ColumnDef::new(ReceiptLines::PaymentId).uuid().not_null())
                    .col(text(ReceiptLines::Kind))
                    .col(text(ReceiptLines::Description))
                    .col(ColumnDef::new(ReceiptLines::AmountMinor).big_integer().not_null())
                    .col(text(ReceiptLines::Currency))
                    .col(text(ReceiptLines::Provider))
                    .col(text(ReceiptLines::ProviderRef))
                    .col(timestamp(ReceiptLines::At))
                    .foreign_key(&mut fk(
                        ReceiptLines::Table,
                        ReceiptLines::PaymentId,
                        Payments::Table,
                        Payments::Id,
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("receipt_lines_by_booking")
                    .table(ReceiptLines::Table)
                    .col(ReceiptLines::BookingId)
                    .col(ReceiptLines::At)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [ReceiptLines::Table.into_iden(), PaymentWebhooks::Table.into_iden()] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(PaymentCommands::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Payments::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    Channel,
    ExternalUser,
    DriverId,
    State,
    Timezone,
    Handoff,
    HandoffOperatorId,
    HandoffSince,
    LeaseHolder,
    LeaseUntil,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ChatMessages {
    Table,
    Id,
    ConversationId,
    Direction,
    ChannelMessageId,
    Body,
    Processed,
    CreatedAt,
}

/// Chat: one conversation per channel and user, with its lease, and every message in and out.
struct M0006Conversations;

impl MigrationName for M0006Conversations {
    fn name(&self) -> &str {
        "m0006_conversations"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0006Conversations {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Conversations::Table)
                    .col(id_pk(Conversations::Id))
                    .col(text(Conversations::Channel))
                    .col(text(Conversations::ExternalUser))
                    .col(ColumnDef::new(Conversations::DriverId).uuid().not_null())
                    .col(text(Conversations::State))
                    .col(text(Conversations::Timezone))
                    .col(ColumnDef::new(Conversations::Handoff).boolean().not_null())
                    .col(text_null(Conversations::LeaseHolder))
                    .col(timestamp_null(Conversations::LeaseUntil))
                    .col(timestamp(Conversations::CreatedAt))
                    .col(timestamp(Conversations::UpdatedAt))
                    .foreign_key(&mut fk(
                        Conversations::Table,
                        Conversations::DriverId,
                        Drivers::Table,
                        Drivers::Id,
                        ForeignKeyAction::Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("conversations_by_channel_user")
                    .table(Conversations::Table)
                    .col(Conversations::Channel)
                    .col(Conversations::ExternalUser)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ChatMessages::Table)
                    .col(id_pk(ChatMessages::Id))
                    .col(ColumnDef::new(ChatMessages::ConversationId).uuid().not_null())
                    .col(text(ChatMessages::Direction))
                    .col(text_null(ChatMessages::ChannelMessageId))
                    .col(text(ChatMessages::Body))
                    .col(ColumnDef::new(ChatMessages::Processed).boolean().not_null())
                    .col(timestamp(ChatMessages::CreatedAt))
                    .foreign_key(&mut fk(
                        ChatMessages::Table,
                        ChatMessages::ConversationId,
                        Conversations::Table,
                        Conversations::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        // NULLs are distinct in a unique index on both databases: outbound messages, which have
        // no channel id, never collide.
        manager
            .create_index(
                Index::create()
                    .name("chat_messages_by_channel_message")
                    .table(ChatMessages::Table)
                    .col(ChatMessages::ConversationId)
                    .col(ChatMessages::ChannelMessageId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("chat_messages_by_conversation")
                    .table(ChatMessages::Table)
                    .col(ChatMessages::ConversationId)
                    .col(ChatMessages::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ChatMessages::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Conversations::Table).to_owned()).await
    }
}

/// Handoffs: which operator's team a conversation was handed to (none: the platform's), and
/// since when; an index for the messages never answered.
struct M0007Handoffs;

impl MigrationName for M0007Handoffs {
    fn name(&self) -> &str {
        "m0007_handoffs"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0007Handoffs {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per statement.
        for mut column in [
            ColumnDef::new(Conversations::HandoffOperatorId).uuid().null().to_owned(),
            timestamp_null(Conversations::HandoffSince),
        ] {
            manager.alter_table(Table::alter().table(Conversations::Table).add_column(&mut column).to_owned()).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("conversations_handed_off")
                    .table(Conversations::Table)
                    .col(Conversations::HandoffOperatorId)
                    .col(Conversations::Handoff)
                    .to_owned(),
            )
            .await?;
        // The start-up pass looks for messages never answered; few are, among many.
        manager
            .create_index(
                Index::create()
                    .name("chat_messages_unanswered")
                    .table(ChatMessages::Table)
                    .col(ChatMessages::Processed)
                    .col(ChatMessages::Direction)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("chat_messages_unanswered").table(ChatMessages::Table).to_owned())
            .await?;
        manager
            .drop_index(Index::drop().name("conversations_handed_off").table(Conversations::Table).to_owned())
            .await?;
        for column in [Conversations::HandoffSince, Conversations::HandoffOperatorId] {
            manager.alter_table(Table::alter().table(Conversations::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}

/// Recent history: on SQLite the ingest writer appends history rows to `space_events_recent`,
/// which has no per-space index, and moves them into `space_events` about once a second, one
/// slice of the spaces at a time (see `batch.rs`). Keyed by (slice, id) without a rowid, so an
/// append is one B-tree insert and a slice is one range. The same table exists on PostgreSQL,
/// always empty, so reads are the same on both.
struct M0008RecentHistory;

impl MigrationName for M0008RecentHistory {
    fn name(&self) -> &str {
        "m0008_recent_history"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0008RecentHistory {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let table = Table::create()
            .table(SpaceEvents::Recent)
            .col(ColumnDef::new(SpaceEvents::Slice).small_integer().not_null())
            .col(ColumnDef::new(SpaceEvents::Id).uuid().not_null())
            .col(ColumnDef::new(SpaceEvents::OperatorId).uuid().not_null())
            .col(ColumnDef::new(SpaceEvents::SpaceId).uuid().not_null())
            .col(ColumnDef::new(SpaceEvents::DeviceId).uuid().null())
            .col(text(SpaceEvents::Kind))
            .col(text(SpaceEvents::FromStatus))
            .col(text(SpaceEvents::ToStatus))
            .col(timestamp(SpaceEvents::At))
            .col(timestamp(SpaceEvents::RecordedAt))
            .col(text_null(SpaceEvents::Detail))
            .primary_key(Index::create().col(SpaceEvents::Slice).col(SpaceEvents::Id))
            .foreign_key(&mut fk(
                SpaceEvents::Recent,
                SpaceEvents::SpaceId,
                Spaces::Table,
                Spaces::Id,
                ForeignKeyAction::Cascade,
            ))
            .to_owned();
        match manager.get_database_backend() {
            sea_orm::DatabaseBackend::Sqlite => {
                let sql = format!("{} WITHOUT ROWID", table.to_string(SqliteQueryBuilder));
                manager.get_connection().execute_unprepared(&sql).await.map(drop)
            }
            _ => manager.create_table(table).await,
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO space_events (id, operator_id, space_id, device_id, kind, from_status, to_status, at, \
                 recorded_at, detail) SELECT id, operator_id, space_id, device_id, kind, from_status, to_status, at, \
                 recorded_at, detail FROM space_events_recent",
            )
            .await?;
        manager.drop_table(Table::drop().table(SpaceEvents::Recent).to_owned()).await
    }
}

/// On SQLite, `space_events` becomes a table without a rowid keyed by (space, id): the history
/// is stored in the order it is read (a space's events, newest last), one B-tree instead of
/// three (rowid table, the id's unique index and `space_events_by_space`). Moves of recent
/// history insert each row once instead of three times: `berth bench ingest` 31–33% of the raw
/// broker instead of 29–30%, and the file a quarter smaller. The rows are copied into the new
/// table in key order, in one transaction: an interrupted run leaves the old table as it was.
/// PostgreSQL keeps its table and index (it writes history straight into `space_events`, and
/// has no tables without a heap).
struct M0009HistoryBySpace;

impl MigrationName for M0009HistoryBySpace {
    fn name(&self) -> &str {
        "m0009_history_by_space"
    }
}

const EVENT_COLUMNS: &str =
    "id, operator_id, space_id, device_id, kind, from_status, to_status, at, recorded_at, detail";

/// `CREATE TABLE space_events_rebuilt` with `space_events`' columns: keyed by (space, id) without
/// a rowid (m0009), or by id alone as m0001 made it.
fn sqlite_events_table(by_space: bool) -> String {
    let mut table = Table::create();
    table.table(Alias::new("space_events_rebuilt"));
    if by_space {
        table
            .col(ColumnDef::new(SpaceEvents::Id).uuid().not_null())
            .primary_key(Index::create().col(SpaceEvents::SpaceId).col(SpaceEvents::Id));
    } else {
        table.col(id_pk(SpaceEvents::Id));
    }
    table
        .col(ColumnDef::new(SpaceEvents::OperatorId).uuid().not_null())
        .col(ColumnDef::new(SpaceEvents::SpaceId).uuid().not_null())
        .col(ColumnDef::new(SpaceEvents::DeviceId).uuid().null())
        .col(text(SpaceEvents::Kind))
        .col(text(SpaceEvents::FromStatus))
        .col(text(SpaceEvents::ToStatus))
        .col(timestamp(SpaceEvents::At))
        .col(timestamp(SpaceEvents::RecordedAt))
        .col(text_null(SpaceEvents::Detail))
        .foreign_key(&mut fk(
            Alias::new("space_events_rebuilt"),
            SpaceEvents::SpaceId,
            Spaces::Table,
            Spaces::Id,
            ForeignKeyAction::Cascade,
        ));
    let sql = table.to_string(SqliteQueryBuilder);
    if by_space { format!("{sql} WITHOUT ROWID") } else { sql }
}

/// Rebuilds SQLite's `space_events` as [`sqlite_events_table`] makes it, in one transaction:
/// the rows are copied in (space, id) order, then `after` runs. Nothing on PostgreSQL.
async fn rebuild_sqlite_events(manager: &SchemaManager<'_>, by_space: bool, after: &[&str]) -> Result<(), DbErr> {
    use sea_orm::TransactionTrait;
    if manager.get_database_backend() != sea_orm::DatabaseBackend::Sqlite {
        return Ok(());
    }
    let txn = manager.get_connection().begin().await?;
    let create = sqlite_events_table(by_space);
    let copy = format!(
        "INSERT INTO space_events_rebuilt ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM space_events \
         ORDER BY space_id, id"
    );
    let steps = [
        "DROP TABLE IF EXISTS space_events_rebuilt",
        &create,
        &copy,
        "DROP TABLE space_events",
        "ALTER TABLE space_events_rebuilt RENAME TO space_events",
    ];
    for sql in steps.iter().chain(after) {
        txn.execute_unprepared(sql).await?;
    }
    txn.commit().await
}

#[async_trait::async_trait]
impl MigrationTrait for M0009HistoryBySpace {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild_sqlite_events(manager, true, &[]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let index = "CREATE INDEX space_events_by_space ON space_events (space_id, id)";
        rebuild_sqlite_events(manager, false, &[index]).await
    }
}
