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
in what order. The flow parser (`conveyor_flow::parse`) fills placeholders in as it reads
each value, before the value's own checks, so a hostile value (`../../etc`)
meets the same path and name rules as a value written in the file.

[`substitute`] is the one function that fills placeholders in. Its caller
gives the escaping rule: the flow parser inserts values as they are
([`verbatim`]) in most strings, and fills SQL text (a PostgreSQL source's
`query`, a `sql` step) with [`ParamValues::fill_sql`]: there a value always
becomes one SQL string literal, and a placeholder inside quotes or a comment,
where a literal cannot stand, is refused. A param can never stand for an
identifier or for SQL text.
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
    /// In SQL text, a placeholder inside a quoted string, a quoted
    /// identifier or a comment: only a whole value may be a param.
    InSqlQuotes(&'static str),
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
            PlaceholderError::InSqlQuotes(place) => write!(
                f,
                "has a placeholder inside {place}; in SQL a param stands for a whole value and becomes a quoted literal, so write `WHERE day = {{{{ params.day }}}}`, not `'{{{{ params.day }}}}'`"
            ),
        }
    }
}

/// Inserts a value as it is.
pub fn verbatim(value: &str) -> Cow<'_, str> {
    Cow::Borrowed(value)
}

/// A value as one SQL string literal: `'...'` with each `'` doubled.
///
/// This is the standard SQL rule, which DataFusion follows and PostgreSQL
/// follows with `standard_conforming_strings = on` (the default since 9.1;
/// a PostgreSQL connector sets it on each session, so a backslash in a value
/// is never an escape). Values hold no control characters ([`check_value`]).
pub fn sql_literal(value: &str) -> Cow<'_, str> {
    Cow::Owned(format!("'{}'", value.replace('\'', "''")))
}

/// Where each placeholder of SQL text sits: `Err` with the place's name when
/// one is inside a quoted string or identifier, a dollar-quoted body, or a
/// comment.
pub fn check_sql_placeholders(sql: &str) -> Result<(), &'static str> {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' if b.get(i + 1) == Some(&b'{') => {
                // Glued to a word (`E{{ .. }}`, `U&{{ .. }}`, `x{{ .. }}`),
                // the literal would take a prefix that changes how it reads.
                if i > 0 && (b[i - 1].is_ascii_alphanumeric() || matches!(b[i - 1], b'_' | b'&')) {
                    return Err("a word (a literal needs a space before it)");
                }
                i += 2;
            }
            b'\'' => {
                // E'...' strings take backslash escapes.
                let escapes = i > 0
                    && matches!(b[i - 1], b'e' | b'E')
                    && (i < 2 || !(b[i - 2].is_ascii_alphanumeric() || b[i - 2] == b'_'));
                i = skip_quoted(b, i, b'\'', escapes, "a quoted string")?;
            }
            b'"' => i = skip_quoted(b, i, b'"', false, "a quoted identifier")?,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = sql[i..].find('\n').map_or(b.len(), |n| i + n);
                if sql[i..end].contains("{{") {
                    return Err("a comment");
                }
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                let start = i;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                if sql[start..i].contains("{{") {
                    return Err("a comment");
                }
            }
            b'$' => {
                // $tag$ ... $tag$, where tag is empty or an identifier.
                let tag_len = sql[i + 1..]
                    .bytes()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    .count();
                let after = i + 1 + tag_len;
                let starts_tag = b.get(after) == Some(&b'$')
                    && (tag_len == 0 || !b[i + 1].is_ascii_digit())
                    && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'));
                if !starts_tag {
                    i += 1;
                    continue;
                }
                let tag = &sql[i..=after];
                let body_start = after + 1;
                let body_end = sql[body_start..]
                    .find(tag)
                    .map_or(b.len(), |n| body_start + n);
                if sql[body_start..body_end].contains("{{") {
                    return Err("a dollar-quoted string");
                }
                i = (body_end + tag.len()).min(b.len());
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The index just past the quoted run that starts at `open`; `Err` if a
/// placeholder is inside it.
fn skip_quoted(
    b: &[u8],
    open: usize,
    quote: u8,
    escapes: bool,
    place: &'static str,
) -> Result<usize, &'static str> {
    let mut i = open + 1;
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Ok(i + 1);
        }
        if b[i] == b'{' && b.get(i + 1) == Some(&b'{') {
            return Err(place);
        }
        i += 1;
    }
    Ok(b.len())
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
    // The worker would expand it: a run's caller could read the worker's
    // environment into a path, a filter or a query.
    if conveyor_schemas::secrets::has_reference(value) {
        return Err(
            "contains `${env:`; a param value cannot name a secret (write the `${env:NAME}` in the flow itself)"
                .into(),
        );
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

    /// Fills in SQL text: each value becomes one quoted literal
    /// ([`sql_literal`]), and a placeholder inside quotes or a comment is
    /// refused ([`check_sql_placeholders`]).
    pub fn fill_sql<'t>(&self, sql: &'t str) -> Result<Cow<'t, str>, Vec<PlaceholderError>> {
        if !has_placeholder(sql) {
            return Ok(Cow::Borrowed(sql));
        }
        check_sql_placeholders(sql).map_err(|place| vec![PlaceholderError::InSqlQuotes(place)])?;
        substitute(sql, &|name| self.lookup(name), &sql_literal)
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
    fn sql_text_gets_literals_and_refuses_placeholders_in_quotes_or_comments() {
        let p = ParamValues {
            declared: [("who".to_string(), None)].into_iter().collect(),
            given: [(
                "who".to_string(),
                r#"x' OR 1=1; DROP TABLE t; --\"#.to_string(),
            )]
            .into_iter()
            .collect(),
        };
        assert_eq!(
            p.fill_sql("SELECT * FROM t WHERE name = {{ params.who }}")
                .unwrap(),
            r#"SELECT * FROM t WHERE name = 'x'' OR 1=1; DROP TABLE t; --\'"#
        );
        for bad in [
            "SELECT '{{ params.who }}'",
            "SELECT E'it\\'s {{ params.who }}'",
            r#"SELECT * FROM "{{ params.who }}""#,
            "SELECT 1 -- {{ params.who }}\n",
            "SELECT /* a /* b */ {{ params.who }} */ 1",
            "SELECT $q$ {{ params.who }} $q$",
            "SELECT $$ {{ params.who }} $$",
            "SELECT E{{ params.who }}",
            "SELECT U&{{ params.who }}",
            "SELECT x{{ params.who }}",
        ] {
            let err = p.fill_sql(bad).unwrap_err();
            assert!(
                matches!(err[..], [PlaceholderError::InSqlQuotes(_)]),
                "{bad}: {err:?}"
            );
        }
        // Quotes that close before the placeholder leave it a value.
        assert_eq!(
            p.fill_sql("SELECT 'a''b', \"c\", $1 /* c */ , {{ params.who }} -- done")
                .unwrap()
                .matches("'x'' OR")
                .count(),
            1
        );
    }

    #[test]
    fn values_are_one_line_and_bounded_and_assignments_need_an_equals_sign() {
        assert!(check_value("2026-11-30").is_ok());
        assert!(check_value("a\nb").unwrap_err().contains("control"));
        assert!(check_value(&"x".repeat(MAX_VALUE_BYTES + 1)).is_err());
        assert!(check_value("a${env:HOME}")
            .unwrap_err()
            .contains("cannot name a secret"));
        assert_eq!(
            parse_assignment("day=2026-11-30=x").unwrap(),
            ("day".to_string(), "2026-11-30=x".to_string())
        );
        assert!(parse_assignment("day").is_err());
        assert!(parse_assignment("=x").is_err());
    }
}
