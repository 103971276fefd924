/*!
Flow params: `[params]` declarations and `{{ params.NAME }}` placeholders.

```toml
[params]
day = { default = "2026-01-01" }   # optional: takes its default when not given
region = {}                        # required: a run must give it

[tasks.extract]
kind = "extract"
path = "data/{{ params.region }}/{{ params.day }}.csv"
```

A placeholder may stand in any string value of a task or of `[flow]` (paths,
urls, filter values, column names, durations...), but not in a key that
shapes the DAG (`kind`, `input`, `after`, `partitions`, `parts`, the flow's
`name`, `fuse`, `fail_fast`): a param value never changes which tasks run or
in what order. The parser ([`crate::parse`]) fills placeholders in as it reads
each value, before the value's own checks, so a hostile value (`../../etc`)
meets the same path and name rules as a value written in the file.

[`substitute`] is the one function that fills placeholders in. Its caller
gives the escaping rule: the flow parser inserts values as they are
([`verbatim`]); a SQL step will give one that quotes SQL literals.
*/

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// Each declared param with its default (none: a run must give it).
pub type Declared = BTreeMap<String, Option<String>>;

/// Longest value a param may be given.
pub const MAX_VALUE_BYTES: usize = 4096;

/// What a placeholder's name stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'v> {
    Value(&'v str),
    /// Declared, but without a value in this run (a required param not
    /// given; that is reported once, at its declaration).
    Missing,
    Undeclared,
}

/// One `{{ ... }}` that cannot be filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaceholderError {
    /// `{{` without a closing `}}`.
    Unclosed,
    /// `{{ something }}` that is not `{{ params.NAME }}`.
    NotAParam(String),
    Undeclared(String),
    Missing(String),
}

impl fmt::Display for PlaceholderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlaceholderError::Unclosed => write!(f, "has `{{{{` without a closing `}}}}`"),
            PlaceholderError::NotAParam(inner) => write!(
                f,
                "`{{{{ {inner} }}}}` is not a placeholder; write `{{{{ params.NAME }}}}`"
            ),
            PlaceholderError::Undeclared(name) => write!(
                f,
                "`{{{{ params.{name} }}}}` names a param the flow does not declare; add `{name} = {{}}` (or `{{ default = \"...\" }}`) under [params]"
            ),
            PlaceholderError::Missing(name) => {
                write!(f, "param `{name}` has no value in this run")
            }
        }
    }
}

/// Inserts a value as it is.
pub fn verbatim(value: &str) -> Cow<'_, str> {
    Cow::Borrowed(value)
}

/// Whether `text` has anything that looks like a placeholder.
pub fn has_placeholder(text: &str) -> bool {
    text.contains("{{")
}

/// Replaces every `{{ params.NAME }}` of `text` with `escape` of its value.
/// Every placeholder is checked: the errors of all of them come back, in
/// order. Text without `{{` comes back borrowed.
pub fn substitute<'t, 'v>(
    text: &'t str,
    lookup: &dyn Fn(&str) -> Lookup<'v>,
    escape: &dyn Fn(&str) -> Cow<'_, str>,
) -> Result<Cow<'t, str>, Vec<PlaceholderError>> {
    if !has_placeholder(text) {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            errors.push(PlaceholderError::Unclosed);
            rest = "";
            break;
        };
        let inner = after[..close].trim();
        rest = &after[close + 2..];
        let Some(name) = inner.strip_prefix("params.") else {
            errors.push(PlaceholderError::NotAParam(inner.to_string()));
            continue;
        };
        match lookup(name) {
            Lookup::Value(v) => out.push_str(&escape(v)),
            Lookup::Missing => errors.push(PlaceholderError::Missing(name.to_string())),
            Lookup::Undeclared => errors.push(PlaceholderError::Undeclared(name.to_string())),
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(Cow::Owned(out))
    } else {
        Err(errors)
    }
}

/// Why a given value cannot be a param's value, if it cannot.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("is longer than {MAX_VALUE_BYTES} bytes"));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "contains the control character {:?}; a value is one line of text",
            c
        ));
    }
    Ok(())
}

/// The params of one run: what the flow declares and what this run gives.
#[derive(Clone, Debug, Default)]
pub struct ParamValues {
    pub declared: Declared,
    pub given: BTreeMap<String, String>,
}

impl ParamValues {
    /// A declared param's value in this run: given, else its default.
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        match self.declared.get(name) {
            None => Lookup::Undeclared,
            Some(default) => match self.given.get(name).or(default.as_ref()) {
                Some(v) => Lookup::Value(v),
                None => Lookup::Missing,
            },
        }
    }

    /// Fills in `text` as the flow parser does: values as they are.
    pub fn fill<'t>(&self, text: &'t str) -> Result<Cow<'t, str>, Vec<PlaceholderError>> {
        substitute(text, &|name| self.lookup(name), &verbatim)
    }
}

/// Parses `NAME=VALUE`, as `--param` takes it.
pub fn parse_assignment(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("`{text}` is not NAME=VALUE, e.g. day=2026-11-30")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> ParamValues {
        ParamValues {
            declared: [
                ("day".to_string(), Some("2026-01-01".to_string())),
                ("region".to_string(), None),
                ("unset".to_string(), None),
            ]
            .into_iter()
            .collect(),
            given: [("region".to_string(), "eu".to_string())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn placeholders_take_given_values_then_defaults() {
        let p = values();
        assert_eq!(
            p.fill("data/{{ params.region }}/{{params.day}}.csv")
                .unwrap(),
            "data/eu/2026-01-01.csv"
        );
        assert!(matches!(p.fill("no placeholder"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn every_bad_placeholder_is_reported_in_order() {
        let errors = values()
            .fill("{{ params.nope }} {{ day }} {{ params.unset }} {{ params.day")
            .unwrap_err();
        assert_eq!(
            errors,
            [
                PlaceholderError::Undeclared("nope".into()),
                PlaceholderError::NotAParam("day".into()),
                PlaceholderError::Missing("unset".into()),
                PlaceholderError::Unclosed,
            ]
        );
        assert!(errors[0].to_string().contains("under [params]"));
    }

    #[test]
    fn the_caller_chooses_the_escaping_rule() {
        let p = ParamValues {
            declared: [("who".to_string(), None)].into_iter().collect(),
            given: [("who".to_string(), "O'Brien".to_string())]
                .into_iter()
                .collect(),
        };
        fn sql_literal(v: &str) -> Cow<'_, str> {
            Cow::Owned(format!("'{}'", v.replace('\'', "''")))
        }
        let out = substitute(
            "SELECT * WHERE name = {{ params.who }}",
            &|n| p.lookup(n),
            &sql_literal,
        )
        .unwrap();
        assert_eq!(out, "SELECT * WHERE name = 'O''Brien'");
        // Values are inserted once: a value that looks like a placeholder stays text.
        let p = ParamValues {
            declared: [("a".to_string(), None), ("b".to_string(), None)]
                .into_iter()
                .collect(),
            given: [
                ("a".to_string(), "{{ params.b }}".to_string()),
                ("b".to_string(), "x".to_string()),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(p.fill("{{ params.a }}").unwrap(), "{{ params.b }}");
    }

    #[test]
    fn values_are_one_line_and_bounded_and_assignments_need_an_equals_sign() {
        assert!(check_value("2026-11-30").is_ok());
        assert!(check_value("a\nb").unwrap_err().contains("control"));
        assert!(check_value(&"x".repeat(MAX_VALUE_BYTES + 1)).is_err());
        assert_eq!(
            parse_assignment("day=2026-11-30=x").unwrap(),
            ("day".to_string(), "2026-11-30=x".to_string())
        );
        assert!(parse_assignment("day").is_err());
        assert!(parse_assignment("=x").is_err());
    }
}
