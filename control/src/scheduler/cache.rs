//! The scheduler's cache: every node with the pods on it, updated
//! incrementally from the informers and from the scheduler's own
//! decisions. A pod the scheduler has chosen a node for is *assumed* on
//! that node at once, before its binding is written, so the next decision
//! already sees the room it takes; the informer's event for the bound pod
//! then confirms it, and a failed binding forgets it.

use std::collections::HashMap;

use indexmap::IndexMap;

use super::{
    node_info::{NodeInfo, NodeSpec},
    pod_info::{PodInfo, PodKey},
};

#[derive(Debug, Default)]
pub struct Cache {
    /// Every node, by name and by a slot the search walks in order (a
    /// hash lookup per node visited cost more than filtering it).
    nodes: IndexMap<String, NodeInfo>,
    /// How many of them have a node object.
    with_spec: usize,
    /// Where each placed pod is, and whether only assumed there.
    placed: HashMap<PodKey, Placement>,
    /// Pods per zone and controller, for spreading across zones.
    zone_replicas: HashMap<(String, String), u32>,
}

#[derive(Debug, Clone)]
struct Placement {
    node: String,
    assumed: bool,
}

/// What a change to a node means for pods waiting for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    /// New, or changed in a way that may let more pods on.
    MayFitMore,
    Unchanged,
}

impl Cache {
    #[cfg(test)]
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// Nodes with a node object.
    pub fn node_count(&self) -> usize {
        self.with_spec
    }

    /// Slots to search, `0..slots()`; a slot may hold no node object.
    pub fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// The node in `slot`, if it has a node object.
    pub fn node_at(&self, slot: usize) -> Option<(&NodeSpec, &NodeInfo)> {
        let (_, info) = self.nodes.get_index(slot)?;
        Some((info.spec.as_ref()?, info))
    }

    /// Replicas of `controller` in `zone`.
    pub fn zone_replicas(&self, zone: &str, controller: &str) -> u32 {
        self.zone_replicas
            .get(&(zone.to_owned(), controller.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn set_node(&mut self, spec: NodeSpec) -> NodeChange {
        let (change, zone_changed) = self.put_node(spec);
        if zone_changed {
            self.recount_zones();
        }
        change
    }

    /// Stores a node; says whether its zone changed (the per-zone counts
    /// are then stale).
    fn put_node(&mut self, spec: NodeSpec) -> (NodeChange, bool) {
        let info = self.nodes.entry(spec.name.clone()).or_default();
        let change = match &info.spec {
            Some(old) if *old == spec => NodeChange::Unchanged,
            _ => NodeChange::MayFitMore,
        };
        if info.spec.is_none() {
            self.with_spec += 1;
        }
        let old_zone = info.spec.as_ref().and_then(|s| s.zone().map(str::to_owned));
        let zone_changed = old_zone.as_deref() != spec.zone();
        info.spec = Some(spec);
        (change, zone_changed)
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(info) = self.nodes.get_mut(name) else {
            return;
        };
        let Some(spec) = info.spec.take() else {
            return;
        };
        self.with_spec -= 1;
        let had_zone = spec.zone().is_some();
        if info.is_empty() {
            self.nodes.swap_remove(name);
        }
        if had_zone {
            self.recount_zones();
        }
    }

    /// Replaces every node; pods stay where they are.
    pub fn reset_nodes(&mut self, specs: Vec<NodeSpec>) {
        for info in self.nodes.values_mut() {
            info.spec = None;
        }
        self.with_spec = 0;
        for spec in specs {
            self.put_node(spec);
        }
        self.nodes
            .retain(|_, info| info.spec.is_some() || !info.is_empty());
        self.recount_zones();
    }

    /// Records a bound pod (confirming it, when it was assumed there), or
    /// removes it if it no longer takes room. True when room was freed.
    pub fn set_bound_pod(&mut self, pod: &PodInfo) -> bool {
        if pod.finished {
            return self.remove_pod(&pod.key);
        }
        let moved = self
            .placed
            .get(&pod.key)
            .is_some_and(|p| p.node != pod.node_name);
        self.place(pod, &pod.node_name, false);
        moved
    }

    /// Takes room for `pod` on `node` before its binding is written.
    pub fn assume(&mut self, pod: &PodInfo, node: &str) {
        self.place(pod, node, true);
    }

    /// Gives back the room of an assumed pod whose binding failed; a pod
    /// the informer has confirmed since stays.
    pub fn forget(&mut self, key: &str) {
        if self.placed.get(key).is_some_and(|p| p.assumed) {
            self.remove_pod(key);
        }
    }

    pub fn is_placed(&self, key: &str) -> bool {
        self.placed.contains_key(key)
    }

    /// True when the pod had taken room.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(placement) = self.placed.remove(key) else {
            return false;
        };
        let Some(info) = self.nodes.get_mut(&placement.node) else {
            return true;
        };
        let controller = info.controller_of(key);
        info.remove_pod(key);
        let zone = info.spec.as_ref().and_then(|s| s.zone().map(str::to_owned));
        if info.spec.is_none() && info.is_empty() {
            self.nodes.swap_remove(&placement.node);
        }
        if let (Some(zone), Some(controller)) = (zone, controller) {
            self.count_zone(zone, controller, false);
        }
        true
    }

    /// Replaces every bound pod. Assumed pods whose bindings are still in
    /// flight keep their room until confirmed or forgotten.
    pub fn reset_pods<'a>(&mut self, bound: impl Iterator<Item = &'a PodInfo>) {
        let confirmed: Vec<PodKey> = self
            .placed
            .iter()
            .filter(|(_, p)| !p.assumed)
            .map(|(k, _)| k.clone())
            .collect();
        for key in confirmed {
            self.remove_pod(&key);
        }
        for pod in bound.filter(|p| !p.finished) {
            self.place(pod, &pod.node_name, false);
        }
    }

    fn place(&mut self, pod: &PodInfo, node: &str, assumed: bool) {
        self.remove_pod(&pod.key);
        let info = self.nodes.entry(node.to_owned()).or_default();
        info.add_pod(pod);
        let zone = info.spec.as_ref().and_then(|s| s.zone().map(str::to_owned));
        if let (Some(zone), Some(controller)) = (zone, pod.constraints.controller.clone()) {
            self.count_zone(zone, controller, true);
        }
        self.placed.insert(
            pod.key.clone(),
            Placement {
                node: node.to_owned(),
                assumed,
            },
        );
    }

    fn count_zone(&mut self, zone: String, controller: String, add: bool) {
        let key = (zone, controller);
        if add {
            *self.zone_replicas.entry(key).or_default() += 1;
        } else if let Some(count) = self.zone_replicas.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.zone_replicas.remove(&key);
            }
        }
    }

    /// Rebuilds the per-zone counts after a node changed zone.
    fn recount_zones(&mut self) {
        self.zone_replicas.clear();
        for info in self.nodes.values() {
            let Some(zone) = info.spec.as_ref().and_then(|s| s.zone()) else {
                continue;
            };
            for (controller, count) in info.controllers() {
                *self
                    .zone_replicas
                    .entry((zone.to_owned(), controller.clone()))
                    .or_default() += count;
            }
        }
    }
}
