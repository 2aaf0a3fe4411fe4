//! Errors: what a hook returns, what a call fails with, and what a bad configuration says.

use std::fmt;
use std::time::Duration;

use crate::host::HostStatus;

/// The error a hook returns. The SDK turns it into a local reply (status
/// [`Plugin::ERROR_STATUS`](crate::Plugin::ERROR_STATUS) unless the error names one) and an
/// error log line; the stream is never resumed after it.
///
/// Any `std::error::Error` converts into it, so `?` works on call errors, JSON errors and
/// host errors alike.
pub struct Error {
    status: Option<u16>,
    message: String,
}

impl Error {
    /// An error with a message for the log.
    pub fn new(message: impl fmt::Display) -> Self {
        Error {
            status: None,
            message: message.to_string(),
        }
    }

    /// Replies with `status` instead of the plugin's default error status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// The status this error asks for, if any.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The message logged for this error.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error {
            status: None,
            message,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("status", &self.status)
            .field("message", &self.message)
            .finish()
    }
}

/// Why an HTTP call to another cluster failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The proxy refused to dispatch the call: the cluster is not configured in the proxy
    /// (Envoy: `BAD_ARGUMENT`), it has no host to send the call to (Envoy: `INTERNAL_FAILURE`,
    /// and no answer would ever come), or the request lacks `:method`, `:path` or `:authority`.
    /// Add the cluster to the proxy's configuration, or fix its name in the plugin's.
    Refused {
        /// The cluster the call was for.
        cluster: String,
        /// What the host answered.
        status: HostStatus,
    },
    /// No response came within the call's timeout. (Envoy answers such a call itself, with
    /// a `504` whose body is `upstream request timeout`; the SDK hands that answer over as
    /// this error, never as a response.)
    Timeout {
        /// The cluster the call was for.
        cluster: String,
        /// The timeout the call was sent with.
        timeout: Duration,
    },
    /// The upstream could not be reached, or its connection ended before a response began:
    /// refused, reset, closed, or a protocol error. (Envoy answers such a call itself, with a
    /// `503` or `502` whose body begins `upstream connect error or disconnect/reset before
    /// headers`; the SDK hands that answer over as this error, never as a response.)
    Unreachable {
        /// The cluster the call was for.
        cluster: String,
        /// The proxy's reason, e.g. `remote connection failure` (nothing listens; Envoy may add
        /// `, transport failure reason: ...`) or `connection termination`.
        reason: String,
    },
    /// The response began but did not arrive whole: the connection was reset mid-response,
    /// the timeout expired after the headers, or the response outgrew the proxy's buffer
    /// (the host's response callback had no headers).
    NoResponse {
        /// The cluster the call was for.
        cluster: String,
        /// The timeout the call was sent with.
        timeout: Duration,
    },
    /// The response had no valid `:status` (three digits, 100 to 999).
    InvalidStatus {
        /// The cluster that answered.
        cluster: String,
    },
    /// The response lacks a header the plugin asked for with
    /// [`CallResponse::header`](crate::CallResponse::header).
    MissingHeader {
        /// The cluster that answered.
        cluster: String,
        /// The header.
        name: String,
    },
    /// A header or the body is not what the plugin expected (not UTF-8, not the expected JSON).
    InvalidResponse {
        /// The cluster that answered.
        cluster: String,
        /// What was wrong.
        reason: String,
    },
    /// The request could not be built (its JSON body failed to serialize).
    InvalidRequest {
        /// The cluster the call was for.
        cluster: String,
        /// What was wrong.
        reason: String,
    },
    /// The call was made outside a plugin callback, where there is no host to send it to.
    NoHost,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Refused { cluster, status } => write!(
                f,
                "the proxy refused a call to cluster `{cluster}` ({status}): is the cluster configured in the proxy?"
            ),
            CallError::Timeout { cluster, timeout } => write!(
                f,
                "no response from cluster `{cluster}` within the call's timeout ({} ms)",
                timeout.as_millis()
            ),
            CallError::Unreachable { cluster, reason } => write!(
                f,
                "cluster `{cluster}` could not be reached ({reason})"
            ),
            CallError::NoResponse { cluster, timeout } => write!(
                f,
                "the response from cluster `{cluster}` broke off before it was whole (connection reset, or timeout after {} ms)",
                timeout.as_millis()
            ),
            CallError::InvalidStatus { cluster } => {
                write!(f, "response from cluster `{cluster}` has no valid :status")
            }
            CallError::MissingHeader { cluster, name } => {
                write!(f, "response from cluster `{cluster}` has no header `{name}`")
            }
            CallError::InvalidResponse { cluster, reason } => {
                write!(f, "response from cluster `{cluster}` is invalid: {reason}")
            }
            CallError::InvalidRequest { cluster, reason } => {
                write!(f, "request to cluster `{cluster}` could not be built: {reason}")
            }
            CallError::NoHost => f.write_str(
                "an HTTP call was made outside a plugin callback; calls can only be sent from hooks",
            ),
        }
    }
}

impl std::error::Error for CallError {}

/// A plugin configuration the plugin cannot run with. It is logged at error level and the
/// proxy refuses the configuration (`on_configure` returns false).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: Option<String>,
    message: String,
}

impl ConfigError {
    /// An error about one field, named as it is spelled in the JSON (`a.b[0]` for nested ones).
    pub fn field(field: impl Into<String>, message: impl fmt::Display) -> Self {
        ConfigError {
            field: Some(field.into()),
            message: message.to_string(),
        }
    }

    /// An error about the configuration as a whole.
    pub fn new(message: impl fmt::Display) -> Self {
        ConfigError {
            field: None,
            message: message.to_string(),
        }
    }

    /// The field the error is about, if it is about one.
    pub fn field_name(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "invalid plugin configuration: field `{field}`: {}",
                self.message
            ),
            None => write!(f, "invalid plugin configuration: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}
