//! Kernel services: authorisation, tenancy and validation in front of the [`Store`] port.
//!
//! Every method takes the caller's [`Principal`]. Operator-scoped methods derive the operator from
//! the principal, never from the request, so another tenant's id simply does not exist (404).

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};

use crate::auth::{self, Access, ApiKey, ApiKeyKind, IssuedToken, OperatorRole, Principal, SecretHash};
use crate::device::{Device, DeviceInput};
use crate::driver::{self, Driver, Email, Plate, Vehicle};
use crate::error::{KernelError, KernelResult, ValidationError};
use crate::ids::{ApiKeyId, DeviceId, DriverId, OperatorId, SiteId, SpaceId, VehicleId};
use crate::memo::Memo;
use crate::operator::{Operator, OperatorInput};
use crate::page::{MAX_PAGE_SIZE, Page, PageRequest};
use crate::plugin::{NoPlugins, PluginInfo, PluginPortError, Plugins};
use crate::ports::{DeviceFilter, SiteFilter, SpaceFilter, Store};
use crate::site::{Site, SiteInput, SitePatch};
use crate::space::{MAX_SPACES_PER_BATCH, Space, SpaceInput, SpacePatch, SpaceState};
use crate::validate::required_text;
use crate::vehicle_type::VehicleType;

#[derive(Clone)]
pub struct Kernel {
    store: Arc<dyn Store>,
    plugins: Arc<dyn Plugins>,
    live_locks: Arc<[tokio::sync::Mutex<()>]>,
    feed: Arc<crate::feed::LiveFeed>,
    rejects: Arc<crate::reject::RejectLog>,
    committer: Arc<crate::commit::Committer>,
    caches: Arc<crate::commit::IngestCaches>,
    rules_engine: Arc<dyn crate::rules::RulesEngine>,
    pub(crate) rule_cache: Arc<crate::pricing::RuleCache>,
    pub(crate) site_index: Arc<crate::search::SiteIndex>,
    pub(crate) site_snapshots: Arc<crate::search::SiteSnapshots>,
    pub(crate) quote_terms: Arc<crate::booking::QuoteTermsCache>,
    pub(crate) payments: Arc<crate::payment::Payments>,
    pub(crate) language: Option<Arc<dyn crate::language::LanguageUnderstanding>>,
    pub(crate) chat_channels: Arc<[Arc<dyn crate::chat::ChatChannel>]>,
    /// Conversations with new messages (the web chat's streams listen).
    pub(crate) chat_signal: tokio::sync::broadcast::Sender<crate::ids::ConversationId>,
    /// API keys recently authenticated, by the hash of the token ([`API_KEY_MEMO_TTL`]).
    api_keys: Arc<Memo<[u8; 32], (ApiKeyId, Principal)>>,
    /// Sites recently found, with their operator ([`SITE_MEMO_TTL`]).
    site_owners: Arc<Memo<SiteId, OperatorId>>,
    /// One inbound chat message stored at a time per conversation (see `Kernel::accept_chat`).
    pub(crate) chat_arrivals: Arc<crate::memo::Turns<crate::ids::ConversationId>>,
}

/// How long an authenticated API key is trusted without asking the database again. A key
/// revoked on this node is refused at once; other nodes refuse it within this time.
pub const API_KEY_MEMO_TTL: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a site's operator is remembered for checks that only need to know the site is the
/// caller's (a site never changes operator; a deleted one is forgotten on its node at once).
const SITE_MEMO_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// What a caller asks for when creating an API key.
#[derive(Debug, Clone)]
pub struct ApiKeyInput {
    pub name: String,
    pub kind: ApiKeyKind,
    pub role: Option<OperatorRole>,
}

impl Kernel {
    /// A kernel without plugins; see [`Kernel::with_plugins`].
    pub fn new(store: Arc<dyn Store>) -> Self {
        let live_locks = (0..crate::ingest::LIVE_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect();
        Self {
            store,
            plugins: Arc::new(NoPlugins),
            live_locks,
            feed: Arc::default(),
            rejects: Arc::default(),
            committer: Arc::default(),
            caches: Arc::default(),
            rules_engine: Arc::new(crate::pricing::NoRules),
            rule_cache: Arc::default(),
            site_index: Arc::default(),
            site_snapshots: Arc::default(),
            quote_terms: Arc::default(),
            payments: Arc::default(),
            language: None,
            chat_channels: Arc::new([]),
            chat_signal: tokio::sync::broadcast::channel(1024).0,
            api_keys: Arc::new(Memo::new(API_KEY_MEMO_TTL)),
            site_owners: Arc::new(Memo::new(SITE_MEMO_TTL)),
            chat_arrivals: Arc::default(),
        }
    }

    /// The engine that compiles and runs operators' rules.
    pub fn with_rules(mut self, engine: Arc<dyn crate::rules::RulesEngine>) -> Self {
        self.rules_engine = engine;
        self
    }

    pub fn rules_engine(&self) -> &Arc<dyn crate::rules::RulesEngine> {
        &self.rules_engine
    }

    /// The payment providers, the primary first.
    pub fn with_payments(mut self, payments: crate::payment::Payments) -> Self {
        self.payments = Arc::new(payments);
        self
    }

    pub fn with_plugins(mut self, plugins: Arc<dyn Plugins>) -> Self {
        self.plugins = plugins;
        self
    }

    pub fn plugins(&self) -> &Arc<dyn Plugins> {
        &self.plugins
    }

    /// Changes of what spaces show, as they happen.
    pub fn feed(&self) -> &crate::feed::LiveFeed {
        &self.feed
    }

    /// The feed, for a listener that outlives this borrow (a stream, the fan-out).
    pub fn feed_handle(&self) -> Arc<crate::feed::LiveFeed> {
        self.feed.clone()
    }

    /// Where rejected device data is counted and (throttled) logged.
    pub fn rejects(&self) -> &crate::reject::RejectLog {
        &self.rejects
    }

    pub(crate) fn committer(&self) -> &crate::commit::Committer {
        &self.committer
    }

    pub(crate) fn caches(&self) -> &crate::commit::IngestCaches {
        &self.caches
    }

    pub(crate) fn live_locks(&self) -> &[tokio::sync::Mutex<()>] {
        &self.live_locks
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    // ----- identity -------------------------------------------------------------------------

    /// Resolves an API key token to its principal. Unknown and revoked keys are both
    /// `Unauthenticated` with the same message, so a caller learns nothing about which it was.
    pub async fn authenticate_api_key(&self, token: &str) -> KernelResult<Principal> {
        let rejected = || KernelError::Unauthenticated("invalid or revoked API key".into());
        let presented = SecretHash::of(token);
        let find = || async {
            let Some(key) = self.store.find_api_key_by_hash(&presented).await? else { return Ok(None) };
            if !key.secret_hash.matches(&presented) || key.revoked_at.is_some() {
                return Ok(None);
            }
            Ok::<_, KernelError>(
                match (key.kind, key.operator_id, key.role) {
                    (ApiKeyKind::PlatformAdmin, _, _) => Some(Principal::PlatformAdmin { key_id: Some(key.id) }),
                    (ApiKeyKind::Operator, Some(operator_id), Some(role)) => {
                        Some(Principal::Operator { operator_id, role, key_id: key.id })
                    }
                    (ApiKeyKind::Integration, Some(operator_id), _) => {
                        Some(Principal::Integration { operator_id, key_id: key.id })
                    }
                    _ => None,
                }
                .map(|principal| (key.id, principal)),
            )
        };
        let (_, principal) = self.api_keys.get_or_find(&presented.0, find).await?.ok_or_else(rejected)?;
        Ok(principal)
    }

    /// Creates a key. Platform admins create any kind for any operator; operator admins create
    /// operator and integration keys for their own operator only.
    pub async fn create_api_key(
        &self,
        caller: &Principal,
        operator: Option<OperatorId>,
        input: ApiKeyInput,
    ) -> KernelResult<(ApiKey, IssuedToken)> {
        let name = auth::validate_key_name(&input.name)?;
        let operator_id = match (caller, input.kind) {
            (Principal::PlatformAdmin { .. }, ApiKeyKind::PlatformAdmin) => None,
            (Principal::PlatformAdmin { .. }, _) => {
                let operator_id = operator.ok_or_else(|| {
                    ValidationError::new("operator_id", "operator and integration keys belong to an operator")
                })?;
                self.store.get_operator(operator_id).await?.ok_or_else(|| KernelError::not_found("operator"))?;
                Some(operator_id)
            }
            (Principal::Operator { .. }, ApiKeyKind::PlatformAdmin) => {
                return Err(KernelError::Forbidden("operators cannot create platform admin keys".into()));
            }
            (Principal::Operator { .. }, _) => {
                let own = operator_scope(caller, Access::Write)?;
                if operator.is_some_and(|requested| requested != own) {
                    return Err(KernelError::not_found("operator"));
                }
                Some(own)
            }
            _ => return Err(KernelError::Forbidden("this credential cannot manage API keys".into())),
        };
        let role = match input.kind {
            ApiKeyKind::Operator => Some(input.role.unwrap_or(OperatorRole::OperatorStaff)),
            _ if input.role.is_some() => {
                return Err(ValidationError::new("role", "only operator keys have a role").into());
            }
            _ => None,
        };
        let token = auth::generate_token(input.kind);
        let key = ApiKey {
            id: ApiKeyId::new(),
            operator_id,
            kind: input.kind,
            role,
            name,
            display_prefix: auth::display_prefix(&token.0),
            secret_hash: SecretHash::of(&token.0),
            created_at: now(),
            revoked_at: None,
        };
        self.store.insert_api_key(&key).await?;
        Ok((key, token))
    }

    /// Platform admins list any operator's keys (or, with `None`, platform keys); operator
    /// admins list their own operator's.
    pub async fn list_api_keys(
        &self,
        caller: &Principal,
        operator: Option<OperatorId>,
        page: PageRequest,
    ) -> KernelResult<Page<ApiKey>> {
        let scope = match caller {
            Principal::PlatformAdmin { .. } => operator,
            _ => Some(operator_admin_scope(caller)?),
        };
        Ok(self.store.list_api_keys(scope, clamp(page)).await?)
    }

    pub async fn revoke_api_key(&self, caller: &Principal, id: ApiKeyId) -> KernelResult<ApiKey> {
        let key = self.store.get_api_key(id).await?.ok_or_else(|| KernelError::not_found("API key"))?;
        let allowed = match caller {
            Principal::PlatformAdmin { .. } => true,
            _ => key.operator_id == Some(operator_admin_scope(caller)?),
        };
        if !allowed {
            return Err(KernelError::not_found("API key"));
        }
        if key.revoked_at.is_none() {
            self.store.revoke_api_key(id, now()).await?;
        }
        self.api_keys.forget_where(|_, (key_id, _)| *key_id == id);
        self.store.get_api_key(id).await?.ok_or_else(|| KernelError::not_found("API key"))
    }

    // ----- operators (platform admin) -------------------------------------------------------

    pub async fn create_operator(&self, caller: &Principal, input: OperatorInput) -> KernelResult<Operator> {
        require_platform_admin(caller)?;
        let (name, slug) = input.validate()?;
        if self.store.find_operator_by_slug(&slug).await?.is_some() {
            return Err(KernelError::Conflict(format!("an operator with slug '{slug}' already exists")));
        }
        let operator = Operator { id: OperatorId::new(), name, slug, created_at: now() };
        self.store.insert_operator(&operator).await?;
        Ok(operator)
    }

    pub async fn get_operator(&self, caller: &Principal, id: OperatorId) -> KernelResult<Operator> {
        let visible = match caller {
            Principal::PlatformAdmin { .. } => true,
            _ => operator_scope(caller, Access::Read)? == id,
        };
        if !visible {
            return Err(KernelError::not_found("operator"));
        }
        self.store.get_operator(id).await?.ok_or_else(|| KernelError::not_found("operator"))
    }

    pub async fn list_operators(&self, caller: &Principal, page: PageRequest) -> KernelResult<Page<Operator>> {
        require_platform_admin(caller)?;
        Ok(self.store.list_operators(clamp(page)).await?)
    }

    // ----- sites ----------------------------------------------------------------------------

    pub async fn create_site(&self, caller: &Principal, input: SiteInput) -> KernelResult<Site> {
        let operator_id = operator_scope(caller, Access::Write)?;
        let details = input.validate()?;
        let now = now();
        let site = Site { id: SiteId::new(), operator_id, details, created_at: now, updated_at: now };
        self.store.insert_site(&site).await?;
        self.site_index().upsert(&site);
        Ok(site)
    }

    /// Checks that a site exists and is `operator`'s (not found otherwise), from memory when it
    /// was found recently: the check of every live-availability request and stream.
    pub(crate) async fn check_site(&self, operator: OperatorId, id: SiteId) -> KernelResult<()> {
        let find =
            || async { Ok::<_, KernelError>(self.store.get_site(operator, id).await?.map(|site| site.operator_id)) };
        match self.site_owners.get_or_find(&id, find).await? {
            Some(owner) if owner == operator => Ok(()),
            _ => Err(KernelError::not_found("site")),
        }
    }

    pub async fn get_site(&self, caller: &Principal, id: SiteId) -> KernelResult<Site> {
        let operator_id = operator_scope(caller, Access::Read)?;
        self.store.get_site(operator_id, id).await?.ok_or_else(|| KernelError::not_found("site"))
    }

    pub async fn list_sites(
        &self,
        caller: &Principal,
        filter: SiteFilter,
        page: PageRequest,
    ) -> KernelResult<Page<Site>> {
        let operator_id = operator_scope(caller, Access::Read)?;
        Ok(self.store.list_sites(operator_id, &filter, clamp(page)).await?)
    }

    pub async fn update_site(&self, caller: &Principal, id: SiteId, patch: SitePatch) -> KernelResult<Site> {
        let operator_id = operator_scope(caller, Access::Write)?;
        let mut site = self.store.get_site(operator_id, id).await?.ok_or_else(|| KernelError::not_found("site"))?;
        site.details = site.details.apply(patch)?;
        site.updated_at = now();
        self.store.update_site(&site).await?;
        self.site_index().upsert(&site);
        self.site_snapshots.forget(site.id);
        Ok(site)
    }

    /// Refuses to delete a site that still has spaces: removing them is a deliberate step.
    pub async fn delete_site(&self, caller: &Principal, id: SiteId) -> KernelResult<()> {
        let operator_id = operator_scope(caller, Access::Write)?;
        self.store.get_site(operator_id, id).await?.ok_or_else(|| KernelError::not_found("site"))?;
        let n_spaces = self.store.count_spaces_in_site(operator_id, id).await?;
        if n_spaces > 0 {
            return Err(KernelError::Conflict(format!(
                "site still has {n_spaces} spaces; delete them before deleting the site"
            )));
        }
        self.store.delete_site(operator_id, id).await?;
        self.site_owners.forget_where(|site, _| *site == id);
        self.site_index().remove(id);
        self.site_snapshots.forget(id);
        Ok(())
    }

    // ----- spaces ---------------------------------------------------------------------------

    /// Creates spaces in a site, all or none. Errors name the item (`spaces[3].code`).
    pub async fn create_spaces(
        &self,
        caller: &Principal,
        site_id: SiteId,
        inputs: Vec<SpaceInput>,
    ) -> KernelResult<Vec<Space>> {
        let operator_id = operator_scope(caller, Access::Write)?;
        if inputs.is_empty() {
            return Err(ValidationError::new("spaces", "give at least one space").into());
        }
        if inputs.len() > MAX_SPACES_PER_BATCH {
            return Err(ValidationError::new(
                "spaces",
                format!("at most {MAX_SPACES_PER_BATCH} spaces per request (got {})", inputs.len()),
            )
            .into());
        }
        let site = self.store.get_site(operator_id, site_id).await?.ok_or_else(|| KernelError::not_found("site"))?;
        let now = now();
        let mut seen_codes = std::collections::HashMap::with_capacity(inputs.len());
        let mut spaces = Vec::with_capacity(inputs.len());
        for (idx, input) in inputs.iter().enumerate() {
            let details = input.validate(&site.details.location).map_err(|e| e.within(&format!("spaces[{idx}]")))?;
            if !site.details.allowed_vehicle_types.contains(&details.vehicle_type) {
                return Err(ValidationError::new(
                    format!("spaces[{idx}].vehicle_type"),
                    format!("the site does not allow {}", details.vehicle_type.as_str()),
                )
                .into());
            }
            if let Some(first_idx) = seen_codes.insert(details.code.clone(), idx) {
                return Err(ValidationError::new(
                    format!("spaces[{idx}].code"),
                    format!("code '{}' is repeated (first at spaces[{first_idx}])", details.code),
                )
                .into());
            }
            spaces.push(Space {
                id: SpaceId::new(),
                operator_id,
                site_id,
                details,
                state: SpaceState::unknown_since(now),
                created_at: now,
                updated_at: now,
                live: None,
            });
        }
        self.store.insert_spaces(&spaces).await?;
        self.site_snapshots.forget(site_id);
        Ok(spaces)
    }

    pub async fn get_space(&self, caller: &Principal, id: SpaceId) -> KernelResult<Space> {
        let operator_id = operator_scope(caller, Access::Read)?;
        let space = self.store.get_space(operator_id, id).await?.ok_or_else(|| KernelError::not_found("space"))?;
        Ok(self.with_live(operator_id, vec![space]).await?.remove(0))
    }

    /// Lists spaces; a `site_id` filter naming another tenant's (or no) site is a 404, not an
    /// empty list, so a typo is not mistaken for an empty site.
    pub async fn list_spaces(
        &self,
        caller: &Principal,
        filter: SpaceFilter,
        page: PageRequest,
    ) -> KernelResult<Page<Space>> {
        let operator_id = operator_scope(caller, Access::Read)?;
        if let Some(site_id) = filter.site_id {
            self.store.get_site(operator_id, site_id).await?.ok_or_else(|| KernelError::not_found("site"))?;
        }
        let page = self.store.list_spaces(operator_id, &filter, clamp(page)).await?;
        let items = self.with_live(operator_id, page.items).await?;
        Ok(Page { items, ..page })
    }

    pub async fn update_space(&self, caller: &Principal, id: SpaceId, patch: SpacePatch) -> KernelResult<Space> {
        let operator_id = operator_scope(caller, Access::Write)?;
        let mut space = self.store.get_space(operator_id, id).await?.ok_or_else(|| KernelError::not_found("space"))?;
        let site =
            self.store.get_site(operator_id, space.site_id).await?.ok_or_else(|| KernelError::not_found("site"))?;
        space.details = space.details.apply(&patch, &site.details.location)?;
        if !site.details.allowed_vehicle_types.contains(&space.details.vehicle_type) {
            return Err(ValidationError::new(
                "vehicle_type",
                format!("the site does not allow {}", space.details.vehicle_type.as_str()),
            )
            .into());
        }
        let now = now();
        if let Some(status) = patch.status {
            // An operator's declaration is certain by definition.
            space.state = SpaceState { status, status_since: now, confidence: 1.0 };
        }
        space.updated_at = now;
        self.store.update_space(&space).await?;
        self.site_snapshots.forget(space.site_id);
        Ok(self.with_live(operator_id, vec![space]).await?.remove(0))
    }

    pub async fn delete_space(&self, caller: &Principal, id: SpaceId) -> KernelResult<()> {
        let operator_id = operator_scope(caller, Access::Write)?;
        let deleted = self.store.delete_space(operator_id, id).await?;
        self.caches.forget_devices();
        self.site_snapshots.forget_all();
        if !deleted {
            return Err(KernelError::not_found("space"));
        }
        Ok(())
    }

    // ----- devices --------------------------------------------------------------------------

    pub async fn register_device(&self, caller: &Principal, input: DeviceInput) -> KernelResult<Device> {
        let operator_id = operator_scope(caller, Access::Write)?;
        let details = input.validate()?;
        if let Some(space_id) = input.space_id {
            self.require_space(operator_id, space_id).await?;
        }
        let now = now();
        let device = Device {
            id: DeviceId::new(),
            operator_id,
            details,
            space_id: input.space_id,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_device(&device).await?;
        self.caches.forget_devices();
        Ok(device)
    }

    pub async fn get_device(&self, caller: &Principal, id: DeviceId) -> KernelResult<Device> {
        let operator_id = operator_scope(caller, Access::Read)?;
        self.store.get_device(operator_id, id).await?.ok_or_else(|| KernelError::not_found("device"))
    }

    pub async fn list_devices(
        &self,
        caller: &Principal,
        filter: DeviceFilter,
        page: PageRequest,
    ) -> KernelResult<Page<Device>> {
        let operator_id = operator_scope(caller, Access::Read)?;
        Ok(self.store.list_devices(operator_id, &filter, clamp(page)).await?)
    }

    /// Binds a device to a space (or unbinds it with `None`). A space takes one device.
    pub async fn bind_device(
        &self,
        caller: &Principal,
        id: DeviceId,
        space_id: Option<SpaceId>,
    ) -> KernelResult<Device> {
        let operator_id = operator_scope(caller, Access::Write)?;
        let mut device =
            self.store.get_device(operator_id, id).await?.ok_or_else(|| KernelError::not_found("device"))?;
        if let Some(space_id) = space_id {
            self.require_space(operator_id, space_id).await?;
        }
        device.space_id = space_id;
        device.updated_at = now();
        self.store.update_device(&device).await?;
        self.caches.forget_devices();
        Ok(device)
    }

    pub async fn delete_device(&self, caller: &Principal, id: DeviceId) -> KernelResult<()> {
        let operator_id = operator_scope(caller, Access::Write)?;
        let deleted = self.store.delete_device(operator_id, id).await?;
        self.caches.forget_devices();
        if !deleted {
            return Err(KernelError::not_found("device"));
        }
        Ok(())
    }

    async fn require_space(&self, operator_id: OperatorId, space_id: SpaceId) -> KernelResult<()> {
        self.store
            .get_space(operator_id, space_id)
            .await?
            .ok_or_else(|| KernelError::Validation(ValidationError::new("space_id", "no such space")))?;
        Ok(())
    }

    // ----- drivers and vehicles -------------------------------------------------------------

    /// Registers a driver with e-mail and password. Password hashing runs on a blocking thread.
    pub async fn register_driver(
        &self,
        email: &str,
        password: &str,
        display_name: Option<&str>,
    ) -> KernelResult<Driver> {
        let email = Email::parse(email)?;
        driver::validate_password(password)?;
        let display_name = driver::validate_display_name(display_name)?;
        if self.store.find_driver_by_email(&email).await?.is_some() {
            return Err(KernelError::Conflict("an account with this e-mail already exists".into()));
        }
        let password = password.to_owned();
        let password_hash = run_blocking(move || auth::hash_password(&password)).await;
        let driver =
            Driver { id: DriverId::new(), email: Some(email), display_name, external_subject: None, created_at: now() };
        self.store.insert_driver(&driver, Some(&password_hash)).await?;
        Ok(driver)
    }

    /// Checks e-mail and password. Unknown e-mail and wrong password look the same, and take
    /// the same time.
    pub async fn login_driver(&self, email: &str, password: &str) -> KernelResult<Driver> {
        let rejected = || KernelError::Unauthenticated("wrong e-mail or password".into());
        let Ok(email) = Email::parse(email) else {
            return Err(rejected());
        };
        let found = self.store.find_driver_by_email(&email).await?;
        let phc_hash =
            found.as_ref().and_then(|(_, hash)| hash.clone()).unwrap_or_else(|| auth::decoy_password_hash().to_owned());
        let password = password.to_owned();
        let verified = run_blocking(move || auth::verify_password(&password, &phc_hash)).await;
        match found {
            Some((driver, Some(_))) if verified => Ok(driver),
            _ => Err(rejected()),
        }
    }

    /// The driver for an externally verified identity, created on first sight.
    pub async fn driver_for_external_subject(
        &self,
        issuer: &str,
        subject: &str,
        email: Option<&str>,
    ) -> KernelResult<Driver> {
        let external_subject = format!("{issuer}|{subject}");
        if let Some(driver) = self.store.find_driver_by_external_subject(&external_subject).await? {
            return Ok(driver);
        }
        // An e-mail from the identity provider is informational; it must not take over a local
        // account, so it is only recorded when no local account has it.
        let email = match email.map(Email::parse).transpose().ok().flatten() {
            Some(email) if self.store.find_driver_by_email(&email).await?.is_none() => Some(email),
            _ => None,
        };
        let driver = Driver {
            id: DriverId::new(),
            email,
            display_name: None,
            external_subject: Some(external_subject.clone()),
            created_at: now(),
        };
        match self.store.insert_driver(&driver, None).await {
            Ok(()) => Ok(driver),
            // Two first requests raced; the other one created the driver.
            Err(crate::error::StoreError::Conflict(_)) => self
                .store
                .find_driver_by_external_subject(&external_subject)
                .await?
                .ok_or_else(|| KernelError::not_found("driver")),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn get_driver(&self, caller: &Principal) -> KernelResult<Driver> {
        let driver_id = driver_scope(caller)?;
        self.store.get_driver(driver_id).await?.ok_or_else(|| KernelError::not_found("driver"))
    }

    pub async fn add_vehicle(
        &self,
        caller: &Principal,
        plate: &str,
        vehicle_type: Option<VehicleType>,
        label: Option<&str>,
    ) -> KernelResult<Vehicle> {
        let driver_id = driver_scope(caller)?;
        let plate = Plate::parse(plate)?;
        let label = crate::validate::optional_text("label", label, 100)?;
        let vehicle = Vehicle {
            id: VehicleId::new(),
            driver_id,
            plate,
            vehicle_type: vehicle_type.unwrap_or(VehicleType::Car),
            label,
            created_at: now(),
        };
        self.store.insert_vehicle(&vehicle).await?;
        Ok(vehicle)
    }

    pub async fn list_vehicles(&self, caller: &Principal, page: PageRequest) -> KernelResult<Page<Vehicle>> {
        let driver_id = driver_scope(caller)?;
        Ok(self.store.list_vehicles(driver_id, clamp(page)).await?)
    }

    pub async fn get_vehicle(&self, caller: &Principal, id: VehicleId) -> KernelResult<Vehicle> {
        let driver_id = driver_scope(caller)?;
        self.store.get_vehicle(driver_id, id).await?.ok_or_else(|| KernelError::not_found("vehicle"))
    }

    pub async fn delete_vehicle(&self, caller: &Principal, id: VehicleId) -> KernelResult<()> {
        let driver_id = driver_scope(caller)?;
        if !self.store.delete_vehicle(driver_id, id).await? {
            return Err(KernelError::not_found("vehicle"));
        }
        Ok(())
    }

    // ----- plugins (platform admin) ---------------------------------------------------------

    pub async fn list_plugins(&self, caller: &Principal) -> KernelResult<Vec<PluginInfo>> {
        require_platform_admin(caller)?;
        Ok(self.plugins.list().await)
    }

    pub async fn get_plugin(&self, caller: &Principal, id: &str) -> KernelResult<PluginInfo> {
        require_platform_admin(caller)?;
        self.plugins.get(id).await.ok_or_else(|| KernelError::not_found("plugin"))
    }

    /// Installs or upgrades a plugin; `true` when it is new.
    pub async fn install_plugin(
        &self,
        caller: &Principal,
        manifest: String,
        component: Vec<u8>,
    ) -> KernelResult<(PluginInfo, bool)> {
        require_platform_admin(caller)?;
        self.plugins.install(manifest, component).await.map_err(plugin_error)
    }

    pub async fn reload_plugin(&self, caller: &Principal, id: &str) -> KernelResult<PluginInfo> {
        require_platform_admin(caller)?;
        self.plugins.reload(id).await.map_err(plugin_error)
    }

    // ----- platform bootstrap ---------------------------------------------------------------

    /// Creates a platform-admin key without a caller: used by `berth admin create-key` and the
    /// demo, which run with direct access to the database.
    pub async fn bootstrap_admin_key(&self, name: &str) -> KernelResult<(ApiKey, IssuedToken)> {
        let name = required_text("name", name, 100)?;
        self.create_api_key(
            &Principal::PlatformAdmin { key_id: None },
            None,
            ApiKeyInput { name, kind: ApiKeyKind::PlatformAdmin, role: None },
        )
        .await
    }
}

/// The current time at the precision every supported database stores (microseconds), so a
/// value returned from a write equals the value read back later.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The operator whose data the caller may touch with this access.
pub fn operator_scope(caller: &Principal, access: Access) -> KernelResult<OperatorId> {
    match (caller, access) {
        (Principal::Operator { operator_id, .. }, Access::Read) => Ok(*operator_id),
        (Principal::Operator { operator_id, role: OperatorRole::OperatorAdmin, .. }, Access::Write) => Ok(*operator_id),
        (Principal::Operator { .. }, Access::Write) => {
            Err(KernelError::Forbidden("this key is read-only (role operator_staff)".into()))
        }
        (Principal::Integration { .. }, _) => {
            Err(KernelError::Forbidden("integration keys can only push device data".into()))
        }
        (Principal::PlatformAdmin { .. }, _) => Err(KernelError::Forbidden(
            "platform admin keys manage operators; use an operator key for operator data".into(),
        )),
        (Principal::Driver { .. }, _) => Err(KernelError::Forbidden("drivers cannot manage operator data".into())),
    }
}

fn operator_admin_scope(caller: &Principal) -> KernelResult<OperatorId> {
    operator_scope(caller, Access::Write)
}

pub(crate) fn driver_scope(caller: &Principal) -> KernelResult<DriverId> {
    match caller {
        Principal::Driver { driver_id } => Ok(*driver_id),
        _ => Err(KernelError::Forbidden("this endpoint needs a driver token".into())),
    }
}

fn require_platform_admin(caller: &Principal) -> KernelResult<()> {
    match caller {
        Principal::PlatformAdmin { .. } => Ok(()),
        _ => Err(KernelError::Forbidden("this endpoint needs a platform admin key".into())),
    }
}

fn plugin_error(error: PluginPortError) -> KernelError {
    match error {
        PluginPortError::NotFound(_) => KernelError::not_found("plugin"),
        PluginPortError::InvalidManifest(message) => ValidationError::new("manifest", message).into(),
        PluginPortError::InvalidComponent(message) => ValidationError::new("component", message).into(),
        PluginPortError::Conflict(message) => KernelError::Conflict(message),
        other => KernelError::Unavailable(other.to_string()),
    }
}

fn clamp(page: PageRequest) -> PageRequest {
    PageRequest { after: page.after, limit: page.limit.clamp(1, MAX_PAGE_SIZE) }
}

/// Runs CPU-heavy work (argon2) on the blocking pool, off the async reactor.
async fn run_blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
}
