/*!
SQL steps checked at parse time: `conveyor validate` reports a query that
does not parse, with the parser's line and column, before anything runs.

The parser is `sqlparser` with the generic dialect, the crate and dialect
DataFusion itself parses with (the same version and features, so the
workspace compiles it once). Only syntax is checked here: which tables and
columns exist is known when the task runs, and DataFusion plans it then.
*/

use sqlparser::ast::Statement;
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

/// Checks that `sql` is one query (`SELECT`, `WITH`, `VALUES`, ...): a SQL
/// step turns rows into rows, so DDL, DML and several statements are refused.
pub fn check_query(sql: &str) -> Result<(), String> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| format!("is not valid SQL: {}", without_prefix(&e.to_string())))?;
    match statements.as_slice() {
        [Statement::Query(_)] => Ok(()),
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
}
