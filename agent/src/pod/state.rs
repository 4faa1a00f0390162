//! What a pod worker knows about each of its containers, and the pod
//! status that follows from it: phase, conditions and container statuses
//! computed as the kubelet computes them.

use std::time::{Duration, SystemTime};

use k8s_openapi::{
    api::core::v1::{
        ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting, ContainerStatus, PodCondition, PodIP, PodSpec, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};

use super::backoff::Backoff;

/// How a container instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub container_id: String,
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
}

impl Terminated {
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0
    }

    pub fn ran_for(&self) -> Duration {
        self.finished_at
            .duration_since(self.started_at)
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        container_id: String,
        started_at: SystemTime,
    },
    Terminated(Terminated),
}

impl State {
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        Self::Waiting {
            reason: reason.to_owned(),
            message,
        }
    }
}

/// One container of the pod spec, as the worker tracks it.
#[derive(Debug, Clone)]
pub struct Slot {
    pub name: String,
    pub init: bool,
    /// The image as the spec names it.
    pub image: String,
    /// The image's digest reference, once resolved.
    pub image_id: String,
    pub state: State,
    /// How the previous instance ended.
    pub last: Option<Terminated>,
    pub restart_count: u32,
    /// Containers made for this slot so far: the next one's attempt number.
    pub attempts: u32,
    /// Restarts after the container ran and ended.
    pub backoff: Backoff,
    /// Retries of starts that made no container (pull, config, create).
    pub retry: Backoff,
}

impl Slot {
    pub fn new(name: &str, image: &str, init: bool, waiting_reason: &str) -> Self {
        Self {
            name: name.to_owned(),
            init,
            image: image.to_owned(),
            image_id: String::new(),
            state: State::waiting(waiting_reason, None),
            last: None,
            restart_count: 0,
            attempts: 0,
            backoff: Backoff::default(),
            retry: Backoff::default(),
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// An init container that has run to completion.
    pub fn completed(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.succeeded())
    }

    fn to_status(&self) -> ContainerStatus {
        let (state, container_id) = match &self.state {
            State::Waiting { reason, message } => (
                ApiState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.clone()),
                        message: message.clone(),
                    }),
                    ..Default::default()
                },
                None,
            ),
            State::Running {
                container_id,
                started_at,
            } => (
                ApiState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(time(*started_at)),
                    }),
                    ..Default::default()
                },
                Some(container_id.clone()),
            ),
            State::Terminated(t) => (
                ApiState {
                    terminated: Some(terminated(t)),
                    ..Default::default()
                },
                Some(t.container_id.clone()),
            ),
        };
        let running = self.is_running();
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            container_id: container_id.map(|id| format!("containerd://{id}")),
            state: Some(state),
            last_state: Some(
                self.last
                    .as_ref()
                    .map_or_else(ApiState::default, |t| ApiState {
                        terminated: Some(terminated(t)),
                        ..Default::default()
                    }),
            ),
            ready: if self.init { self.completed() } else { running },
            restart_count: self.restart_count as i32,
            started: Some(running),
            ..Default::default()
        }
    }
}

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        container_id: Some(format!("containerd://{}", t.container_id)),
        exit_code: t.exit_code,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: Some(time(t.started_at)),
        finished_at: Some(time(t.finished_at)),
        signal: None,
    }
}

pub fn time(at: SystemTime) -> Time {
    Time(Timestamp::try_from(at).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// What the status says beyond the containers.
#[derive(Debug, Clone)]
pub struct PodFacts {
    pub host_ip: String,
    pub pod_ip: Option<String>,
    pub start_time: SystemTime,
    /// The sandbox is made: containers can start.
    pub sandbox_ready: bool,
}

/// The kubelet's pod phase for these containers under `restart_policy`.
pub fn phase(restart_policy: &str, init: &[Slot], app: &[Slot]) -> &'static str {
    let never = restart_policy == "Never";
    let mut pending_init = 0;
    let mut failed_init = 0;
    for slot in init {
        match &slot.state {
            State::Terminated(t) if t.succeeded() => {}
            State::Terminated(_) => failed_init += 1,
            State::Waiting { .. } if slot.last.as_ref().is_some_and(|t| !t.succeeded()) => {
                failed_init += 1;
            }
            _ => pending_init += 1,
        }
    }
    if failed_init > 0 && never {
        return "Failed";
    }
    if pending_init > 0 || failed_init > 0 {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for slot in app {
        match &slot.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.succeeded() {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } => match &slot.last {
                Some(t) => {
                    stopped += 1;
                    if t.succeeded() {
                        succeeded += 1;
                    }
                }
                None => waiting += 1,
            },
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match restart_policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

/// Whether a container that ended as `ended` runs again under the pod's
/// restart policy (init containers restart only after failing).
pub fn should_restart(restart_policy: &str, ended: &Terminated, init: bool) -> bool {
    match restart_policy {
        "Never" => false,
        "OnFailure" => !ended.succeeded(),
        _ if init => !ended.succeeded(),
        _ => true,
    }
}

/// Whether the pod has finished for good: nothing will run again.
pub fn is_terminal(phase: &str) -> bool {
    matches!(phase, "Succeeded" | "Failed")
}

/// The status of a pod with these containers.
pub fn pod_status(
    spec: &PodSpec,
    init: &[Slot],
    app: &[Slot],
    facts: &PodFacts,
    previous: Option<&PodStatus>,
    now: SystemTime,
) -> PodStatus {
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let phase = phase(policy, init, app);
    let incomplete: Vec<&str> = init
        .iter()
        .filter(|s| !s.completed())
        .map(|s| s.name.as_str())
        .collect();
    let unready: Vec<&str> = app
        .iter()
        .filter(|s| !s.is_running())
        .map(|s| s.name.as_str())
        .collect();
    let completed = phase == "Succeeded";
    let not_ready = |names: &[&str]| {
        if completed {
            ("PodCompleted".to_owned(), None)
        } else {
            (
                "ContainersNotReady".to_owned(),
                Some(format!(
                    "containers with unready status: [{}]",
                    names.join(" ")
                )),
            )
        }
    };
    let mut conditions = vec![
        condition("PodReadyToStartContainers", facts.sandbox_ready, None),
        if incomplete.is_empty() {
            condition("Initialized", true, None)
        } else {
            condition(
                "Initialized",
                false,
                Some((
                    "ContainersNotInitialized".to_owned(),
                    Some(format!(
                        "containers with incomplete status: [{}]",
                        incomplete.join(" ")
                    )),
                )),
            )
        },
    ];
    let ready = unready.is_empty() && !completed;
    let why = (!ready).then(|| not_ready(&unready));
    conditions.push(condition("Ready", ready, why.clone()));
    conditions.push(condition("ContainersReady", ready, why));
    conditions.push(condition("PodScheduled", true, None));
    for condition in &mut conditions {
        let kept = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|all| all.iter().find(|c| c.type_ == condition.type_))
            .filter(|old| old.status == condition.status)
            .and_then(|old| old.last_transition_time.clone());
        condition.last_transition_time = Some(kept.unwrap_or_else(|| time(now)));
    }

    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        host_ip: Some(facts.host_ip.clone()),
        host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP {
            ip: facts.host_ip.clone(),
        }]),
        pod_ip: facts.pod_ip.clone(),
        pod_ips: facts
            .pod_ip
            .as_ref()
            .map(|ip| vec![PodIP { ip: ip.clone() }]),
        start_time: Some(time(facts.start_time)),
        init_container_statuses: (!init.is_empty())
            .then(|| init.iter().map(Slot::to_status).collect()),
        container_statuses: Some(app.iter().map(Slot::to_status).collect()),
        qos_class: previous.and_then(|p| p.qos_class.clone()),
        ..Default::default()
    }
}

fn condition(kind: &str, status: bool, why: Option<(String, Option<String>)>) -> PodCondition {
    let (reason, message) = why.map_or((None, None), |(r, m)| (Some(r), m));
    PodCondition {
        type_: kind.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason,
        message,
        ..Default::default()
    }
}

/// The container status of `name` in a previously written status.
pub fn previous_container<'a>(
    status: Option<&'a PodStatus>,
    name: &str,
    init: bool,
) -> Option<&'a ContainerStatus> {
    let status = status?;
    let list = if init {
        status.init_container_statuses.as_ref()
    } else {
        status.container_statuses.as_ref()
    };
    list?.iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(code: i32) -> Terminated {
        Terminated {
            container_id: "c".to_owned(),
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.to_owned(),
            message: None,
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH + Duration::from_secs(5),
        }
    }

    fn slot(state: State, last: Option<Terminated>) -> Slot {
        Slot {
            state,
            last,
            ..Slot::new("c", "img", false, "ContainerCreating")
        }
    }

    fn running() -> State {
        State::Running {
            container_id: "c".to_owned(),
            started_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let creating = slot(State::waiting("ContainerCreating", None), None);
        let crash_looping = slot(State::waiting("CrashLoopBackOff", None), Some(ended(1)));
        assert_eq!(
            phase("Always", &[], std::slice::from_ref(&creating)),
            "Pending"
        );
        assert_eq!(phase("Always", &[], &[slot(running(), None)]), "Running");
        assert_eq!(
            phase("Always", &[], std::slice::from_ref(&crash_looping)),
            "Running"
        );
        assert_eq!(phase("OnFailure", &[], &[crash_looping]), "Running");
        assert_eq!(
            phase("Never", &[], &[slot(State::Terminated(ended(0)), None)]),
            "Succeeded"
        );
        assert_eq!(
            phase("OnFailure", &[], &[slot(State::Terminated(ended(0)), None)]),
            "Succeeded"
        );
        assert_eq!(
            phase("Never", &[], &[slot(State::Terminated(ended(2)), None)]),
            "Failed"
        );

        let mut init = slot(running(), None);
        init.init = true;
        assert_eq!(
            phase("Always", &[init.clone()], std::slice::from_ref(&creating)),
            "Pending"
        );
        init.state = State::Terminated(ended(1));
        assert_eq!(
            phase("Never", &[init.clone()], std::slice::from_ref(&creating)),
            "Failed"
        );
        assert_eq!(
            phase("Always", &[init.clone()], std::slice::from_ref(&creating)),
            "Pending"
        );
        init.state = State::Terminated(ended(0));
        assert_eq!(
            phase("Always", &[init], &[slot(running(), None)]),
            "Running"
        );
    }

    #[test]
    fn the_status_has_the_conditions_and_keeps_transition_times() {
        let spec = PodSpec::default();
        let facts = PodFacts {
            host_ip: "198.18.0.1".to_owned(),
            pod_ip: Some("10.244.0.2".to_owned()),
            start_time: SystemTime::UNIX_EPOCH,
            sandbox_ready: true,
        };
        let t1 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let waiting = [slot(State::waiting("ContainerCreating", None), None)];
        let first = pod_status(&spec, &[], &waiting, &facts, None, t1);
        assert_eq!(first.phase.as_deref(), Some("Pending"));
        let ready = first
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [c]")
        );

        let t2 = t1 + Duration::from_secs(10);
        let second = pod_status(
            &spec,
            &[],
            &[slot(running(), None)],
            &facts,
            Some(&first),
            t2,
        );
        let conditions = second.conditions.as_ref().unwrap();
        let get = |kind: &str| conditions.iter().find(|c| c.type_ == kind).unwrap();
        assert_eq!(get("Ready").status, "True");
        assert_eq!(get("Ready").last_transition_time, Some(time(t2)));
        assert_eq!(get("PodScheduled").last_transition_time, Some(time(t1)));
        assert_eq!(second.pod_ips.as_ref().unwrap()[0].ip, "10.244.0.2");
        let status = &second.container_statuses.as_ref().unwrap()[0];
        assert!(status.ready);
        assert_eq!(status.container_id.as_deref(), Some("containerd://c"));
        assert_eq!(status.started, Some(true));
    }
}
