/*!
What a node's sources may read: `[workers] input_roots` (directories a file
or glob source may read under) and `[workers] allow_urls` (URL prefixes a URL
source may fetch). A flow comes from whoever may submit one, so without these
a flow could copy `/etc/passwd` into the output root or make the worker fetch
any address it can reach. `None` allows everything (`conveyor run` without a
config, or the opt-outs `input_roots = ["/"]`, `allow_urls = ["*"]`); a node
config that sets neither reads only its `data` folder and fetches nothing. A
refused source is a non-retryable spec error naming the rule.
*/

use std::path::{Path, PathBuf};

use crate::error::{EtlError, Result};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourcePolicy {
    /// Directories file and glob sources may read under; `None`: any.
    pub input_roots: Option<Vec<PathBuf>>,
    /// URL prefixes URL sources may fetch; `None`: any.
    pub allow_urls: Option<Vec<String>>,
}

impl SourcePolicy {
    /// Whether `path` (after following symlinks) lies under an input root.
    pub fn check_path(&self, path: &Path) -> Result<()> {
        let Some(roots) = &self.input_roots else {
            return Ok(());
        };
        let real = real_path(path);
        if roots.iter().any(|root| real.starts_with(real_path(root))) {
            return Ok(());
        }
        let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        Err(EtlError::Spec(format!(
            "source path {} is outside this node's [workers] input_roots ({})",
            path.display(),
            roots.join(", ")
        )))
    }

    /// Whether `url` starts with an allowed prefix.
    pub fn check_url(&self, url: &str) -> Result<()> {
        let Some(prefixes) = &self.allow_urls else {
            return Ok(());
        };
        if prefixes.iter().any(|p| url.starts_with(p.as_str())) {
            return Ok(());
        }
        if prefixes.is_empty() {
            return Err(EtlError::Spec(format!(
                "source URL {} is refused: this node's [workers] allow_urls is not set, so it fetches no URL",
                conveyor_schemas::redact::redact_url(url)
            )));
        }
        Err(EtlError::Spec(format!(
            "source URL {} is not under this node's [workers] allow_urls ({})",
            conveyor_schemas::redact::redact_url(url),
            prefixes.join(", ")
        )))
    }
}

/// `path` with symlinks resolved as far as it exists, so that neither a
/// symlink nor `..` leads out of a root.
fn real_path(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    // A path that does not exist (yet): resolve its parent, keep its name,
    // and let the read report it missing if it is allowed.
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            real_path(parent).join(name)
        }
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_outside_the_rules_are_refused_naming_the_rule() {
        let base = std::env::temp_dir().join(format!("conveyor-policy-{}", std::process::id()));
        let root = base.join("in");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a.csv"), "x\n").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap_or(());
        let policy = SourcePolicy {
            input_roots: Some(vec![root.clone()]),
            allow_urls: Some(vec!["https://data.example.org/".into()]),
        };
        assert!(policy.check_path(&root.join("a.csv")).is_ok());
        assert!(policy.check_path(&root.join("missing.csv")).is_ok());
        for bad in [
            PathBuf::from("/etc/passwd"),
            root.join("../outside.csv"),
            root.join("etc/passwd"),
        ] {
            let err = policy.check_path(&bad).unwrap_err().to_string();
            assert!(err.contains("input_roots"), "{bad:?}: {err}");
            assert!(!EtlError::Spec(err).retryable());
        }
        assert!(policy.check_url("https://data.example.org/x.csv").is_ok());
        let err = policy
            .check_url("http://u:pw@169.254.169.254/latest")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow_urls") && !err.contains("pw@"), "{err}");
        let none = SourcePolicy {
            input_roots: Some(vec![root.clone()]),
            allow_urls: Some(Vec::new()),
        };
        let err = none
            .check_url("https://data.example.org/x.csv")
            .unwrap_err();
        assert!(err.to_string().contains("allow_urls is not set"), "{err}");
        assert!(SourcePolicy::default()
            .check_path(Path::new("/etc/passwd"))
            .is_ok());
        let _ = std::fs::remove_dir_all(&base);
    }
}
