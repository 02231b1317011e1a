//! Short-lived, single-blob SAS URLs for people outside the fleet.
//!
//! Outside users never get an identity on the storage account. An operator mints a URL that
//! grants one verb on one blob for a short time: `PUT` on a blob under `input/` (upload a video,
//! which starts a job) or `GET` on a blob under `output/` (fetch the result). Nothing else in the
//! data account, and nothing in the system account, is reachable with such a URL.
//!
//! URLs are signed with a *user delegation key*: the signer authenticates with Microsoft Entra ID
//! (managed identity, workload identity, a service principal, the Azure CLI or a bearer token)
//! and asks Blob Storage for a key bound to that identity. The identity needs the
//! `Storage Blob Delegator` role on the account, and the URL can never grant more than the
//! identity itself holds on the blob, so removing the operator's role voids every URL it minted.
//! An account key is refused outright: it grants everything on the account, cannot be revoked
//! per person, and is disabled on the deployed accounts anyway.
//!
//! The blob name is the full store path (`input/<style>/<name>.<ext>`); its first segment is the
//! Azure container, as everywhere else in stylefleet.

use std::fmt;
use std::time::Duration;

use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::path::Path;
use object_store::signer::{Method, Signer, Url};

/// Validity of a URL when the caller has no reason to pick another.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);

/// Longest validity [`mint`] accepts. A URL cannot be revoked on its own before it expires, so
/// the window a leaked URL stays useful is kept to a day.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What the holder of a URL may do with its one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SasDirection {
    /// Write one blob under `input/` (HTTP `PUT`, permission `w`).
    Upload,
    /// Read one blob under `output/` (HTTP `GET`, permission `r`).
    Download,
}

impl SasDirection {
    /// The only container this direction may sign for.
    pub fn container(self) -> &'static str {
        match self {
            Self::Upload => "input",
            Self::Download => "output",
        }
    }

    /// The HTTP verb the URL is signed for; it decides the SAS permission.
    fn method(self) -> Method {
        match self {
            Self::Upload => Method::PUT,
            Self::Download => Method::GET,
        }
    }
}

impl fmt::Display for SasDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Upload => "upload",
            Self::Download => "download",
        })
    }
}

/// Why a URL was not minted.
#[derive(Debug, thiserror::Error)]
pub enum SasError {
    /// The identity this process is held to (`STYLEFLEET_IDENTITY`, in tests) may not sign this
    /// URL: it lacks the delegator role or the container role the URL would grant.
    #[error("{0}")]
    Denied(String),
    /// The blob lies outside the one container its direction allows.
    #[error("{direction} URLs are only minted for a blob under {container}/, not {blob:?}")]
    OutOfScope {
        /// The blob path as given.
        blob: String,
        /// The direction asked for.
        direction: SasDirection,
        /// The container that direction allows.
        container: &'static str,
    },
    /// The blob path is not a valid store path (empty segment, `.` or `..`, control character).
    #[error("invalid blob path {blob:?}")]
    InvalidBlob {
        /// The blob path as given.
        blob: String,
        /// What the path parser rejected.
        #[source]
        source: object_store::path::Error,
    },
    /// The requested validity is zero.
    #[error("a SAS URL must be valid for more than zero seconds")]
    TtlZero,
    /// The requested validity is above [`MAX_TTL`].
    #[error("a SAS URL may be valid for at most {max:?}, not {requested:?}")]
    TtlTooLong {
        /// The validity asked for.
        requested: Duration,
        /// The cap.
        max: Duration,
    },
    /// The store URL is not the root URL of a Blob Storage account.
    #[error(
        "store URL {url:?} is not an account URL like https://<account>.blob.core.windows.net: {reason}"
    )]
    StoreUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A shared secret is configured; signing with it is refused.
    #[error(
        "{credential} is configured in the environment; refusing to sign with it: unset it and \
         sign in with Microsoft Entra ID (the identity needs Storage Blob Delegator)"
    )]
    SharedSecretConfigured {
        /// Which kind of secret was found.
        credential: &'static str,
    },
    /// No Microsoft Entra ID credential is configured: without one the client would try the
    /// machine's managed identity endpoint, again and again, and fail with a page of errors.
    #[error(
        "no Microsoft Entra ID credential to sign with: sign in with `az login` and set \
         AZURE_USE_AZURE_CLI=true, or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET \
         (on Azure, AZURE_CLIENT_ID names the managed identity)"
    )]
    NoCredential,
    /// The Azure client could not be configured from the URL and the environment.
    #[error("could not configure the Azure Blob client")]
    Configure {
        /// The configuration error.
        #[source]
        source: object_store::Error,
    },
    /// Blob Storage refused or could not be reached while fetching the user delegation key.
    #[error("could not sign the URL with a user delegation key")]
    Sign {
        /// The signing error.
        #[source]
        source: object_store::Error,
    },
}

/// Mints a SAS URL for `blob` (a full store path such as `input/candy/clip.mp4`) on the account
/// at `store_url`, valid for `ttl`, with credentials taken from the environment.
///
/// The environment is read the way the rest of stylefleet reads it
/// ([`MicrosoftAzureBuilder::from_env`]): `AZURE_CLIENT_ID` with a managed or workload identity,
/// a service principal, `AZURE_STORAGE_TOKEN`, or `AZURE_USE_AZURE_CLI=true`. Refuses to run
/// when an account key, a SAS token or the storage emulator is configured.
pub async fn mint(
    store_url: &str,
    blob: &str,
    direction: SasDirection,
    ttl: Duration,
) -> Result<Url, SasError> {
    mint_with(
        MicrosoftAzureBuilder::from_env(),
        store_url,
        blob,
        direction,
        ttl,
    )
    .await
}

/// Like [`mint`], with the Azure client configuration given instead of read from the
/// environment. The account and container always come from `store_url` and `blob`.
pub async fn mint_with(
    builder: MicrosoftAzureBuilder,
    store_url: &str,
    blob: &str,
    direction: SasDirection,
    ttl: Duration,
) -> Result<Url, SasError> {
    // Every refusal comes before any network call, so a bad request costs nothing.
    check_ttl(ttl)?;
    let object = scope(blob, direction)?;
    check_store_url(store_url)?;
    check_grants(direction, &object)?;
    refuse_shared_secrets(&builder)?;
    require_credential(&builder)?;
    let store = builder
        .with_url(store_url)
        .with_container_name(direction.container())
        .build()
        .map_err(|source| SasError::Configure { source })?;
    store
        .signed_url(direction.method(), &object, ttl)
        .await
        .map_err(|source| SasError::Sign { source })
}

/// Under an access guard ([`crate::access`]), checks what Azure checks when it signs: the
/// delegator role (to get the key) and the role on the container the URL would grant, since a
/// user delegation SAS never grants more than its signer holds.
fn check_grants(direction: SasDirection, object: &Path) -> Result<(), SasError> {
    use crate::access::{Account, BlobAction, Guard};
    let Some(guard) = Guard::from_env().map_err(|e| SasError::Denied(e.to_string()))? else {
        return Ok(());
    };
    let needs = match direction {
        SasDirection::Upload => BlobAction::Write,
        SasDirection::Download => BlobAction::Read,
    };
    let blob = format!("{}/{object}", direction.container());
    guard
        .check_blob(
            Account::Data,
            None,
            BlobAction::Delegate,
            "get a user delegation key",
            "",
        )
        .and_then(|()| {
            guard.check_blob(
                Account::Data,
                Some(direction.container()),
                needs,
                "sign a SAS",
                &blob,
            )
        })
        .map_err(|e| SasError::Denied(e.to_string()))
}

/// Checks that `ttl` lies in `(0, MAX_TTL]`.
fn check_ttl(ttl: Duration) -> Result<(), SasError> {
    if ttl.is_zero() {
        return Err(SasError::TtlZero);
    }
    if ttl > MAX_TTL {
        return Err(SasError::TtlTooLong {
            requested: ttl,
            max: MAX_TTL,
        });
    }
    Ok(())
}

/// Returns the path of `blob` inside its container, or why it may not be signed for `direction`.
fn scope(blob: &str, direction: SasDirection) -> Result<Path, SasError> {
    let path = Path::parse(blob).map_err(|source| SasError::InvalidBlob {
        blob: blob.to_owned(),
        source,
    })?;
    let container = direction.container();
    let out_of_scope = || SasError::OutOfScope {
        blob: blob.to_owned(),
        direction,
        container,
    };
    let mut parts = path.parts();
    match parts.next() {
        Some(first) if first.as_ref() == container => {}
        _ => return Err(out_of_scope()),
    }
    // The rest is the blob inside the container; the container alone is not a blob.
    let inner: Path = parts.collect();
    if inner.as_ref().is_empty() {
        return Err(out_of_scope());
    }
    Ok(inner)
}

/// Accepts only the bare account URL, so that the container cannot be smuggled in through it.
fn check_store_url(store_url: &str) -> Result<(), SasError> {
    let bad = |reason| SasError::StoreUrl {
        url: store_url.to_owned(),
        reason,
    };
    let url = Url::parse(store_url).map_err(|_| bad("not a URL"))?;
    if url.scheme() != "https" {
        return Err(bad("the scheme must be https"));
    }
    if !matches!(url.path(), "" | "/") {
        return Err(bad("it must not name a container or a path"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not carry a query or a fragment"));
    }
    Ok(())
}

/// Refuses configurations that would sign with (or cannot sign without) a shared secret.
fn refuse_shared_secrets(builder: &MicrosoftAzureBuilder) -> Result<(), SasError> {
    if builder
        .get_config_value(&AzureConfigKey::AccessKey)
        .is_some()
    {
        return Err(SasError::SharedSecretConfigured {
            credential: "an account key (AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_ACCESS_KEY)",
        });
    }
    if builder.get_config_value(&AzureConfigKey::SasKey).is_some() {
        return Err(SasError::SharedSecretConfigured {
            credential: "a SAS token (AZURE_STORAGE_SAS_KEY)",
        });
    }
    // The emulator signs with its well-known account key.
    if builder
        .get_config_value(&AzureConfigKey::UseEmulator)
        .is_some_and(|v| v == "true")
    {
        return Err(SasError::SharedSecretConfigured {
            credential: "the storage emulator (AZURE_STORAGE_USE_EMULATOR)",
        });
    }
    Ok(())
}

/// Refuses to go on without a configured Entra ID credential: a token, a service principal, a
/// federated token, the Azure CLI, or a managed identity (named, or announced by its endpoint).
fn require_credential(builder: &MicrosoftAzureBuilder) -> Result<(), SasError> {
    let set = |key: AzureConfigKey| {
        builder
            .get_config_value(&key)
            .is_some_and(|v| !v.is_empty() && v != "false")
    };
    let configured = [
        AzureConfigKey::Token,
        AzureConfigKey::ClientSecret,
        AzureConfigKey::FederatedTokenFile,
        AzureConfigKey::UseAzureCli,
        AzureConfigKey::MsiEndpoint,
        AzureConfigKey::ClientId,
        AzureConfigKey::ObjectId,
        AzureConfigKey::MsiResourceId,
        AzureConfigKey::CredentialType,
        AzureConfigKey::FabricSessionToken,
    ]
    .into_iter()
    .any(set);
    let endpoint = ["IDENTITY_ENDPOINT", "MSI_ENDPOINT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    if configured || endpoint {
        Ok(())
    } else {
        Err(SasError::NoCredential)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const STORE: &str = "https://stylefleetdata.blob.core.windows.net";
    // The emulator's published development key: a well-formed key that grants nothing real.
    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    /// A builder that would sign with a bearer token, i.e. a user delegation key.
    fn token_builder() -> MicrosoftAzureBuilder {
        MicrosoftAzureBuilder::new().with_bearer_token_authorization("not-a-real-token")
    }

    #[test]
    fn upload_is_scoped_to_one_blob_under_input() {
        let path = scope("input/candy/clip.mp4", SasDirection::Upload).unwrap();
        assert_eq!(path.as_ref(), "candy/clip.mp4");
        // A leading slash names the same blob.
        let path = scope("/input/candy/clip.mp4", SasDirection::Upload).unwrap();
        assert_eq!(path.as_ref(), "candy/clip.mp4");
    }

    #[test]
    fn download_is_scoped_to_one_blob_under_output() {
        let path = scope("output/candy/clip.mp4", SasDirection::Download).unwrap();
        assert_eq!(path.as_ref(), "candy/clip.mp4");
    }

    #[test]
    fn upload_outside_input_is_refused() {
        for blob in [
            "output/candy/clip.mp4",
            "jobs/abc/manifest.json",
            "styles/mine.png",
            "logs/x.log",
            "inputs/candy/clip.mp4",
            "input",
            "input/",
            "clip.mp4",
            "",
        ] {
            let err = scope(blob, SasDirection::Upload).unwrap_err();
            assert!(
                matches!(
                    err,
                    SasError::OutOfScope {
                        container: "input",
                        ..
                    }
                ),
                "{blob:?}: {err}"
            );
        }
    }

    #[test]
    fn download_outside_output_is_refused() {
        for blob in [
            "input/candy/clip.mp4",
            "jobs/abc/status.json",
            "output",
            "outputs/a.mp4",
        ] {
            let err = scope(blob, SasDirection::Download).unwrap_err();
            assert!(
                matches!(
                    err,
                    SasError::OutOfScope {
                        container: "output",
                        ..
                    }
                ),
                "{blob:?}: {err}"
            );
        }
    }

    #[test]
    fn traversal_and_malformed_paths_are_refused() {
        for blob in [
            "input/../output/a.mp4",
            "input/./a.mp4",
            "input//a.mp4",
            "input/a\u{7}.mp4",
        ] {
            let err = scope(blob, SasDirection::Upload).unwrap_err();
            assert!(
                matches!(err, SasError::InvalidBlob { .. }),
                "{blob:?}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn no_credential_is_one_line_with_a_hint_before_any_request() {
        if ["IDENTITY_ENDPOINT", "MSI_ENDPOINT"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            return; // a managed identity endpoint is a credential here
        }
        let err = mint_with(
            MicrosoftAzureBuilder::new(),
            STORE,
            "input/starry-blue/clip.mp4",
            SasDirection::Upload,
            DEFAULT_TTL,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SasError::NoCredential), "{err}");
        let text = crate::lifecycle::report(&err);
        assert!(text.contains("az login") && !text.contains('\n'), "{text}");
        assert!(text.len() < 300, "{text}");
    }

    #[test]
    fn ttl_is_capped_and_nonzero() {
        assert!(check_ttl(DEFAULT_TTL).is_ok());
        assert!(check_ttl(MAX_TTL).is_ok());
        assert!(matches!(check_ttl(Duration::ZERO), Err(SasError::TtlZero)));
        let err = check_ttl(MAX_TTL + Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(err, SasError::TtlTooLong { requested, max } if requested > max),
            "{err}"
        );
    }

    #[test]
    fn store_url_must_be_a_bare_https_account_url() {
        assert!(check_store_url(STORE).is_ok());
        assert!(check_store_url(&format!("{STORE}/")).is_ok());
        for url in [
            "http://stylefleetdata.blob.core.windows.net",
            "https://stylefleetdata.blob.core.windows.net/output",
            "https://stylefleetdata.blob.core.windows.net/?sv=2022-11-02",
            "stylefleetdata",
        ] {
            let err = check_store_url(url).unwrap_err();
            assert!(matches!(err, SasError::StoreUrl { .. }), "{url:?}: {err}");
        }
    }

    #[tokio::test]
    async fn an_account_key_is_refused() {
        let builder = MicrosoftAzureBuilder::new().with_access_key(KEY);
        let err = mint_with(
            builder,
            STORE,
            "input/candy/clip.mp4",
            SasDirection::Upload,
            DEFAULT_TTL,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, SasError::SharedSecretConfigured { .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn every_environment_spelling_of_an_account_key_is_refused() {
        // `from_env` maps each of these variables (lower-cased) through the same parser.
        for variable in [
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ACCESS_KEY",
            "AZURE_STORAGE_MASTER_KEY",
        ] {
            let key: AzureConfigKey = variable.to_ascii_lowercase().parse().unwrap();
            let builder = token_builder().with_config(key, KEY);
            let err = mint_with(
                builder,
                STORE,
                "output/candy/clip.mp4",
                SasDirection::Download,
                DEFAULT_TTL,
            )
            .await
            .unwrap_err();
            assert!(
                matches!(err, SasError::SharedSecretConfigured { credential } if credential.contains("account key")),
                "{variable}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn a_sas_token_or_the_emulator_is_refused() {
        let sas = token_builder().with_config(AzureConfigKey::SasKey, "sv=2022-11-02&sig=x");
        let emulator = token_builder().with_use_emulator(true);
        for builder in [sas, emulator] {
            let err = mint_with(
                builder,
                STORE,
                "input/a.mp4",
                SasDirection::Upload,
                DEFAULT_TTL,
            )
            .await
            .unwrap_err();
            assert!(
                matches!(err, SasError::SharedSecretConfigured { .. }),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn scope_and_ttl_are_checked_before_credentials() {
        // Even with a key configured, the caller learns the request itself is wrong.
        let keyed = || MicrosoftAzureBuilder::new().with_access_key(KEY);
        let err = mint_with(
            keyed(),
            STORE,
            "jobs/x/manifest.json",
            SasDirection::Upload,
            DEFAULT_TTL,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SasError::OutOfScope { .. }), "{err}");
        let err = mint_with(
            keyed(),
            STORE,
            "input/a.mp4",
            SasDirection::Upload,
            MAX_TTL * 2,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SasError::TtlTooLong { .. }), "{err}");
    }

    /// The credential variables that let `from_env` obtain an Entra ID token.
    const TOKEN_SOURCES: [&str; 6] = [
        "AZURE_STORAGE_TOKEN",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_USE_AZURE_CLI",
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
    ];

    /// Against a real account: needs `AZURE_STORAGE_ACCOUNT_NAME` and one of [`TOKEN_SOURCES`],
    /// an identity with Storage Blob Delegator on the account and Blob Data Contributor on
    /// `input` and `output`. Skipped, with a message, otherwise.
    #[tokio::test]
    async fn live_user_delegation_sas_round_trip() {
        use object_store::{ObjectStoreExt, PutPayload};

        let Ok(account) = std::env::var("AZURE_STORAGE_ACCOUNT_NAME") else {
            eprintln!("skipping live SAS test: AZURE_STORAGE_ACCOUNT_NAME is not set");
            return;
        };
        if !TOKEN_SOURCES.iter().any(|v| std::env::var_os(v).is_some()) {
            eprintln!(
                "skipping live SAS test: no Entra ID credential in the environment (one of {TOKEN_SOURCES:?})"
            );
            return;
        }
        let store_url = format!("https://{account}.blob.core.windows.net");
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("sas-live-test/{nonce}.bin");
        let ttl = Duration::from_secs(300);

        // Upload through the SAS: only this blob, only write.
        let url = mint(
            &store_url,
            &format!("input/{name}"),
            SasDirection::Upload,
            ttl,
        )
        .await
        .unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |k: &str| pairs.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
        assert!(get("skoid").is_some(), "not a user delegation SAS: {url}");
        assert_eq!(get("sp"), Some("w"));
        assert_eq!(get("sr"), Some("b"));
        let via_sas = |container: &str, pairs: Vec<(String, String)>| {
            MicrosoftAzureBuilder::new()
                .with_account(&account)
                .with_container_name(container)
                .with_sas_authorization(pairs)
                .build()
                .unwrap()
        };
        let input = via_sas("input", pairs.clone());
        let body = PutPayload::from_static(b"stylefleet sas live test");
        input
            .put(&Path::from(name.as_str()), body.clone())
            .await
            .unwrap();
        // The same URL writes no other blob and reads nothing.
        let other = Path::from(format!("sas-live-test/{nonce}-other.bin"));
        assert!(input.put(&other, body.clone()).await.is_err());
        assert!(input.get(&Path::from(name.as_str())).await.is_err());

        // Download through the SAS a blob the identity wrote to output/.
        let direct = MicrosoftAzureBuilder::from_env()
            .with_url(&store_url)
            .with_container_name("output")
            .build()
            .unwrap();
        direct.put(&Path::from(name.as_str()), body).await.unwrap();
        let url = mint(
            &store_url,
            &format!("output/{name}"),
            SasDirection::Download,
            ttl,
        )
        .await
        .unwrap();
        let output = via_sas("output", url.query_pairs().into_owned().collect());
        let bytes = output
            .get(&Path::from(name.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"stylefleet sas live test");

        direct.delete(&Path::from(name.as_str())).await.unwrap();
        let input_direct = MicrosoftAzureBuilder::from_env()
            .with_url(&store_url)
            .with_container_name("input")
            .build()
            .unwrap();
        input_direct
            .delete(&Path::from(name.as_str()))
            .await
            .unwrap();
    }
}
