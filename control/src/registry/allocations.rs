//! Allocations from shared pools (Service cluster IPs and node ports, node
//! pod CIDRs): each taken value is a key of its own in the store, created
//! only if absent, so two concurrent requests can never take the same one.

use bytes::Bytes;

use crate::{
    errors::ApiError,
    store::{Store, StoreError},
};

/// Takes the allocation `key` for `owner`; false if someone holds it.
pub async fn take(store: &dyn Store, key: &str, owner: &str) -> Result<bool, ApiError> {
    match store.create(key, Bytes::from(owner.to_owned())).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists(_)) => Ok(false),
        Err(err) => Err(ApiError::internal("allocating from the store", &err)),
    }
}

/// Gives the allocation `key` back; a missing one is already free.
pub async fn release(store: &dyn Store, key: &str) {
    match store.delete(key, None).await {
        Ok(_) | Err(StoreError::NotFound(_)) => {}
        Err(err) => tracing::warn!(%err, key, "releasing an allocation"),
    }
}
