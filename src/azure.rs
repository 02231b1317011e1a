//! Azure adapters: Blob Storage through object_store's Azure backend.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::azure::MicrosoftAzureBuilder;

use crate::store::StoreError;

/// Opens an Azure container store from a URL (`az://<container>`, `azure://<container>`,
/// `https://<account>.blob.core.windows.net/<container>`), with the rest of the configuration taken
/// from the environment as object_store reads it.
pub fn open_store(url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let store = MicrosoftAzureBuilder::from_env()
        .with_url(url)
        .build()
        .map_err(|e| StoreError::Config {
            spec: url.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(store))
}
