//! The controllers: level-triggered reconcilers inside control, each fed
//! by in-process informers and writing through the API router, one module
//! each. Today: ReplicaSet and Deployment. Each keeps its own caches and work queue and
//! runs as one task, so a slow controller never holds another up.

mod deployment;
mod replicaset;
mod work_queue;

use std::sync::Arc;

use axum::Router;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Pod,
};
use tokio::task::JoinSet;

use crate::{informer, local_api::LocalApi, store::Store};

/// Starts every controller, writing as `token` through `app`. They run
/// until the returned tasks are shut down (before the store can close:
/// they hold it).
pub fn spawn(store: Arc<dyn Store>, app: Router, token: &str) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let sets =
        informer::spawn::<ReplicaSet>(&mut tasks, Arc::clone(&store), "/registry/replicasets/");
    let pods = informer::spawn::<Pod>(&mut tasks, Arc::clone(&store), "/registry/pods/");
    let api = LocalApi::new(app, token);
    tasks.spawn(replicaset::ReplicaSetController::new(api.clone()).run(sets, pods));

    let deployments =
        informer::spawn::<Deployment>(&mut tasks, Arc::clone(&store), "/registry/deployments/");
    let sets = informer::spawn::<ReplicaSet>(&mut tasks, store, "/registry/replicasets/");
    tasks.spawn(deployment::DeploymentController::new(api).run(deployments, sets));
    tasks
}
