//! `${env:NAME}`: a secret a flow names, and the worker node reads.
//!
//! A string of a flow may hold `${env:NAME}` (NAME: a letter or `_`, then
//! letters, digits and `_`). The flow parser checks the syntax and keeps the
//! text as it is, so the coordinator, its database, the API and every
//! message carry the reference, never the value. The worker that runs the
//! task expands each reference from its own environment just before it
//! runs it ([`expand_spec`]), and keeps the values it expanded
//! ([`Secrets`]) to take them out ([`Secrets::redact`]) of everything that
//! leaves the worker about the attempt: its error, its output's location,
//! its log lines. URL passwords are taken out too ([`crate::redact`]).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What opens a reference.
pub const OPEN: &str = "${env:";

/// Whether `text` holds anything that starts a reference.
pub fn has_reference(text: &str) -> bool {
    text.contains(OPEN)
}

/// How many things in `text` start a reference.
pub fn count_references(text: &str) -> usize {
    text.matches(OPEN).count()
}

/// The reference that starts `text` (which starts with [`OPEN`]): the
/// variable's name and the length of the reference, or why it is not one.
fn reference(text: &str) -> Result<(&str, usize), String> {
    let after = &text[OPEN.len()..];
    let len = after
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    let name = &after[..len];
    let starts_well = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !starts_well || !after[len..].starts_with('}') {
        let shown: String = text.chars().take(OPEN.len() + len + 1).collect();
        return Err(format!(
            "`{shown}` is not a secret reference; write `${{env:NAME}}`, NAME being a letter or `_` then letters, digits or `_`"
        ));
    }
    Ok((name, OPEN.len() + len + 1))
}

/// Checks every reference of `text`: the first malformed one is an error.
pub fn check(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        let (_, len) = reference(&rest[at..])?;
        rest = &rest[at + len..];
    }
    Ok(())
}

/// Why a task cannot run: a variable it names is not set on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// The variable is not set (or not Unicode) in the worker's environment.
    Missing(String),
    /// A reference is malformed (the flow parser refuses these; a message
    /// from elsewhere may still hold one).
    Malformed(String),
    /// The variable is not in this node's `[secrets] allow`: it is never
    /// read, set or not.
    NotAllowed(String),
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::Missing(name) => write!(
                f,
                "the environment variable `{name}` (named by `${{env:{name}}}`) is not set on this worker node"
            ),
            ExpandError::Malformed(why) => f.write_str(why),
            ExpandError::NotAllowed(name) => write!(f, "{}", not_allowed(name)),
        }
    }
}

/// `text` with every reference replaced by its variable's value from
/// `lookup`; each value used is added to `secrets`.
pub fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Secrets,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        out.push_str(&rest[..at]);
        let (name, len) = reference(&rest[at..]).map_err(ExpandError::Malformed)?;
        let value = lookup(name).ok_or_else(|| ExpandError::Missing(name.to_string()))?;
        out.push_str(&value);
        secrets.add(value);
        rest = &rest[at + len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `spec` with every reference in every one of its strings expanded: the
/// spec goes through JSON, so whatever a source, step or sink holds (a
/// path, a URL, a query, a filter value) is covered, connectors to come
/// included. A spec without a reference comes back as it was.
pub fn expand_spec<T: Serialize + DeserializeOwned + Clone>(
    spec: &T,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(T, Secrets), ExpandError> {
    let mut secrets = Secrets::default();
    let mut json = serde_json::to_value(spec).map_err(|e| ExpandError::Malformed(e.to_string()))?;
    if !has_reference(&json.to_string()) {
        return Ok((spec.clone(), secrets));
    }
    expand_value(&mut json, lookup, &mut secrets)?;
    let expanded = serde_json::from_value(json).map_err(|e| {
        ExpandError::Malformed(secrets.redact(&format!("the expanded spec does not read: {e}")))
    })?;
    Ok((expanded, secrets))
}

fn expand_value(
    value: &mut serde_json::Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Secrets,
) -> Result<(), ExpandError> {
    match value {
        serde_json::Value::String(s) if has_reference(s) => {
            *s = expand(s, lookup, secrets)?;
        }
        serde_json::Value::Array(items) => {
            for item in items {
                expand_value(item, lookup, secrets)?;
            }
        }
        serde_json::Value::Object(map) => {
            for item in map.values_mut() {
                expand_value(item, lookup, secrets)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The values an attempt expanded, to keep out of what it reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Longest first, so that a value inside another does not leave the
    /// rest of the longer one showing.
    values: Vec<String>,
}

impl Secrets {
    /// The set of `values` (empty ones are no secret).
    pub fn of(values: impl IntoIterator<Item = String>) -> Secrets {
        let mut secrets = Secrets::default();
        for v in values {
            secrets.add(v);
        }
        secrets
    }

    fn add(&mut self, value: String) {
        if value.is_empty() || self.values.contains(&value) {
            return;
        }
        self.values.push(value);
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every expanded value shown as `***`, and every URL's
    /// password (or token) too.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "***");
            }
        }
        crate::redact::redact_urls_in(&out)
    }
}

/// Why `${env:NAME}` is refused, for the worker's error and the submit's.
pub fn not_allowed(name: &str) -> String {
    format!(
        "the environment variable `{name}` (named by `${{env:{name}}}`) is not in this node's [secrets] allow"
    )
}

/// `[secrets] allow`: the environment variables a flow's `${env:NAME}` may
/// read on a node, as glob patterns (`*` any run of characters, `?` one).
/// A worker reads no other variable, and a coordinator refuses at submit a
/// flow that names another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    /// `None`: every variable (`conveyor run` without a config, whose
    /// environment belongs to the person running it).
    patterns: Option<Vec<String>>,
}

impl AllowList {
    /// Every variable.
    pub fn any() -> AllowList {
        AllowList { patterns: None }
    }

    /// The variables matching one of `patterns` (none: no variable).
    pub fn only(patterns: Vec<String>) -> AllowList {
        AllowList {
            patterns: Some(patterns),
        }
    }

    /// Whether this list allows every variable (no list, or `*` in it).
    pub fn is_any(&self) -> bool {
        self.patterns
            .as_ref()
            .is_none_or(|p| p.iter().any(|p| p == "*"))
    }

    /// Whether `${env:name}` may be read.
    pub fn allows(&self, name: &str) -> bool {
        match &self.patterns {
            None => true,
            Some(patterns) => patterns
                .iter()
                .any(|p| glob_match(p.as_bytes(), name.as_bytes())),
        }
    }

    /// The variables `text` names that this list does not allow, each once,
    /// in order (malformed references are the parser's to report).
    pub fn refused_in(&self, text: &str) -> Vec<String> {
        let mut refused: Vec<String> = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find(OPEN) {
            match reference(&rest[at..]) {
                Ok((name, len)) => {
                    if !self.allows(name) && !refused.iter().any(|r| r == name) {
                        refused.push(name.to_string());
                    }
                    rest = &rest[at + len..];
                }
                Err(_) => rest = &rest[at + OPEN.len()..],
            }
        }
        refused
    }
}

/// Whether `name` matches the glob `pattern` (`*`, `?`).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

/// [`expand_spec`], reading only the variables `allow` allows: a task that
/// names another fails with [`ExpandError::NotAllowed`], set or not.
pub fn expand_spec_allowed<T: Serialize + DeserializeOwned + Clone>(
    spec: &T,
    allow: &AllowList,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(T, Secrets), ExpandError> {
    let json = serde_json::to_string(spec).map_err(|e| ExpandError::Malformed(e.to_string()))?;
    if let Some(name) = allow.refused_in(&json).into_iter().next() {
        return Err(ExpandError::NotAllowed(name));
    }
    expand_spec(spec, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PG_PASSWORD" => Some("hunter2".into()),
            "DIR" => Some("/data/in".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn references_are_checked_and_expanded() {
        assert_eq!(check("plain ${HOME} $env:X {env:Y}"), Ok(()));
        assert_eq!(check("${env:A_1}/${env:_b}"), Ok(()));
        for bad in [
            "${env:}",
            "${env:1A}",
            "${env:A-B}",
            "${env:A",
            "x ${env:PG PASSWORD}",
        ] {
            let err = check(bad).unwrap_err();
            assert!(err.contains("is not a secret reference"), "{bad}: {err}");
        }
        let mut secrets = Secrets::default();
        let out = expand(
            "postgres://app:${env:PG_PASSWORD}@db/x ${env:DIR}${env:EMPTY}",
            &env,
            &mut secrets,
        )
        .unwrap();
        assert_eq!(out, "postgres://app:hunter2@db/x /data/in");
        assert_eq!(
            expand("${env:NOPE}", &env, &mut secrets),
            Err(ExpandError::Missing("NOPE".into()))
        );
        assert!(ExpandError::Missing("NOPE".into())
            .to_string()
            .contains("`NOPE`"));
    }

    #[test]
    fn a_spec_is_expanded_in_every_string_and_its_values_redacted() {
        use crate::{
            DataFormat, FileTarget, ReadOptions, SinkSpec, SourceSpec, Step, TaskKind, TaskSpec,
        };
        let spec = TaskSpec {
            kind: TaskKind::Extract,
            source: SourceSpec::Url {
                url: "https://user:${env:PG_PASSWORD}@host/a.csv".into(),
                read: ReadOptions {
                    format: DataFormat::Csv,
                    schema: None,
                    header: true,
                    delimiter: ",".into(),
                    partition: None,
                },
            },
            steps: vec![Step::Drop(vec!["${env:DIR}".into()])],
            sink: SinkSpec::File(FileTarget {
                format: DataFormat::Csv,
                path: "out/${env:DIR}.csv".into(),
                header: true,
            }),
        };
        let (expanded, secrets) = expand_spec(&spec, &env).unwrap();
        let text = serde_json::to_string(&expanded).unwrap();
        assert!(!text.contains("${env:"), "{text}");
        assert!(text.contains("user:hunter2@host") && text.contains("out//data/in.csv"));
        let message = "cannot read https://user:hunter2@host/a.csv into out//data/in.csv (hunter2)";
        assert_eq!(
            secrets.redact(message),
            "cannot read https://user:***@host/a.csv into out/***.csv (***)"
        );
        let plain = TaskSpec {
            source: SourceSpec::Artifact(crate::ArtifactRef {
                path: "r/e.arrow".into(),
                rows: 1,
            }),
            steps: vec![],
            sink: SinkSpec::Artifact,
            ..spec.clone()
        };
        assert_eq!(expand_spec(&plain, &env).unwrap().1, Secrets::default());
        let missing = TaskSpec {
            steps: vec![Step::Drop(vec!["${env:NOT_SET}".into()])],
            ..spec
        };
        assert_eq!(
            expand_spec(&missing, &env).unwrap_err(),
            ExpandError::Missing("NOT_SET".into())
        );
    }

    #[test]
    fn only_allowed_variables_are_read() {
        let allow = AllowList::only(vec!["PG_*".into(), "DI?".into()]);
        assert!(allow.allows("PG_PASSWORD") && allow.allows("PG_") && allow.allows("DIR"));
        assert!(!allow.allows("HOME") && !allow.allows("DIRS") && !allow.allows("XPG_A"));
        assert!(AllowList::any().allows("HOME"));
        assert!(!AllowList::only(vec![]).allows("PG_PASSWORD"));
        assert_eq!(
            allow.refused_in("${env:PG_A} ${env:HOME} ${env:HOME} ${env:bad-} ${env:AWS_KEY}"),
            ["HOME", "AWS_KEY"]
        );
        let spec = vec!["${env:PG_PASSWORD}".to_string(), "${env:EMPTY}".to_string()];
        assert_eq!(
            expand_spec_allowed(&spec, &allow, &env).unwrap_err(),
            ExpandError::NotAllowed("EMPTY".into())
        );
        let err = ExpandError::NotAllowed("EMPTY".into()).to_string();
        assert!(
            err.contains("`EMPTY`") && err.contains("[secrets] allow"),
            "{err}"
        );
        let (out, _) = expand_spec_allowed(&spec[..1].to_vec(), &allow, &env).unwrap();
        assert_eq!(out, ["hunter2"]);
    }
}
