//! Node config files for a test: its broker, namespace, worker kinds and
//! storage directories.

use std::path::Path;

use super::broker::amqp_url;

pub fn node_config(name: &str, ns: &str, kinds: &[&str], storage: &Path, extra: &str) -> String {
    node_config_at(&amqp_url(), name, ns, kinds, storage, extra)
}

/// A node config for the broker at `url`.
pub fn node_config_at(
    url: &str,
    name: &str,
    ns: &str,
    kinds: &[&str],
    storage: &Path,
    extra: &str,
) -> String {
    let kinds: Vec<String> = kinds.iter().map(|k| format!("\"{k}\"")).collect();
    // A node config confines sources to its `data` folder and fetches no
    // URL by default (issue 22): test flows read the repository's files and
    // their own directories (all under the repository), and local servers.
    let workers = if kinds.is_empty() {
        String::new()
    } else {
        format!(
            "[workers]\nkinds = [{}]\ninput_roots = [\"{}\"]\nallow_urls = [\"*\"]\n",
            kinds.join(", "),
            super::workdir::repo_root().display()
        )
    };
    // A coordinator node serves its API on 127.0.0.1:7070 by default; tests
    // run side by side, so each takes a port of its own (its log says which).
    let api = if extra.contains("[coordinator]") && !extra.contains("[api]") {
        "\n[api]\nlisten = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    format!(
        "[node]\nname = \"{name}\"\nheartbeat = \"200ms\"\n\n[broker]\nurl = \"{url}\"\nnamespace = \"{ns}\"\n\n{workers}\n[storage]\nartifacts = \"{}\"\noutput_root = \"{}\"\n{extra}{api}",
        storage.join("artifacts").display(),
        storage.join("out").display()
    )
}
