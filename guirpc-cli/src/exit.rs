//! Exit codes a script can branch on, and the one-line error report behind them.

use std::process::ExitCode;

/// What a `guirpc` command's exit code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The command did what it was asked.
    Ok = 0,
    /// The remote function failed or refused the call.
    Remote = 1,
    /// Bad usage or configuration.
    Usage = 2,
    /// The broker could not be reached or failed.
    Connection = 3,
    /// No reply in time.
    Timeout = 4,
    /// No service queue for the call.
    NoRoute = 5,
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
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn report(self) -> ExitCode {
        report(self.exit, &self.message, self.hint.as_deref())
    }
}

pub(crate) fn report(exit: Exit, message: &str, hint: Option<&str>) -> ExitCode {
    eprintln!("error: {message}");
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
    exit.into()
}
