//! What a command prints and how it exits.

use std::process::ExitCode;

/// What a command printed and its exit code: 0 success, 1 a check failed (an expectation,
/// an invariant, a fuzz case), 2 bad input (already reported on stderr).
pub(crate) struct Done {
    pub(crate) stdout: String,
    pub(crate) code: u8,
}

impl Done {
    pub(crate) fn ok(stdout: String) -> Self {
        Self { stdout, code: 0 }
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error worth a panic.
pub(crate) fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// Reports a bad input: one line on stderr, exit 2.
pub(crate) fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}
