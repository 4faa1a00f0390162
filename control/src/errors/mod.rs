//! The errors the API answers with, below both the registry (which finds
//! them) and the HTTP layer (which sends them): field errors, and
//! `metav1.Status` errors with their HTTP codes.

mod field;
mod status;

pub use self::{
    field::{BadValue, ErrorKind, FieldError},
    status::{ApiError, Subject},
};
