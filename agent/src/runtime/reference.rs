//! Image references as Docker and containerd normalise them: `busybox` is
//! `docker.io/library/busybox:latest`; a first component with a dot, a
//! colon, or `localhost` names a registry.

use std::fmt;

const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Host and optional port of the registry.
    pub registry: String,
    /// The repository within the registry, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {0:?}")]
pub struct InvalidReference(pub String);

impl Reference {
    pub fn parse(text: &str) -> Result<Self, InvalidReference> {
        let invalid = || InvalidReference(text.to_owned());
        if text.is_empty() || text.chars().any(char::is_whitespace) {
            return Err(invalid());
        }
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) if digest.starts_with("sha256:") && digest.len() == 71 => {
                (name, Some(digest.to_owned()))
            }
            Some(_) => return Err(invalid()),
            None => (text, None),
        };
        // A tag follows the last colon after the last slash.
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[slash..].rfind(':') {
            Some(colon) => (
                &name[..slash + colon],
                Some(name[slash + colon + 1..].to_owned()),
            ),
            None => (name, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let valid_part = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        };
        if !repository.split('/').all(valid_part) || tag.as_deref().is_some_and(str::is_empty) {
            return Err(invalid());
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            (tag, _) => tag,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry's manifest endpoint for.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `registry/repository@digest`: the image id a container status shows.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(text: &str) -> String {
        Reference::parse(text).unwrap().to_string()
    }

    #[test]
    fn references_normalise_as_docker_does() {
        assert_eq!(normal("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            normal("library/busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            normal("capstan.invalid/testapp:v1"),
            "capstan.invalid/testapp:v1"
        );
        assert_eq!(
            normal("127.0.0.1:5000/team/app"),
            "127.0.0.1:5000/team/app:latest"
        );
        assert_eq!(normal("localhost/app:v2"), "localhost/app:v2");
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = Reference::parse(&format!("127.0.0.1:5000/app@{digest}")).unwrap();
        assert_eq!(pinned.tag, None);
        assert_eq!(pinned.manifest_reference(), digest);
        assert_eq!(
            pinned.with_digest(&digest),
            format!("127.0.0.1:5000/app@{digest}")
        );
        for bad in ["", "has space", "app:", "Upper/case", "app@sha256:short"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
