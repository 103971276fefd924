pub mod config;
pub mod coordinator;
pub mod failpoint;
pub mod flow;
pub mod node;
pub mod runstore;
pub mod state;
pub mod supervisor;
pub mod toml_reader;
pub mod transport;
pub mod worker;

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
