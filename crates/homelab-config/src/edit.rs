//! Changing one value of a `homelab.toml` in place: comments, order and formatting of
//! everything else are kept, and the result must still be a valid configuration.

use toml_edit::{DocumentMut, Item, Table, value};

use crate::{KeyPath, Report, Segment};

/// Why a value could not be set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The file is not TOML.
    #[error("the file is not valid TOML: {0}")]
    Parse(#[from] toml_edit::TomlError),
    /// The key names no table entry (`nodes[0].name` style paths are not editable here).
    #[error("`{0}` is not a key of a table")]
    Key(String),
    /// The file would no longer be a valid configuration.
    #[error("the file would no longer be valid:\n{0}")]
    Invalid(Box<Report>),
}

/// `text` with the string at `key` (`cluster.kubernetes_version`) set to `new`, creating the
/// table and key when the file does not have them. The result is parsed and validated.
///
/// # Errors
/// The text is not TOML, the key is not a table key, or the result is not a valid file.
pub fn set_string(text: &str, key: &str, new: &str) -> Result<String, EditError> {
    let mut doc: DocumentMut = text.parse()?;
    let path = KeyPath::parse(key).ok_or_else(|| EditError::Key(key.to_owned()))?;
    let (last, tables) = path
        .segments()
        .split_last()
        .ok_or_else(|| EditError::Key(key.to_owned()))?;
    let mut table: &mut Table = doc.as_table_mut();
    for segment in tables {
        let Segment::Key(name) = segment else {
            return Err(EditError::Key(key.to_owned()));
        };
        let entry = table.entry(name).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(false);
            Item::Table(t)
        });
        table = entry
            .as_table_mut()
            .ok_or_else(|| EditError::Key(key.to_owned()))?;
    }
    let Segment::Key(name) = last else {
        return Err(EditError::Key(key.to_owned()));
    };
    match table.get_mut(name).and_then(Item::as_value_mut) {
        // Keep the comment after the value and the spacing around it.
        Some(existing) => {
            let decor = existing.decor().clone();
            *existing = toml_edit::Value::from(new);
            *existing.decor_mut() = decor;
        }
        None => {
            table.insert(name, value(new));
        }
    }
    let out = doc.to_string();
    crate::parse_str("homelab.toml", &out).map_err(|r| EditError::Invalid(Box::new(r)))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_changes_and_every_comment_stays() {
        let text = "# my lab\n[cluster]\nname = \"lab\"  # the name\nkubernetes_version = \"1.33.5\"  # pinned\n\n[ssh]\nuser = \"me\"\n";
        let out = set_string(text, "cluster.kubernetes_version", "1.33.6").unwrap();
        assert_eq!(
            out,
            "# my lab\n[cluster]\nname = \"lab\"  # the name\nkubernetes_version = \"1.33.6\"  # pinned\n\n[ssh]\nuser = \"me\"\n"
        );
    }

    #[test]
    fn a_missing_key_or_table_is_added() {
        let out = set_string(
            "[ssh]\nuser = \"me\"\n",
            "cluster.kubernetes_version",
            "1.34.1",
        )
        .unwrap();
        let loaded = crate::parse_str("homelab.toml", &out).unwrap();
        assert_eq!(
            loaded.config.cluster.kubernetes_version.to_string(),
            "1.34.1"
        );
        assert!(out.starts_with("[ssh]\nuser = \"me\"\n"), "{out}");
    }

    #[test]
    fn a_value_the_file_cannot_hold_is_refused() {
        let err = set_string("", "cluster.kubernetes_version", "one.two").unwrap_err();
        assert!(matches!(err, EditError::Invalid(_)), "{err}");
        assert!(
            err.to_string().contains("cluster.kubernetes_version"),
            "{err}"
        );
        let err = set_string("", "nodes[0].name", "x").unwrap_err();
        assert!(matches!(err, EditError::Key(_)), "{err}");
    }
}
