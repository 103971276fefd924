/*!
The one set of rules for names and relative paths.

Names end up as file-name components and AMQP queue-name parts, and paths
from flows and messages end up under a node's output root, so both are
hostile until checked. The flow parser (`conveyor validate`) and the worker
that receives a message apply these same functions:

- a **name** that a user chooses (flow, task, node, namespace) is 1 to
  [`MAX_NAME`] characters of ASCII letters, digits, `_`, `-` and `.`, and not
  `.` or `..`;
- a **task name on the wire** is a name, or `NAME@N` for partition `N` of a
  partitioned task (Conveyor makes those; users cannot write `@`);
- a **run id** is made by the coordinator (`FLOW-SUFFIX`); it has the
  characters of a name and at most [`MAX_ID`] of them, since it is longer
  than the flow's name;
- a **relative path** has no root, no `..`, no NUL, components of at most 255
  bytes, and at most 1024 bytes in all;
- a **SQL table** is `table` or `schema.table`, each part an identifier of 1
  to 63 bytes: an ASCII letter or `_`, then letters, digits, `_` or `$`
  (quoted when used, so its case is kept); a **SQL column** is 1 to 63 bytes
  with no NUL (quoted when used, so any header name works).
*/

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Longest name a user may choose.
pub const MAX_NAME: usize = 64;
/// Longest run id.
pub const MAX_ID: usize = 128;
/// Longest file name most file systems accept.
const MAX_COMPONENT_BYTES: usize = 255;
/// Longest relative path accepted.
const MAX_PATH_BYTES: usize = 1024;

/// A name or path that breaks the rules; the message names what and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError(pub String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameError {}

/// What the name rule says, for messages.
pub const NAME_RULE: &str = "must be 1-64 characters of letters, digits, `_`, `-` or `.`";

fn has_name_form(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn is_name(name: &str) -> bool {
    has_name_form(name, MAX_NAME)
}

/// A name a user chooses: a flow, task, node or namespace.
pub fn check_name(what: &str, name: &str) -> Result<(), NameError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(NameError(format!(
            "{what} `{}` {NAME_RULE}",
            name.escape_debug()
        )))
    }
}

/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
pub const MAX_SQL_IDENT: usize = 63;

/// A SQL table name, `table` or `schema.table`: its parts, or why not.
pub fn check_sql_table(name: &str) -> Result<(Option<&str>, &str), NameError> {
    let ident = |p: &str| {
        !p.is_empty()
            && p.len() <= MAX_SQL_IDENT
            && p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
    };
    let parts = match name.split_once('.') {
        Some((schema, table)) => (Some(schema), table),
        None => (None, name),
    };
    if parts.0.is_none_or(ident) && ident(parts.1) {
        Ok(parts)
    } else {
        Err(NameError(format!(
            "table `{}` must be `table` or `schema.table`, each an identifier of 1-63 letters, digits, `_` or `$` starting with a letter or `_`",
            name.escape_debug()
        )))
    }
}

/// A SQL column name (quoted when used): 1 to 63 bytes, no NUL.
pub fn check_sql_column(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_SQL_IDENT || name.contains('\0') {
        Err(NameError(format!(
            "column `{}` must be 1-63 bytes with no NUL to be a SQL column",
            name.escape_debug()
        )))
    } else {
        Ok(())
    }
}

/// `name` as a quoted SQL identifier: `"..."` with each `"` doubled.
pub fn quote_sql_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A task name as messages carry it: a name, or `NAME@N` for a partition.
pub fn check_task_name(what: &str, name: &str) -> Result<(), NameError> {
    let ok = match name.rsplit_once('@') {
        Some((base, index)) => {
            is_name(base) && !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())
        }
        None => is_name(name),
    };
    if ok {
        Ok(())
    } else {
        Err(NameError(format!(
            "{what} `{}` {NAME_RULE}, optionally followed by `@N` for a partition",
            name.escape_debug()
        )))
    }
}

/// A flow-run id: the characters of a name, at most [`MAX_ID`] of them.
pub fn check_run_id(what: &str, id: &str) -> Result<(), NameError> {
    if has_name_form(id, MAX_ID) {
        Ok(())
    } else {
        Err(NameError(format!(
            "{what} `{}` must be 1-{MAX_ID} characters of letters, digits, `_`, `-` or `.`",
            id.escape_debug()
        )))
    }
}

/// The name of partition `i` of task `name`. `@` is not allowed in the names
/// users write, so it cannot clash with another task.
pub fn partition_name(name: &str, i: u32) -> String {
    format!("{name}@{i}")
}

/// Checks the syntax of a relative path from a flow or message, without
/// touching the file system, and returns it cleaned of `.` components.
pub fn check_relative_path(what: &str, path: &str) -> Result<PathBuf, NameError> {
    let bad = |why: &str| NameError(format!("{what} `{}` {why}", path.escape_debug()));
    if path.is_empty() {
        return Err(bad("is empty"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(bad(&format!("is longer than {MAX_PATH_BYTES} bytes")));
    }
    let mut clean = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => {
                if name.len() > MAX_COMPONENT_BYTES {
                    return Err(bad(&format!(
                        "has a component longer than {MAX_COMPONENT_BYTES} bytes"
                    )));
                }
                clean.push(name);
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("must not contain `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("must be relative to the output root"))
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(bad("names no file"));
    }
    Ok(clean)
}

/// Whether a source path is a glob pattern (holds `*`, `?` or `[`).
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {

    #[test]
    fn sql_tables_are_identifiers_and_columns_are_quoted() {
        assert_eq!(check_sql_table("colors").unwrap(), (None, "colors"));
        assert_eq!(
            check_sql_table("public.Colors_2$").unwrap(),
            (Some("public"), "Colors_2$")
        );
        for bad in [
            "",
            "x; DROP TABLE y",
            "\"a\".\"b\"",
            "a.b.c",
            "1x",
            "a.",
            ".a",
            "a b",
            "t--",
        ] {
            assert!(check_sql_table(bad).is_err(), "{bad}");
        }
        assert!(check_sql_table(&"a".repeat(64)).is_err());
        assert!(check_sql_column("Color Name").is_ok());
        assert!(check_sql_column("").is_err());
        assert!(check_sql_column("a\0b").is_err());
        assert_eq!(quote_sql_ident("a\"; DROP"), "\"a\"\"; DROP\"");
    }
    use super::*;

    #[test]
    fn names_are_single_safe_components() {
        assert!(check_name("task", "extract_1").is_ok());
        assert!(check_name("task", &"n".repeat(64)).is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é", "a@1", &"n".repeat(65)] {
            assert!(check_name("task", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partition_names_are_task_names_on_the_wire_only() {
        assert!(check_task_name("task", &partition_name("load", 12)).is_ok());
        assert!(check_task_name("task", "load").is_ok());
        for bad in ["load@", "@1", "load@x", "a/b@1", "..@1", "a@1@2"] {
            assert!(check_task_name("task", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn run_ids_fit_the_longest_flow_name_and_a_suffix() {
        let longest = format!("{}-0123456789ab", "f".repeat(64));
        assert!(check_run_id("flow_run", &longest).is_ok());
        for bad in ["", "..", "../x-1", "f-a/b", "f@1", &"f".repeat(129)] {
            assert!(check_run_id("flow_run", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hostile_relative_paths_are_rejected() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\0b",
            "",
            ".",
            &"n".repeat(300),
        ] {
            assert!(check_relative_path("load path", bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_relative_path("p", "./a/b.csv").unwrap(),
            PathBuf::from("a/b.csv")
        );
    }
}
