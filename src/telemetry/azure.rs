//! Application Insights (Azure Monitor) through `opentelemetry-application-insights`: the
//! component named by `APPLICATIONINSIGHTS_CONNECTION_STRING` gets the spans (as requests and
//! dependencies) and the metrics.
//!
//! # Entra ID
//!
//! Our component has local auth off: the instrumentation key in the connection string names
//! it but cannot write to it. The exporter crate itself only knows the key (its connection
//! string parser refuses anything but `Authorization=ikey`), but it sends through a pluggable
//! HTTP client: [`IngestionClient`] adds an Entra ID token (scope
//! `https://monitor.azure.com//.default`) to each upload and sends it to the track API that
//! accepts tokens (`v2.1/track`; the crate posts to `v2/track`). That is done when
//! `APPLICATIONINSIGHTS_AUTHENTICATION_STRING` says `Authorization=AAD`, the variable the
//! Functions host reads too: with `ClientId=<id>` the user-assigned managed identity of that
//! client id, else the one `AZURE_CLIENT_ID` names, else the default credential chain. The
//! identity needs Monitoring Metrics Publisher on the component (`infra/access.json`).
//! Tokens come from `azure_identity`, linked with the `service-bus` feature (the Azure
//! executables have it); a build without it refuses `Authorization=AAD` with a warning.
//!
//! # Limits of the crate
//!
//! It always sends over HTTPS (an `http://` ingestion endpoint is rewritten to `https://`), so
//! no plain-HTTP stand-in can receive it in a test here; and it retries a failed upload for up
//! to 35 s itself. At exit that retrying is cut off by the bounded flush
//! ([`super::SHUTDOWN_TIMEOUT`]), which says so in a warning.

#[cfg(feature = "service-bus")]
use std::sync::Arc;

use opentelemetry_application_insights::Exporter;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

/// The variable naming the component.
pub const CONNECTION_STRING_VAR: &str = "APPLICATIONINSIGHTS_CONNECTION_STRING";
/// The variable saying how to authenticate (`Authorization=AAD;ClientId=<id>`).
pub const AUTHENTICATION_STRING_VAR: &str = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING";
/// The token scope of Azure Monitor ingestion (the double slash is Azure Monitor's).
pub const TOKEN_SCOPE: &str = "https://monitor.azure.com//.default";

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How uploads authenticate, from `APPLICATIONINSIGHTS_AUTHENTICATION_STRING`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// The instrumentation key alone (a component with local auth on).
    Key,
    /// An Entra ID token, of the managed identity with this client id when one is named.
    EntraId {
        /// `ClientId=` of the authentication string.
        client_id: Option<String>,
    },
}

impl Authentication {
    /// Parses an authentication string (`Authorization=AAD;ClientId=...`; keys in any case).
    pub fn parse(text: Option<&str>) -> Result<Self, String> {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Authentication::Key);
        };
        let mut authorization = None;
        let mut client_id = None;
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{AUTHENTICATION_STRING_VAR}: {part:?} is not key=value"))?;
            match key.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(value.trim().to_owned()),
                "clientid" => client_id = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        match authorization.as_deref() {
            Some(a) if a.eq_ignore_ascii_case("aad") => Ok(Authentication::EntraId { client_id }),
            Some(other) => Err(format!(
                "{AUTHENTICATION_STRING_VAR}: Authorization={other} is not supported (only AAD)"
            )),
            None => Err(format!(
                "{AUTHENTICATION_STRING_VAR} names no Authorization (Authorization=AAD)"
            )),
        }
    }
}

/// The HTTP client of the Application Insights exporter: reqwest, plus an Entra ID token on
/// each request when the component wants one.
#[derive(Debug, Clone)]
pub struct IngestionClient {
    /// The connection pool.
    http: reqwest::Client,
    /// Where tokens come from; `None` with key authentication.
    #[cfg(feature = "service-bus")]
    credential: Option<Arc<dyn azure_core::credentials::TokenCredential>>,
}

impl IngestionClient {
    /// A client that authenticates as `authentication` says.
    pub fn new(authentication: &Authentication) -> Result<Self, BoxError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        match authentication {
            Authentication::Key => Ok(IngestionClient {
                http,
                #[cfg(feature = "service-bus")]
                credential: None,
            }),
            #[cfg(feature = "service-bus")]
            Authentication::EntraId { client_id } => Ok(IngestionClient {
                http,
                credential: Some(credential(client_id.as_deref())?),
            }),
            #[cfg(not(feature = "service-bus"))]
            Authentication::EntraId { .. } => Err(format!(
                "{AUTHENTICATION_STRING_VAR} asks for Entra ID, which this build cannot get tokens for"
            )
            .into()),
        }
    }
}

/// The managed identity `client_id` (else `AZURE_CLIENT_ID`) names, else the default chain.
#[cfg(feature = "service-bus")]
fn credential(
    client_id: Option<&str>,
) -> Result<Arc<dyn azure_core::credentials::TokenCredential>, BoxError> {
    use azure_identity::{
        DefaultAzureCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
        UserAssignedId,
    };
    let client_id = client_id
        .map(str::to_owned)
        .or_else(|| std::env::var("AZURE_CLIENT_ID").ok())
        .filter(|id| !id.trim().is_empty());
    Ok(match client_id {
        Some(id) => ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: Some(UserAssignedId::ClientId(id)),
            ..ManagedIdentityCredentialOptions::default()
        }))?,
        None => DefaultAzureCredential::new()?,
    })
}

#[async_trait::async_trait]
impl HttpClient for IngestionClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        #[cfg(feature = "service-bus")]
        let request = {
            let mut request = request;
            if let Some(credential) = &self.credential {
                let token = credential.get_token(&[TOKEN_SCOPE], None).await?;
                request.headers_mut().insert(
                    "authorization",
                    format!("Bearer {}", token.token.secret()).parse()?,
                );
                *request.uri_mut() = entra_track_uri(&request.uri().to_string()).parse()?;
            }
            request
        };
        self.http.send_bytes(request).await
    }
}

/// The track API that takes tokens, for the one the exporter posts to.
pub fn entra_track_uri(uri: &str) -> String {
    match uri.rfind("/v2/track") {
        Some(at) => format!(
            "{}/v2.1/track{}",
            &uri[..at],
            &uri[at + "/v2/track".len()..]
        ),
        None => uri.to_owned(),
    }
}

/// The exporter for the component `connection` names, authenticating as the environment says.
pub fn exporter(connection: &str) -> Result<Exporter<IngestionClient>, BoxError> {
    let authentication =
        Authentication::parse(std::env::var(AUTHENTICATION_STRING_VAR).ok().as_deref())?;
    let client = IngestionClient::new(&authentication)?;
    Exporter::new_from_connection_string(connection, client)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn authentication_strings_parse_as_the_functions_host_reads_them() {
        assert_eq!(Authentication::parse(None).unwrap(), Authentication::Key);
        assert_eq!(
            Authentication::parse(Some(" ")).unwrap(),
            Authentication::Key
        );
        assert_eq!(
            Authentication::parse(Some("ClientId=abc;Authorization=AAD")).unwrap(),
            Authentication::EntraId {
                client_id: Some("abc".into())
            }
        );
        assert_eq!(
            Authentication::parse(Some("authorization=aad")).unwrap(),
            Authentication::EntraId { client_id: None }
        );
        assert!(Authentication::parse(Some("Authorization=ikey")).is_err());
        assert!(Authentication::parse(Some("ClientId=abc")).is_err());
        assert!(Authentication::parse(Some("nonsense")).is_err());
    }

    #[test]
    fn tokens_go_to_the_track_api_that_takes_them() {
        assert_eq!(
            entra_track_uri("https://westeurope-5.in.applicationinsights.azure.com/v2/track"),
            "https://westeurope-5.in.applicationinsights.azure.com/v2.1/track"
        );
        assert_eq!(entra_track_uri("http://x/other"), "http://x/other");
    }
}
