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
    let workers = if kinds.is_empty() {
        String::new()
    } else {
        format!("[workers]\nkinds = [{}]\n", kinds.join(", "))
    };
    format!(
        "[node]\nname = \"{name}\"\nheartbeat = \"200ms\"\n\n[broker]\nurl = \"{url}\"\nnamespace = \"{ns}\"\n\n{workers}\n[storage]\nartifacts = \"{}\"\noutput_root = \"{}\"\n{extra}",
        storage.join("artifacts").display(),
        storage.join("out").display()
    )
}
