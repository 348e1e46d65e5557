//! The exit statuses of `covidct`, one type for every command.

/// What a command's exit status tells a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Done.
    Success = 0,
    /// Something failed (an input that could not be read, say); details on standard error.
    Failure = 1,
    /// A check the command enforces said no: the quality gate refused a promotion,
    /// `--deny-warnings` found warnings, `--deny-shortcut` found a shortcut.
    Refused = 3,
    /// The model refused to judge some input (out of distribution, too few usable slices).
    OutOfDistribution = 4,
    /// Interrupted by Ctrl-C after saving a checkpoint (128 + SIGINT).
    Interrupted = 130,
}

impl ExitStatus {
    /// [`ExitStatus::Refused`] when `refused`, else success.
    pub fn refused_if(refused: bool) -> Self {
        if refused {
            Self::Refused
        } else {
            Self::Success
        }
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(status: ExitStatus) -> Self {
        Self::from(status as u8)
    }
}
