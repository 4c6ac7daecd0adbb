//! Shared request state and the bearer-token security scheme.

use std::sync::Arc;

use berth_kernel::Kernel;
use berth_kernel::auth::{self, Principal};
use berth_kernel::ports::Store;
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use crate::problem::ApiError;
use crate::tokens::{TokenService, TokenSubject};

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub kernel: Kernel,
    pub tokens: TokenService,
    /// The bootstrap platform-admin key from configuration, if any.
    pub admin_key: Option<Arc<str>>,
}

impl AppState {
    pub fn store(&self) -> &Arc<dyn Store> {
        self.kernel.store()
    }

    /// Resolves a bearer token: `berth_*` tokens are API keys, anything else a JWT.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        if let Some(admin_key) = &self.admin_key
            && auth::secrets_equal(token, admin_key)
        {
            return Ok(Principal::PlatformAdmin { key_id: None });
        }
        if token.starts_with("berth_") {
            return Ok(self.kernel.authenticate_api_key(token).await?);
        }
        match self.tokens.verify(token).await {
            Ok(TokenSubject::Driver(driver_id)) => Ok(Principal::Driver { driver_id }),
            Ok(TokenSubject::External { issuer, subject, email }) => {
                let driver = self.kernel.driver_for_external_subject(&issuer, &subject, email.as_deref()).await?;
                Ok(Principal::Driver { driver_id: driver.id })
            }
            Err(error) => Err(ApiError::unauthorized(error.to_string())),
        }
    }
}

/// `Authorization: Bearer <token>`: an API key (`berth_adm_…`, `berth_op_…`, `berth_int_…`)
/// or a driver JWT (from `POST /v1/drivers/login` or the configured OIDC issuer).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_bearer")]
pub struct BerthAuth(pub Principal);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let state = req.data::<AppState>().expect("invariant: AppState is attached to every route");
    state.authenticate(&bearer.token).await.map_err(Into::into)
}
