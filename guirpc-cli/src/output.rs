//! Standard output for results. A reader that goes away early (`guirpc list | head -1`)
//! is not an error: the command ends quietly, with success, as `head` meant it to.

use std::fmt;
use std::io::{ErrorKind, Write};

use crate::exit::{Exit, report};

/// Prints a line of results on standard output.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

pub(crate) fn write_line(line: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{line}").and_then(|()| out.flush());
    if let Err(err) = written {
        closed_or_failed(&err);
    }
}

/// Writes bytes as they are, on the same terms as [`outln!`].
pub(crate) fn write_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_all(bytes).and_then(|()| out.flush()) {
        closed_or_failed(&err);
    }
}

/// Ends the program: quietly when the reader closed the pipe, with a message otherwise.
pub(crate) fn closed_or_failed(err: &std::io::Error) -> ! {
    if err.kind() == ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = report(
        Exit::Usage,
        &format!("cannot write to standard output: {err}"),
        None,
    );
    std::process::exit(Exit::Usage as i32)
}
