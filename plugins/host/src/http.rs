//! The outbound HTTP capability: deny by default. A plugin reaches only the hosts its manifest
//! lists, over HTTPS (plain HTTP only to loopback, for local fakes), without redirects, within a
//! timeout, with a response-size cap and a per-call request budget.

use std::io::Read;

use crate::bindings::payment::berth::plugin::http as wit;
use crate::{Limits, PluginState, truncate};

/// Requests one plugin call may make.
const MAX_REQUESTS_PER_CALL: u32 = 8;
const MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;

/// One allow-list entry: a host, and a port when the manifest names one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    host: String,
    port: Option<u16>,
}

/// What a plugin may reach and how.
pub struct HttpPolicy {
    allowed: Vec<AllowedHost>,
    max_response_bytes: usize,
    agent: ureq::Agent,
}

impl HttpPolicy {
    /// `hosts` are the manifest's `capabilities.http_hosts` (`api.example.com`, `127.0.0.1:9000`).
    pub fn new(hosts: &[String], limits: &Limits) -> Self {
        let allowed = hosts
            .iter()
            .map(|entry| match entry.rsplit_once(':') {
                Some((host, port)) if port.parse::<u16>().is_ok() => {
                    AllowedHost { host: host.to_ascii_lowercase(), port: port.parse().ok() }
                }
                _ => AllowedHost { host: entry.to_ascii_lowercase(), port: None },
            })
            .collect();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(limits.http_timeout))
            .max_redirects(0)
            .max_redirects_will_error(false)
            .http_status_as_error(false)
            .user_agent("berth-plugin-host")
            .build()
            .new_agent();
        Self { allowed, max_response_bytes: limits.max_http_response_bytes, agent }
    }

    /// Whether `url` may be called; the error says why not.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let uri: ureq::http::Uri = url.parse().map_err(|_| format!("'{}' is not a URL", truncate(url.into(), 200)))?;
        let host = uri.host().ok_or_else(|| format!("'{url}' has no host"))?.to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let default_port = match uri.scheme_str() {
            Some("https") => 443,
            Some("http") if loopback => 80,
            Some("http") => return Err(format!("plain http to {host} is not allowed; use https")),
            _ => return Err(format!("'{url}' must be an https URL")),
        };
        let port = uri.port_u16().unwrap_or(default_port);
        let permitted = self
            .allowed
            .iter()
            .any(|entry| entry.host == host && entry.port.map_or(port == default_port, |allowed| allowed == port));
        if permitted { Ok(()) } else { Err(format!("{host}:{port} is not on this plugin's allow-list")) }
    }

    fn send(&self, request: wit::Request) -> Result<wit::Response, wit::HttpError> {
        self.check(&request.url).map_err(wit::HttpError::Denied)?;
        if request.body.len() > MAX_REQUEST_BODY_BYTES {
            return Err(wit::HttpError::Failed(format!("request body over {MAX_REQUEST_BODY_BYTES} bytes")));
        }
        let method = ureq::http::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| wit::HttpError::Failed(format!("bad method '{}'", truncate(request.method, 20))))?;
        let mut builder = ureq::http::Request::builder().method(method).uri(&request.url);
        for header in &request.headers {
            builder = builder.header(header.name.as_str(), header.value.as_str());
        }
        let http_request = builder.body(request.body).map_err(|e| wit::HttpError::Failed(e.to_string()))?;
        let mut response = self.agent.run(http_request).map_err(|error| match error {
            ureq::Error::Timeout(_) => wit::HttpError::Timeout,
            other => wit::HttpError::Failed(truncate(other.to_string(), 300)),
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some(wit::Header { name: name.as_str().to_owned(), value: value.to_str().ok()?.to_owned() })
            })
            .collect();
        let mut body = Vec::new();
        let cap = self.max_response_bytes as u64;
        response.body_mut().with_config().limit(u64::MAX).reader().take(cap + 1).read_to_end(&mut body).map_err(
            |error| match error.kind() {
                std::io::ErrorKind::TimedOut => wit::HttpError::Timeout,
                _ => wit::HttpError::Failed(truncate(error.to_string(), 300)),
            },
        )?;
        if body.len() as u64 > cap {
            return Err(wit::HttpError::TooLarge);
        }
        Ok(wit::Response { status, headers, body })
    }
}

impl wit::Host for PluginState {
    fn send(&mut self, request: wit::Request) -> Result<wit::Response, wit::HttpError> {
        let Some(policy) = self.http.clone() else {
            return Err(wit::HttpError::Denied("this plugin has no HTTP capability".into()));
        };
        self.n_http_calls += 1;
        if self.n_http_calls > MAX_REQUESTS_PER_CALL {
            return Err(wit::HttpError::Denied(format!("more than {MAX_REQUESTS_PER_CALL} requests in one call")));
        }
        let url = truncate(request.url.clone(), 200);
        let outcome = policy.send(request);
        match &outcome {
            Ok(response) => tracing::debug!(plugin = &*self.plugin_id, %url, status = response.status, "plugin http"),
            Err(error) => tracing::warn!(plugin = &*self.plugin_id, %url, ?error, "plugin http refused or failed"),
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_is_exact() {
        let policy = HttpPolicy::new(&["api.example.com".into(), "127.0.0.1:9000".into()], &Limits::default());
        assert_eq!(policy.check("https://api.example.com/v1/x"), Ok(()));
        assert_eq!(policy.check("https://API.example.com:443/v1"), Ok(()));
        assert_eq!(policy.check("http://127.0.0.1:9000/x"), Ok(()));
        for (url, reason) in [
            ("https://api.example.com:8443/", "api.example.com:8443 is not on this plugin's allow-list"),
            ("https://evil.example.com/", "evil.example.com:443 is not on this plugin's allow-list"),
            ("https://api.example.com.evil.net/", "api.example.com.evil.net:443 is not on this plugin's allow-list"),
            ("http://api.example.com/", "plain http to api.example.com is not allowed; use https"),
            ("http://127.0.0.1:9001/", "127.0.0.1:9001 is not on this plugin's allow-list"),
            ("ftp://api.example.com/", "'ftp://api.example.com/' must be an https URL"),
        ] {
            assert_eq!(policy.check(url), Err(reason.to_owned()), "{url}");
        }
    }
}
