//! Driver tokens: berth issues HS256 JWTs at login, and accepts RS256/ES256 JWTs from an external
//! OpenID Connect issuer (Auth0, Keycloak...) whose key set is given as a file or a URL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_kernel::ids::DriverId;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

const LOCAL_ISSUER: &str = "berth";
const LOCAL_AUDIENCE: &str = "berth-driver";
/// An unknown `kid` triggers a key-set refresh at most this often, so forged tokens cannot make
/// us hammer the identity provider.
const JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(60);

/// A message a client can act on, without echoing token contents.
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "token expired".to_owned(),
        ErrorKind::ImmatureSignature => "token not valid yet".to_owned(),
        ErrorKind::InvalidSignature => "bad token signature".to_owned(),
        ErrorKind::InvalidIssuer => "token issuer not accepted".to_owned(),
        ErrorKind::InvalidAudience => "token audience not accepted".to_owned(),
        ErrorKind::InvalidAlgorithm => "token algorithm not accepted".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token lacks the '{claim}' claim"),
        _ => "malformed token".to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("cannot load the OIDC key set from {source_name}: {message}")]
    KeySet { source_name: String, message: String },
}

/// Where the external issuer's keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    File(std::path::PathBuf),
    Url(String),
}

impl JwksSource {
    /// `http(s)://...` is a URL; anything else a file path.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("http://") || text.starts_with("https://") {
            JwksSource::Url(text.to_owned())
        } else {
            JwksSource::File(text.into())
        }
    }

    fn name(&self) -> String {
        match self {
            JwksSource::File(path) => path.display().to_string(),
            JwksSource::Url(url) => url.clone(),
        }
    }

    async fn load(&self) -> Result<JwkSet, TokenError> {
        let fail = |message: String| TokenError::KeySet { source_name: self.name(), message };
        let text = match self {
            JwksSource::File(path) => tokio::fs::read_to_string(path).await.map_err(|e| fail(e.to_string()))?,
            JwksSource::Url(url) => {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                let response = client.get(url).send().await.map_err(|e| fail(e.to_string()))?;
                let response = response.error_for_status().map_err(|e| fail(e.to_string()))?;
                response.text().await.map_err(|e| fail(e.to_string()))?
            }
        };
        serde_json::from_str(&text).map_err(|e| fail(format!("not a JWK set: {e}")))
    }
}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub jwks: JwksSource,
    pub issuer: String,
    pub audience: String,
}

struct OidcVerifier {
    settings: OidcSettings,
    keys: RwLock<(JwkSet, Instant)>,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSubject {
    Driver(DriverId),
    External { issuer: String, subject: String, email: Option<String> },
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
}

#[derive(Debug, Deserialize)]
struct ExternalClaims {
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
}

#[derive(Clone)]
pub struct TokenService {
    encoding: Arc<EncodingKey>,
    decoding: Arc<DecodingKey>,
    ttl: Duration,
    oidc: Option<Arc<OidcVerifier>>,
}

/// An issued access token and its lifetime.
#[derive(Debug)]
pub struct AccessToken {
    pub token: String,
    pub expires_in_secs: u64,
}

impl TokenService {
    /// `secret` signs berth's own tokens (at least 32 bytes). The OIDC key set is loaded now, so
    /// a bad configuration fails at start-up rather than at the first login.
    pub async fn new(secret: &[u8], ttl: Duration, oidc: Option<OidcSettings>) -> Result<Self, TokenError> {
        let oidc = match oidc {
            Some(settings) => {
                let keys = settings.jwks.load().await?;
                Some(Arc::new(OidcVerifier { settings, keys: RwLock::new((keys, Instant::now())) }))
            }
            None => None,
        };
        Ok(Self {
            encoding: Arc::new(EncodingKey::from_secret(secret)),
            decoding: Arc::new(DecodingKey::from_secret(secret)),
            ttl,
            oidc,
        })
    }

    pub fn issue(&self, driver_id: DriverId) -> AccessToken {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: driver_id.to_string(),
            iss: LOCAL_ISSUER.to_owned(),
            aud: LOCAL_AUDIENCE.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("invariant: HS256 signing of plain claims cannot fail");
        AccessToken { token, expires_in_secs: self.ttl.as_secs() }
    }

    pub async fn verify(&self, token: &str) -> Result<TokenSubject, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(describe(&e)))?;
        if header.alg == Algorithm::HS256 {
            let mut validation = Validation::new(Algorithm::HS256);
            validation.set_issuer(&[LOCAL_ISSUER]);
            validation.set_audience(&[LOCAL_AUDIENCE]);
            let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
                .map_err(|e| TokenError::Invalid(describe(&e)))?;
            let driver_id = DriverId::parse(&data.claims.sub).map_err(|_| TokenError::Invalid("bad subject".into()))?;
            return Ok(TokenSubject::Driver(driver_id));
        }
        let Some(oidc) = &self.oidc else {
            return Err(TokenError::Invalid("external tokens are not accepted: no OIDC issuer configured".into()));
        };
        oidc.verify(token, &header).await
    }
}

impl OidcVerifier {
    async fn verify(&self, token: &str, header: &Header) -> Result<TokenSubject, TokenError> {
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::PS256
        ) {
            return Err(TokenError::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let kid = header.kid.clone().ok_or_else(|| TokenError::Invalid("token has no key id (kid)".into()))?;
        let key = match self.find_key(&kid).await? {
            Some(key) => key,
            None => {
                self.refresh_if_due().await?;
                self.find_key(&kid).await?.ok_or_else(|| TokenError::Invalid(format!("unknown key id '{kid}'")))?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.settings.issuer.as_str()]);
        validation.set_audience(&[self.settings.audience.as_str()]);
        let data = jsonwebtoken::decode::<ExternalClaims>(token, &key, &validation)
            .map_err(|e| TokenError::Invalid(describe(&e)))?;
        let email = data.claims.email.filter(|_| data.claims.email_verified.unwrap_or(false));
        Ok(TokenSubject::External { issuer: self.settings.issuer.clone(), subject: data.claims.sub, email })
    }

    async fn find_key(&self, kid: &str) -> Result<Option<DecodingKey>, TokenError> {
        let keys = self.keys.read().await;
        keys.0
            .find(kid)
            .map(|jwk| {
                DecodingKey::from_jwk(jwk).map_err(|e| TokenError::Invalid(format!("unusable key '{kid}': {e}")))
            })
            .transpose()
    }

    async fn refresh_if_due(&self) -> Result<(), TokenError> {
        if self.keys.read().await.1.elapsed() < JWKS_REFRESH_MIN_INTERVAL {
            return Ok(());
        }
        let fresh = self.settings.jwks.load().await?;
        *self.keys.write().await = (fresh, Instant::now());
        Ok(())
    }
}
