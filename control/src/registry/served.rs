//! The kinds capstan serves, listed once. The API builds a route per kind
//! from this list; the controllers that act on every kind (the garbage
//! collector, namespace cleanup) read its [`ResourceInfo`]s.

use super::{
    Kind, ResourceInfo,
    kinds::{self, pod_spec::DefaultTolerations},
};

/// Something done with each served kind, typed by the kind.
pub trait KindVisitor {
    fn visit<K: Kind>(&mut self, kind: K);
}

/// Calls `visitor` with every served kind, in discovery order; new pods
/// get `tolerations` (admission's defaults).
pub fn visit(tolerations: DefaultTolerations, visitor: &mut impl KindVisitor) {
    visitor.visit(kinds::core::Namespaces);
    visitor.visit(kinds::pods::Pods {
        default_tolerations: tolerations,
    });
    visitor.visit(kinds::nodes::Nodes);
    visitor.visit(kinds::services::Services);
    visitor.visit(kinds::core::EndpointsKind);
    visitor.visit(kinds::core::ConfigMaps);
    visitor.visit(kinds::core::Secrets);
    visitor.visit(kinds::core::Events);
    visitor.visit(kinds::core::ServiceAccounts);
    visitor.visit(kinds::apps::Deployments);
    visitor.visit(kinds::apps::ReplicaSets);
    visitor.visit(kinds::apps::StatefulSets);
    visitor.visit(kinds::apps::DaemonSets);
    visitor.visit(kinds::history::ControllerRevisions);
    visitor.visit(kinds::cluster::EndpointSlices);
    visitor.visit(kinds::cluster::Leases);
}

/// The facts of every served kind, in discovery order.
pub fn infos() -> Vec<&'static ResourceInfo> {
    struct Infos(Vec<&'static ResourceInfo>);
    impl KindVisitor for Infos {
        fn visit<K: Kind>(&mut self, _kind: K) {
            self.0.push(&K::INFO);
        }
    }
    let mut infos = Infos(Vec::new());
    visit(DefaultTolerations::default(), &mut infos);
    infos.0
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_kind_is_listed_once() {
        let infos = infos();
        let plurals: HashSet<(&str, &str)> = infos.iter().map(|i| (i.group, i.plural)).collect();
        assert_eq!(plurals.len(), infos.len());
        assert!(plurals.contains(&("", "pods")));
        assert!(plurals.contains(&("apps", "deployments")));
    }
}
