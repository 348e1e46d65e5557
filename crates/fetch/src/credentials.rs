//! Kaggle credentials: `KAGGLE_USERNAME`/`KAGGLE_KEY`, then `kaggle.json`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::FetchError;

/// A Kaggle username and API key. `Debug` does not print the key.
#[derive(Clone, PartialEq, Eq)]
pub struct KaggleCredentials {
    /// The Kaggle username.
    pub username: String,
    /// The Kaggle API key (secret).
    pub key: String,
}

impl fmt::Debug for KaggleCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KaggleCredentials")
            .field("username", &self.username)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The inputs credentials are resolved from, made explicit so resolution is testable without
/// touching the process environment. [`CredentialSources::from_process`] fills it from the
/// process environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialSources {
    /// Value of `KAGGLE_USERNAME`.
    pub username_env: Option<String>,
    /// Value of `KAGGLE_KEY`.
    pub key_env: Option<String>,
    /// Value of `KAGGLE_CONFIG_DIR`: the folder holding `kaggle.json`.
    pub config_dir_env: Option<PathBuf>,
    /// The user's home folder (`HOME`, or `USERPROFILE` on Windows); `kaggle.json` is looked
    /// for in `{home}/.kaggle/` when `KAGGLE_CONFIG_DIR` is not set.
    pub home_dir: Option<PathBuf>,
}

impl CredentialSources {
    /// Reads `KAGGLE_USERNAME`, `KAGGLE_KEY`, `KAGGLE_CONFIG_DIR` and the home folder from the
    /// process environment. Empty values count as unset.
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Self {
            username_env: var("KAGGLE_USERNAME").map(|v| v.to_string_lossy().into_owned()),
            key_env: var("KAGGLE_KEY").map(|v| v.to_string_lossy().into_owned()),
            config_dir_env: var("KAGGLE_CONFIG_DIR").map(PathBuf::from),
            home_dir: var("HOME")
                .or_else(|| var("USERPROFILE"))
                .map(PathBuf::from),
        }
    }

    /// Where `kaggle.json` is looked for: `$KAGGLE_CONFIG_DIR/kaggle.json`, else
    /// `~/.kaggle/kaggle.json` (relative `.kaggle/kaggle.json` when no home folder is known).
    pub fn config_path(&self) -> PathBuf {
        match (&self.config_dir_env, &self.home_dir) {
            (Some(dir), _) => dir.join("kaggle.json"),
            (None, Some(home)) => home.join(".kaggle").join("kaggle.json"),
            (None, None) => Path::new(".kaggle").join("kaggle.json"),
        }
    }
}

/// The content of `kaggle.json`.
#[derive(Deserialize)]
struct KaggleJson {
    username: Option<String>,
    key: Option<String>,
}

impl KaggleCredentials {
    /// Resolves credentials from the process environment: `KAGGLE_USERNAME` and `KAGGLE_KEY`
    /// win; a value they don't give is read from `kaggle.json` (in `KAGGLE_CONFIG_DIR`, else
    /// `~/.kaggle/`). See [`KaggleCredentials::resolve`].
    pub fn from_environment() -> Result<Self, FetchError> {
        Self::resolve(&CredentialSources::from_process())
    }

    /// Resolves credentials from explicit inputs: each of username and key comes from its
    /// environment variable if set and non-empty, otherwise from `kaggle.json` at
    /// [`CredentialSources::config_path`]. The file is only read when needed.
    pub fn resolve(sources: &CredentialSources) -> Result<Self, FetchError> {
        let env_username = non_empty(&sources.username_env);
        let env_key = non_empty(&sources.key_env);
        if let (Some(username), Some(key)) = (env_username, env_key) {
            return Ok(Self {
                username: username.to_owned(),
                key: key.to_owned(),
            });
        }

        let config_path = sources.config_path();
        let from_file = Self::read_file_fields(&config_path)?;
        let (file_username, file_key) = match &from_file {
            Some(json) => (non_empty(&json.username), non_empty(&json.key)),
            None => (None, None),
        };
        let username = env_username.or(file_username);
        let key = env_key.or(file_key);
        match (username, key) {
            (Some(username), Some(key)) => Ok(Self {
                username: username.to_owned(),
                key: key.to_owned(),
            }),
            (username, key) => {
                if from_file.is_some() {
                    let missing = if username.is_none() {
                        "username"
                    } else {
                        "key"
                    };
                    return Err(FetchError::InvalidCredentialsFile {
                        path: config_path,
                        reason: format!("it has no non-empty \"{missing}\""),
                    });
                }
                let mut missing = Vec::new();
                if username.is_none() {
                    missing.push("KAGGLE_USERNAME is not set");
                }
                if key.is_none() {
                    missing.push("KAGGLE_KEY is not set");
                }
                missing.push("no kaggle.json");
                Err(FetchError::MissingCredentials {
                    config_path,
                    missing: missing.join(", "),
                })
            }
        }
    }

    /// Reads the credentials in a `kaggle.json` file; both fields must be present.
    pub fn from_file(path: &Path) -> Result<Self, FetchError> {
        let json = Self::read_file_fields(path)?.ok_or_else(|| FetchError::MissingCredentials {
            config_path: path.to_path_buf(),
            missing: "the file does not exist".to_owned(),
        })?;
        match (json.username, json.key) {
            (Some(username), Some(key))
                if !username.trim().is_empty() && !key.trim().is_empty() =>
            {
                Ok(Self {
                    username: username.trim().to_owned(),
                    key: key.trim().to_owned(),
                })
            }
            _ => Err(FetchError::InvalidCredentialsFile {
                path: path.to_path_buf(),
                reason: "it needs non-empty \"username\" and \"key\"".to_owned(),
            }),
        }
    }

    /// `Ok(None)` when the file does not exist; an error when it exists but is unusable.
    fn read_file_fields(path: &Path) -> Result<Option<KaggleJson>, FetchError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(FetchError::InvalidCredentialsFile {
                    path: path.to_path_buf(),
                    reason: format!("cannot read it: {e}"),
                });
            }
        };
        warn_if_readable_by_others(path);
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| FetchError::InvalidCredentialsFile {
                path: path.to_path_buf(),
                reason: format!("invalid JSON: {e}"),
            })
    }
}

/// The trimmed value, when set and not blank.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let shared = std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o077 != 0);
    if shared {
        tracing::warn!(path = %path.display(), "Kaggle credentials file is readable by other users; run `chmod 600` on it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(dir: &Path, content: &str) {
        std::fs::write(dir.join("kaggle.json"), content).expect("write kaggle.json");
    }

    #[test]
    fn debug_hides_the_key() {
        let creds = KaggleCredentials {
            username: "alice".into(),
            key: "s3cr3t-key".into(),
        };
        let shown = format!("{creds:?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains("s3cr3t-key"), "{shown}");
    }

    #[test]
    fn env_wins_over_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_config(dir.path(), r#"{"username":"file-user","key":"file-key"}"#);
        let sources = CredentialSources {
            username_env: Some("env-user".into()),
            key_env: Some("env-key".into()),
            config_dir_env: Some(dir.path().to_path_buf()),
            home_dir: None,
        };
        let creds = KaggleCredentials::resolve(&sources).expect("resolve");
        assert_eq!(
            creds,
            KaggleCredentials {
                username: "env-user".into(),
                key: "env-key".into()
            }
        );
    }

    #[test]
    fn env_wins_even_over_a_broken_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_config(dir.path(), "not json");
        let sources = CredentialSources {
            username_env: Some("u".into()),
            key_env: Some("k".into()),
            config_dir_env: Some(dir.path().to_path_buf()),
            home_dir: None,
        };
        assert!(KaggleCredentials::resolve(&sources).is_ok());
    }

    #[test]
    fn file_in_kaggle_config_dir_is_used_before_home() {
        let config = tempfile::tempdir().expect("tempdir");
        let home = tempfile::tempdir().expect("tempdir");
        write_config(config.path(), r#"{"username":"cfg-user","key":"cfg-key"}"#);
        std::fs::create_dir(home.path().join(".kaggle")).expect("mkdir");
        write_config(
            &home.path().join(".kaggle"),
            r#"{"username":"home-user","key":"home-key"}"#,
        );
        let mut sources = CredentialSources {
            config_dir_env: Some(config.path().to_path_buf()),
            home_dir: Some(home.path().to_path_buf()),
            ..CredentialSources::default()
        };
        let creds = KaggleCredentials::resolve(&sources).expect("resolve");
        assert_eq!(creds.username, "cfg-user");
        assert_eq!(creds.key, "cfg-key");

        sources.config_dir_env = None;
        let creds = KaggleCredentials::resolve(&sources).expect("resolve from home");
        assert_eq!(creds.username, "home-user");
    }

    #[test]
    fn one_env_var_overrides_one_field_of_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_config(dir.path(), r#"{"username":"file-user","key":"file-key"}"#);
        let sources = CredentialSources {
            key_env: Some("env-key".into()),
            username_env: Some("   ".into()),
            config_dir_env: Some(dir.path().to_path_buf()),
            home_dir: None,
        };
        let creds = KaggleCredentials::resolve(&sources).expect("resolve");
        assert_eq!(creds.username, "file-user");
        assert_eq!(creds.key, "env-key");
    }

    #[test]
    fn missing_credentials_say_where_to_put_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = CredentialSources {
            username_env: Some("only-user".into()),
            config_dir_env: Some(dir.path().to_path_buf()),
            ..CredentialSources::default()
        };
        let err = KaggleCredentials::resolve(&sources).expect_err("must fail");
        assert!(
            matches!(err, FetchError::MissingCredentials { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        let expected_path = dir.path().join("kaggle.json");
        assert!(
            message.contains(&expected_path.display().to_string()),
            "{message}"
        );
        assert!(
            message.contains("KAGGLE_USERNAME") && message.contains("KAGGLE_KEY"),
            "{message}"
        );
        assert!(message.contains("KAGGLE_KEY is not set"), "{message}");
        assert!(!message.contains("KAGGLE_USERNAME is not set"), "{message}");
    }

    #[test]
    fn broken_or_incomplete_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = CredentialSources {
            config_dir_env: Some(dir.path().to_path_buf()),
            ..CredentialSources::default()
        };
        for content in [
            "{not json",
            r#"{"username":"u"}"#,
            r#"{"username":"u","key":""}"#,
        ] {
            write_config(dir.path(), content);
            let err = KaggleCredentials::resolve(&sources).expect_err("must fail");
            assert!(
                matches!(err, FetchError::InvalidCredentialsFile { .. }),
                "{content}: {err:?}"
            );
            assert!(err.to_string().contains("kaggle.json"), "{err}");
            assert!(KaggleCredentials::from_file(&dir.path().join("kaggle.json")).is_err());
        }
    }

    #[test]
    fn config_path_defaults_to_home() {
        let sources = CredentialSources {
            home_dir: Some("/home/u".into()),
            ..CredentialSources::default()
        };
        assert_eq!(
            sources.config_path(),
            Path::new("/home/u/.kaggle/kaggle.json")
        );
    }
}
