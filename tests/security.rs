//! A deployment with its own vhost and a broker user per role: workers can
//! consume tasks and publish results but cannot publish tasks; a client
//! without permission is refused with a clear error; passwords never show.

use std::process::Command;

use conveyor_schemas::FlowState;

use crate::util::*;

/// A vhost and users on the local broker, removed on drop.
struct Deployment {
    vhost: String,
    users: Vec<String>,
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl on PATH");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        describe(&out)
    );
}

impl Deployment {
    fn new(vhost: &str) -> Deployment {
        rabbitmqctl(&["add_vhost", vhost]);
        Deployment {
            vhost: vhost.to_string(),
            users: Vec::new(),
        }
    }

    fn user(&mut self, name: &str, password: &str, perms: Option<[&str; 3]>) -> String {
        rabbitmqctl(&["add_user", name, password]);
        self.users.push(name.to_string());
        if let Some([configure, write, read]) = perms {
            rabbitmqctl(&[
                "set_permissions",
                "-p",
                &self.vhost,
                name,
                configure,
                write,
                read,
            ]);
        }
        format!("amqp://{name}:{password}@127.0.0.1:5672/{}", self.vhost)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.vhost])
            .output();
        for u in &self.users {
            let _ = Command::new("rabbitmqctl")
                .args(["delete_user", u])
                .output();
        }
    }
}

/// Publishes one message as `url` and returns the broker's answer.
fn try_publish(url: &str, exchange: &str, routing_key: &str) -> Result<(), String> {
    publish_at(url, exchange, routing_key, &[b"{}".to_vec()], false)
}

#[test]
fn per_role_users_in_their_own_vhost() {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let ns = "sec";
    let mut deployment = Deployment::new(&format!("conveyor-sec-{id}"));
    let worker_secret = format!("w-secret-{id}");
    let worker_url = deployment.user(
        &format!("sec-{id}-worker"),
        &worker_secret,
        Some([
            r"^sec\.(tasks|events|replies|dlx|dead|tasks\.(extract|transform|load))$",
            // Declaring a queue that dead-letters needs write on its DLX.
            r"^sec\.(events|replies|dlx|dead|tasks\.(extract|transform|load))$",
            r"^sec\.(tasks|dlx|tasks\.(extract|transform|load))$",
        ]),
    );
    let coord_secret = format!("c-secret-{id}");
    let coord_url = deployment.user(
        &format!("sec-{id}-coord"),
        &coord_secret,
        Some([
            r"^(sec\..*|amq\.gen-.*)$",
            r"^(sec\..*|amq\.gen-.*)$",
            r"^(sec\..*|amq\.gen-.*)$",
        ]),
    );
    let nobody_secret = format!("n-secret-{id}");
    let nobody_url = deployment.user(&format!("sec-{id}-nobody"), &nobody_secret, None);

    let dir = TestDir::new("security_roles");
    let storage = dir.join("shared");
    let w = dir.write(
        "w.toml",
        &node_config_at(
            &worker_url,
            "w",
            ns,
            &["extract", "transform", "load"],
            &storage,
            "",
        ),
    );
    let worker = NodeProcess::start(&w, &dir.join("w.log"), &[]);
    let client = dir.write(
        "client.toml",
        &node_config_at(&coord_url, "client", ns, &[], &dir.join("c"), ""),
    );
    let flow = colors_flow(&dir, "secure", "");
    let (out, report) = run_flow(&dir.path, &flow, &["--config", client.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}\n{}",
        describe(&out),
        worker.log_text()
    );
    assert_eq!(report.unwrap().state, FlowState::Succeeded);

    // The worker's user cannot publish tasks, not even through the default exchange.
    let refused = try_publish(&worker_url, "sec.tasks", "extract").unwrap_err();
    assert!(
        refused.contains("ACCESS_REFUSED") || refused.contains("ACCESS-REFUSED"),
        "{refused}"
    );
    let refused = try_publish(&worker_url, "", "sec.tasks.extract").unwrap_err();
    assert!(
        refused.contains("ACCESS_REFUSED") || refused.contains("ACCESS-REFUSED"),
        "{refused}"
    );
    assert!(try_publish(&coord_url, "sec.tasks", "nonexistent-kind").is_ok());

    // A user without permission on the vhost is refused, clearly, and its
    // password is not printed.
    let denied = dir.write(
        "denied.toml",
        &node_config_at(&nobody_url, "denied", ns, &[], &dir.join("d"), ""),
    );
    let (out, _) = run_flow(&dir.path, &flow, &["--config", denied.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(70), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to amqp://") && stderr.contains(":***@"),
        "{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("access")
            || stderr.contains("NOT_ALLOWED")
            || stderr.contains("NOT-ALLOWED"),
        "{stderr}"
    );

    // Secrets appear in no log, report or output.
    let mut everything = worker.log_text();
    everything.push_str(&describe(&out));
    for secret in [&worker_secret, &coord_secret, &nobody_secret] {
        assert!(!everything.contains(secret.as_str()), "a password leaked");
    }
}
