#![allow(clippy::unwrap_used)]
//! Blob Storage against Azurite: object_store's own conformance functions on a container store and
//! through the account store, then stylefleet's [`Store`] on both (create-only writes, missing
//! containers, error classes).
//!
//! The conformance list is the one object_store's Azure backend runs against Azurite itself
//! (`azure_blob_test`), less what needs object_store's private test helpers.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::integration::*;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, RetryConfig};
use stylefleet::store::azure::{
    AccountStore, EMULATOR_ACCOUNT, EMULATOR_KEY, Options, open_container, open_store_with,
};
use stylefleet::store::{Store, StoreError};
use support::azurite::Azurite;

/// Whether `container` exists, asked straight from object_store's backend (no container check).
async fn container_exists(azurite: &Azurite, container: &str) -> bool {
    let backend = MicrosoftAzureBuilder::new()
        .with_account(EMULATOR_ACCOUNT)
        .with_access_key(EMULATOR_KEY)
        .with_endpoint(azurite.account_url())
        .with_allow_http(true)
        .with_container_name(container)
        .build()
        .unwrap();
    let probe = PaginatedListOptions {
        max_keys: Some(1),
        ..Default::default()
    };
    match backend.list_paginated(None, probe).await {
        Ok(_) => true,
        Err(e) if e.to_string().contains("ContainerNotFound") => false,
        Err(e) => panic!("probing {container}: {e}"),
    }
}

#[tokio::test]
async fn conformance_on_a_container() {
    let azurite = Azurite::start();
    // Not created beforehand: the store creates it on its first operation.
    let store = open_container(&azurite.container_url("conformance")).unwrap();
    assert!(!container_exists(&azurite, "conformance").await);

    put_get_delete_list(&store).await;
    assert!(container_exists(&azurite, "conformance").await);
    list_with_offset_exclusivity(&store).await;
    get_opts(&store).await;
    list_uses_directories_correctly(&store).await;
    list_with_delimiter(&store).await;
    rename_and_copy(&store).await;
    copy_if_not_exists(&store).await;
    copy_rename_nonexistent_object(&store).await;
    stream_get(&store).await;
    put_opts(&store, true).await;
    multipart(&store, &store).await;
    multipart_put_part_out_of_order(&store, &store).await;
    multipart_race_condition(&store, false).await;
    multipart_out_of_order(&store).await;
    // Straight on object_store's backend: what our wrapper does not offer.
    list_paginated(store.backend(), store.backend()).await;
}

#[tokio::test]
async fn conformance_through_the_account_store() {
    let azurite = Azurite::start();
    let account = AccountStore::open(&azurite.account_url()).unwrap();
    // The suite writes at the top of the store it gets: give it one container of the account.
    let store = PrefixStore::new(account.clone(), "jobs");
    put_get_delete_list(&store).await;
    get_opts(&store).await;
    list_uses_directories_correctly(&store).await;
    list_with_delimiter(&store).await;
    rename_and_copy(&store).await;
    copy_if_not_exists(&store).await;
    stream_get(&store).await;
    put_opts(&store, true).await;
    assert!(container_exists(&azurite, "jobs").await);
    assert!(!container_exists(&azurite, "output").await);
}

#[tokio::test]
async fn the_account_store_maps_top_level_folders_to_containers() {
    let azurite = Azurite::start();
    let account = AccountStore::open(&azurite.account_url()).unwrap();
    let store = Store::open(&azurite.account_url()).unwrap();

    assert!(
        store
            .put_create("input/candy/clip.mp4", "video")
            .await
            .unwrap()
    );
    assert!(
        store
            .put_create("jobs/j1/manifest.json", "{}")
            .await
            .unwrap()
    );
    assert!(container_exists(&azurite, "input").await);
    assert!(container_exists(&azurite, "jobs").await);

    // The blob sits in container `input` under its own name, seen from the container itself.
    let input = Store::open(&azurite.container_url("input")).unwrap();
    assert_eq!(input.get("candy/clip.mp4").await.unwrap().unwrap(), "video");

    // Listings come back with the container as their first segment.
    let listed = store.list("input").await.unwrap();
    let names: Vec<_> = listed.iter().map(|m| m.location.to_string()).collect();
    assert_eq!(names, ["input/candy/clip.mp4"]);
    let meta = store.head("jobs/j1/manifest.json").await.unwrap().unwrap();
    assert_eq!(meta.location.as_ref(), "jobs/j1/manifest.json");
    let top = account.list_with_delimiter(None).await.unwrap();
    let containers: Vec<_> = top.common_prefixes.iter().map(|p| p.to_string()).collect();
    for c in ["input", "jobs", "logs", "output", "styles"] {
        assert!(containers.contains(&c.to_owned()), "{containers:?}");
    }
    let all: Vec<_> = account
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "{all:?}");

    // A copy across containers, create-only like the output.
    account
        .copy_if_not_exists(
            &Path::from("input/candy/clip.mp4"),
            &Path::from("output/candy/clip.mp4"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get("output/candy/clip.mp4").await.unwrap().unwrap(),
        "video"
    );
    let again = account
        .copy_if_not_exists(
            &Path::from("input/candy/clip.mp4"),
            &Path::from("output/candy/clip.mp4"),
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );

    // A blob needs a container: a single segment is refused, not retried.
    let err = store.put("loose.txt", "x").await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("container"), "{err}");
    // So is a folder that cannot be a container name.
    let err = store.put("Bad_Name/x.txt", "x").await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
}

/// What every backend of [`Store`] must do, here on Azurite.
async fn store_semantics(store: &Store) {
    assert!(
        store
            .put_create("jobs/j/done/00000.json", "first")
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_create("jobs/j/done/00000.json", "second")
            .await
            .unwrap()
    );
    assert_eq!(
        store.get("jobs/j/done/00000.json").await.unwrap().unwrap(),
        "first"
    );
    store.put("jobs/j/status.json", "a").await.unwrap();
    store.put("jobs/j/status.json", "b").await.unwrap();
    assert_eq!(store.get("jobs/j/status.json").await.unwrap().unwrap(), "b");
    assert!(store.get("jobs/j/missing.json").await.unwrap().is_none());
    assert!(!store.exists("jobs/j/missing.json").await.unwrap());
    assert_eq!(store.list("jobs/j").await.unwrap().len(), 2);
    assert!(store.list("jobs/none").await.unwrap().is_empty());
    store.delete("jobs/j/status.json").await.unwrap();
    store.delete("jobs/j/status.json").await.unwrap();
    assert_eq!(store.list("jobs/j").await.unwrap().len(), 1);

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &bytes).unwrap();
    assert!(store.upload(&big, "output/s/big.bin", true).await.unwrap());
    assert!(!store.upload(&big, "output/s/big.bin", true).await.unwrap());
    let back = dir.path().join("back.bin");
    store.download("output/s/big.bin", &back).await.unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), bytes);
    let err = store
        .download("output/s/none.bin", &dir.path().join("none.bin"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(!err.is_transient());
    // Remote stores have no local path: sources are copied into scratch.
    assert!(store.local_path("output/s/big.bin").is_none());
    let copy = store
        .materialize("output/s/big.bin", dir.path(), "m.bin")
        .await
        .unwrap();
    assert_eq!(std::fs::read(copy).unwrap().len(), bytes.len());
}

#[tokio::test]
async fn store_semantics_on_a_container_and_on_the_account() {
    let azurite = Azurite::start();
    store_semantics(&Store::open(&azurite.container_url("data")).unwrap()).await;
    store_semantics(&Store::open(&azurite.account_url()).unwrap()).await;
    // The two are separate: the container store kept everything inside `data`.
    assert!(container_exists(&azurite, "data").await);
    assert!(container_exists(&azurite, "output").await);
}

#[tokio::test]
async fn concurrent_create_only_writes_have_one_winner() {
    let azurite = Azurite::start();
    let store = Store::open(&azurite.account_url()).unwrap();
    let writers = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .put_create("jobs/race/manifest.json", format!("writer {i}"))
                .await
                .unwrap()
        })
    });
    let won: Vec<bool> = futures::future::join_all(writers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
}

#[tokio::test]
async fn an_unreachable_service_is_a_transient_error_after_retries() {
    let mut azurite = Azurite::start();
    let options = Options {
        retry: RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
        },
        ..Options::default()
    };
    let store = Store::from_object_store(
        open_store_with(&azurite.account_url(), &options).unwrap(),
        azurite.account_url(),
    );
    store.put("jobs/x/a.json", "1").await.unwrap();
    azurite.stop();

    let started = Instant::now();
    for err in [
        store.put("jobs/x/b.json", "2").await.unwrap_err(),
        store.get("jobs/x/a.json").await.unwrap_err(),
        store.list("jobs/x").await.unwrap_err(),
    ] {
        assert!(err.is_transient(), "{err}");
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // A container never seen before fails its check the same way, and is checked again later.
    let err = store.put("logs/x/a.txt", "1").await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    azurite.restart();
    assert_eq!(store.get("jobs/x/a.json").await.unwrap().unwrap(), "1");
    store.put("logs/x/a.txt", "1").await.unwrap();
    assert!(container_exists(&azurite, "logs").await);
}

#[tokio::test]
async fn a_wrong_key_is_a_permanent_error() {
    let azurite = Azurite::start();
    azurite.create_container("data").await;
    // Another valid key: Azurite refuses the signature.
    let wrong = MicrosoftAzureBuilder::new()
        .with_account(EMULATOR_ACCOUNT)
        .with_access_key("AAAA")
        .with_endpoint(azurite.account_url())
        .with_allow_http(true)
        .with_container_name("data")
        .build()
        .unwrap();
    let store = Store::from_object_store(Arc::new(wrong), azurite.container_url("data"));
    let err = store.put("a.txt", "x").await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
}
