//! Parsing of the URIs MLflow hands out: proxied artifact locations and registry model URIs.

use std::fmt;

use crate::TrackingError;

/// The scheme of artifact locations served through the tracking server's artifact proxy.
const ARTIFACTS_SCHEME: &str = "mlflow-artifacts:";

/// A location in the tracking server's artifact proxy: `mlflow-artifacts:/<path>` or
/// `mlflow-artifacts://<host:port>/<path>`, as in [`RunInfo::artifact_uri`] and
/// [`LoggedModel::artifact_location`] when the server proxies artifacts (`mlflow server` does by
/// default).
///
/// [`RunInfo::artifact_uri`]: crate::RunInfo::artifact_uri
/// [`LoggedModel::artifact_location`]: crate::LoggedModel::artifact_location
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArtifactUri {
    authority: Option<String>,
    path: String,
}

impl ArtifactUri {
    /// Parses `mlflow-artifacts:/1/<run_id>/artifacts` or
    /// `mlflow-artifacts://host:5000/1/<run_id>/artifacts`.
    ///
    /// The path must not contain `.`, `..` or empty segments, backslashes, control characters,
    /// `?` or `#`. Any other scheme (`s3://`, `file:`, `runs:/`, a plain path) is refused: those
    /// locations are not reachable through the server's proxy.
    pub fn parse(uri: &str) -> Result<Self, TrackingError> {
        let invalid = |reason: &str| TrackingError::InvalidUri {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let Some(rest) = strip_prefix_ignore_case(uri, ARTIFACTS_SCHEME) else {
            let scheme = uri.split_once(':').map(|(s, _)| s).unwrap_or("");
            let reason = match scheme {
                "runs" => "a runs:/ URI names a run's artifact, not a location: use the run's \
                           artifact_uri (mlflow-artifacts:/...) from get_run"
                    .to_owned(),
                "" => "not a URI: expected mlflow-artifacts:/<path> (the server's artifact \
                       proxy); start the server with --serve-artifacts (the default) so that \
                       runs get such locations"
                    .to_owned(),
                other => format!(
                    "scheme '{other}:' is not served through the tracking server: only \
                     mlflow-artifacts:/<path> locations are supported (start the server with \
                     --serve-artifacts, the default, and --artifacts-destination for the store)"
                ),
            };
            return Err(invalid(&reason));
        };
        if uri.contains(['?', '#']) {
            return Err(invalid(
                "an artifact location must not have a query or fragment",
            ));
        }
        let (authority, path) = if let Some(after) = rest.strip_prefix("//") {
            let (authority, path) = after.split_once('/').unwrap_or((after, ""));
            if authority.is_empty() {
                (None, path)
            } else {
                (Some(authority.to_owned()), path)
            }
        } else if let Some(path) = rest.strip_prefix('/') {
            (None, path)
        } else {
            return Err(invalid(
                "expected mlflow-artifacts:/<path> or mlflow-artifacts://<host:port>/<path>",
            ));
        };
        let path = path.trim_end_matches('/');
        if !path.is_empty() {
            check_relative_path(path).map_err(|reason| invalid(&reason))?;
        }
        Ok(Self {
            authority,
            path: path.to_owned(),
        })
    }

    /// The `host:port` given in the URI, if any.
    pub fn authority(&self) -> Option<&str> {
        self.authority.as_deref()
    }

    /// The path under the proxy's root, without leading or trailing `/` (empty for the root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The proxy path of `relative` under this location, after checking `relative` is a plain
    /// relative path (no `..`, no leading `/`, no empty segments). An empty `relative` gives this
    /// location itself.
    pub fn join(&self, relative: &str) -> Result<String, TrackingError> {
        let relative = relative.trim_end_matches('/');
        if relative.is_empty() {
            return Ok(self.path.clone());
        }
        check_relative_path(relative).map_err(|reason| TrackingError::InvalidUri {
            uri: format!("{self}/{relative}"),
            reason: format!("bad artifact path '{relative}': {reason}"),
        })?;
        Ok(if self.path.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.path)
        })
    }
}

impl fmt::Display for ArtifactUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.authority {
            Some(authority) => write!(f, "{ARTIFACTS_SCHEME}//{authority}/{}", self.path),
            None => write!(f, "{ARTIFACTS_SCHEME}/{}", self.path),
        }
    }
}

impl std::str::FromStr for ArtifactUri {
    type Err = TrackingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Which version of a registered model a [`ModelUri`] designates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelSelector {
    /// The version an alias points at (`models:/name@champion`).
    Alias(String),
    /// A version number (`models:/name/3`).
    Version(u64),
}

/// A model-registry URI: `models:/<name>@<alias>` or `models:/<name>/<version>`.
///
/// `Display` writes the same form back. Stage URIs (`models:/name/Production`) and
/// `models:/name/latest` are refused: stages are deprecated in MLflow 3, use an alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelUri {
    /// The registered model's name.
    pub name: String,
    /// The version or alias.
    pub selector: ModelSelector,
}

impl ModelUri {
    /// Parses `models:/covidct@champion` or `models:/covidct/3`.
    pub fn parse(uri: &str) -> Result<Self, TrackingError> {
        let invalid = |reason: String| TrackingError::InvalidUri {
            uri: uri.to_owned(),
            reason,
        };
        const FORMS: &str = "expected models:/<name>@<alias> (e.g. models:/covidct@champion) or \
                             models:/<name>/<version> (e.g. models:/covidct/3)";
        let Some(rest) = strip_prefix_ignore_case(uri, "models:/") else {
            return Err(invalid(format!("not a model-registry URI: {FORMS}")));
        };
        if rest.starts_with('/') {
            return Err(invalid(format!(
                "models:// URIs with a registry host or profile are not supported: {FORMS}"
            )));
        }
        if let Some((name, alias)) = rest.split_once('@') {
            check_model_name(name).map_err(&invalid)?;
            check_alias(alias).map_err(&invalid)?;
            return Ok(Self {
                name: name.to_owned(),
                selector: ModelSelector::Alias(alias.to_owned()),
            });
        }
        let Some((name, version)) = rest.split_once('/') else {
            return Err(invalid(format!(
                "no version or alias after the model name: {FORMS}"
            )));
        };
        check_model_name(name).map_err(&invalid)?;
        let version = parse_version(version).map_err(&invalid)?;
        Ok(Self {
            name: name.to_owned(),
            selector: ModelSelector::Version(version),
        })
    }

    /// `models:/<name>@<alias>`, after checking both parts.
    pub fn alias(name: &str, alias: &str) -> Result<Self, TrackingError> {
        Self::parse(&format!("models:/{name}@{alias}"))
    }

    /// `models:/<name>/<version>`, after checking the name (versions start at 1).
    pub fn version(name: &str, version: u64) -> Result<Self, TrackingError> {
        Self::parse(&format!("models:/{name}/{version}"))
    }
}

impl fmt::Display for ModelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            ModelSelector::Alias(alias) => write!(f, "models:/{}@{alias}", self.name),
            ModelSelector::Version(version) => write!(f, "models:/{}/{version}", self.name),
        }
    }
}

impl std::str::FromStr for ModelUri {
    type Err = TrackingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Checks a `/`-separated relative path: no leading `/`, no empty, `.` or `..` segments, no
/// backslashes or control characters.
pub(crate) fn check_relative_path(path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        return Err("it must be relative (no leading '/')".to_owned());
    }
    if path.contains('\\') {
        return Err("use '/' to separate folders, not '\\'".to_owned());
    }
    if path.chars().any(char::is_control) {
        return Err("it contains control characters".to_owned());
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("it has an empty segment ('//')".to_owned()),
            "." | ".." => return Err(format!("it has a '{segment}' segment")),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a registered model name as MLflow does (non-blank, no `/` or `:`), plus no `@`
/// (which would make `models:/name@alias` ambiguous).
pub(crate) fn check_model_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("the model name is empty".to_owned());
    }
    if let Some(c) = name.chars().find(|c| matches!(c, '/' | ':' | '@')) {
        return Err(format!(
            "model name '{name}' contains '{c}' (registered model names cannot contain '/', ':' \
             or '@')"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("model name '{name}' contains control characters"));
    }
    Ok(())
}

/// Checks an alias as MLflow does: letters, digits, `_` and `-`, at most 255 characters, not
/// `latest` and not of the reserved form `v<digits>`.
pub(crate) fn check_alias(alias: &str) -> Result<(), String> {
    if alias.is_empty() {
        return Err("the alias is empty".to_owned());
    }
    if alias.chars().count() > 255 {
        return Err("the alias is longer than 255 characters".to_owned());
    }
    if !alias
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "alias '{alias}' may only contain letters, digits, '_' and '-'"
        ));
    }
    if alias.eq_ignore_ascii_case("latest") {
        return Err("the alias 'latest' is reserved by MLflow".to_owned());
    }
    let mut chars = alias.chars();
    if matches!(chars.next(), Some('v' | 'V'))
        && alias.len() > 1
        && chars.all(|c| c.is_ascii_digit())
    {
        return Err(format!(
            "alias '{alias}' is reserved by MLflow (v<number> names a version)"
        ));
    }
    Ok(())
}

fn parse_version(version: &str) -> Result<u64, String> {
    if version.eq_ignore_ascii_case("latest") {
        return Err(
            "'latest' is not supported: name a version number or use an alias (@champion)"
                .to_owned(),
        );
    }
    if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()) {
        return match version.parse::<u64>() {
            Ok(0) => Err("model versions start at 1".to_owned()),
            Ok(v) => Ok(v),
            Err(_) => Err(format!("version '{version}' is too large")),
        };
    }
    if version.is_empty() {
        return Err("the version after the model name is empty".to_owned());
    }
    Err(format!(
        "'{version}' is not a version number (stage URIs like models:/name/Production are \
         deprecated in MLflow 3: use an alias, models:/name@champion)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_uris_parse_and_round_trip() {
        let uri = ArtifactUri::parse("mlflow-artifacts:/1/abc/artifacts").expect("parse");
        assert_eq!(uri.authority(), None);
        assert_eq!(uri.path(), "1/abc/artifacts");
        assert_eq!(uri.to_string(), "mlflow-artifacts:/1/abc/artifacts");
        assert_eq!(
            uri.join("model/model.ctpkg").expect("join"),
            "1/abc/artifacts/model/model.ctpkg"
        );
        assert_eq!(uri.join("").expect("join"), "1/abc/artifacts");

        let hosted = ArtifactUri::parse("mlflow-artifacts://mlflow.local:5000/2/x/").expect("p");
        assert_eq!(hosted.authority(), Some("mlflow.local:5000"));
        assert_eq!(hosted.path(), "2/x");
        assert_eq!(
            hosted.to_string(),
            "mlflow-artifacts://mlflow.local:5000/2/x"
        );

        let root = ArtifactUri::parse("mlflow-artifacts:/").expect("root");
        assert_eq!(root.path(), "");
        assert_eq!(root.join("a/b").expect("join"), "a/b");
    }

    #[test]
    fn bad_artifact_uris_are_refused_with_a_reason() {
        for (bad, expected) in [
            ("s3://bucket/1/abc", "scheme 's3:'"),
            ("file:///tmp/mlruns", "scheme 'file:'"),
            ("runs:/abc/model", "runs:/ URI"),
            ("/tmp/mlruns", "not a URI"),
            (
                "mlflow-artifacts:1/abc",
                "expected mlflow-artifacts:/<path>",
            ),
            ("mlflow-artifacts:/1/../etc", "'..' segment"),
            ("mlflow-artifacts:/1//x", "empty segment"),
            ("mlflow-artifacts:/1/x?y=1", "query"),
        ] {
            match ArtifactUri::parse(bad) {
                Err(TrackingError::InvalidUri { uri, reason }) => {
                    assert_eq!(uri, bad);
                    assert!(reason.contains(expected), "{bad}: {reason}");
                }
                other => panic!("{bad} gave {other:?}"),
            }
        }
        let uri = ArtifactUri::parse("mlflow-artifacts:/1/abc/artifacts").expect("parse");
        for bad in ["../x", "/etc/passwd", "a//b", "a\\b", "./a"] {
            let err = uri.join(bad).expect_err(bad);
            assert!(err.to_string().contains("bad artifact path"), "{err}");
        }
    }

    #[test]
    fn model_uris_parse_and_round_trip() {
        let alias = ModelUri::parse("models:/covidct@champion").expect("alias");
        assert_eq!(alias.name, "covidct");
        assert_eq!(alias.selector, ModelSelector::Alias("champion".to_owned()));
        assert_eq!(alias.to_string(), "models:/covidct@champion");

        let version = ModelUri::parse("models:/covidct/3").expect("version");
        assert_eq!(version.selector, ModelSelector::Version(3));
        assert_eq!(version.to_string(), "models:/covidct/3");
        assert_eq!(version.to_string().parse::<ModelUri>().ok(), Some(version));

        let spaced = ModelUri::parse("models:/CT classifier v2@prod-eu_1").expect("spaced");
        assert_eq!(spaced.name, "CT classifier v2");
        assert_eq!(ModelUri::alias("covidct", "champion").ok(), Some(alias));
    }

    #[test]
    fn bad_model_uris_are_refused_with_a_reason() {
        for (bad, expected) in [
            ("runs:/abc/model", "not a model-registry URI"),
            ("models:/covidct", "no version or alias"),
            ("models:/covidct/", "empty"),
            ("models:/covidct/0", "start at 1"),
            ("models:/covidct/latest", "'latest' is not supported"),
            ("models:/covidct/Production", "stage URIs"),
            ("models:/covidct@", "alias is empty"),
            ("models:/covidct@latest", "reserved"),
            ("models:/covidct@v3", "reserved"),
            ("models:/covidct@cham pion", "letters, digits"),
            ("models:/@champion", "name is empty"),
            ("models://profile/covidct/1", "registry host"),
            ("models:/a/b/3", "not a version number"),
            ("models:/covidct/99999999999999999999999", "too large"),
        ] {
            match ModelUri::parse(bad) {
                Err(TrackingError::InvalidUri { uri, reason }) => {
                    assert_eq!(uri, bad);
                    assert!(reason.contains(expected), "{bad}: {reason}");
                }
                other => panic!("{bad} gave {other:?}"),
            }
        }
    }
}
