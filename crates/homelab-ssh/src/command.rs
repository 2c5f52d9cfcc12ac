//! Commands, their input and their output.

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Bytes sent to a command's standard input; never printed.
#[derive(Clone, Default)]
pub struct Stdin(pub Vec<u8>);

impl fmt::Debug for Stdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stdin([{} bytes, redacted])", self.0.len())
    }
}

/// A command to run on a host.
///
/// ```
/// use std::time::Duration;
/// use homelab_ssh::{Cmd, shell_quote};
///
/// let path = "/etc/kubernetes/admin conf";
/// let cmd = Cmd::new(format!("cat {}", shell_quote(path)))
///     .sudo()
///     .timeout(Duration::from_secs(10));
/// // Under sudo the line runs in `sh -c`, quoted once more; sudo never prompts.
/// assert_eq!(cmd.wire_line(), r#"sudo -n -- sh -c 'cat '\''/etc/kubernetes/admin conf'\'''"#);
/// // Standard input never shows in Debug output: it may be a key or a token.
/// let cmd = Cmd::new("sudo tee /root/token").stdin("s3cret");
/// assert!(!format!("{cmd:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone)]
pub struct Cmd {
    /// The command line (run by the login shell, or `sh -c` under sudo).
    pub line: String,
    /// Run as root with `sudo -n` (never prompts: fails instead).
    pub sudo: bool,
    /// Standard input.
    pub stdin: Option<Stdin>,
    /// Time limit.
    pub timeout: Duration,
}

impl Cmd {
    /// A command as the login user with a 5-minute limit.
    pub fn new(line: impl Into<String>) -> Self {
        Self {
            line: line.into(),
            sudo: false,
            stdin: None,
            timeout: Duration::from_secs(300),
        }
    }

    /// The same command as root.
    #[must_use]
    pub fn sudo(mut self) -> Self {
        self.sudo = true;
        self
    }

    /// With standard input.
    #[must_use]
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(Stdin(data.into()));
        self
    }

    /// With a time limit.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What is sent to the server.
    pub fn wire_line(&self) -> String {
        if self.sudo {
            format!("sudo -n -- sh -c {}", shell_quote(&self.line))
        } else {
            self.line.clone()
        }
    }
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A finished command. Its `Debug` shows the sizes of the streams, never their bytes (what
/// a command prints may be a kubeconfig or a token list).
#[derive(Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit status.
    pub exit_status: u32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("exit_status", &self.exit_status)
            .field("stdout", &Redacted(&self.stdout))
            .field("stderr", &Redacted(&self.stderr))
            .finish()
    }
}

impl Output {
    /// Standard output as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last `n` lines of standard error.
    pub fn stderr_tail(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Bytes in `Debug` output: their size and digest, never the bytes (a join configuration
/// holds a bootstrap token, a kubeconfig a client key, a command's output either).
pub struct Redacted<'a>(pub &'a [u8]);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digest = hex::encode(Sha256::digest(self.0));
        write!(f, "<{} bytes, sha256 {}…>", self.0.len(), &digest[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_output_is_never_shown_in_debug() {
        let out = Output {
            exit_status: 0,
            stdout: b"client-key-data: c2VjcmV0LWtleQ==\n".to_vec(),
            stderr: b"token abcdef.0123456789abcdef\n".to_vec(),
        };
        let shown = format!("{out:?}");
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("0123456789abcdef"),
            "{shown}"
        );
        assert!(
            shown.contains("exit_status: 0") && shown.contains("34 bytes"),
            "{shown}"
        );
    }

    #[test]
    fn sudo_wraps_and_quotes() {
        let cmd = Cmd::new("echo 'it''s' && id -u").sudo();
        assert_eq!(
            cmd.wire_line(),
            r"sudo -n -- sh -c 'echo '\''it'\'''\''s'\'' && id -u'"
        );
        assert_eq!(Cmd::new("true").wire_line(), "true");
    }

    #[test]
    fn stdin_is_redacted_in_debug() {
        let cmd = Cmd::new("cat").stdin(b"abcdef.0123456789abcdef".to_vec());
        let text = format!("{cmd:?}");
        assert!(!text.contains("abcdef"), "{text}");
        assert!(text.contains("23 bytes, redacted"));
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let out = Output {
            exit_status: 1,
            stdout: vec![],
            stderr: b"a\nb\nc\nd\n".to_vec(),
        };
        assert_eq!(out.stderr_tail(2), "c\nd");
    }
}
