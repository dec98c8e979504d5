//! Errors of the control service and their one mapping to gRPC status codes.

use tonic::{Code, Status};

use crate::BackendError;

/// Why a control request was refused. Nothing was changed when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A field of the request is malformed or out of range (`INVALID_ARGUMENT`).
    #[error("{field}: {message}")]
    InvalidArgument {
        /// Path of the offending field in the request, for example `service.key.address`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A well-formed setting this daemon cannot do, for example a forwarding method the engine
    /// does not implement (`FAILED_PRECONDITION`).
    #[error("{field}: {message}")]
    Unsupported {
        /// Path of the field, for example `real_server.forward`.
        field: String,
        /// What is not supported.
        message: String,
    },
    /// The service or real server does not exist (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// The service or real server exists already (`ALREADY_EXISTS`).
    #[error("{0}")]
    AlreadyExists(String),
    /// A write named a generation (`expected_generation`) that is no longer current: someone
    /// else changed the object since it was read (`FAILED_PRECONDITION`).
    #[error("{field}: {message}")]
    StaleGeneration {
        /// Path of the `expected_generation` field, for example `expected_generation`.
        field: String,
        /// What the generation is now.
        message: String,
    },
    /// The backend could not make the new configuration live; the old one stays
    /// (`FAILED_PRECONDITION`).
    #[error("the daemon could not apply the change: {0}")]
    Backend(#[from] BackendError),
    /// The task applying the change ended abnormally (`INTERNAL`).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    /// An `INVALID_ARGUMENT` error naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ControlError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error about a field of a nested message at `prefix` (for example
    /// `changes[3].add_service`): field paths get the prefix, and messages without a field
    /// start with it.
    pub fn prefixed(self, prefix: &str) -> Self {
        let join = |field: String| {
            if field.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}.{field}")
            }
        };
        match self {
            ControlError::InvalidArgument { field, message } => ControlError::InvalidArgument {
                field: join(field),
                message,
            },
            ControlError::Unsupported { field, message } => ControlError::Unsupported {
                field: join(field),
                message,
            },
            ControlError::StaleGeneration { field, message } => ControlError::StaleGeneration {
                field: join(field),
                message,
            },
            ControlError::NotFound(m) => ControlError::NotFound(format!("{prefix}: {m}")),
            ControlError::AlreadyExists(m) => ControlError::AlreadyExists(format!("{prefix}: {m}")),
            other @ (ControlError::Backend(_) | ControlError::Internal(_)) => other,
        }
    }

    /// The gRPC status code of this error.
    pub fn code(&self) -> Code {
        match self {
            ControlError::InvalidArgument { .. } => Code::InvalidArgument,
            ControlError::Unsupported { .. } => Code::FailedPrecondition,
            ControlError::NotFound(_) => Code::NotFound,
            ControlError::AlreadyExists(_) => Code::AlreadyExists,
            ControlError::StaleGeneration { .. } => Code::FailedPrecondition,
            ControlError::Backend(_) => Code::FailedPrecondition,
            ControlError::Internal(_) => Code::Internal,
        }
    }

    /// The gRPC status sent to the client: [`ControlError::code`] and the error's message.
    pub fn to_status(&self) -> Status {
        Status::new(self.code(), self.to_string())
    }
}

impl From<ControlError> for Status {
    fn from(err: ControlError) -> Self {
        err.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_the_field() {
        let s = ControlError::invalid("real_server.port", "70000 is out of range (0-65535)")
            .to_status();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "real_server.port: 70000 is out of range (0-65535)"
        );
    }

    #[test]
    fn backend_errors_are_failed_precondition() {
        let e = ControlError::from(BackendError {
            operation: "add route".into(),
            message: "no such device".into(),
        });
        assert_eq!(e.to_status().code(), Code::FailedPrecondition);
        assert!(e.to_string().contains("add route: no such device"));
    }
}
