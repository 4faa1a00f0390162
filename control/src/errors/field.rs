//! One thing wrong with one field of an object, worded as Kubernetes
//! words it (kubectl prints these; tools match on them). Validation makes
//! them; a 422 Status carries them as causes.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Required,
    Invalid,
    NotSupported,
    Forbidden,
    Duplicate,
    TooLong,
}

impl ErrorKind {
    /// The cause reason of a 422 Status.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Invalid => "FieldValueInvalid",
            ErrorKind::NotSupported => "FieldValueNotSupported",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::Duplicate => "FieldValueDuplicate",
            ErrorKind::TooLong => "FieldValueTooLong",
        }
    }
}

/// A rejected value, printed as Kubernetes prints it: strings quoted,
/// numbers bare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue(String);

impl From<&str> for BadValue {
    fn from(value: &str) -> Self {
        Self(format!("\"{value}\""))
    }
}

impl From<&String> for BadValue {
    fn from(value: &String) -> Self {
        Self::from(value.as_str())
    }
}

impl From<String> for BadValue {
    fn from(value: String) -> Self {
        Self::from(value.as_str())
    }
}

macro_rules! bare_numbers {
    ($($t:ty),*) => {$(
        impl From<$t> for BadValue {
            fn from(value: $t) -> Self {
                Self(value.to_string())
            }
        }
    )*};
}
bare_numbers!(i32, i64, u16, u32, usize);

impl BadValue {
    /// A value printed as given (e.g. a Go map literal).
    pub fn raw(text: impl Into<String>) -> Self {
        Self(text.into())
    }
}

/// One thing wrong with one field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// e.g. "spec.containers[0].image".
    pub field: String,
    pub kind: ErrorKind,
    pub value: Option<BadValue>,
    pub message: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::Required,
            value: None,
            message: String::new(),
        }
    }

    /// A required value with Kubernetes' explanation after it.
    pub fn required_because(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..Self::required(field)
        }
    }

    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<BadValue>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::Invalid,
            value: Some(value.into()),
            message: message.into(),
        }
    }

    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<BadValue>,
        supported: &[&str],
    ) -> Self {
        let supported: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self {
            field: field.into(),
            kind: ErrorKind::NotSupported,
            value: Some(value.into()),
            message: format!("supported values: {}", supported.join(", ")),
        }
    }

    pub fn forbidden(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::Forbidden,
            value: None,
            message: message.into(),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl Into<BadValue>) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::Duplicate,
            value: Some(value.into()),
            message: String::new(),
        }
    }

    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            field: field.into(),
            kind: ErrorKind::TooLong,
            value: None,
            message: format!("may not be more than {max} bytes"),
        }
    }

    /// A field that may not change after creation.
    pub fn immutable(field: impl Into<String>, value: impl Into<BadValue>) -> Self {
        Self::invalid(field, value, "field is immutable")
    }

    /// The error without its field: a Status cause's message.
    pub fn detail(&self) -> String {
        let value = self.value.as_ref().map_or("", |v| v.0.as_str());
        let tail = if self.message.is_empty() {
            String::new()
        } else {
            format!(": {}", self.message)
        };
        match self.kind {
            ErrorKind::Required => format!("Required value{tail}"),
            ErrorKind::Invalid => format!("Invalid value: {value}{tail}"),
            ErrorKind::NotSupported => format!("Unsupported value: {value}{tail}"),
            ErrorKind::Forbidden => format!("Forbidden{tail}"),
            ErrorKind::Duplicate => format!("Duplicate value: {value}"),
            ErrorKind::TooLong => format!("Too long{tail}"),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.detail())
    }
}
