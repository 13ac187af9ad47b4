//! Exit codes a script can branch on, and the one-line error report behind them.

use std::process::ExitCode;

use guirpc_core::{Error, ErrorCode};

/// What a `guirpc` command's exit code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The command did what it was asked.
    Ok = 0,
    /// The remote function failed or refused the call (for `call --stdin`: some line did).
    Remote = 1,
    /// Bad usage or configuration.
    Usage = 2,
    /// The broker could not be reached or failed.
    Connection = 3,
    /// No reply in time.
    Timeout = 4,
    /// No service queue for the call.
    NoRoute = 5,
    /// Stopped by a second Ctrl-C or SIGTERM without waiting for running calls (128 + SIGINT,
    /// as shells report an interrupted program).
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// A command's failure: the exit code, a message, and maybe a hint.
#[derive(Debug)]
pub(crate) struct Failure {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The exit code alone: the command has said all there is to say.
    pub(crate) fn silent(exit: Exit) -> Self {
        Failure::new(exit, "")
    }

    pub(crate) fn report(self) -> ExitCode {
        report(self.exit, &self.message, self.hint.as_deref())
    }
}

impl<E: std::fmt::Display> From<Error<E>> for Failure {
    fn from(err: Error<E>) -> Failure {
        let message = err.to_string();
        match &err {
            Error::Timeout { queue, .. } => Failure::new(Exit::Timeout, message).hint(format!(
                "queue `{queue}` exists but no server answered in time: is one running? a slow function needs a larger --timeout"
            )),
            Error::NoRoute { queue, .. } => Failure::new(Exit::NoRoute, message).hint(format!(
                "no server has declared queue `{queue}`: start the service, or check --queue / GUIRPC_QUEUE"
            )),
            Error::Connection { .. } => Failure::new(Exit::Connection, message).hint(
                "is RabbitMQ running? start it with `rabbitmq-server -detached`, or point --uri / GUIRPC_URI at your broker",
            ),
            Error::Remote(remote) if remote.code() == &ErrorCode::NotFound => {
                Failure::new(Exit::Remote, message).hint("`guirpc list` shows what the service serves")
            }
            Error::Remote(remote) if remote.code() == &ErrorCode::BadRequest => {
                Failure::new(Exit::Remote, message).hint("`guirpc list` shows each function's parameters")
            }
            Error::Config(_) => Failure::new(Exit::Usage, message),
            Error::TooLarge { .. } => Failure::new(Exit::Usage, message).hint(
                "send less, or raise client.max_message_size (GUIRPC_CLIENT_MAX_MESSAGE_SIZE) together with the broker's max_message_size",
            ),
            _ => Failure::new(Exit::Remote, message),
        }
    }
}

pub(crate) fn report(exit: Exit, message: &str, hint: Option<&str>) -> ExitCode {
    if !message.is_empty() {
        eprintln!("error: {message}");
    }
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
    exit.into()
}
