/*!
SQL steps checked at parse time: `conveyor validate` reports a query that
does not parse, with the parser's line and column, before anything runs.

The parser is `sqlparser` with the generic dialect, the crate and dialect
DataFusion itself parses with (the same version and features, so the
workspace compiles it once). Only syntax is checked here: which tables and
columns exist is known when the task runs, and DataFusion plans it then.

A name in single quotes (`FROM 't'`, `o.'c'`, `AS 'a'`) is refused. This
parser, as DataFusion runs it, takes a single-quoted string where it
expects a name. A `{{ params.x }}` becomes a single-quoted literal
([`crate::params::sql_literal`]), so without this check a param could stand
for a table or a column, which it must never do. Names go in double quotes.
*/

use std::ops::ControlFlow;

use sqlparser::ast::{Statement, ValueWithSpan, Visit, Visitor};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

/// Checks that `sql` is one query (`SELECT`, `WITH`, `VALUES`, ...): a SQL
/// step turns rows into rows, so DDL, DML and several statements are refused.
pub fn check_query(sql: &str) -> Result<(), String> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| format!("is not valid SQL: {}", without_prefix(&e.to_string())))?;
    match statements.as_slice() {
        [query @ Statement::Query(_)] => check_quoted_names(sql, query),
        [] => Err("is empty: write one SELECT query".into()),
        [_] => Err(
            "must be a query (SELECT, WITH or VALUES): a SQL step turns its input rows into new rows and changes nothing else"
                .into(),
        ),
        many => Err(format!(
            "holds {} statements; a SQL step is one query",
            many.len()
        )),
    }
}

/// Refuses a single-quoted string that the parser took as a name: every
/// single-quoted string of the text must start a value of the tree.
fn check_quoted_names(sql: &str, query: &Statement) -> Result<(), String> {
    struct ValueStarts(Vec<Location>);
    impl Visitor for ValueStarts {
        type Break = ();
        fn pre_visit_value(&mut self, value: &ValueWithSpan) -> ControlFlow<()> {
            self.0.push(value.span.start);
            ControlFlow::Continue(())
        }
    }
    let mut values = ValueStarts(Vec::new());
    let _ = query.visit(&mut values);
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| format!("is not valid SQL: {e}"))?;
    for token in tokens {
        if let Token::SingleQuotedString(text) = &token.token {
            if !values.0.contains(&token.span.start) {
                let at = token.span.start;
                return Err(format!(
                    "uses '{text}' as a name at Line: {}, Column: {}: write a table, column or alias name in double quotes; a single-quoted text (and a `{{{{ params.NAME }}}}`) is always a value",
                    at.line, at.column
                ));
            }
        }
    }
    Ok(())
}

/// The parser's message without its `sql parser error: ` prefix.
fn without_prefix(message: &str) -> &str {
    message
        .strip_prefix("sql parser error: ")
        .unwrap_or(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_query_passes_and_anything_else_names_why_and_where() {
        assert!(check_query("SELECT a, sum(b) FROM t GROUP BY a").is_ok());
        assert!(check_query("WITH x AS (SELECT 1 AS a) SELECT * FROM x").is_ok());
        let err = check_query("SELECT a\nFROMM t").unwrap_err();
        assert!(err.contains("Line: 2, Column: 7"), "{err}");
        assert!(check_query("DROP TABLE t")
            .unwrap_err()
            .contains("must be a query"));
        assert!(check_query("SELECT 1; SELECT 2")
            .unwrap_err()
            .contains("2 statements"));
        assert!(check_query("  ").unwrap_err().contains("empty"));
    }

    #[test]
    fn a_single_quoted_name_is_refused_and_every_kind_of_value_passes() {
        for sql in [
            "SELECT * FROM 't'",
            "SELECT o.'c' FROM orders o",
            "SELECT a AS 'x' FROM t",
            "SELECT a FROM t AS 'x'",
            "SELECT * FROM t JOIN 'u' USING (id)",
            "WITH 'w' AS (SELECT 1 AS a) SELECT * FROM w",
        ] {
            let err = check_query(sql).expect_err(sql);
            assert!(err.contains("as a name at Line: 1"), "{sql}: {err}");
        }
        let err = check_query("SELECT a,\n  b AS 'it''s' FROM t").unwrap_err();
        assert!(
            err.starts_with("uses 'it's' as a name at Line: 2, Column: 8"),
            "{err}"
        );
        for sql in [
            "SELECT * FROM t WHERE day = '2026-01-01' AND name LIKE 'a%' ESCAPE '!'",
            "SELECT DATE '2026-01-01', TIMESTAMP '2026-01-01 00:00:00', INTERVAL '1 day'",
            "SELECT CAST('1' AS INT), 'a' || 'b', concat('x', a) FROM \"t\" AS \"the table\"",
            "SELECT a FROM t WHERE a IN ('x', 'y') AND b BETWEEN '1' AND '2'",
            "SELECT CASE WHEN a = 'x' THEN 'y' ELSE 'z' END AS \"c\" FROM t",
            "SELECT ts AT TIME ZONE 'UTC', extract(year FROM DATE '2026-01-01') FROM t",
            "SELECT * FROM (VALUES ('a', 1)) AS v(x, y)",
        ] {
            assert_eq!(check_query(sql), Ok(()), "{sql}");
        }
    }
}
