//! Event Grid events for the splitter: parsing (the Event Grid schema, and CloudEvents 1.0 for
//! good measure), the filter that decides which events start a job, and the map from a blob URL to
//! a path in our store.
//!
//! The filter repeats the subscription's filter (infra `events.bicep`) so that a wider or
//! missing subscription filter still starts jobs only for committed blobs under `input/`:
//! - `Microsoft.EventGrid.SubscriptionValidationEvent`: answer the handshake;
//! - `Microsoft.Storage.BlobCreated` whose `data.api` commits a whole blob (`PutBlob`,
//!   `PutBlockList`, `CopyBlob`, `FlushWithClose`) and whose blob lies under `input/<style>/`:
//!   split;
//! - everything else, our own outputs included: ignore, with the reason (answered 200, since Event
//!   Grid would otherwise retry an event that can never succeed).
//!
//! Store layouts: a store opened on a whole account (`https://<account>.blob.core.windows.net`,
//! what the deployment uses) keeps each top-level folder as a container, so the blob `candy/a.mp4`
//! in container `input` is `input/candy/a.mp4`; a store opened on one container (`az://<container>`)
//! keeps `input/` as a prefix inside it, so only blobs of that container map, path unchanged.

use serde_json::Value;

/// The event type of a new or replaced blob.
pub const BLOB_CREATED: &str = "Microsoft.Storage.BlobCreated";
/// The event type of Event Grid's subscription handshake.
pub const SUBSCRIPTION_VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
/// The `data.api` values of calls that commit a whole blob.
pub const COMMITTING_APIS: [&str; 4] = ["PutBlob", "PutBlockList", "CopyBlob", "FlushWithClose"];

/// An event the host delivered, in either schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event id (unique per event; a redelivery repeats it).
    pub id: String,
    /// `eventType` (Event Grid) or `type` (CloudEvents).
    pub event_type: String,
    /// The subject, e.g. `/blobServices/default/containers/input/blobs/candy/a.mp4`.
    pub subject: Option<String>,
    /// The event's data.
    pub data: Option<Value>,
}

/// Why an event payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct EventError(pub String);

impl Event {
    /// Parses one event object.
    pub fn from_value(value: &Value) -> Result<Self, EventError> {
        let Value::Object(map) = value else {
            return Err(EventError(format!(
                "expected an event object, got {}",
                crate::protocol::kind(value)
            )));
        };
        let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
        let id = text("id")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| EventError("the event has no id".into()))?;
        let event_type = text("eventType")
            .or_else(|| text("type"))
            .ok_or_else(|| EventError(format!("event {id} has no eventType")))?;
        Ok(Self {
            id,
            event_type,
            subject: text("subject"),
            data: map.get("data").filter(|d| !d.is_null()).cloned(),
        })
    }
}

/// The events in a trigger payload: one event or an array of them, as JSON or as a JSON string.
pub fn parse_events(payload: &Value) -> Result<Vec<Event>, EventError> {
    match payload {
        Value::String(text) => {
            let inner: Value = serde_json::from_str(text)
                .map_err(|e| EventError(format!("the event text is not JSON: {e}")))?;
            if inner.is_string() {
                return Err(EventError(
                    "the event is a JSON string, not an object".into(),
                ));
            }
            parse_events(&inner)
        }
        Value::Array(items) if items.is_empty() => Err(EventError("no events".into())),
        Value::Array(items) => items.iter().map(Event::from_value).collect(),
        other => Ok(vec![Event::from_value(other)?]),
    }
}

/// How blob URLs map to paths in our store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The store is a whole account (or a local folder): a container is a top-level folder.
    Account,
    /// The store is one container: only its blobs map, and their names are the paths.
    Container(String),
}

impl Layout {
    /// The layout of a store named by `spec` (as `STYLEFLEET_STORE` names it).
    pub fn of_store(spec: &str) -> Self {
        let Some((scheme, rest)) = spec.split_once("://") else {
            return Layout::Account;
        };
        let segments = |path: &str| -> Vec<String> {
            path.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        match scheme {
            "http" | "https" => {
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                let mut segs = segments(path);
                if !virtual_host(host) && !segs.is_empty() {
                    // Path-style (Azurite, an emulator): the first segment is the account.
                    segs.remove(0);
                }
                match segs.into_iter().next() {
                    Some(container) => Layout::Container(container),
                    None => Layout::Account,
                }
            }
            "file" => Layout::Account,
            // az://<container>, azure://<container>, abfs[s]://<container>@<account>...
            _ => {
                let first = rest.split('/').next().unwrap_or_default();
                let container = first.split_once('@').map_or(first, |(c, _)| c);
                if container.is_empty() {
                    Layout::Account
                } else {
                    Layout::Container(container.to_owned())
                }
            }
        }
    }

    /// The store path of blob `name` in `container`, when this store holds that container.
    pub fn store_path(&self, container: &str, name: &str) -> Option<String> {
        match self {
            Layout::Account => Some(format!("{container}/{name}")),
            Layout::Container(c) if c == container => Some(name.to_owned()),
            Layout::Container(_) => None,
        }
    }
}

/// Whether `host` names the account in the host (`<account>.blob.core.windows.net`,
/// `<account>.dfs...`) rather than in the path (Azurite's `127.0.0.1:10000/<account>`).
fn virtual_host(host: &str) -> bool {
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = host.split(':').next().unwrap_or(host);
    host.split('.')
        .skip(1)
        .any(|label| label == "blob" || label == "dfs")
}

/// Splits a blob URL into (container, blob name), percent-decoded.
pub fn blob_of_url(url: &str) -> Result<(String, String), EventError> {
    let bad = |why: &str| EventError(format!("data.url {url:?} {why}"));
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("is not an http(s) URL"))?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (host, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("names no container"))?;
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    let mut path = path;
    if !virtual_host(host) {
        path = path
            .split_once('/')
            .map(|(_, p)| p)
            .ok_or_else(|| bad("names no container"))?;
    }
    let (container, name) = path
        .split_once('/')
        .ok_or_else(|| bad("names a container but no blob"))?;
    let container =
        percent_decode(container).ok_or_else(|| bad("is not valid percent-encoded UTF-8"))?;
    let name = percent_decode(name).ok_or_else(|| bad("is not valid percent-encoded UTF-8"))?;
    if container.is_empty() || name.is_empty() {
        return Err(bad("names no blob"));
    }
    Ok((container, name))
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer Event Grid's subscription handshake with this code.
    Validate {
        /// `data.validationCode`.
        code: String,
    },
    /// Plan a job for this input.
    Split {
        /// The input's store path, `input/<style>/<name>`.
        path: String,
        /// The ETag of the blob version the event announces (quotes stripped), if given.
        etag: Option<String>,
    },
    /// Nothing to do, and why.
    Ignore {
        /// Why, for the log.
        reason: String,
    },
}

/// Decides what `event` asks for in a store laid out as `layout`. Errors are events that do not
/// have the shape their type promises (answered 400).
pub fn decide(event: &Event, layout: &Layout) -> Result<Decision, EventError> {
    let ignore = |reason: String| Ok(Decision::Ignore { reason });
    if event.event_type == SUBSCRIPTION_VALIDATION {
        let code = event
            .data
            .as_ref()
            .and_then(|d| d.get("validationCode"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                EventError(format!(
                    "validation event {} has no data.validationCode",
                    event.id
                ))
            })?;
        return Ok(Decision::Validate {
            code: code.to_owned(),
        });
    }
    if event.event_type != BLOB_CREATED {
        return ignore(format!(
            "event {}: type {} does not start jobs",
            event.id, event.event_type
        ));
    }
    let Some(Value::Object(data)) = &event.data else {
        return Err(EventError(format!(
            "BlobCreated event {} has no data object",
            event.id
        )));
    };
    let url = data
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| EventError(format!("BlobCreated event {} has no data.url", event.id)))?;
    let (container, name) = blob_of_url(url)?;
    let api = data.get("api").and_then(Value::as_str).unwrap_or_default();
    if !COMMITTING_APIS.contains(&api) {
        return ignore(format!(
            "event {}: api {api:?} does not commit a whole blob ({url})",
            event.id
        ));
    }
    let Some(path) = layout.store_path(&container, &name) else {
        return ignore(format!(
            "event {}: {url} is in container {container:?}, outside this store",
            event.id
        ));
    };
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("input"), Some(style), Some(file))
            if !style.is_empty() && !file.is_empty() && !path.ends_with('/') => {}
        (Some("input"), ..) => {
            return ignore(format!(
                "event {}: {path} is not under input/<style>/: put videos in a folder named after the style",
                event.id
            ));
        }
        _ => {
            return ignore(format!(
                "event {}: {path} is outside input/ (not an upload)",
                event.id
            ));
        }
    }
    let etag = data
        .get("eTag")
        .and_then(Value::as_str)
        .map(normalize_etag)
        .filter(|e| !e.is_empty());
    Ok(Decision::Split { path, etag })
}

/// An ETag without the quotes and weak marker that HTTP headers carry and event data omits.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn created(url: &str, api: &str) -> Event {
        Event::from_value(&json!({
            "id": "e1",
            "eventType": BLOB_CREATED,
            "subject": "/blobServices/default/containers/input/blobs/candy/a.mp4",
            "data": {"api": api, "url": url, "eTag": "0x8D4BCC2E4835CD0"},
        }))
        .unwrap()
    }

    #[test]
    fn layouts_follow_the_store_spec() {
        assert_eq!(
            Layout::of_store("https://acct.blob.core.windows.net"),
            Layout::Account
        );
        assert_eq!(
            Layout::of_store("https://acct.blob.core.windows.net/"),
            Layout::Account
        );
        assert_eq!(
            Layout::of_store("https://acct.blob.core.windows.net/data"),
            Layout::Container("data".into())
        );
        assert_eq!(
            Layout::of_store("az://data"),
            Layout::Container("data".into())
        );
        assert_eq!(
            Layout::of_store("abfss://data@acct.dfs.core.windows.net/"),
            Layout::Container("data".into())
        );
        assert_eq!(
            Layout::of_store("http://127.0.0.1:10000/devstoreaccount1"),
            Layout::Account
        );
        assert_eq!(
            Layout::of_store("http://127.0.0.1:10000/devstoreaccount1/data"),
            Layout::Container("data".into())
        );
        assert_eq!(Layout::of_store("stylefleet-data"), Layout::Account);
        assert_eq!(Layout::of_store("file:///srv/data"), Layout::Account);
    }

    #[test]
    fn blob_urls_split_into_container_and_name() {
        assert_eq!(
            blob_of_url("https://acct.blob.core.windows.net/input/candy/my%20clip.mp4").unwrap(),
            ("input".into(), "candy/my clip.mp4".into())
        );
        assert_eq!(
            blob_of_url("http://127.0.0.1:10000/devstoreaccount1/data/input/candy/a.mp4?x=1")
                .unwrap(),
            ("data".into(), "input/candy/a.mp4".into())
        );
        assert_eq!(
            blob_of_url("https://acct.dfs.core.windows.net/input/7/a.mov").unwrap(),
            ("input".into(), "7/a.mov".into())
        );
        for bad in [
            "ftp://x/y/z",
            "https://acct.blob.core.windows.net/input",
            "https://acct.blob.core.windows.net/input/",
            "https:///input/a",
            "https://acct.blob.core.windows.net/input/a%zz",
            "https://acct.blob.core.windows.net/input/a%ff",
        ] {
            assert!(blob_of_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn committed_uploads_under_input_are_split() {
        let account = Layout::Account;
        for api in COMMITTING_APIS {
            let event = created("https://acct.blob.core.windows.net/input/candy/a.mp4", api);
            assert_eq!(
                decide(&event, &account).unwrap(),
                Decision::Split {
                    path: "input/candy/a.mp4".into(),
                    etag: Some("0x8D4BCC2E4835CD0".into())
                }
            );
        }
        let container = Layout::Container("data".into());
        let event = created(
            "http://127.0.0.1:10000/devstoreaccount1/data/input/candy/a.mp4",
            "PutBlob",
        );
        assert!(matches!(
            decide(&event, &container).unwrap(),
            Decision::Split { path, .. } if path == "input/candy/a.mp4"
        ));
    }

    #[test]
    fn everything_else_is_ignored_with_a_reason() {
        let account = Layout::Account;
        let cases = [
            (
                created(
                    "https://acct.blob.core.windows.net/input/candy/a.mp4",
                    "PutBlock",
                ),
                "does not commit",
            ),
            (
                created(
                    "https://acct.blob.core.windows.net/output/candy/a.mp4",
                    "PutBlob",
                ),
                "outside input/",
            ),
            (
                created(
                    "https://acct.blob.core.windows.net/jobs/0123/chunks/00000.mp4",
                    "PutBlob",
                ),
                "outside input/",
            ),
            (
                created("https://acct.blob.core.windows.net/input/a.mp4", "PutBlob"),
                "input/<style>/",
            ),
        ];
        for (event, why) in cases {
            match decide(&event, &account).unwrap() {
                Decision::Ignore { reason } => assert!(reason.contains(why), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
        let other_container = created(
            "http://127.0.0.1:10000/devstoreaccount1/other/input/candy/a.mp4",
            "PutBlob",
        );
        assert!(matches!(
            decide(&other_container, &Layout::Container("data".into())).unwrap(),
            Decision::Ignore { .. }
        ));
        let deleted = Event::from_value(&json!({
            "id": "e2", "eventType": "Microsoft.Storage.BlobDeleted", "data": {}
        }))
        .unwrap();
        assert!(matches!(
            decide(&deleted, &account).unwrap(),
            Decision::Ignore { .. }
        ));
    }

    #[test]
    fn the_handshake_is_answered() {
        let event = parse_events(&json!([{
            "id": "v", "eventType": SUBSCRIPTION_VALIDATION,
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
        }]))
        .unwrap();
        assert_eq!(
            decide(&event[0], &Layout::Account).unwrap(),
            Decision::Validate {
                code: "512d38b6-c7b8-40c8-89fe-f46f9e9622b6".into()
            }
        );
    }

    #[test]
    fn malformed_events_are_errors() {
        assert!(parse_events(&json!([])).is_err());
        assert!(parse_events(&json!("not json")).is_err());
        assert!(parse_events(&json!(42)).is_err());
        assert!(parse_events(&json!({"eventType": BLOB_CREATED})).is_err());
        assert!(parse_events(&json!({"id": "x"})).is_err());
        let no_url = parse_events(
            &json!({"id": "x", "eventType": BLOB_CREATED, "data": {"api": "PutBlob"}}),
        )
        .unwrap();
        let err = decide(&no_url[0], &Layout::Account).unwrap_err();
        assert!(err.to_string().contains("data.url"), "{err}");
        let no_data = parse_events(&json!({"id": "x", "eventType": BLOB_CREATED})).unwrap();
        assert!(decide(&no_data[0], &Layout::Account).is_err());
        let no_code =
            parse_events(&json!({"id": "x", "eventType": SUBSCRIPTION_VALIDATION, "data": {}}))
                .unwrap();
        assert!(decide(&no_code[0], &Layout::Account).is_err());
        // A JSON string holding the event, as some hosts pass it, and CloudEvents' `type`.
        let text = json!({"id": "y", "type": BLOB_CREATED, "data": {}}).to_string();
        let events = parse_events(&Value::String(text)).unwrap();
        assert_eq!(events[0].event_type, BLOB_CREATED);
    }

    #[test]
    fn etags_compare_without_quotes() {
        assert_eq!(normalize_etag("\"0x8D4\""), "0x8D4");
        assert_eq!(normalize_etag("W/\"0x8D4\""), "0x8D4");
        assert_eq!(normalize_etag("0x8D4"), "0x8D4");
    }
}
