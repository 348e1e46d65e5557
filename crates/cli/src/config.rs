//! Layered configuration: command-line flags over `COVIDCT_*` environment variables (both
//! resolved by clap) over an optional TOML file, over the library defaults.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The optional TOML configuration file, one table per command (`[data.split]`, `[train]`…).
#[derive(Debug, Default)]
pub struct ConfigFile {
    path: Option<PathBuf>,
    table: toml::Table,
}

impl ConfigFile {
    /// Reads `path` when given; no file means every setting comes from flags, environment or
    /// defaults.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let table = text
            .parse::<toml::Table>()
            .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            table,
        })
    }

    /// Settings of type `T` for the command `section` (dotted, e.g. `data.split`): the file's
    /// table, overridden field by field by every `Some` in `overrides` (flags and environment).
    pub fn resolve<T: DeserializeOwned>(
        &self,
        section: &str,
        overrides: &impl Serialize,
    ) -> Result<T> {
        let mut merged = self.section(section)?;
        let overrides =
            serde_json::to_value(overrides).context("cannot encode command-line settings")?;
        merge(&mut merged, overrides);
        serde_json::from_value(merged).map_err(|error| match &self.path {
            Some(path) => anyhow::anyhow!(
                "invalid settings for `{section}` (config file {} section [{section}], flags and \
                 COVIDCT_* variables): {error}",
                path.display()
            ),
            None => anyhow::anyhow!("invalid settings for `{section}`: {error}"),
        })
    }

    fn section(&self, section: &str) -> Result<Value> {
        let mut current: Option<&toml::Value> = None;
        let mut table = &self.table;
        for (depth, key) in section.split('.').enumerate() {
            match table.get(key) {
                None => return Ok(Value::Object(Default::default())),
                Some(toml::Value::Table(inner)) => {
                    table = inner;
                    current = None;
                }
                Some(other) if depth + 1 == section.split('.').count() => current = Some(other),
                Some(_) => bail!("config key `{key}` must be a table ([{section}])"),
            }
        }
        if let Some(value) = current {
            bail!(
                "config key `{section}` must be a table, found {}",
                value.type_str()
            );
        }
        serde_json::to_value(table).context("cannot convert config table")
    }
}

/// Deep-merges `overrides` into `base`: objects merge key by key, nulls are ignored, anything
/// else replaces.
fn merge(base: &mut Value, overrides: Value) {
    match (base, overrides) {
        (Value::Object(base), Value::Object(overrides)) => {
            for (key, value) in overrides {
                if value.is_null() {
                    continue;
                }
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overrides) => {
            if !overrides.is_null() {
                *base = overrides;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        seed: u64,
        name: String,
        ratio: f64,
    }

    impl Default for Settings {
        fn default() -> Self {
            Self {
                seed: 1,
                name: "default".into(),
                ratio: 0.5,
            }
        }
    }

    #[derive(Serialize)]
    struct Flags {
        seed: Option<u64>,
        name: Option<String>,
    }

    fn file(text: &str) -> (tempfile::TempDir, ConfigFile) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("covidct.toml");
        std::fs::write(&path, text).expect("write");
        let config = ConfigFile::load(Some(&path)).expect("load");
        (dir, config)
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let (_dir, config) = file("[data.split]\nseed = 7\nname = \"file\"\n");
        let flags = Flags {
            seed: Some(9),
            name: None,
        };
        let settings: Settings = config.resolve("data.split", &flags).expect("resolve");
        assert_eq!(
            settings,
            Settings {
                seed: 9,
                name: "file".into(),
                ratio: 0.5
            }
        );
        let none = Flags {
            seed: None,
            name: None,
        };
        let settings: Settings = ConfigFile::default()
            .resolve("data.split", &none)
            .expect("resolve");
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn unknown_keys_name_the_file_and_section() {
        let (_dir, config) = file("[data.split]\nsede = 7\n");
        let flags = Flags {
            seed: None,
            name: None,
        };
        let error = config
            .resolve::<Settings>("data.split", &flags)
            .expect_err("typo");
        let text = error.to_string();
        assert!(
            text.contains("covidct.toml") && text.contains("sede"),
            "{text}"
        );
    }

    #[test]
    fn malformed_toml_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[data\nseed = ").expect("write");
        let error = ConfigFile::load(Some(&path)).expect_err("bad toml");
        assert!(format!("{error:#}").contains("bad.toml"));
    }
}
