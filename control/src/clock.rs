//! Time as Kubernetes stores it in objects: whole seconds.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff};

/// The current time, to the second, as timestamps in objects carry it.
pub fn now() -> Time {
    Time(
        jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
            .unwrap_or_else(|_| jiff::Timestamp::now()),
    )
}
