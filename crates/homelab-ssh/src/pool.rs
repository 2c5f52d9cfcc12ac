//! Connections to many hosts, one per host, reused.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use tokio::sync::Mutex;

use crate::{Cmd, Output, Session, SshError, SshOptions, Target, load_key};

/// Connections to many hosts, one per host, reused; a dropped connection is replaced, with
/// exponential backoff between attempts.
pub struct Pool {
    options: SshOptions,
    key: Arc<PrivateKey>,
    /// One slot per host; a slot is locked only while its host is being connected, so
    /// different hosts connect in parallel and one host is never connected twice at once.
    sessions: Mutex<HashMap<Target, Slot>>,
}

/// The session of one host, if connected.
type Slot = Arc<Mutex<Option<Arc<Session>>>>;

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool logging in with `options.private_key`.
    ///
    /// # Errors
    /// The key cannot be loaded.
    pub fn new(options: SshOptions) -> Result<Self, SshError> {
        let key = load_key(&options.private_key)?;
        Ok(Self {
            options,
            key,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The session to `target`, connecting (with retries) when there is none or it closed.
    ///
    /// # Errors
    /// Every attempt failed; host key and login errors are not retried.
    pub async fn session(&self, target: &Target) -> Result<Arc<Session>, SshError> {
        let slot = self
            .sessions
            .lock()
            .await
            .entry(target.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(s) = slot.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        let session = loop {
            match Session::connect(target, &self.options, &self.key).await {
                Ok(s) => break Arc::new(s),
                Err(e) if e.is_connection_error() && attempt < self.options.attempts.max(1) => {
                    tracing::debug!(host = %target.name, attempt, error = %e, "connect failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(8));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        *slot = Some(session.clone());
        Ok(session)
    }

    /// Forgets the session to `target` (the next use reconnects).
    pub async fn forget(&self, target: &Target) {
        let slot = self.sessions.lock().await.get(target).cloned();
        if let Some(slot) = slot {
            *slot.lock().await = None;
        }
    }

    /// Runs `cmd` on `target`; when the connection broke, reconnects once and runs it again.
    ///
    /// # Errors
    /// As [`Session::run`].
    pub async fn run(&self, target: &Target, cmd: &Cmd) -> Result<Output, SshError> {
        let session = self.session(target).await?;
        match session.run(cmd).await {
            Err(e) if e.is_connection_error() || session.is_closed() => {
                self.forget(target).await;
                self.session(target).await?.run(cmd).await
            }
            other => other,
        }
    }
}
