//! Keeps the zone snapshot equal to the agent's cache: rebuilt whole
//! after each burst of Service or EndpointSlice notices, and first
//! published once both kinds have been listed (until then the servers
//! answer SERVFAIL, as CoreDNS does before its informers sync).

use std::sync::Arc;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::{server::ZoneHandle, zone::Zone};
use crate::cache::{Notice, Watched};

/// Rebuilds `handle`'s zone `domain` from `services` and `slices` until
/// the cache's subscriptions end.
pub async fn keep_zone(
    domain: String,
    services: Arc<Watched<Service>>,
    slices: Arc<Watched<EndpointSlice>>,
    handle: Arc<ZoneHandle>,
) {
    let mut service_notices = services.subscribe();
    let mut slice_notices = slices.subscribe();
    let (mut services_synced, mut slices_synced) = (false, false);
    // Serials only grow, across agent restarts too.
    let mut serial = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32);
    loop {
        let notice = tokio::select! {
            notice = service_notices.recv() => notice.map(|n| (true, n)),
            notice = slice_notices.recv() => notice.map(|n| (false, n)),
        };
        let Some(first) = notice else {
            return;
        };
        let mut note = |(service, notice): (bool, Notice)| {
            if notice == Notice::Synced {
                match service {
                    true => services_synced = true,
                    false => slices_synced = true,
                }
            }
        };
        note(first);
        while let Ok(notice) = service_notices.try_recv() {
            note((true, notice));
        }
        while let Ok(notice) = slice_notices.try_recv() {
            note((false, notice));
        }
        if services_synced && slices_synced {
            serial = serial.wrapping_add(1);
            handle.publish(Zone::build(
                &domain,
                &services.list(),
                &slices.list(),
                serial,
            ));
        }
    }
}
