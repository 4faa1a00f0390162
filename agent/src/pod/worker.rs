//! One pod's worker: a loop that, each time the pod changes, a container
//! exits or a back-off ends, moves the pod's containers one step toward
//! the spec (sandbox, then init containers in order, then the app
//! containers) and writes the status when it changed. Deletion stops the
//! containers within the grace period, removes every trace and then the
//! pod itself.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus, Secret};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use super::{
    PodRuntime,
    adopt::{Adopted, restore},
    files,
    images::{ImageError, credentials_from_secrets},
    state::{
        PodFacts, Slot, State, Terminated, is_terminal, phase, pod_status, previous_container,
        should_restart,
    },
    translate::{PodContext, container_config, log_path, pod_log_dir},
    volumes::{self, VolumePaths},
};
use crate::{
    network::Sandbox,
    runtime::{ExitStatus, RegistryAuth, RuntimeError},
};

/// How long a pod whose object vanished (force-deleted) gets to stop.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);
/// Retry delay after a failure that has no back-off of its own.
const RETRY: Duration = Duration::from_secs(5);
/// How long ErrImagePull shows before ImagePullBackOff.
const PULL_ERROR_SHOWN: Duration = Duration::from_secs(2);

/// A container's task ended (or waiting on it failed).
#[derive(Debug)]
pub(super) struct Exit {
    container_id: String,
    status: Result<ExitStatus, RuntimeError>,
}

/// Which list a slot is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Init,
    App,
}

pub(super) struct Worker {
    rt: Arc<PodRuntime>,
    uid: String,
    pod: Arc<Pod>,
    updates: watch::Receiver<Option<Arc<Pod>>>,
    exit_tx: mpsc::UnboundedSender<Exit>,
    exits: mpsc::UnboundedReceiver<Exit>,
    waits: JoinSet<()>,
    init: Vec<Slot>,
    app: Vec<Slot>,
    sandbox: Option<Sandbox>,
    volumes: Option<VolumePaths>,
    /// Why the sandbox or volumes could not be made, for the status.
    setup_error: Option<String>,
    start_time: SystemTime,
    /// The status last written (or found on the pod).
    written: Option<PodStatus>,
    wake: Option<SystemTime>,
    auth: Option<RegistryAuth>,
}

impl Worker {
    pub(super) fn new(
        rt: Arc<PodRuntime>,
        pod: Arc<Pod>,
        updates: watch::Receiver<Option<Arc<Pod>>>,
    ) -> Self {
        let (exit_tx, exits) = mpsc::unbounded_channel();
        let spec = pod.spec.clone().unwrap_or_default();
        let slots = |containers: &[Container], init: bool| -> Vec<Slot> {
            let reason = if init {
                "PodInitializing"
            } else {
                "ContainerCreating"
            };
            containers
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    // The first init container is being created, the rest
                    // wait their turn, as the kubelet shows them.
                    let reason = if init && i == 0 {
                        "ContainerCreating"
                    } else {
                        reason
                    };
                    Slot::new(
                        &c.name,
                        c.image.as_deref().unwrap_or_default(),
                        init,
                        reason,
                    )
                })
                .collect()
        };
        let init = slots(spec.init_containers.as_deref().unwrap_or_default(), true);
        let app_reason_slots = slots(&spec.containers, false);
        let app = if init.is_empty() {
            app_reason_slots
        } else {
            app_reason_slots
                .into_iter()
                .map(|mut s| {
                    s.state = State::waiting("PodInitializing", None);
                    s
                })
                .collect()
        };
        let written = pod.status.clone();
        let start_time = written
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(|| rt.clock.now(), |t| SystemTime::from(t.0));
        Self {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            rt,
            pod,
            updates,
            exit_tx,
            exits,
            waits: JoinSet::new(),
            init,
            app,
            sandbox: None,
            volumes: None,
            setup_error: None,
            start_time,
            written,
            wake: None,
            auth: None,
        }
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".to_owned())
    }

    fn phase(&self) -> &'static str {
        phase(&self.restart_policy(), &self.init, &self.app)
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(
            self.rt.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    /// Runs the pod until it is gone: deleted from the API (and then
    /// removed here), or removed here because its object vanished.
    pub(super) async fn run(mut self, adopted: Vec<Adopted>) {
        self.adopt(adopted).await;
        loop {
            let desired = self.updates.borrow_and_update().clone();
            match desired {
                None => {
                    self.terminate(ORPHAN_GRACE).await;
                    self.clean_up().await;
                    return;
                }
                Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                    let grace = pod
                        .metadata
                        .deletion_grace_period_seconds
                        .unwrap_or(30)
                        .max(0) as u64;
                    self.pod = pod;
                    self.terminate(Duration::from_secs(grace)).await;
                    self.write_status().await;
                    self.clean_up().await;
                    self.delete_from_api().await;
                    return;
                }
                Some(pod) => {
                    self.pod = pod;
                    self.wake = None;
                    self.sync().await;
                    self.write_status().await;
                }
            }
            if !self.wait_for_work().await {
                // The manager is gone: the agent is stopping. Leave
                // everything running for the next agent to adopt.
                return;
            }
            while let Ok(exit) = self.exits.try_recv() {
                self.record_exit(exit).await;
            }
        }
    }

    /// Rebuilds the slots from the containers a previous agent made.
    async fn adopt(&mut self, adopted: Vec<Adopted>) {
        if adopted.is_empty() {
            return;
        }
        let policy = self.restart_policy();
        let mut by_name: std::collections::HashMap<String, Vec<Adopted>> = Default::default();
        for container in adopted {
            by_name
                .entry(container.identity.name.clone())
                .or_default()
                .push(container);
        }
        let mut remove = Vec::new();
        let mut watch = Vec::new();
        let pod_cgroup = self.rt.pod_cgroup(&self.uid);
        let cgroups = self.rt.cgroups.clone();
        let oom = |id: &str| cgroups.oom_killed(&format!("{pod_cgroup}/{id}"));
        for slot in self.init.iter_mut().chain(self.app.iter_mut()) {
            let Some(containers) = by_name.remove(&slot.name) else {
                continue;
            };
            let previous = previous_container(self.written.as_ref(), &slot.name, slot.init);
            let restored = restore(slot, containers, previous, &policy, oom);
            remove.extend(restored.remove);
            watch.extend(restored.watch);
        }
        // Containers of names the spec no longer has.
        remove.extend(by_name.into_values().flatten().map(|c| c.record.id));
        for id in remove {
            if let Err(err) = self.rt.containerd.remove_container(&id).await {
                tracing::warn!(%err, "removing a stale container");
            }
        }
        for id in watch {
            self.watch_exit(id);
        }
        if !is_terminal(self.phase()) {
            // The sandbox is there if the containers are: find it again.
            let hostname = files::hostname(&self.pod);
            match self.rt.sandboxes.ensure(&self.uid, &hostname).await {
                Ok(sandbox) => self.sandbox = Some(sandbox),
                Err(err) => tracing::warn!(pod = self.name(), %err, "adopting the sandbox"),
            }
        }
        tracing::info!(pod = self.name(), "adopted the pod's containers");
    }

    /// Waits for a reason to sync: the pod's spec or deletion changed, a
    /// container exited, or a back-off ended. Our own status writes coming
    /// back are taken in without a sync. False when the manager is gone.
    async fn wait_for_work(&mut self) -> bool {
        loop {
            let sleep = self.wake.map(|at| {
                at.duration_since(self.rt.clock.now())
                    .unwrap_or(Duration::ZERO)
            });
            tokio::select! {
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    if self.desire_changed() {
                        return true;
                    }
                    let latest = self.updates.borrow_and_update().clone();
                    if let Some(pod) = latest {
                        self.pod = pod;
                    }
                }
                Some(exit) = self.exits.recv() => {
                    self.record_exit(exit).await;
                    return true;
                }
                () = tokio::time::sleep(sleep.unwrap_or(Duration::MAX)), if sleep.is_some() => {
                    return true;
                }
            }
        }
    }

    /// Whether the latest pod differs from the one being run in what the
    /// worker acts on: its spec, or its deletion.
    fn desire_changed(&self) -> bool {
        match &*self.updates.borrow() {
            None => true,
            Some(latest) => {
                latest.spec != self.pod.spec
                    || latest.metadata.deletion_timestamp != self.pod.metadata.deletion_timestamp
            }
        }
    }

    fn slot_mut(&mut self, kind: Kind, index: usize) -> &mut Slot {
        match kind {
            Kind::Init => &mut self.init[index],
            Kind::App => &mut self.app[index],
        }
    }

    fn wake_at(&mut self, at: SystemTime) {
        self.wake = Some(self.wake.map_or(at, |current| current.min(at)));
    }

    /// One step toward the spec.
    async fn sync(&mut self) {
        if is_terminal(self.phase()) {
            // Nothing runs again: give the address back.
            if self.sandbox.take().is_some()
                && let Err(err) = self.rt.sandboxes.teardown(&self.uid).await
            {
                tracing::warn!(pod = self.name(), %err, "removing a finished pod's sandbox");
            }
            return;
        }
        if !self.ensure_setup().await {
            self.wake_at(self.rt.clock.now() + RETRY);
            return;
        }
        let policy = self.restart_policy();
        for index in 0..self.init.len() {
            match self.init[index].state.clone() {
                State::Terminated(t) if t.succeeded() => {}
                State::Running { .. } => return,
                State::Terminated(t) => {
                    if should_restart(&policy, &t, true) {
                        self.restart_or_wait(Kind::Init, index, t).await;
                    }
                    return;
                }
                State::Waiting { .. } => {
                    self.start_when_due(Kind::Init, index).await;
                    return;
                }
            }
        }
        for index in 0..self.app.len() {
            match self.app[index].state.clone() {
                State::Running { .. } => {}
                State::Terminated(t) => {
                    if should_restart(&policy, &t, false) {
                        self.restart_or_wait(Kind::App, index, t).await;
                    }
                }
                State::Waiting { .. } => self.start_when_due(Kind::App, index).await,
            }
        }
    }

    /// Sandbox, pod files and volumes; false (with the reason kept for the
    /// status) when one could not be made.
    async fn ensure_setup(&mut self) -> bool {
        let result = self.try_setup().await;
        match result {
            Ok(()) => {
                self.setup_error = None;
                true
            }
            Err(message) => {
                tracing::warn!(pod = self.name(), %message, "pod setup failed");
                for slot in self.init.iter_mut().chain(self.app.iter_mut()) {
                    if let State::Waiting { reason, .. } = &slot.state
                        && reason == "ContainerCreating"
                    {
                        slot.state = State::waiting("ContainerCreating", Some(message.clone()));
                    }
                }
                self.setup_error = Some(message);
                false
            }
        }
    }

    async fn try_setup(&mut self) -> Result<(), String> {
        if self.sandbox.is_none() {
            let hostname = files::hostname(&self.pod);
            let sandbox = self
                .rt
                .sandboxes
                .ensure(&self.uid, &hostname)
                .await
                .map_err(|err| format!("creating the pod sandbox: {err}"))?;
            files::write_all(&self.files_dir(), &self.pod, sandbox.ip, &self.rt.dns)
                .map_err(|err| format!("writing the pod's hosts and resolv.conf: {err}"))?;
            self.sandbox = Some(sandbox);
        }
        if self.volumes.is_none() {
            self.volumes = Some(volumes::prepare(&self.pod, &self.volume_dir())?);
        }
        Ok(())
    }

    fn files_dir(&self) -> std::path::PathBuf {
        self.rt.dirs.run.join(&self.uid)
    }

    fn volume_dir(&self) -> std::path::PathBuf {
        self.rt.dirs.data.join(&self.uid).join("volumes")
    }

    /// A container that ended and must run again: now, or after its
    /// back-off, showing CrashLoopBackOff meanwhile.
    async fn restart_or_wait(&mut self, kind: Kind, index: usize, ended: Terminated) {
        let now = self.rt.clock.now();
        let pod_ref = format!("{}_{}({})", self.name(), self.namespace(), self.uid);
        let slot = self.slot_mut(kind, index);
        slot.last = Some(ended);
        if let Some((until, delay)) = slot.backoff.waiting(now) {
            slot.state = State::waiting(
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {} restarting failed container={} pod={pod_ref}",
                    humantime::format_duration(delay),
                    slot.name
                )),
            );
            self.wake_at(until);
            return;
        }
        self.start(kind, index).await;
    }

    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// A container waiting to start: started, unless a back-off holds it.
    async fn start_when_due(&mut self, kind: Kind, index: usize) {
        let now = self.rt.clock.now();
        let slot = self.slot_mut(kind, index);
        let held = match &slot.state {
            State::Waiting { reason, .. } if reason == "CrashLoopBackOff" => {
                slot.backoff.waiting(now)
            }
            State::Waiting { reason, .. }
                if matches!(reason.as_str(), "ErrImagePull" | "ImagePullBackOff") =>
            {
                let held = slot.retry.waiting(now);
                if held.is_some() {
                    let image = slot.image.clone();
                    slot.state = State::waiting(
                        "ImagePullBackOff",
                        Some(format!("Back-off pulling image \"{image}\"")),
                    );
                }
                held
            }
            _ => slot.retry.waiting(now),
        };
        match held {
            Some((until, _)) => self.wake_at(until),
            None => self.start(kind, index).await,
        }
    }

    fn container_spec(&self, kind: Kind, index: usize) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        match kind {
            Kind::Init => spec.init_containers.as_ref()?.get(index).cloned(),
            Kind::App => spec.containers.get(index).cloned(),
        }
    }

    /// Starts the next attempt of a container.
    async fn start(&mut self, kind: Kind, index: usize) {
        let Some(container) = self.container_spec(kind, index) else {
            return;
        };
        let now = self.rt.clock.now();
        let auth = self.registry_auth().await;
        let policy = container
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| "IfNotPresent".to_owned());
        let image_name = container.image.clone().unwrap_or_default();
        let ready = match self.rt.images.ensure(&image_name, &policy, &auth).await {
            Ok(ready) => ready,
            Err(ImageError { reason, message }) => {
                let slot = self.slot_mut(kind, index);
                slot.state = State::waiting(reason, Some(message));
                let until = slot.retry.record_failure(now);
                // The pull's own error shows for a moment, then the
                // back-off (as the kubelet's next sync shows it).
                self.wake_at(until.min(now + PULL_ERROR_SHOWN));
                return;
            }
        };
        let (Some(sandbox), Some(volumes)) = (self.sandbox.clone(), self.volumes.clone()) else {
            return;
        };
        let attempt = self.slot_mut(kind, index).attempts;
        let cgroup_parent = self.rt.pod_cgroup(&self.uid);
        let identity = super::labels::ContainerIdentity {
            pod_uid: self.uid.clone(),
            name: container.name.clone(),
            attempt,
        };
        let log_file = log_path(
            &pod_log_dir(&self.rt.dirs.logs, &self.pod),
            &container.name,
            attempt,
        );
        let log = match self.rt.logs.open(&identity.container_id(), &log_file).await {
            Ok(log) => log,
            Err(err) => {
                self.creation_failed(kind, index, "CreateContainerError", err.to_string());
                return;
            }
        };
        let files_dir = self.files_dir();
        let config = {
            let ctx = PodContext {
                pod: &self.pod,
                node: &self.rt.node_name,
                host_ip: &self.rt.host_ip,
                sandbox: &sandbox,
                cgroup_parent: &cgroup_parent,
                files_dir: &files_dir,
                volumes: &volumes,
                log: &log,
            };
            container_config(&ctx, &container, kind == Kind::Init, attempt)
        };
        let config = match config {
            Ok(config) => config,
            Err(message) => {
                self.creation_failed(kind, index, "CreateContainerConfigError", message);
                return;
            }
        };
        let started = self
            .rt
            .containerd
            .start_container(&config, &ready.image)
            .await;
        let after = self.rt.clock.now();
        let policy = self.restart_policy();
        let slot = self.slot_mut(kind, index);
        slot.image_id = ready.image_id;
        match started {
            Ok(_) => {
                slot.attempts = attempt + 1;
                slot.restart_count = attempt;
                if let State::Terminated(previous) = &slot.state {
                    slot.last = Some(previous.clone());
                }
                slot.state = State::Running {
                    container_id: config.id.clone(),
                    started_at: after,
                };
                slot.retry = Default::default();
                let name = slot.name.clone();
                self.watch_exit(config.id.clone());
                if attempt >= 2 {
                    self.forget_attempt(&name, attempt - 2).await;
                }
            }
            Err(RuntimeError::Spec(err)) => {
                let reason = if err.is_config_error() {
                    "CreateContainerConfigError"
                } else {
                    "CreateContainerError"
                };
                self.creation_failed(kind, index, reason, err.to_string());
            }
            Err(err @ RuntimeError::Call { call, .. })
                if call == "tasks.create" || call == "tasks.start" =>
            {
                // runc refused to start the process (no such executable,
                // say): the attempt ran and failed, as the kubelet counts it.
                slot.attempts = attempt + 1;
                slot.restart_count = attempt;
                if let State::Terminated(previous) = &slot.state {
                    slot.last = Some(previous.clone());
                }
                let ended = Terminated {
                    container_id: config.id.clone(),
                    exit_code: 128,
                    reason: "StartError".to_owned(),
                    message: Some(err.to_string()),
                    started_at: now,
                    finished_at: after,
                };
                if should_restart(&policy, &ended, slot.init) {
                    slot.backoff.record_exit(ended.finished_at, Duration::ZERO);
                }
                slot.state = State::Terminated(ended);
                self.wake_at(after);
            }
            Err(err) => self.creation_failed(kind, index, "CreateContainerError", err.to_string()),
        }
    }

    fn creation_failed(&mut self, kind: Kind, index: usize, reason: &str, message: String) {
        tracing::info!(pod = self.name(), reason, %message, "container not created");
        let now = self.rt.clock.now();
        let slot = self.slot_mut(kind, index);
        slot.state = State::waiting(reason, Some(message));
        let until = slot.retry.record_failure(now);
        self.wake_at(until);
    }

    /// Removes attempt `attempt` of container `name` and its log: only the
    /// current and the previous attempt are kept, as the kubelet keeps
    /// them (for lastState and `kubectl logs --previous`).
    async fn forget_attempt(&self, name: &str, attempt: u32) {
        let identity = super::labels::ContainerIdentity {
            pod_uid: self.uid.clone(),
            name: name.to_owned(),
            attempt,
        };
        if let Err(err) = self
            .rt
            .containerd
            .remove_container(&identity.container_id())
            .await
        {
            tracing::warn!(%err, "removing an old container");
        }
        let log = log_path(&pod_log_dir(&self.rt.dirs.logs, &self.pod), name, attempt);
        let _ = std::fs::remove_file(log);
    }

    /// The pod's imagePullSecrets as registry credentials, read once.
    async fn registry_auth(&mut self) -> RegistryAuth {
        if let Some(auth) = &self.auth {
            return auth.clone();
        }
        let names: Vec<String> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
            .map(|s| s.name.clone())
            .filter(|name| !name.is_empty())
            .collect();
        let api: Api<Secret> = Api::namespaced(self.rt.client.clone(), self.namespace());
        let mut secrets = Vec::new();
        for name in names {
            match api.get(&name).await {
                Ok(secret) => secrets.push(secret),
                Err(err) => tracing::warn!(secret = name, %err, "reading an imagePullSecret"),
            }
        }
        let auth = credentials_from_secrets(&secrets);
        self.auth = Some(auth.clone());
        auth
    }

    /// Waits for container `id` to exit, in the background.
    pub(super) fn watch_exit(&mut self, id: String) {
        let containerd = self.rt.containerd.clone();
        let exits = self.exit_tx.clone();
        self.waits.spawn(async move {
            let status = containerd.wait(&id).await;
            let _ = exits.send(Exit {
                container_id: id,
                status,
            });
        });
    }

    async fn record_exit(&mut self, exit: Exit) {
        let status = match exit.status {
            Ok(status) => status,
            Err(err) => {
                // containerd went away mid-wait: ask again what the task is.
                tracing::warn!(%err, "waiting for a container");
                match self.rt.containerd.task_state(&exit.container_id).await {
                    Ok(crate::runtime::TaskState::Running { .. }) | Err(_) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        self.watch_exit(exit.container_id);
                        return;
                    }
                    Ok(crate::runtime::TaskState::Stopped { code, exited_at }) => {
                        ExitStatus { code, exited_at }
                    }
                    Ok(_) => ExitStatus {
                        code: 255,
                        exited_at: self.rt.clock.now(),
                    },
                }
            }
        };
        let oom = self.oom_killed(&exit.container_id);
        let policy = self.restart_policy();
        let Some(slot) = self.init.iter_mut().chain(self.app.iter_mut()).find(|s| {
            matches!(&s.state, State::Running { container_id, .. } if *container_id == exit.container_id)
        }) else {
            return;
        };
        let State::Running { started_at, .. } = slot.state else {
            return;
        };
        let ended = Terminated {
            container_id: exit.container_id,
            exit_code: status.code as i32,
            reason: reason_for(status.code, oom).to_owned(),
            message: None,
            started_at,
            finished_at: status.exited_at,
        };
        if should_restart(&policy, &ended, slot.init) {
            slot.backoff.record_exit(ended.finished_at, ended.ran_for());
        }
        slot.state = State::Terminated(ended);
    }

    /// Whether the kernel's OOM killer struck in the container's cgroup.
    fn oom_killed(&self, container_id: &str) -> bool {
        self.rt
            .cgroups
            .oom_killed(&format!("{}/{container_id}", self.rt.pod_cgroup(&self.uid)))
    }

    async fn write_status(&mut self) {
        let status = pod_status(
            self.pod.spec.as_ref().map_or(&Default::default(), |s| s),
            &self.init,
            &self.app,
            &PodFacts {
                host_ip: self.rt.host_ip.clone(),
                pod_ip: self
                    .sandbox
                    .as_ref()
                    .map(|s| s.ip.to_string())
                    .or_else(|| self.written.as_ref().and_then(|w| w.pod_ip.clone())),
                start_time: self.start_time,
                sandbox_ready: self.sandbox.is_some(),
            },
            self.written.as_ref(),
            self.rt.clock.now(),
        );
        if self.written.as_ref() == Some(&status) {
            return;
        }
        let patch = serde_json::json!({
            "metadata": { "uid": self.uid },
            "status": status,
        });
        match self
            .api()
            .patch_status(self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(pod) => self.written = pod.status.or(Some(status)),
            Err(err) => {
                tracing::warn!(pod = self.name(), %err, "writing pod status");
                self.wake_at(self.rt.clock.now() + Duration::from_secs(1));
            }
        }
    }

    /// Stops every running container, SIGKILL after `grace`.
    async fn terminate(&mut self, grace: Duration) {
        let mut stops = JoinSet::new();
        for slot in self.init.iter().chain(self.app.iter()) {
            if let State::Running { container_id, .. } = &slot.state {
                let containerd = self.rt.containerd.clone();
                let id = container_id.clone();
                stops.spawn(async move {
                    let status = containerd.stop(&id, grace).await;
                    Exit {
                        container_id: id,
                        status,
                    }
                });
            }
        }
        while let Some(stopped) = stops.join_next().await {
            if let Ok(exit) = stopped {
                self.record_exit(exit).await;
            }
        }
        self.waits.abort_all();
    }

    /// Removes everything of the pod from the node.
    async fn clean_up(&mut self) {
        match self
            .rt
            .containerd
            .containers_labelled(super::labels::POD_UID, &self.uid)
            .await
        {
            Ok(records) => {
                for record in records {
                    if let Err(err) = self.rt.containerd.remove_container(&record.id).await {
                        tracing::warn!(pod = self.name(), %err, "removing a container");
                    }
                }
            }
            Err(err) => tracing::warn!(pod = self.name(), %err, "listing the pod's containers"),
        }
        super::adopt::remove_pod_leftovers(&self.rt, &self.uid, Some(&self.pod)).await;
    }

    /// Deletes the stopped pod from the API, retrying until control
    /// answers (or the pod is gone, or the agent stops).
    async fn delete_from_api(&mut self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        loop {
            match self.api().delete(self.name(), &params).await {
                Ok(_) => {
                    tracing::info!(pod = self.name(), "pod removed");
                    return;
                }
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                    return;
                }
                Err(err) => tracing::warn!(pod = self.name(), %err, "deleting the pod"),
            }
            tokio::select! {
                changed = self.updates.changed() => {
                    if changed.is_err() || self.updates.borrow().is_none() {
                        return;
                    }
                }
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

fn reason_for(code: u32, oom: bool) -> &'static str {
    match (oom, code) {
        (true, _) => "OOMKilled",
        (false, 0) => "Completed",
        _ => "Error",
    }
}
