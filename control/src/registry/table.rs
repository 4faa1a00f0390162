//! Server-side printing: the `meta.k8s.io/v1` Table kubectl asks for, with
//! the columns Kubernetes shows per kind, and the cell formats it uses
//! (ages such as "5m12s", "<none>" for empty values).

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff};
use serde_json::{Value, json};

/// One column of a kind's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// "string", "integer", "date", ...
    pub kind: &'static str,
    /// "name" for the NAME column, "" otherwise.
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: i32,
}

impl Column {
    pub const fn new(name: &'static str, kind: &'static str, description: &'static str) -> Self {
        Self {
            name,
            kind,
            format: "",
            description,
            priority: 0,
        }
    }

    /// Shown only with `-o wide`.
    pub const fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }

    pub fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// The NAME column most tables start with.
pub const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace.",
    priority: 0,
};

/// The AGE column most tables end with.
pub const AGE: Column = Column::new(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

/// The age cell of an object created at `created`, as of `now`.
pub fn age(created: Option<&Time>, now: jiff::Timestamp) -> Value {
    match created {
        Some(created) => Value::String(human_duration(now.duration_since(created.0))),
        None => Value::String("<unknown>".to_owned()),
    }
}

/// A duration the way kubectl prints ages: two units at most, coarser as
/// it grows ("45s", "5m12s", "3h4m", "2d5h", "400d", "3y20d").
pub fn human_duration(duration: jiff::SignedDuration) -> String {
    let seconds = duration.as_secs();
    // Up to a second into the future is clock skew, not an error.
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_rest(minutes, "m", seconds % 60, "s");
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return with_rest(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_rest(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return with_rest(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

fn with_rest(major: i64, major_unit: &str, minor: i64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}

/// `values` joined with commas, or "<none>".
pub fn joined_or_none(values: impl IntoIterator<Item = String>) -> Value {
    let joined: Vec<String> = values.into_iter().collect();
    if joined.is_empty() {
        Value::String("<none>".to_owned())
    } else {
        Value::String(joined.join(","))
    }
}

/// `value`, or "<none>" when empty or absent.
pub fn or_none(value: Option<&str>) -> Value {
    Value::String(
        value
            .filter(|v| !v.is_empty())
            .unwrap_or("<none>")
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> String {
        human_duration(jiff::SignedDuration::from_secs(seconds))
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(at(-5), "<invalid>");
        assert_eq!(at(-1), "0s");
        assert_eq!(at(59), "59s");
        assert_eq!(at(119), "119s");
        assert_eq!(at(120), "2m");
        assert_eq!(at(312), "5m12s");
        assert_eq!(at(600), "10m");
        assert_eq!(at(3 * 3600 + 59), "3h");
        assert_eq!(at(3 * 3600 + 240), "3h4m");
        assert_eq!(at(20 * 3600), "20h");
        assert_eq!(at(53 * 3600), "2d5h");
        assert_eq!(at(400 * 86400), "400d");
        assert_eq!(at(3 * 365 * 86400 + 20 * 86400), "3y20d");
        assert_eq!(at(10 * 365 * 86400), "10y");
    }
}
