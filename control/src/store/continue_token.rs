//! Continue tokens of paginated lists: the revision the list is read at and
//! the last key returned, opaque to clients (base64 of JSON, as the
//! Kubernetes API server encodes its own).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use super::{Revision, StoreError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContinueToken {
    pub revision: Revision,
    /// The next page starts after this key.
    pub after_key: String,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u8,
    rv: u64,
    after: String,
}

impl ContinueToken {
    pub fn encode(&self) -> String {
        let wire = Wire {
            v: 1,
            rv: self.revision.0,
            after: self.after_key.clone(),
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    pub fn decode(token: &str) -> Result<Self, StoreError> {
        let invalid = |why: &str| StoreError::InvalidContinue(why.to_owned());
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid("not base64"))?;
        let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| invalid("not a token"))?;
        if wire.v != 1 {
            return Err(invalid("unknown version"));
        }
        Ok(Self {
            revision: Revision(wire.rv),
            after_key: wire.after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let token = ContinueToken {
            revision: Revision(42),
            after_key: "/registry/pods/default/web-1".to_owned(),
        };
        assert_eq!(ContinueToken::decode(&token.encode()).unwrap(), token);
        assert!(matches!(
            ContinueToken::decode("%%%"),
            Err(StoreError::InvalidContinue(_))
        ));
        assert!(matches!(
            ContinueToken::decode(&URL_SAFE_NO_PAD.encode(b"{}")),
            Err(StoreError::InvalidContinue(_))
        ));
    }
}
