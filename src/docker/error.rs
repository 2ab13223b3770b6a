//! The Docker driver's error type and the one place that maps Engine API failures onto it.

use std::time::Duration;

use bollard::errors::Error as BollardError;

/// What went wrong talking to dockerd. Callers branch on the first four variants: reconcilers
/// report `RuntimeUnavailable`, `ImageNotFound`, or treat `NotFound` as "gone".
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// dockerd cannot be reached: the socket is missing, refused the connection, the call timed
    /// out, or the stream broke. Retry later; nothing on the host was changed by tend.
    #[error("docker unavailable at {socket} during {op}: {reason}")]
    Unavailable {
        /// The Engine API operation that failed.
        op: &'static str,
        /// The unix socket path tend talks to.
        socket: String,
        /// Why: refused, timed out after N s, socket missing, …
        reason: String,
    },
    /// The image is not present locally (tend never pulls).
    #[error("image {image:?} not found locally")]
    ImageNotFound {
        /// The image reference that was asked for.
        image: String,
    },
    /// The container does not exist (any more).
    #[error("container {container:?} not found")]
    NotFound {
        /// The container id or name that was asked for.
        container: String,
    },
    /// A name is already taken (409 from dockerd), e.g. a container `tend-<uid>` already exists.
    #[error("{op} {object:?}: conflict: {message}")]
    Conflict {
        /// The Engine API operation.
        op: &'static str,
        /// The container or network name.
        object: String,
        /// dockerd's message.
        message: String,
    },
    /// Reading a rootfs to import failed.
    #[error("import of {source_path} as {image}: {err}")]
    ImportSource {
        /// The directory or tarball being imported.
        source_path: String,
        /// The target `repo:tag`.
        image: String,
        /// The I/O error.
        err: std::io::Error,
    },
    /// Any other failure dockerd reported.
    #[error("{op} {object:?}: {message}")]
    Other {
        /// The Engine API operation.
        op: &'static str,
        /// The container, image or network involved.
        object: String,
        /// dockerd's (or bollard's) message.
        message: String,
    },
}

/// Which kind of object a 404 refers to in the operation that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Container,
    Image,
    /// A 404 from container create: dockerd says "No such image".
    CreateContainer,
}

/// Context for mapping one failed call: operation, object name and the socket.
pub(crate) struct Ctx<'a> {
    pub op: &'static str,
    pub object: &'a str,
    pub target: Target,
    pub socket: &'a str,
}

impl Ctx<'_> {
    /// The error for a call that did not answer within `after`.
    pub fn timeout(&self, after: Duration) -> DockerError {
        self.unavailable(format!("timed out after {after:?}"))
    }

    /// An `Unavailable` error for this call with `reason`.
    pub fn unavailable(&self, reason: String) -> DockerError {
        DockerError::Unavailable {
            op: self.op,
            socket: self.socket.to_string(),
            reason,
        }
    }

    /// Maps a bollard error to a `DockerError`, using the context to decide what a 404 means.
    pub fn map(&self, err: BollardError) -> DockerError {
        match err {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => self.status(status_code, message),
            BollardError::RequestTimeoutError => self.unavailable("request timed out".into()),
            BollardError::SocketNotFoundError(path) => {
                self.unavailable(format!("socket {path} not found"))
            }
            e @ (BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::IOError { .. }
            | BollardError::HttpClientError { .. }) => self.unavailable(e.to_string()),
            BollardError::DockerStreamError { error } => self.other(error),
            e => self.other(e.to_string()),
        }
    }

    fn status(&self, code: u16, message: String) -> DockerError {
        let object = self.object.to_string();
        match (code, self.target) {
            (404, Target::Container) => DockerError::NotFound { container: object },
            (404, Target::Image) => DockerError::ImageNotFound { image: object },
            (404, Target::CreateContainer) if message.contains("image") => {
                DockerError::ImageNotFound { image: object }
            }
            (409, _) => DockerError::Conflict {
                op: self.op,
                object,
                message,
            },
            _ => self.other(format!("status {code}: {message}")),
        }
    }

    fn other(&self, message: String) -> DockerError {
        DockerError::Other {
            op: self.op,
            object: self.object.to_string(),
            message,
        }
    }
}

impl DockerError {
    /// True when dockerd could not be reached: the caller should report `RuntimeUnavailable`.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DockerError::Unavailable { .. })
    }

    /// True when the container is gone (deletion may treat this as done).
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(target: Target) -> Ctx<'static> {
        Ctx {
            op: "test",
            object: "busybox:nope",
            target,
            socket: "/run/docker.sock",
        }
    }

    fn server(code: u16, msg: &str) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code: code,
            message: msg.into(),
        }
    }

    #[test]
    fn a_404_means_what_the_call_was_about() {
        let e = ctx(Target::CreateContainer).map(server(404, "No such image: busybox:nope"));
        assert!(matches!(e, DockerError::ImageNotFound { ref image } if image == "busybox:nope"));
        let e = ctx(Target::Container).map(server(404, "No such container: x"));
        assert!(e.is_not_found());
    }

    #[test]
    fn transport_failures_are_unavailable() {
        assert!(ctx(Target::Container)
            .map(BollardError::RequestTimeoutError)
            .is_unavailable());
        assert!(ctx(Target::Container)
            .map(BollardError::SocketNotFoundError("/x".into()))
            .is_unavailable());
        assert!(!ctx(Target::Container)
            .map(server(500, "boom"))
            .is_unavailable());
    }
}
