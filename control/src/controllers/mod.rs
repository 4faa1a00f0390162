//! The controllers: level-triggered reconcilers inside control, each fed
//! by in-process informers and writing through the API router, one module
//! each. Today: ReplicaSet, Deployment, StatefulSet, DaemonSet,
//! endpoints, the garbage collector, namespaces and node lifecycle. Each
//! keeps its own caches and work queue and runs as one task, so a slow
//! controller never holds another up; the pods, which are many, are
//! decoded once for the controllers that watch them.

mod daemonset;
mod deployment;
mod endpoints;
mod garbage_collector;
mod history;
mod namespace;
mod node_lifecycle;
mod pod_cache;
mod pod_view;
mod replicaset;
mod statefulset;
mod work_queue;

use std::{sync::Arc, time::Duration};

use axum::Router;
use k8s_openapi::api::{
    apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet},
    coordination::v1::Lease,
    core::v1::{Endpoints, Namespace, Node, Service},
    discovery::v1::EndpointSlice,
};
use tokio::{sync::mpsc, task::JoinSet};

use crate::{
    events::EventRecorder,
    informer::{self, Informed, InformerEvent},
    local_api::LocalApi,
    registry::served,
    store::Store,
};

/// What the controllers' behaviour depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllersConfig {
    /// How long a node may go without a heartbeat before it is
    /// unreachable (kube-controller-manager's --node-monitor-grace-period).
    pub node_monitor_grace: Duration,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        Self {
            node_monitor_grace: Duration::from_secs(40),
        }
    }
}

/// Starts every controller with Kubernetes' defaults; see [`spawn_with`].
pub fn spawn(store: Arc<dyn Store>, app: Router, token: &str) -> JoinSet<()> {
    spawn_with(store, app, token, ControllersConfig::default())
}

/// Starts every controller, writing as `token` through `app`. They run
/// until the returned tasks are shut down (before the store can close:
/// they hold it).
pub fn spawn_with(
    store: Arc<dyn Store>,
    app: Router,
    token: &str,
    config: ControllersConfig,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let api = LocalApi::new(app, token);
    let [
        pods_for_sets,
        pods_for_endpoints,
        pods_for_stateful_sets,
        pods_for_daemons,
    ] = shared::<pod_view::Pod, 4>(&mut tasks, &store, "/registry/pods/");
    let [sets_for_sets, sets_for_deployments] =
        shared::<ReplicaSet, 2>(&mut tasks, &store, "/registry/replicasets/");
    let [nodes_for_daemons, nodes_for_lifecycle] =
        shared::<Node, 2>(&mut tasks, &store, "/registry/nodes/");
    let [revisions_for_stateful_sets, revisions_for_daemons] =
        shared::<ControllerRevision, 2>(&mut tasks, &store, "/registry/controllerrevisions/");

    let events = EventRecorder::new(&mut tasks, api.clone(), "replicaset-controller");
    tasks.spawn(
        replicaset::ReplicaSetController::new(api.clone(), events)
            .run(sets_for_sets, pods_for_sets),
    );

    let deployments =
        informer::spawn::<Deployment>(&mut tasks, Arc::clone(&store), "/registry/deployments/");
    let events = EventRecorder::new(&mut tasks, api.clone(), "deployment-controller");
    tasks.spawn(
        deployment::DeploymentController::new(api.clone(), events)
            .run(deployments, sets_for_deployments),
    );

    let stateful_sets =
        informer::spawn::<StatefulSet>(&mut tasks, Arc::clone(&store), "/registry/statefulsets/");
    let events = EventRecorder::new(&mut tasks, api.clone(), statefulset::COMPONENT);
    tasks.spawn(
        statefulset::StatefulSetController::new(api.clone(), events).run(
            stateful_sets,
            pods_for_stateful_sets,
            revisions_for_stateful_sets,
        ),
    );

    let daemon_sets =
        informer::spawn::<DaemonSet>(&mut tasks, Arc::clone(&store), "/registry/daemonsets/");
    let daemons = daemonset::DaemonSetController::new(&mut tasks, api.clone());
    tasks.spawn(daemons.run(
        daemon_sets,
        nodes_for_daemons,
        pods_for_daemons,
        revisions_for_daemons,
    ));

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

    let leases = informer::spawn::<Lease>(
        &mut tasks,
        Arc::clone(&store),
        "/registry/leases/kube-node-lease/",
    );
    let events = EventRecorder::new(&mut tasks, api.clone(), "node-controller");
    tasks.spawn(
        node_lifecycle::NodeLifecycleController::new(
            api.clone(),
            events,
            config.node_monitor_grace,
        )
        .run(nodes_for_lifecycle, leases),
    );

    let kinds = served::infos();
    let namespaces =
        informer::spawn::<Namespace>(&mut tasks, Arc::clone(&store), "/registry/namespaces/");
    tasks.spawn(namespace::NamespaceController::new(api.clone(), &kinds).run(namespaces));

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

type Shared<T> = mpsc::Receiver<InformerEvent<Arc<T>>>;

/// One informer of the objects under `prefix`, each decoded once, its
/// events handed to `N` controllers.
fn shared<T: Informed + Sync, const N: usize>(
    tasks: &mut JoinSet<()>,
    store: &Arc<dyn Store>,
    prefix: &str,
) -> [Shared<T>; N] {
    let mut objects = informer::spawn::<T>(tasks, Arc::clone(store), prefix);
    let mut senders = Vec::with_capacity(N);
    let receivers = std::array::from_fn(|_| {
        let (sender, receiver) = mpsc::channel(1024);
        senders.push(sender);
        receiver
    });
    tasks.spawn(async move {
        while let Some(event) = objects.recv().await {
            let event = match event {
                InformerEvent::Listed(all) => {
                    InformerEvent::Listed(all.into_iter().map(Arc::new).collect())
                }
                InformerEvent::Applied(object) => InformerEvent::Applied(Arc::new(object)),
                InformerEvent::Deleted(object) => InformerEvent::Deleted(Arc::new(object)),
            };
            for sender in &senders {
                if sender.send(event.clone()).await.is_err() {
                    return;
                }
            }
        }
    });
    receivers
}
