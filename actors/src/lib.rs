pub mod config;
pub mod flow;
pub mod toml_reader;

/// Names of nodes, flows, tasks and namespaces: safe as file and queue name parts.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
