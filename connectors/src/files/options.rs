/*!
The files connector's TOML options, read and checked with every problem at
its key and line:
- an extract: `path = "FILE"` (relative to the flow file, or a glob), its
  `format` (else told from the name), CSV's `header` and `delimiter`, a
  declared `schema`, and `partitions = N`;
- a load: `path` (under the worker's output root), `format`, `header`,
  and `parts = true` for a directory of parts.

The HTTP connector ([`crate::http`]) reads a `url` with the same reader,
[`read_file_source`], so a task that names both `path` and `url` gets one
problem, not two.
*/

use std::path::Path;

use conveyor_diag::diag::Tbl;
use conveyor_schemas::names::{check_relative_path, is_glob};
use conveyor_schemas::{
    ColumnSpec, ColumnType, DataFormat, FileTarget, Partition, ReadOptions, SinkSpec, SourceSpec,
};

use crate::connector::MAX_PARTITIONS;

fn format_from_path(p: &str) -> Option<DataFormat> {
    let lower = p.to_ascii_lowercase();
    let lower = lower.split(['?', '#']).next().unwrap_or("");
    if lower.ends_with(".csv") || lower.ends_with(".tsv") {
        Some(DataFormat::Csv)
    } else if lower.ends_with(".parquet") || lower.ends_with(".pq") {
        Some(DataFormat::Parquet)
    } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
        Some(DataFormat::Jsonl)
    } else {
        None
    }
}

/// `format = "csv"`, or the format a file name says.
pub fn parse_format(t: &mut Tbl, path: Option<&str>) -> Option<DataFormat> {
    match t.str("format") {
        Some(f) => match f.as_str() {
            "csv" => Some(DataFormat::Csv),
            "parquet" => Some(DataFormat::Parquet),
            "jsonl" => Some(DataFormat::Jsonl),
            other => {
                t.error(
                    "format",
                    format!("unknown format `{other}`; expected csv, parquet or jsonl"),
                );
                None
            }
        },
        None if t.has("format") => None,
        None => {
            let guess = path.and_then(format_from_path);
            if guess.is_none() && path.is_some() {
                t.error("format", "cannot tell the format from the file name; set format = \"csv\", \"parquet\" or \"jsonl\"");
            }
            guess
        }
    }
}

/// Where an extract's `path` or `url` points, before its options are read.
enum Located {
    Path(String),
    Url(String),
}

/// An extract of a file, a glob or a URL: `path` or `url`, and the file
/// options.
pub fn read_file_source(t: &mut Tbl, base: &Path) -> Option<SourceSpec> {
    if t.has("partition_by") {
        t.error(
            "partition_by",
            "only a PostgreSQL extract is partitioned by a key; a file is cut into byte ranges",
        );
    }
    let path = t.str("path");
    let url = t.str("url");
    let source = match (path, url) {
        (Some(p), None) => {
            // A path that a secret starts is the worker's to know: its
            // value is used as it is, not against the flow's directory.
            let full = if p.starts_with(conveyor_schemas::secrets::OPEN) {
                p.clone()
            } else {
                base.join(&p).display().to_string()
            };
            Some((Located::Path(full), p))
        }
        (None, Some(u)) => {
            let scheme_ok = u.starts_with("http://")
                || u.starts_with("https://")
                || u.starts_with(conveyor_schemas::secrets::OPEN);
            if !scheme_ok {
                t.error("url", "must start with http:// or https://");
            }
            Some((Located::Url(u.clone()), u))
        }
        (Some(_), Some(_)) => {
            t.error("url", "give either `path` or `url`, not both");
            None
        }
        (None, None) => {
            if !t.has("path") && !t.has("url") {
                t.error(
                    "path",
                    "an extract needs `path = \"FILE\"` or `url = \"https://...\"`",
                );
            }
            None
        }
    };
    let format = parse_format(t, source.as_ref().map(|s| s.1.as_str()));
    let header = t.bool("header").unwrap_or(true);
    let delimiter = t.str("delimiter").unwrap_or_else(|| ",".into());
    let partitions = t
        .uint("partitions", 1, MAX_PARTITIONS as i64)
        .map(|n| n as u32);
    if partitions.is_some() {
        if let Some((Located::Url(_), _)) = &source {
            t.error(
                "partitions",
                "a download cannot be partitioned; give a local `path` (a file or a glob)",
            );
        }
    }
    if !matches!(delimiter.as_bytes(), [b] if b.is_ascii()) {
        t.error("delimiter", "must be one ASCII character");
    }
    let schema = t.table("schema").map(|mut s| {
        let mut cols = Vec::new();
        for key in s.keys() {
            let ty = s.str(&key);
            match ty.as_deref().map(|x| (x, ColumnType::parse(x))) {
                Some((_, Ok(column_type))) => cols.push(ColumnSpec {
                    name: key,
                    column_type,
                }),
                Some((x, Err(why))) => s.error(&key, format!("unknown type `{x}`; {why}")),
                None => {}
            }
        }
        s.finish();
        cols
    });
    let read = ReadOptions {
        format: format?,
        schema,
        header,
        delimiter,
        // Expanded into one task per partition once the graph is known.
        partition: partitions.map(|count| Partition { index: 0, count }),
    };
    Some(match source?.0 {
        Located::Path(pattern) if is_glob(&pattern) => SourceSpec::Glob { pattern, read },
        Located::Path(path) => SourceSpec::File { path, read },
        Located::Url(url) => SourceSpec::Url { url, read },
    })
}

/// A load into a file under the output root: `path`, `format`, `header`,
/// and `parts = true` for a directory of parts.
pub fn read_sink(t: &mut Tbl) -> Option<SinkSpec> {
    let path = t.req_str("path");
    if let Some(p) = &path {
        if let Err(e) = check_relative_path("load path", p) {
            t.error("path", e.to_string());
        }
    }
    let format = parse_format(t, path.as_deref());
    let header = t.bool("header").unwrap_or(true);
    let parts = t.bool("parts").unwrap_or(false);
    let target = FileTarget {
        format: format?,
        path: path?,
        header,
    };
    // A directory of parts: only a partitioned input has parts.
    Some(if parts {
        SinkSpec::Dir(target)
    } else {
        SinkSpec::File(target)
    })
}
