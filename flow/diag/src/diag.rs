/*!
Phase one of config and flow parsing: a typed walk over a span-carrying TOML
document that collects **every** problem (wrong type, missing key, unknown
key) with its dotted key and line, instead of stopping at the first.
Phase two (in the flow parser, the node config and the connectors'
options) checks meaning and derives values.
*/

use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use conveyor_schemas::secrets::count_references;
use toml_edit::{Item, TableLike, Value};

use crate::params::{ParamValues, PlaceholderError};

/// One problem in a file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: `{}`: {}", self.key, self.message),
            None => write!(f, "`{}`: {}", self.key, self.message),
        }
    }
}

/// All problems of one file.
#[derive(Clone, Debug)]
pub struct Problems {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl Problems {
    /// Each problem's key and line, in order: what a test compares.
    pub fn keys_and_lines(&self) -> Vec<(&str, Option<usize>)> {
        self.problems
            .iter()
            .map(|p| (p.key.as_str(), p.line))
            .collect()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {n} problem{}",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {}: {p}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Collects problems while a document is walked.
pub struct Diag<'t> {
    text: &'t str,
    problems: RefCell<Vec<Problem>>,
    /// A flow's params, once its `[params]` is read: string values read
    /// after that have their `{{ params.NAME }}` filled in. Unset for node
    /// configs, whose strings are taken as written.
    params: OnceCell<ParamValues>,
}

impl<'t> Diag<'t> {
    pub fn new(text: &'t str) -> Self {
        Diag {
            text,
            problems: RefCell::new(Vec::new()),
            params: OnceCell::new(),
        }
    }

    /// From now on, fill in placeholders with `params`.
    pub fn set_params(&self, params: ParamValues) {
        let _ = self.params.set(params);
    }

    /// `value` (found at `path`) with its placeholders filled in; `None`
    /// after reporting why it cannot be. A `fixed` key shapes the DAG, so a
    /// placeholder there is a problem whatever the param's value.
    pub fn fill<'v>(
        &self,
        path: &str,
        span: Option<Range<usize>>,
        value: &'v Value,
        fixed: bool,
    ) -> Option<Cow<'v, Value>> {
        self.fill_as(path, span, value, fixed, false)
    }

    /// Like [`Diag::fill`]; with `sql`, the value is SQL text and each
    /// placeholder becomes a quoted SQL literal ([`ParamValues::fill_sql`]).
    pub fn fill_as<'v>(
        &self,
        path: &str,
        span: Option<Range<usize>>,
        value: &'v Value,
        fixed: bool,
        sql: bool,
    ) -> Option<Cow<'v, Value>> {
        if !self.check_secrets(path, span.clone(), value, fixed) {
            return None;
        }
        let Some(params) = self.params.get() else {
            return Some(Cow::Borrowed(value));
        };
        let has = |v: &Value| v.as_str().is_some_and(crate::params::has_placeholder);
        let any = match value {
            Value::Array(a) => a.iter().any(has),
            v => has(v),
        };
        if !any {
            return Some(Cow::Borrowed(value));
        }
        if fixed {
            self.report(
                path,
                span,
                "shapes the DAG, so it cannot use a `{{ params.NAME }}` placeholder: a param value never changes which tasks run or in what order",
            );
            return None;
        }
        let fill_one = |s: &str| match if sql {
            params.fill_sql(s)
        } else {
            params.fill(s)
        } {
            // No value holds `${env:`, but two can make one between them
            // (`x$` then `{env:KEY}`), or one with the text around it: the
            // worker would then read a secret the flow never named.
            Ok(text) if count_references(&text) > count_references(s) => {
                self.report(
                    path,
                    span.clone(),
                    format!(
                        "its param values would form a `{}NAME}}` secret reference, which only the flow's own text may name",
                        conveyor_schemas::secrets::OPEN
                    ),
                );
                None
            }
            Ok(text) => Some(Value::from(text.into_owned())),
            Err(errors) => {
                for e in errors {
                    // A required param not given is reported once, at [params].
                    if !matches!(e, PlaceholderError::Missing(_)) {
                        self.report(path, span.clone(), e.to_string());
                    }
                }
                None
            }
        };
        match value {
            Value::Array(a) => {
                let mut out = toml_edit::Array::new();
                let mut ok = true;
                for item in a.iter() {
                    match item.as_str() {
                        Some(s) => match fill_one(s) {
                            Some(v) => out.push(v),
                            None => ok = false,
                        },
                        None => out.push(item.clone()),
                    }
                }
                ok.then(|| Cow::Owned(Value::Array(out)))
            }
            v => fill_one(v.as_str()?).map(Cow::Owned),
        }
    }

    /// Checks the `${env:NAME}` references of `value`, which stay text for
    /// the worker to expand; false after reporting a malformed one, or one
    /// in a `fixed` key (nothing there reaches a worker).
    fn check_secrets(
        &self,
        path: &str,
        span: Option<Range<usize>>,
        value: &Value,
        fixed: bool,
    ) -> bool {
        let texts: Vec<&str> = match value {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            v => v.as_str().into_iter().collect(),
        };
        for text in texts {
            if !conveyor_schemas::secrets::has_reference(text) {
                continue;
            }
            if fixed {
                self.report(
                    path,
                    span,
                    "shapes the DAG, so it cannot use a `${env:NAME}` secret: the worker running a task reads those",
                );
                return false;
            }
            if let Err(why) = conveyor_schemas::secrets::check(text) {
                self.report(path, span, why);
                return false;
            }
        }
        true
    }

    /// SQL text (found at `path`) with its placeholders filled in as quoted
    /// literals ([`ParamValues::fill_sql`]); `None` after reporting why it
    /// cannot be. Without params (a node config), the text as written.
    pub fn fill_sql(&self, path: &str, span: Option<Range<usize>>, sql: &str) -> Option<String> {
        let Some(params) = self.params.get() else {
            return Some(sql.to_string());
        };
        match params.fill_sql(sql) {
            Ok(text) => Some(text.into_owned()),
            Err(errors) => {
                for e in errors {
                    // A required param not given is reported once, at [params].
                    if !matches!(e, PlaceholderError::Missing(_)) {
                        self.report(path, span.clone(), e.to_string());
                    }
                }
                None
            }
        }
    }

    pub fn line_of(&self, span: Option<Range<usize>>) -> Option<usize> {
        let start = span?.start.min(self.text.len());
        Some(self.text[..start].bytes().filter(|b| *b == b'\n').count() + 1)
    }

    pub fn report(&self, key: &str, span: Option<Range<usize>>, message: impl Into<String>) {
        self.problems.borrow_mut().push(Problem {
            key: key.to_string(),
            line: self.line_of(span),
            message: message.into(),
        });
    }

    pub fn is_clean(&self) -> bool {
        self.problems.borrow().is_empty()
    }

    pub fn finish(self, file: &str) -> Result<(), Problems> {
        let mut problems = self.problems.into_inner();
        if problems.is_empty() {
            return Ok(());
        }
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(Problems {
            file: file.to_string(),
            problems,
        })
    }
}

/// Reads a config or flow file: its display name and its text, or a
/// [`Problems`] that says why it cannot be read.
pub fn read_file(path: &std::path::Path) -> Result<(String, String), Problems> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((file, text)),
        Err(e) => Err(Problems {
            file,
            problems: vec![Problem {
                key: "(file)".into(),
                line: None,
                message: format!("cannot read: {e}"),
            }],
        }),
    }
}

/// Parses TOML text, turning a syntax error into a [`Problems`].
pub fn parse_document(file: &str, text: &str) -> Result<toml_edit::Document<String>, Problems> {
    toml_edit::Document::parse(text.to_string()).map_err(|e| {
        let diag = Diag::new(text);
        let line = diag.line_of(e.span());
        Problems {
            file: file.to_string(),
            problems: vec![Problem {
                key: "(syntax)".into(),
                line,
                message: e.message().trim().to_string(),
            }],
        }
    })
}

/// A table being read: remembers which keys were used so the rest can be
/// reported as unknown.
pub struct Tbl<'a, 't> {
    pub diag: &'a Diag<'t>,
    pub path: String,
    pub table: &'a dyn TableLike,
    span: Option<Range<usize>>,
    used: HashSet<String>,
    /// Keys of this table that shape the DAG: they take no params.
    fixed: &'static [&'static str],
}

/// A value found under a key, with its dotted path and span.
pub struct Found<'a> {
    pub path: String,
    pub item: &'a Item,
    pub span: Option<Range<usize>>,
}

impl<'a, 't> Tbl<'a, 't> {
    pub fn new(
        diag: &'a Diag<'t>,
        path: impl Into<String>,
        table: &'a dyn TableLike,
        span: Option<Range<usize>>,
    ) -> Self {
        Tbl {
            diag,
            path: path.into(),
            table,
            span,
            used: HashSet::new(),
            fixed: &[],
        }
    }

    /// Marks `keys` as shaping the DAG: a placeholder in them is a problem.
    pub fn fixed(mut self, keys: &'static [&'static str]) -> Self {
        self.fixed = keys;
        self
    }

    /// The value of a found key with its placeholders filled in.
    pub fn fill<'v>(&self, key: &str, found: &Found<'v>) -> Option<Cow<'v, Value>> {
        let value = found.item.as_value()?;
        self.diag.fill(
            &found.path,
            found.span.clone(),
            value,
            self.fixed.contains(&key),
        )
    }

    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn span(&self) -> Option<Range<usize>> {
        self.span.clone()
    }

    /// Where `key` is written in this table, if it is.
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        let (k, item) = self.table.get_key_value(key)?;
        k.span().or_else(|| item.span())
    }

    pub fn keys(&self) -> Vec<String> {
        self.table.iter().map(|(k, _)| k.to_string()).collect()
    }

    pub fn has(&self, key: &str) -> bool {
        self.table.get(key).is_some()
    }

    pub fn error(&self, key: &str, message: impl Into<String>) {
        let span = self.key_span(key).or_else(|| self.span.clone());
        self.diag.report(&self.key_path(key), span, message);
    }

    pub fn get(&mut self, key: &str) -> Option<Found<'a>> {
        self.used.insert(key.to_string());
        let (k, item) = self.table.get_key_value(key)?;
        Some(Found {
            path: self.key_path(key),
            item,
            span: k.span().or_else(|| item.span()),
        })
    }

    fn typed<T>(&mut self, key: &str, what: &str, f: impl Fn(&Value) -> Option<T>) -> Option<T> {
        let found = self.get(key)?;
        let value = match found.item.as_value() {
            Some(_) => Some(self.fill(key, &found)?),
            None => None,
        };
        match value.as_deref().and_then(&f) {
            Some(v) => Some(v),
            None => {
                self.diag
                    .report(&found.path, found.span, format!("must be {what}"));
                None
            }
        }
    }

    pub fn required<T>(&self, key: &str, value: Option<T>) -> Option<T> {
        if value.is_none() && !self.has(key) {
            self.error(key, "is required");
        }
        value
    }

    /// A string that must be present and may not use a param: false after
    /// reporting `why` when its text has a `{{ params.NAME }}` placeholder.
    pub fn req_str_without_params(&mut self, key: &str, why: &str) -> Option<String> {
        if let Some(found) = self.get(key) {
            if found
                .item
                .as_str()
                .is_some_and(crate::params::has_placeholder)
            {
                self.diag.report(&found.path, found.span, why);
                return None;
            }
        }
        self.req_str(key)
    }

    /// A string that must be present.
    pub fn req_str(&mut self, key: &str) -> Option<String> {
        let v = self.str(key);
        self.required(key, v)
    }

    pub fn str(&mut self, key: &str) -> Option<String> {
        self.typed(key, "a string", |v| v.as_str().map(str::to_string))
    }

    /// A string of SQL: each `{{ params.NAME }}` becomes a quoted SQL
    /// literal, and one inside quotes or a comment is a problem.
    pub fn sql_str(&mut self, key: &str) -> Option<String> {
        let found = self.get(key)?;
        let value = match found.item.as_value() {
            Some(v) => Some(self.diag.fill_as(
                &found.path,
                found.span.clone(),
                v,
                self.fixed.contains(&key),
                true,
            )?),
            None => None,
        };
        match value
            .as_deref()
            .and_then(|v| v.as_str().map(str::to_string))
        {
            Some(v) => Some(v),
            None => {
                self.diag
                    .report(&found.path, found.span, "must be a string");
                None
            }
        }
    }

    pub fn bool(&mut self, key: &str) -> Option<bool> {
        self.typed(key, "true or false", Value::as_bool)
    }

    pub fn uint(&mut self, key: &str, min: i64, max: i64) -> Option<i64> {
        let what = format!("an integer from {min} to {max}");
        self.typed(key, &what, |v| {
            v.as_integer().filter(|i| (min..=max).contains(i))
        })
    }

    pub fn duration(&mut self, key: &str) -> Option<Duration> {
        self.typed(
            key,
            "a duration such as \"500ms\", \"30s\" or \"10m\"",
            |v| v.as_str().and_then(|s| humantime::parse_duration(s).ok()),
        )
    }

    /// A duration that must be more than zero: a zero timeout or wait would
    /// expire at once, so it is a mistake, not a setting.
    pub fn positive_duration(&mut self, key: &str) -> Option<Duration> {
        let d = self.duration(key)?;
        if d.is_zero() {
            self.error(key, "must be more than 0s");
            return None;
        }
        Some(d)
    }

    pub fn str_list(&mut self, key: &str) -> Option<Vec<String>> {
        self.typed(key, "a list of strings", |v| {
            v.as_array()?
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect()
        })
    }

    /// A sub-table, either `[a.b]` or an inline `{ ... }`.
    pub fn table(&mut self, key: &str) -> Option<Tbl<'a, 't>> {
        let found = self.get(key)?;
        match found.item.as_table_like() {
            Some(t) => Some(Tbl::new(self.diag, found.path, t, found.span)),
            None => {
                self.diag.report(&found.path, found.span, "must be a table");
                None
            }
        }
    }

    /// Stops unknown-key reports for this table, when its meaning is unknown anyway.
    pub fn skip_rest(&mut self) {
        for k in self.keys() {
            self.used.insert(k);
        }
    }

    /// Reports every key that no getter asked for.
    pub fn finish(self) {
        for (key, item) in self.table.iter() {
            if !self.used.contains(key) {
                let span = self
                    .table
                    .get_key_value(key)
                    .and_then(|(k, _)| k.span())
                    .or_else(|| item.span());
                self.diag.report(&self.key_path(key), span, "unknown key");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "[a]\nx = 1\ny = \"no\"\nz = true\n";
        let doc = parse_document("t.toml", text).unwrap();
        let diag = Diag::new(text);
        let mut root = Tbl::new(&diag, "", doc.as_table(), None);
        let mut a = root.table("a").unwrap();
        assert_eq!(a.uint("x", 0, 10), Some(1));
        assert_eq!(a.uint("y", 0, 10), None);
        a.finish();
        root.finish();
        let problems = diag.finish("t.toml").unwrap_err().problems;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(
            (problems[0].key.as_str(), problems[0].line),
            ("a.y", Some(3))
        );
        assert_eq!(
            (problems[1].key.as_str(), problems[1].line),
            ("a.z", Some(4))
        );
        assert!(problems[1].message.contains("unknown"));
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let err = parse_document("t.toml", "a = 1\nb = = 2\n").unwrap_err();
        assert_eq!(err.problems[0].line, Some(2), "{err}");
    }
}
