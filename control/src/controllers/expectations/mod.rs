//! Kubernetes' controller expectations: the writes to pods a controller
//! has made that the pod informer has not shown yet. An owner with writes
//! outstanding is not planned again until they are seen, so a pass
//! working from a cache that is behind never creates or deletes twice.
//! Counted for interchangeable pods, by pod for pods with an identity.

mod by_pod;
mod counted;

use std::time::Duration;

pub use self::{
    by_pod::{Expected, PodExpectations},
    counted::Expectations,
};

/// Writes not seen after this are given up on (a lost event).
const TIMEOUT: Duration = Duration::from_secs(300);
