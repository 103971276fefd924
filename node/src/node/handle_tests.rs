/*!
The coordinator's handle, end to end: a node that plays every role in this
process, driven only through [`CoordinatorHandle`].
*/

use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::Arc;

use conveyor_config::{CoordinatorMode, Launch, NodeConfig};
use conveyor_coordinator::runstore::RunQuery;
use conveyor_coordinator::view::{CoordinatorError, LogQuery};
use conveyor_coordinator::CoordinatorHandle;
use conveyor_flow::{FlowSource, FlowSpec};
use conveyor_schemas::FlowState;

use super::Node;

/// Runs `body` with the handle of a coordinator node that has a database
/// and plays every role in this process, and a two-task flow `h` (`e`
/// reads two rows of `in.csv`, `l` loads them).
fn with_in_process_node(
    name: &str,
    body: impl AsyncFnOnce(CoordinatorHandle, Arc<FlowSpec>, FlowSource, &NodeConfig),
) {
    let dir = std::env::temp_dir().join(format!("conveyor-handle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in.csv"), "a,b\n1,x\n2,y\n").unwrap();
    let flow_text = "[flow]\nname = \"h\"\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"out.csv\"\n";
    let flow = Arc::new(FlowSpec::parse("h.toml", flow_text, &dir).unwrap());
    let source = FlowSource {
        file: "h.toml".into(),
        text: flow_text.into(),
        base: dir.display().to_string(),
        params: Default::default(),
    };
    let mut cfg = NodeConfig::embedded(&dir);
    if let Some(c) = cfg.coordinator.as_mut() {
        c.db = Some(dir.join("c.db"));
    }
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let system = actix::System::new();
    system.block_on(async {
        let roles = cfg.roles(Launch::Node).unwrap();
        assert_eq!(roles.coordinator, CoordinatorMode::Service);
        let node = Node::start(&cfg, &roles, io.handle().clone())
            .await
            .unwrap();
        let handle = node.coordinator.clone().unwrap();
        body(handle, flow, source, &cfg).await;
        node.shutdown(Duration::from_secs(1)).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A coordinator node with a database, all roles in this process: the
/// handle answers live questions from the actor and history from SQLite.
#[test]
fn the_handle_submits_watches_gets_and_lists_runs() {
    with_in_process_node("runs", async |handle, flow, source, _cfg| {
        let mut ids = Vec::new();
        for _ in 0..3 {
            let run = handle.submit(flow.clone(), source.clone()).await.unwrap();
            let watch = handle.watch(&run.flow_run).await.unwrap().expect("live");
            let done = run.done.await.unwrap();
            assert_eq!(done.state, FlowState::Succeeded, "{done:?}");
            // The watch saw the run through to its end.
            assert_eq!(watch.borrow().state, FlowState::Succeeded);
            ids.push(run.flow_run);
            // Distinct creation times, so the newest-first order is known.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Finished: served from the database, with its report and times.
        let seen = loop {
            let view = handle.get(&ids[0]).await.unwrap().unwrap();
            if !view.live {
                break view;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(seen.report.state, FlowState::Succeeded);
        let saved = seen.saved.unwrap();
        assert_eq!(saved.flow, "h");
        assert!(saved.ended_ms.unwrap() >= saved.created_ms);
        assert!(handle.get("h-nosuchrun000").await.unwrap().is_none());
        let page = handle
            .list(RunQuery {
                limit: 2,
                ..RunQuery::default()
            })
            .await
            .unwrap();
        let listed: Vec<&str> = page.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()]);
        assert!(page.next.is_some());
        // A run that ended can be neither cancelled nor, having
        // succeeded, retried; an unknown one is not found.
        assert!(matches!(
            handle.cancel(&ids[0]).await,
            Err(CoordinatorError::Conflict(m)) if m.contains("already ended (Succeeded)")
        ));
        assert!(matches!(
            handle.retry(&ids[0]).await,
            Err(CoordinatorError::Conflict(m)) if m.contains("nothing to retry")
        ));
        assert!(matches!(
            handle.cancel("h-nosuchrun000").await,
            Err(CoordinatorError::NotFound(_))
        ));
        assert!(matches!(
            handle.retry("h-nosuchrun000").await,
            Err(CoordinatorError::NotFound(_))
        ));
    });
}

/// A coordinator node with `[coordinator] flows`: it lists its flows,
/// triggers one by name, and fires the scheduled one by itself.
#[test]
fn registered_flows_are_listed_triggered_and_scheduled() {
    let dir = std::env::temp_dir().join(format!("conveyor-handle-reg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::write(dir.join("flows/in.csv"), "a,b\n1,x\n").unwrap();
    let flow = |name: &str, extra: &str, params: &str, out: &str| {
        format!("[flow]\nname = \"{name}\"\n{extra}\n[params]\n{params}\n[tasks.e]\nkind = \"extract\"\npath = \"in.csv\"\n[tasks.l]\nkind = \"load\"\ninput = \"e\"\npath = \"{out}\"\n")
    };
    std::fs::write(
        dir.join("flows/manual.toml"),
        flow(
            "manual",
            "",
            "day = { default = \"d1\" }",
            "manual-{{ params.day }}.csv",
        ),
    )
    .unwrap();
    // `slot` needs no default: every scheduled run is given one.
    std::fs::write(
        dir.join("flows/tick.toml"),
        flow(
            "tick",
            "schedule = \"* * * * * *\"\ntimezone = \"Europe/Paris\"",
            "slot = {}",
            "tick.csv",
        ),
    )
    .unwrap();
    let mut cfg = NodeConfig::embedded(&dir);
    if let Some(c) = cfg.coordinator.as_mut() {
        c.db = Some(dir.join("c.db"));
        c.flows = Some(dir.join("flows"));
    }
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let system = actix::System::new();
    system.block_on(async {
        let roles = cfg.roles(Launch::Node).unwrap();
        let node = Node::start(&cfg, &roles, io.handle().clone())
            .await
            .unwrap();
        let handle = node.coordinator.clone().unwrap();
        let flows = handle.flows().await.unwrap();
        let names: Vec<&str> = flows.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["manual", "tick"]);
        assert_eq!(flows[0].schedule, None);
        assert_eq!(flows[0].next_fire_ms, None);
        assert_eq!(flows[1].schedule.as_deref(), Some("* * * * * *"));
        assert_eq!(flows[1].timezone.as_deref(), Some("Europe/Paris"));
        let now = conveyor_coordinator::state::Clock::now().wall_ms;
        let next = flows[1].next_fire_ms.unwrap();
        assert!(next > now && next <= now + 1000, "{next} vs {now}");
        assert!(flows[1].file.ends_with("tick.toml"), "{}", flows[1].file);
        assert_eq!(
            flows[0].params,
            BTreeMap::from([("day".to_string(), Some("d1".to_string()))])
        );
        assert_eq!(
            flows[1].params,
            BTreeMap::from([("slot".to_string(), None)])
        );

        let day = BTreeMap::from([("day".to_string(), "d2".to_string())]);
        let run = handle.trigger("manual", day).await.unwrap();
        let done = run.done.await.unwrap();
        assert_eq!(done.state, FlowState::Succeeded, "{done:?}");
        assert!(dir.join("out/manual-d2.csv").is_file());
        assert!(matches!(
            handle.trigger("nope", BTreeMap::new()).await,
            Err(CoordinatorError::NotFound(m)) if m.contains("`nope`")
        ));
        let bad = BTreeMap::from([("month".to_string(), "1".to_string())]);
        assert!(matches!(
            handle.trigger("manual", bad).await,
            Err(CoordinatorError::Invalid(m)) if m.contains("params.month") && m.contains("declares only day")
        ));
        // A scheduled flow triggered by hand must be given its slot.
        assert!(matches!(
            handle.trigger("tick", BTreeMap::new()).await,
            Err(CoordinatorError::Invalid(m)) if m.contains("params.slot") && m.contains("is required")
        ));
        // The schedule fires within a few seconds, and its runs succeed.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let ticked = loop {
            let flows = handle.flows().await.unwrap();
            assert_eq!(flows[0].last_run.as_deref(), Some(run.flow_run.as_str()));
            if let Some(id) = flows[1].last_run.clone() {
                break id;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the schedule did not fire"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(ticked.starts_with("tick-"), "{ticked}");
        // Its run got the slot, in the flow's zone (Paris in winter or summer).
        let db = rusqlite::Connection::open(dir.join("c.db")).unwrap();
        let params: String = db
            .query_row(
                "SELECT params FROM flow_runs WHERE id = ?1",
                [&ticked],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            params.starts_with("{\"slot\":\"20") && (params.ends_with("+01:00\"}") || params.ends_with("+02:00\"}")),
            "{params}"
        );
        assert!(handle.schedule_lags().contains_key("tick"));
        let page = handle
            .list(RunQuery {
                flow: Some("tick".into()),
                ..RunQuery::default()
            })
            .await
            .unwrap();
        assert!(!page.runs.is_empty());
        node.shutdown(Duration::from_secs(1)).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The embedded transport carries task logs too: a coordinator node with
/// a database, all roles in this process, records each attempt and the
/// lines its task wrote, and reads them back through the handle.
#[test]
fn the_handle_reads_attempts_and_task_logs_of_an_in_process_run() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    // The worker's tasks run on other threads: the capture layer must be
    // the process's subscriber. Another test may have set one already.
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(
            conveyor_worker::tasklog::TaskLogLayer
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        ),
    );
    with_in_process_node("logs", async |handle, flow, source, cfg| {
        let run = handle.submit(flow.clone(), source.clone()).await.unwrap();
        let id = run.flow_run.clone();
        assert_eq!(run.done.await.unwrap().state, FlowState::Succeeded);
        let query = |task: &str| LogQuery {
            run: id.clone(),
            task: task.into(),
            ..LogQuery::default()
        };
        // The last lines travel beside the result: wait until they are in.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let page = loop {
            let page = handle.logs(query("l")).await.unwrap();
            if !page.live || std::time::Instant::now() > deadline {
                break page;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(!page.live, "{page:?}");
        let texts: Vec<&str> = page.lines.iter().map(|l| l.message.as_str()).collect();
        assert!(
            texts.iter().any(|t| t.starts_with("Task started")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("Task succeeded") && t.contains("rows_out=2")),
            "{texts:?}"
        );
        assert!(page
            .lines
            .iter()
            .all(|l| l.attempt == 1 && l.node == cfg.node_name));
        // After the last seq seen: nothing new.
        let last = page.lines.last().unwrap().seq;
        let after = handle
            .logs(LogQuery {
                after: Some(last),
                ..query("l")
            })
            .await
            .unwrap();
        assert!(after.lines.is_empty(), "{after:?}");
        let attempts = handle.attempts(&id).await.unwrap();
        let seen: Vec<(&str, u32, &str)> = attempts
            .iter()
            .map(|a| (a.task.as_str(), a.attempt, a.outcome.as_str()))
            .collect();
        assert_eq!(seen, [("e", 1, "Succeeded"), ("l", 1, "Succeeded")]);
        let load = &attempts[1];
        assert_eq!((load.rows_in, load.rows_out), (Some(2), Some(2)));
        assert!(load.bytes_out.is_some_and(|b| b > 0), "{load:?}");
        assert!(load.started_ms.unwrap() <= load.ended_ms.unwrap());
        assert!(
            attempts[0].bytes_in.is_some_and(|b| b == 12),
            "{:?}",
            attempts[0]
        );
        // Unknown runs and tasks are named.
        let err = handle.logs(query("nosuchtask")).await.unwrap_err();
        assert!(
            matches!(&err, CoordinatorError::NotFound(m) if m.contains("nosuchtask")),
            "{err:?}"
        );
        assert!(matches!(
            handle.attempts("h-nosuchrun000").await,
            Err(CoordinatorError::NotFound(_))
        ));
    });
}
