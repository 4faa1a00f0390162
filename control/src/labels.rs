//! Label and field selectors: the string forms the API accepts
//! (`app=web,tier in (a,b),!canary`, `spec.nodeName=n1`) and the
//! `LabelSelector` objects workloads carry, and matching them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Op::Equals | Op::In => value.is_some_and(|v| self.values.contains(v)),
            Op::NotEquals | Op::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
        }
    }
}

/// Requirements that must all hold. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    pub fn matches_opt(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.matches(labels.unwrap_or(&EMPTY))
    }

    /// Parses the `labelSelector` query syntax.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            let (requirement, after) = parse_requirement(rest)?;
            requirements.push(requirement);
            rest = after.trim_start();
            if let Some(after_comma) = rest.strip_prefix(',') {
                rest = after_comma.trim_start();
                if rest.is_empty() {
                    return Err(format!(
                        "unable to parse requirement: found trailing ',' in {text:?}"
                    ));
                }
            } else if !rest.is_empty() {
                return Err(format!(
                    "unable to parse requirement: expected ',' before {rest:?}"
                ));
            }
        }
        Ok(Self(requirements))
    }

    /// A workload's `LabelSelector`. An empty one matches everything.
    pub fn from_label_selector(selector: &LabelSelector) -> Result<Self, String> {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                op: Op::Equals,
                values: vec![v.clone()],
            })
            .collect();
        for expression in selector.match_expressions.iter().flatten() {
            let values = expression.values.clone().unwrap_or_default();
            let op = match expression.operator.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            if matches!(op, Op::In | Op::NotIn) && values.is_empty() {
                return Err("for 'in', 'notin' operators, values set can't be empty".to_owned());
            }
            requirements.push(Requirement {
                key: expression.key.clone(),
                op,
                values,
            });
        }
        Ok(Self(requirements))
    }
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn split_key(text: &str) -> (&str, &str) {
    let end = text.find(|c: char| !is_key_char(c)).unwrap_or(text.len());
    text.split_at(end)
}

fn parse_requirement(text: &str) -> Result<(Requirement, &str), String> {
    if let Some(rest) = text.strip_prefix('!') {
        let (key, rest) = split_key(rest.trim_start());
        if key.is_empty() {
            return Err("unable to parse requirement: '!' must be followed by a key".to_owned());
        }
        return Ok((
            Requirement {
                key: key.to_owned(),
                op: Op::DoesNotExist,
                values: Vec::new(),
            },
            rest,
        ));
    }
    let (key, rest) = split_key(text);
    if key.is_empty() {
        return Err(format!(
            "unable to parse requirement: expected a key at {text:?}"
        ));
    }
    let key = key.to_owned();
    let rest = rest.trim_start();
    let value = |rest: &str| -> (String, usize) {
        let trimmed = rest.trim_start();
        let skipped = rest.len() - trimmed.len();
        let end = trimmed
            .find(|c: char| c == ',' || c.is_whitespace())
            .unwrap_or(trimmed.len());
        (trimmed[..end].to_owned(), skipped + end)
    };
    for (token, op) in [("==", Op::Equals), ("!=", Op::NotEquals), ("=", Op::Equals)] {
        if let Some(after) = rest.strip_prefix(token) {
            let (v, used) = value(after);
            return Ok((
                Requirement {
                    key,
                    op,
                    values: vec![v],
                },
                &after[used..],
            ));
        }
    }
    for (word, op) in [("notin", Op::NotIn), ("in", Op::In)] {
        if let Some(after) = rest.strip_prefix(word)
            && after.trim_start().starts_with('(')
        {
            let after = after.trim_start();
            let close = after
                .find(')')
                .ok_or_else(|| format!("unable to parse requirement: missing ')' in {after:?}"))?;
            let values: Vec<String> = after[1..close]
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect();
            if values.is_empty() {
                return Err("for 'in', 'notin' operators, values set can't be empty".to_owned());
            }
            return Ok((Requirement { key, op, values }, &after[close + 1..]));
        }
    }
    Ok((
        Requirement {
            key,
            op: Op::Exists,
            values: Vec::new(),
        },
        rest,
    ))
}

/// One `fieldSelector` term: `field=value` or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub equals: bool,
    pub value: String,
}

/// Parses the `fieldSelector` query syntax.
pub fn parse_field_selector(text: &str) -> Result<Vec<FieldTerm>, String> {
    let mut terms = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, equals, value) = if let Some((f, v)) = part.split_once("!=") {
            (f, false, v)
        } else if let Some((f, v)) = part.split_once("==") {
            (f, true, v)
        } else if let Some((f, v)) = part.split_once('=') {
            (f, true, v)
        } else {
            return Err(format!(
                "invalid selector: '{part}'; can't understand '{part}'"
            ));
        };
        terms.push(FieldTerm {
            field: field.trim().to_owned(),
            equals,
            value: value.trim().to_owned(),
        });
    }
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_set_and_existence() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        for (selector, expected) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!canary", true),
            ("!tier", false),
            ("app=web,tier in (front)", true),
            ("app=web, tier=back", false),
            ("", true),
        ] {
            assert_eq!(
                Selector::parse(selector).unwrap().matches(&web),
                expected,
                "{selector}"
            );
        }
        assert!(Selector::parse("app in ()").is_err());
        assert!(Selector::parse("app=web,").is_err());
        assert!(Selector::parse("app in (a").is_err());
    }

    #[test]
    fn label_selector_objects() {
        let selector = LabelSelector {
            match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["db".into()]),
                },
            ]),
        };
        let selector = Selector::from_label_selector(&selector).unwrap();
        assert!(selector.matches(&labels(&[("app", "web")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "db")])));
    }

    #[test]
    fn field_selectors() {
        let terms = parse_field_selector("spec.nodeName=n1,status.phase!=Running").unwrap();
        assert_eq!(
            terms[0],
            FieldTerm {
                field: "spec.nodeName".into(),
                equals: true,
                value: "n1".into()
            }
        );
        assert!(!terms[1].equals);
        assert!(parse_field_selector("nonsense").is_err());
    }
}
