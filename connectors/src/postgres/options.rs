/*!
A PostgreSQL connector's TOML options, read and checked with every problem
at its key and line:
- an extract: `postgres = { url = "...", query = "..." }`, and
  `partition_by = "COLUMN"` with `partitions = N`;
- a load: `postgres = { url, table, mode, key, create }`.
*/

use conveyor_diag::diag::Tbl;
use conveyor_schemas::names::{check_sql_column, check_sql_table};
use conveyor_schemas::{Partition, PgMode, PgTarget, SinkSpec, SourceSpec};

use crate::connector::MAX_PARTITIONS;

/// Why a PostgreSQL `url` takes no param: a value with `?`, `&` or `=` would
/// add connection options (another `host`, say, which would then be sent the
/// password of a `${env:NAME}` secret).
const PG_URL_NO_PARAMS: &str = "cannot use a `{{ params.NAME }}` placeholder: a value could add connection options (another host, which would be sent the password); name the database in the URL, or read the URL from `${env:NAME}`";

/// `postgres = { url = "...", query = "..." }`, and `partition_by` with
/// `partitions`: an extract of a query's rows.
pub fn read_source(t: &mut Tbl) -> Option<SourceSpec> {
    for key in ["path", "url", "format", "header", "delimiter", "schema"] {
        if t.get(key).is_some() {
            t.error(
                key,
                "a PostgreSQL extract takes `postgres = { url, query }`, not file options",
            );
        }
    }
    let mut pg = t.table("postgres")?;
    let url = pg.req_str_without_params("url", PG_URL_NO_PARAMS);
    let query = pg.sql_str("query");
    if query.is_none() && !pg.has("query") {
        pg.error(
            "query",
            "is required: the SELECT whose rows the extract reads",
        );
    }
    if let Some(u) = &url {
        if !is_pg_url(u) {
            pg.error(
                "url",
                "must be a PostgreSQL URL: postgresql://USER@HOST[:PORT]/DATABASE (or postgres://)",
            );
        }
    }
    if let Some(q) = &query {
        if q.trim().is_empty() {
            pg.error("query", "must not be empty");
        }
    }
    pg.finish();
    let partitions = t
        .uint("partitions", 1, MAX_PARTITIONS as i64)
        .map(|n| n as u32);
    let partition_by = t.str("partition_by");
    if let Some(col) = &partition_by {
        if let Err(e) = check_sql_column(col) {
            t.error("partition_by", e.to_string());
        }
    }
    match (&partition_by, partitions) {
        (None, Some(n)) if n > 1 => t.error(
            "partitions",
            "a PostgreSQL extract is read in key ranges: set `partition_by = \"COLUMN\"`, an integer column of the query",
        ),
        (Some(_), None) => t.error(
            "partition_by",
            "needs `partitions = N`, the number of key ranges read in parallel",
        ),
        _ => {}
    }
    Some(SourceSpec::Postgres {
        url: url?,
        query: query?,
        partition: partition_by
            .is_some()
            .then(|| partitions.map(|count| Partition { index: 0, count }))
            .flatten(),
        partition_by,
    })
}

fn is_pg_url(url: &str) -> bool {
    url.starts_with("postgresql://") || url.starts_with("postgres://") || url.starts_with("${env:")
}

/// `postgres = { url, table, mode, key, create }`: a load into a table.
pub fn read_sink(t: &mut Tbl) -> Option<SinkSpec> {
    for key in ["path", "format", "header", "parts"] {
        if t.get(key).is_some() {
            t.error(
                key,
                "a PostgreSQL load takes `postgres = { url, table, mode }`, not file options",
            );
        }
    }
    let mut pg = t.table("postgres")?;
    let url = pg.req_str_without_params("url", PG_URL_NO_PARAMS);
    if let Some(u) = &url {
        if !is_pg_url(u) {
            pg.error(
                "url",
                "must be a PostgreSQL URL: postgresql://USER@HOST[:PORT]/DATABASE (or postgres://)",
            );
        }
    }
    let table = pg.req_str("table");
    let table_ok = match &table {
        Some(name) => match check_sql_table(name) {
            Ok(_) => true,
            Err(e) => {
                pg.error("table", e.to_string());
                false
            }
        },
        None => false,
    };
    let mode = match pg.str("mode").as_deref().map(|m| (m, PgMode::parse(m))) {
        Some((_, Some(mode))) => Some(mode),
        Some((m, None)) => {
            pg.error(
                "mode",
                format!("unknown mode `{m}`; expected append, replace or upsert"),
            );
            None
        }
        None if pg.has("mode") => None,
        None => Some(PgMode::Append),
    };
    let key = pg.str_list("key");
    let key_ok = match &key {
        Some(cols) => {
            let mut ok = true;
            for c in cols {
                if let Err(e) = check_sql_column(c) {
                    pg.error("key", e.to_string());
                    ok = false;
                }
            }
            ok
        }
        None => !pg.has("key"),
    };
    let key = key.unwrap_or_default();
    match mode {
        Some(PgMode::Upsert) if key.is_empty() && key_ok => pg.error(
            "key",
            "mode = \"upsert\" needs `key = [\"COLUMN\", ...]`: the columns of the table's primary key or unique index",
        ),
        Some(m) if m != PgMode::Upsert && !key.is_empty() => pg.error(
            "key",
            format!("only mode = \"upsert\" takes a key; mode is {}", m.as_str()),
        ),
        _ => {}
    }
    let create = pg.bool("create").unwrap_or(false);
    pg.finish();
    if !(table_ok && key_ok) {
        return None;
    }
    Some(SinkSpec::Postgres(PgTarget {
        url: url?,
        table: table?,
        mode: mode?,
        key,
        create,
    }))
}
