//! The scheduler's configuration file: the part of kube-scheduler's
//! `KubeSchedulerConfiguration` (kubescheduler.config.k8s.io/v1) that
//! capstan's scheduler acts on, in the same shape, so a user's file for
//! bin packing reads as it would for Kubernetes:
//!
//! ```yaml
//! apiVersion: kubescheduler.config.k8s.io/v1
//! kind: KubeSchedulerConfiguration
//! percentageOfNodesToScore: 0        # 0: Kubernetes' adaptive default
//! profiles:
//! - schedulerName: default-scheduler
//!   pluginConfig:
//!   - name: NodeResourcesFit
//!     args:
//!       scoringStrategy:
//!         type: MostAllocated       # or LeastAllocated (the default)
//!         resources: [{name: cpu, weight: 1}, {name: memory, weight: 1}]
//! ```
//!
//! Anything else is refused by name rather than silently ignored.

use std::path::Path;

use serde::Deserialize;

use super::pod_info::DEFAULT_SCHEDULER;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the scheduler configuration {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the scheduler configuration {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    LeastAllocated,
    MostAllocated,
}

/// NodeResourcesFit's scoring: which way, over which weighted resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoringStrategy {
    pub kind: StrategyKind,
    pub resources: Vec<(String, i64)>,
}

impl ScoringStrategy {
    fn cpu_and_memory(kind: StrategyKind) -> Self {
        Self {
            kind,
            resources: vec![("cpu".to_owned(), 1), ("memory".to_owned(), 1)],
        }
    }

    pub fn least_allocated() -> Self {
        Self::cpu_and_memory(StrategyKind::LeastAllocated)
    }

    pub fn most_allocated() -> Self {
        Self::cpu_and_memory(StrategyKind::MostAllocated)
    }
}

/// One scheduler name and how it scores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub scheduler_name: String,
    pub scoring: ScoringStrategy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub profiles: Vec<Profile>,
    /// 0 for the adaptive default.
    pub percentage_of_nodes_to_score: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            profiles: vec![Profile {
                scheduler_name: DEFAULT_SCHEDULER.to_owned(),
                scoring: ScoringStrategy::least_allocated(),
            }],
            percentage_of_nodes_to_score: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    api_version: String,
    kind: String,
    #[serde(default)]
    percentage_of_nodes_to_score: Option<u32>,
    #[serde(default)]
    profiles: Vec<FileProfile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileProfile {
    #[serde(default)]
    scheduler_name: Option<String>,
    #[serde(default)]
    plugin_config: Vec<PluginConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginConfig {
    name: String,
    #[serde(default)]
    args: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FitArgs {
    #[serde(default)]
    scoring_strategy: Option<FileStrategy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStrategy {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    resources: Option<Vec<FileResource>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileResource {
    name: String,
    weight: i64,
}

const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
const KIND: &str = "KubeSchedulerConfiguration";

impl SchedulerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = serde_yaml::from_str(text).map_err(|err| err.to_string())?;
        if file.api_version != API_VERSION || file.kind != KIND {
            return Err(format!(
                "apiVersion and kind must be {API_VERSION} and {KIND}, not {} and {}",
                file.api_version, file.kind
            ));
        }
        let percentage = file.percentage_of_nodes_to_score.unwrap_or(0);
        if percentage > 100 {
            return Err(format!(
                "percentageOfNodesToScore: {percentage} is over 100"
            ));
        }
        let mut profiles = Vec::new();
        for (i, profile) in file.profiles.into_iter().enumerate() {
            let scheduler_name = profile
                .scheduler_name
                .unwrap_or_else(|| DEFAULT_SCHEDULER.to_owned());
            if profiles
                .iter()
                .any(|p: &Profile| p.scheduler_name == scheduler_name)
            {
                return Err(format!(
                    "profiles[{i}].schedulerName: {scheduler_name:?} is used twice"
                ));
            }
            let mut scoring = ScoringStrategy::least_allocated();
            for (j, plugin) in profile.plugin_config.into_iter().enumerate() {
                let at = format!("profiles[{i}].pluginConfig[{j}]");
                if plugin.name != "NodeResourcesFit" {
                    return Err(format!(
                        "{at}.name: {:?} is not configurable here (only NodeResourcesFit)",
                        plugin.name
                    ));
                }
                let args: FitArgs = match plugin.args {
                    Some(args) => {
                        serde_yaml::from_value(args).map_err(|err| format!("{at}.args: {err}"))?
                    }
                    None => continue,
                };
                if let Some(strategy) = args.scoring_strategy {
                    scoring = strategy_from(strategy, &at)?;
                }
            }
            profiles.push(Profile {
                scheduler_name,
                scoring,
            });
        }
        if profiles.is_empty() {
            profiles = SchedulerConfig::default().profiles;
        }
        Ok(Self {
            profiles,
            percentage_of_nodes_to_score: percentage,
        })
    }

    pub fn profile(&self, scheduler_name: &str) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.scheduler_name == scheduler_name)
    }
}

fn strategy_from(strategy: FileStrategy, at: &str) -> Result<ScoringStrategy, String> {
    let kind = match strategy.kind.as_deref() {
        None | Some("LeastAllocated") => StrategyKind::LeastAllocated,
        Some("MostAllocated") => StrategyKind::MostAllocated,
        Some(other) => {
            return Err(format!(
                "{at}.args.scoringStrategy.type: {other:?} is not LeastAllocated or MostAllocated"
            ));
        }
    };
    let resources = match strategy.resources {
        None => ScoringStrategy::cpu_and_memory(kind).resources,
        Some(resources) => {
            let mut list = Vec::new();
            for (k, r) in resources.into_iter().enumerate() {
                if !matches!(r.name.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    return Err(format!(
                        "{at}.args.scoringStrategy.resources[{k}].name: {:?} is not cpu, memory or ephemeral-storage",
                        r.name
                    ));
                }
                if !(1..=100).contains(&r.weight) {
                    return Err(format!(
                        "{at}.args.scoringStrategy.resources[{k}].weight: {} is not in 1..100",
                        r.weight
                    ));
                }
                list.push((r.name, r.weight));
            }
            list
        }
    };
    Ok(ScoringStrategy { kind, resources })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bin_packing_profile_reads_as_kubernetes_writes_it() {
        let config = SchedulerConfig::parse(
            "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 20
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packing
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources: [{name: cpu, weight: 2}, {name: memory, weight: 1}]
",
        )
        .unwrap();
        assert_eq!(config.percentage_of_nodes_to_score, 20);
        assert_eq!(
            config.profile("default-scheduler").unwrap().scoring,
            ScoringStrategy::least_allocated()
        );
        let packing = &config.profile("bin-packing").unwrap().scoring;
        assert_eq!(packing.kind, StrategyKind::MostAllocated);
        assert_eq!(
            packing.resources,
            vec![("cpu".to_owned(), 2), ("memory".to_owned(), 1)]
        );
    }

    #[test]
    fn mistakes_are_named() {
        let head = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";
        for (body, names) in [
            (
                "profiles:\n- schedulerName: a\n  pluginConfig:\n  - name: NodeAffinity\n",
                "profiles[0].pluginConfig[0].name",
            ),
            (
                "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args: {scoringStrategy: {type: Packed}}\n",
                "scoringStrategy.type",
            ),
            (
                "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args: {scoringStrategy: {resources: [{name: gpu, weight: 1}]}}\n",
                "resources[0].name",
            ),
            (
                "percentageOfNodesToScore: 101\n",
                "percentageOfNodesToScore",
            ),
            ("profiles:\n- {}\n- {}\n", "profiles[1].schedulerName"),
            ("parallelism: 4\n", "parallelism"),
        ] {
            let err = SchedulerConfig::parse(&format!("{head}{body}")).unwrap_err();
            assert!(err.contains(names), "{err} should name {names}");
        }
        assert!(SchedulerConfig::parse("apiVersion: v1\nkind: Pod\n").is_err());
    }
}
