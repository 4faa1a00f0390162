//! ControllerRevisions (apps/v1): immutable snapshots of a workload's pod
//! template that StatefulSets and DaemonSets keep, and that `kubectl
//! rollout history` and `rollout undo` read.

use k8s_openapi::{api::apps::v1::ControllerRevision, jiff};
use serde_json::{Value, json};

use crate::registry::{
    FieldError, Kind, ResourceInfo,
    table::{AGE, Column, NAME, age},
};

#[derive(Debug, Clone)]
pub struct ControllerRevisions;

impl Kind for ControllerRevisions {
    type Object = ControllerRevision;

    const INFO: ResourceInfo = ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "ControllerRevision",
        plural: "controllerrevisions",
        singular: "controllerrevision",
        short_names: &[],
        categories: &[],
        namespaced: true,
        subresources: &[],
    };

    fn validate(&self, revision: &ControllerRevision) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if revision.data.is_none() {
            errors.push(FieldError::required_because("data", "data is mandatory"));
        }
        if revision.revision < 0 {
            errors.push(FieldError::invalid(
                "revision",
                revision.revision,
                "must be greater than or equal to 0",
            ));
        }
        errors
    }

    fn validate_update(
        &self,
        new: &ControllerRevision,
        old: &ControllerRevision,
    ) -> Vec<FieldError> {
        if new.data != old.data {
            let shown = new
                .data
                .as_ref()
                .map(|d| d.0.to_string())
                .unwrap_or_default();
            vec![FieldError::immutable("data", shown)]
        } else {
            Vec::new()
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            Column::new("Controller", "string", "Controller of the object"),
            Column::new(
                "Revision",
                "number",
                "Revision indicates the revision of the state represented by Data.",
            ),
            AGE,
        ]
    }

    fn cells(&self, revision: &ControllerRevision, now: jiff::Timestamp) -> Vec<Value> {
        let controller = revision
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| {
                let group = o.api_version.rsplit_once('/').map(|(g, _)| g);
                match group {
                    Some(group) => format!("{}.{group}/{}", o.kind.to_lowercase(), o.name),
                    None => format!("{}/{}", o.kind.to_lowercase(), o.name),
                }
            })
            .unwrap_or_else(|| "<none>".to_owned());
        vec![
            json!(revision.metadata.name),
            json!(controller),
            json!(revision.revision),
            age(revision.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(json: Value) -> ControllerRevision {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn data_is_required_and_immutable_and_the_revision_not_negative() {
        let kind = ControllerRevisions;
        let messages = |errors: Vec<FieldError>| -> Vec<String> {
            errors.iter().map(FieldError::to_string).collect()
        };
        let bad = revision(json!({ "metadata": { "name": "web-1" }, "revision": -1 }));
        assert_eq!(
            messages(kind.validate(&bad)),
            [
                "data: Required value: data is mandatory",
                "revision: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
        let old =
            revision(json!({ "metadata": { "name": "web-1" }, "data": { "a": 1 }, "revision": 1 }));
        let renumbered =
            revision(json!({ "metadata": { "name": "web-1" }, "data": { "a": 1 }, "revision": 4 }));
        assert!(kind.validate_update(&renumbered, &old).is_empty());
        let changed =
            revision(json!({ "metadata": { "name": "web-1" }, "data": { "a": 2 }, "revision": 1 }));
        assert_eq!(
            messages(kind.validate_update(&changed, &old)),
            [r#"data: Invalid value: "{"a":2}": field is immutable"#]
        );
    }

    #[test]
    fn the_controller_column_names_kind_group_and_name() {
        let owned = revision(json!({
            "metadata": { "name": "web-5d8f", "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                "uid": "u1", "controller": true,
            }] },
            "data": {}, "revision": 3,
        }));
        let cells = ControllerRevisions.cells(&owned, jiff::Timestamp::now());
        assert_eq!(
            cells[..3],
            [json!("web-5d8f"), json!("statefulset.apps/web"), json!(3)]
        );
        let orphan = revision(json!({ "metadata": { "name": "x" }, "data": {}, "revision": 1 }));
        let cells = ControllerRevisions.cells(&orphan, jiff::Timestamp::now());
        assert_eq!(cells[1], json!("<none>"));
    }
}
