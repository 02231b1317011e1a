//! What a store URL names (see the parent module's table), and the endpoint configured from it
//! and the environment.

use std::fmt;

use object_store::ClientOptions;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::signer::Url;

use super::{EMULATOR_ACCOUNT, EMULATOR_KEY, Options, StoreError, config};

/// A builder with our retry policy and timeouts, then the `AZURE_*` environment on top, the way
/// [`MicrosoftAzureBuilder::from_env`] applies it.
fn builder_from_env(options: &Options) -> MicrosoftAzureBuilder {
    let client = ClientOptions::new()
        .with_connect_timeout(options.connect_timeout)
        .with_timeout(options.request_timeout);
    let mut builder = MicrosoftAzureBuilder::new()
        .with_retry(options.retry.clone())
        .with_client_options(client);
    for (key, value) in std::env::vars_os() {
        let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
            continue;
        };
        if key.starts_with("AZURE_")
            && let Ok(config_key) = key.to_ascii_lowercase().parse::<AzureConfigKey>()
        {
            builder = builder.with_config(config_key, value);
        }
    }
    // The managed identity endpoint of App Service and Functions, as from_env reads it.
    if let Ok(endpoint) = std::env::var("IDENTITY_ENDPOINT") {
        builder = builder.with_msi_endpoint(endpoint);
    }
    builder
}

/// What a store URL names: an endpoint and, unless the whole account, one container.
pub(super) struct Target {
    pub(super) endpoint: Endpoint,
    pub(super) container: Option<String>,
}

impl Target {
    pub(super) fn parse(spec: &str, options: &Options) -> Result<Self, StoreError> {
        let url = Url::parse(spec).map_err(|e| config(spec, e.to_string()))?;
        let builder = builder_from_env(options);
        match url.scheme() {
            "az" | "azure" | "abfs" | "abfss" | "adl" => {
                // object_store's own URL forms: it finds the container (and maybe the account).
                let builder = builder.with_url(spec);
                // The builder parses its URL only in `build`, so read the container here:
                // `az://<container>`, `abfs://<container>@<account>.dfs...`.
                let container = Some(url.username())
                    .filter(|u| !u.is_empty())
                    .or(url.host_str())
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .or_else(|| builder.get_config_value(&AzureConfigKey::ContainerName))
                    .ok_or_else(|| config(spec, "the URL names no container"))?;
                let endpoint = Endpoint::from_builder(builder, spec)?;
                Ok(Target {
                    endpoint,
                    container: Some(container),
                })
            }
            "http" | "https" => {
                let host = url
                    .host_str()
                    .ok_or_else(|| config(spec, "the URL has no host"))?;
                let mut segments: Vec<&str> = url
                    .path_segments()
                    .map(|s| s.filter(|s| !s.is_empty()).collect())
                    .unwrap_or_default();
                let origin = url.origin().ascii_serialization();
                let (account, service) = match host.split_once(".blob.") {
                    // Host style: https://<account>.blob.core.windows.net (or another cloud's).
                    Some((account, _)) => (account.to_owned(), origin),
                    // Path style: http://<host>:<port>/<account>, as the emulator serves.
                    None => {
                        if segments.is_empty() {
                            return Err(config(
                                spec,
                                "a URL that is not <account>.blob.<domain> must name the account \
                                 in its path: http://<host>:<port>/<account>[/<container>]",
                            ));
                        }
                        let account = segments.remove(0).to_owned();
                        let service = format!("{origin}/{account}");
                        (account, service)
                    }
                };
                if segments.len() > 1 {
                    return Err(config(
                        spec,
                        "a store URL names an account or one container, not a folder in it",
                    ));
                }
                let mut builder = builder
                    // An explicit endpoint wins over AZURE_STORAGE_USE_EMULATOR.
                    .with_use_emulator(false)
                    .with_account(&account)
                    .with_endpoint(service.clone())
                    .with_allow_http(url.scheme() == "http");
                if account == EMULATOR_ACCOUNT
                    && builder
                        .get_config_value(&AzureConfigKey::AccessKey)
                        .is_none()
                {
                    builder = builder.with_access_key(EMULATOR_KEY);
                }
                let service = Url::parse(&service).map_err(|e| config(spec, e.to_string()))?;
                let key = builder.get_config_value(&AzureConfigKey::AccessKey);
                Ok(Target {
                    endpoint: Endpoint {
                        builder,
                        account,
                        service,
                        key,
                    },
                    container: segments.first().map(|s| (*s).to_owned()),
                })
            }
            other => Err(config(spec, format!("unknown scheme {other}:"))),
        }
    }
}

/// An account, how to reach it, and how to authorise the requests made here.
#[derive(Clone)]
pub(super) struct Endpoint {
    /// The configured builder, without a container.
    pub(super) builder: MicrosoftAzureBuilder,
    /// The storage account.
    pub(super) account: String,
    /// The account's blob service URL: containers are its children.
    pub(super) service: Url,
    /// The account key, when the credential is one: requests made here sign with it.
    pub(super) key: Option<String>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The builder and the key hold secrets.
        f.debug_struct("Endpoint")
            .field("account", &self.account)
            .field("service", &self.service.as_str())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The endpoint of a builder configured from the environment (and object_store's URL forms).
    fn from_builder(builder: MicrosoftAzureBuilder, spec: &str) -> Result<Self, StoreError> {
        let value = |key| builder.get_config_value(&key);
        let emulator = value(AzureConfigKey::UseEmulator)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
        let (account, service) = if emulator {
            let account =
                value(AzureConfigKey::AccountName).unwrap_or_else(|| EMULATOR_ACCOUNT.to_owned());
            // object_store reads the emulator's address from this variable alone.
            let base = std::env::var("AZURITE_BLOB_STORAGE_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:10000".to_owned());
            (
                account.clone(),
                format!("{}/{account}", base.trim_end_matches('/')),
            )
        } else {
            let account = value(AzureConfigKey::AccountName).ok_or_else(|| {
                config(
                    spec,
                    "no storage account: set AZURE_STORAGE_ACCOUNT_NAME, use \
                     https://<account>.blob.core.windows.net[/<container>], or set \
                     AZURE_STORAGE_USE_EMULATOR=true for Azurite",
                )
            })?;
            let service = value(AzureConfigKey::Endpoint)
                .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
            (account, service)
        };
        let service = Url::parse(&service).map_err(|e| config(spec, e.to_string()))?;
        let key = value(AzureConfigKey::AccessKey).or_else(|| {
            (emulator
                && value(AzureConfigKey::SasKey).is_none()
                && value(AzureConfigKey::Token).is_none())
            .then(|| EMULATOR_KEY.to_owned())
        });
        Ok(Endpoint {
            builder,
            account,
            service,
            key,
        })
    }
}

/// starting and ending with a letter or digit.
pub(super) fn check_container_name(name: &str) -> Result<(), String> {
    let valid = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a container name (3-63 lowercase letters, digits and single hyphens)"
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn url_forms_name_an_account_and_maybe_a_container() {
        let t = Target::parse(
            "https://acct.blob.core.windows.net/jobs",
            &Options::default(),
        )
        .unwrap();
        assert_eq!(t.endpoint.account, "acct");
        assert_eq!(t.container.as_deref(), Some("jobs"));
        assert_eq!(
            t.endpoint.service.as_str(),
            "https://acct.blob.core.windows.net/"
        );

        let t = Target::parse("https://acct.blob.core.windows.net", &Options::default()).unwrap();
        assert_eq!(t.container, None);

        let t = Target::parse(
            "http://127.0.0.1:10000/devstoreaccount1/data",
            &Options::default(),
        )
        .unwrap();
        assert_eq!(t.endpoint.account, EMULATOR_ACCOUNT);
        assert_eq!(t.container.as_deref(), Some("data"));
        assert_eq!(
            t.endpoint.service.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(t.endpoint.key.as_deref(), Some(EMULATOR_KEY));

        let t = Target::parse(
            "http://localhost:10000/devstoreaccount1",
            &Options::default(),
        )
        .unwrap();
        assert_eq!(t.container, None);
    }

    #[test]
    fn container_names_follow_the_service_rules() {
        for ok in ["input", "jobs", "abc", "a-b-c", "x1"] {
            assert_eq!(check_container_name(ok).is_ok(), ok.len() >= 3, "{ok}");
        }
        for bad in [
            "ab",
            "Input",
            "-abc",
            "abc-",
            "a--b",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(check_container_name(bad).is_err(), "{bad}");
        }
    }
}
