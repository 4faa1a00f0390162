//! The controllers: level-triggered reconcilers inside control, each fed
//! by in-process informers and writing through the API router, one module
//! each. Today: ReplicaSet, Deployment, DaemonSet, endpoints and the
//! garbage collector. Each keeps its own caches and work queue and runs
//! as one task, so a slow controller never holds another up; the pods,
//! which are many, are decoded once for the controllers that watch them.

mod daemonset;
mod deployment;
mod endpoints;
mod garbage_collector;
mod pod_view;
mod replicaset;
mod work_queue;

use std::sync::Arc;

use axum::Router;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet},
    core::v1::{Endpoints, Node, Service},
    discovery::v1::EndpointSlice,
};
use tokio::{sync::mpsc, task::JoinSet};

use crate::{
    api,
    informer::{self, InformerEvent},
    local_api::LocalApi,
    registry::ResourceInfo,
    store::Store,
};

/// Starts every controller, writing as `token` through `app`. They run
/// until the returned tasks are shut down (before the store can close:
/// they hold it).
pub fn spawn(store: Arc<dyn Store>, app: Router, token: &str) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let api = LocalApi::new(app, token);
    let [pods_for_sets, pods_for_endpoints, pods_for_daemons] = shared_pods(&mut tasks, &store);

    let sets =
        informer::spawn::<ReplicaSet>(&mut tasks, Arc::clone(&store), "/registry/replicasets/");
    tasks.spawn(replicaset::ReplicaSetController::new(api.clone()).run(sets, pods_for_sets));

    let deployments =
        informer::spawn::<Deployment>(&mut tasks, Arc::clone(&store), "/registry/deployments/");
    let sets =
        informer::spawn::<ReplicaSet>(&mut tasks, Arc::clone(&store), "/registry/replicasets/");
    tasks.spawn(deployment::DeploymentController::new(api.clone()).run(deployments, sets));

    let daemon_sets =
        informer::spawn::<DaemonSet>(&mut tasks, Arc::clone(&store), "/registry/daemonsets/");
    let nodes = informer::spawn::<Node>(&mut tasks, Arc::clone(&store), "/registry/nodes/");
    let daemons = daemonset::DaemonSetController::new(&mut tasks, api.clone());
    tasks.spawn(daemons.run(daemon_sets, nodes, pods_for_daemons));

    let services =
        informer::spawn::<Service>(&mut tasks, Arc::clone(&store), "/registry/services/");
    let endpoint_lists =
        informer::spawn::<Endpoints>(&mut tasks, Arc::clone(&store), "/registry/endpoints/");
    let slices = informer::spawn::<EndpointSlice>(
        &mut tasks,
        Arc::clone(&store),
        "/registry/endpointslices/",
    );
    tasks.spawn(endpoints::EndpointsController::new(api.clone()).run(
        services,
        pods_for_endpoints,
        endpoint_lists,
        slices,
    ));

    let kinds: Vec<&'static ResourceInfo> = api::resources().iter().map(|r| r.info()).collect();
    let (events, merged) = mpsc::channel(1024);
    for info in &kinds {
        let mut heads = informer::spawn::<garbage_collector::ObjectHead>(
            &mut tasks,
            Arc::clone(&store),
            format!("/registry/{}/", info.plural),
        );
        let (events, info) = (events.clone(), *info);
        tasks.spawn(async move {
            while let Some(event) = heads.recv().await {
                if events.send((info, event)).await.is_err() {
                    return;
                }
            }
        });
    }
    tasks.spawn(garbage_collector::GarbageCollector::new(api, kinds).run(merged));
    tasks
}

/// `namespace/name`, the key controllers cache and queue objects by.
fn object_key(namespace: Option<&str>, name: Option<&str>) -> String {
    format!(
        "{}/{}",
        namespace.unwrap_or_default(),
        name.unwrap_or_default()
    )
}

type PodEvents = mpsc::Receiver<InformerEvent<Arc<pod_view::Pod>>>;

/// One informer of the pods, its events handed to `N` controllers.
fn shared_pods<const N: usize>(tasks: &mut JoinSet<()>, store: &Arc<dyn Store>) -> [PodEvents; N] {
    let mut pods = informer::spawn::<pod_view::Pod>(tasks, Arc::clone(store), "/registry/pods/");
    let mut senders = Vec::with_capacity(N);
    let receivers = std::array::from_fn(|_| {
        let (sender, receiver) = mpsc::channel(1024);
        senders.push(sender);
        receiver
    });
    tasks.spawn(async move {
        while let Some(event) = pods.recv().await {
            let event = match event {
                InformerEvent::Listed(all) => {
                    InformerEvent::Listed(all.into_iter().map(Arc::new).collect::<Vec<_>>())
                }
                InformerEvent::Applied(pod) => InformerEvent::Applied(Arc::new(pod)),
                InformerEvent::Deleted(pod) => InformerEvent::Deleted(Arc::new(pod)),
            };
            for sender in &senders {
                let copy = match &event {
                    InformerEvent::Listed(all) => InformerEvent::Listed(all.clone()),
                    InformerEvent::Applied(pod) => InformerEvent::Applied(Arc::clone(pod)),
                    InformerEvent::Deleted(pod) => InformerEvent::Deleted(Arc::clone(pod)),
                };
                if sender.send(copy).await.is_err() {
                    return;
                }
            }
        }
    });
    receivers
}
