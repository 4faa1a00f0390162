//! The controllers: level-triggered reconcilers inside control, each fed
//! by in-process informers and writing through the API router, one module
//! each. Today: ReplicaSet, Deployment, StatefulSet, DaemonSet,
//! endpoints, the garbage collector, namespaces and node lifecycle. Each
//! keeps its own caches and work queue and runs as one task of the shared
//! [`runtime`], so a slow controller never holds another up; the pods,
//! which are many, are decoded once for the controllers that watch them.

mod cache;
mod daemonset;
mod deployment;
mod endpoints;
mod expectations;
mod garbage_collector;
mod history;
mod namespace;
mod node_lifecycle;
mod ownership;
mod pod_cache;
mod pod_template;
mod pod_view;
mod replicaset;
mod runtime;
mod statefulset;
mod work_queue;

use std::{sync::Arc, time::Duration};

use axum::Router;
use k8s_openapi::api::{
    apps::v1::{ControllerRevision, ReplicaSet},
    core::v1::Node,
};
use tokio::{sync::mpsc, task::JoinSet};

use self::{
    daemonset::DaemonSetController,
    deployment::DeploymentController,
    endpoints::EndpointsController,
    garbage_collector::{GarbageCollector, ObjectHead},
    namespace::NamespaceController,
    node_lifecycle::NodeLifecycleController,
    replicaset::ReplicaSetController,
    runtime::Runtime,
    statefulset::StatefulSetController,
};
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
    let controller = Runtime::new(replicaset::ReplicaSetController::new(api.clone(), events))
        .watch(sets_for_sets, ReplicaSetController::on_set)
        .watch(pods_for_sets, ReplicaSetController::on_pod);
    tasks.spawn(controller.run());

    let events = EventRecorder::new(&mut tasks, api.clone(), "deployment-controller");
    let controller = Runtime::new(DeploymentController::new(api.clone(), events))
        .watch(
            informed(&mut tasks, &store, "deployments"),
            DeploymentController::on_deployment,
        )
        .watch(sets_for_deployments, DeploymentController::on_set);
    tasks.spawn(controller.run());

    let events = EventRecorder::new(&mut tasks, api.clone(), statefulset::COMPONENT);
    let controller = Runtime::new(StatefulSetController::new(api.clone(), events))
        .watch(
            informed(&mut tasks, &store, "statefulsets"),
            StatefulSetController::on_set,
        )
        .watch(pods_for_stateful_sets, StatefulSetController::on_pod)
        .watch(
            revisions_for_stateful_sets,
            StatefulSetController::on_revision,
        );
    tasks.spawn(controller.run());

    let controller = Runtime::new(DaemonSetController::new(&mut tasks, api.clone()))
        .watch(
            informed(&mut tasks, &store, "daemonsets"),
            DaemonSetController::on_set,
        )
        .watch(nodes_for_daemons, DaemonSetController::on_node)
        .watch(pods_for_daemons, DaemonSetController::on_pod)
        .watch(revisions_for_daemons, DaemonSetController::on_revision);
    tasks.spawn(controller.run());

    let controller = Runtime::new(EndpointsController::new(api.clone()))
        .watch(
            informed(&mut tasks, &store, "services"),
            EndpointsController::on_service,
        )
        .watch(pods_for_endpoints, EndpointsController::on_pod)
        .watch(
            informed(&mut tasks, &store, "endpoints"),
            EndpointsController::on_endpoints,
        )
        .watch(
            informed(&mut tasks, &store, "endpointslices"),
            EndpointsController::on_slice,
        );
    tasks.spawn(controller.run());

    let events = EventRecorder::new(&mut tasks, api.clone(), "node-controller");
    let lifecycle = NodeLifecycleController::new(api.clone(), events, config.node_monitor_grace);
    let controller = Runtime::new(lifecycle)
        .watch(nodes_for_lifecycle, NodeLifecycleController::on_node)
        .watch(
            informed(&mut tasks, &store, "leases/kube-node-lease"),
            NodeLifecycleController::on_lease,
        );
    tasks.spawn(controller.run());

    let kinds = served::infos();
    let controller = Runtime::new(NamespaceController::new(api.clone(), &kinds)).watch(
        informed(&mut tasks, &store, "namespaces"),
        NamespaceController::on_namespace,
    );
    tasks.spawn(controller.run());

    let mut collector = Runtime::new(GarbageCollector::new(api, kinds.clone()));
    for info in kinds {
        let heads = informed::<ObjectHead>(&mut tasks, &store, info.plural);
        collector = collector.watch(heads, move |gc: &mut GarbageCollector, event| {
            gc.on_event(info, event)
        });
    }
    tasks.spawn(collector.run());
    tasks
}

/// An informer of every object of the resource `plural` (or below a
/// namespace of it: "leases/kube-node-lease").
fn informed<T: Informed>(
    tasks: &mut JoinSet<()>,
    store: &Arc<dyn Store>,
    plural: &str,
) -> mpsc::Receiver<InformerEvent<T>> {
    informer::spawn::<T>(tasks, Arc::clone(store), format!("/registry/{plural}/"))
}

/// `namespace/name`, or `name` for a cluster-scoped object: the key
/// controllers cache and queue objects by.
fn object_key(namespace: Option<&str>, name: Option<&str>) -> String {
    let name = name.unwrap_or_default();
    match namespace {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_owned(),
    }
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
