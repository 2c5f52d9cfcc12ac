//! Credentials and the clients made from them.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use harbor_client::harbor::{Harbor, HarborOptions};
use harbor_client::registry::{Credentials, Options, Registry};
use secrecy::SecretString;
use serde::Serialize;

use crate::cli::Global;

/// Reads the password from the places allowed for it.
pub(crate) fn password(global: &Global) -> Result<Option<SecretString>> {
    if let Some(path) = &global.password_file {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("--password-file {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "--password-file {}: mode {mode:04o} lets others read it; run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--password-file {}", path.display()))?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned().into()));
    }
    if global.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned().into()));
    }
    Ok(std::env::var("HARBOR_PASSWORD")
        .ok()
        .map(SecretString::from))
}

pub(crate) struct Ctx {
    pub(crate) credentials: Credentials,
    pub(crate) options: Options,
    pub(crate) json: bool,
    pub(crate) parallel: usize,
    pub(crate) global_url: Option<String>,
    pub(crate) ca_file: Option<PathBuf>,
}

impl Ctx {
    pub(crate) fn registry(&self, host: &str) -> Result<Registry> {
        Ok(Registry::new(
            host,
            self.credentials.clone(),
            self.options.clone(),
        )?)
    }

    /// A Harbor client whose credentials Harbor accepted (a wrong password would otherwise
    /// make every call anonymous).
    pub(crate) async fn harbor(&self) -> Result<Harbor> {
        let url = self
            .global_url
            .as_deref()
            .context("this command talks to Harbor's API: give --url or $HARBOR_URL")?;
        let Credentials::Basic { username, password } = &self.credentials else {
            bail!(
                "this command needs a user: give --username (or $HARBOR_USERNAME) and a password"
            );
        };
        let harbor = Harbor::new(
            url,
            username,
            password.clone(),
            &HarborOptions::default()
                .ca_file(self.ca_file.clone())
                .plain_http(self.options.plain_http),
        )?;
        harbor.check_login().await?;
        Ok(harbor)
    }

    pub(crate) fn print<T: Serialize>(&self, value: &T, text: impl FnOnce(&T)) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            text(value);
        }
        Ok(())
    }
}
