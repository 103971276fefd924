/*!
Conveyor's control plane: the coordinator role of a node.

# Layout
- [`state`]: the flow-run state machine. Plain data, no actix, no I/O:
  typed task phases, retries, deadlines, fences.
- [`actor`]: the coordinator actor, a thin shell that moves messages
  between the state machine, the transport and the run store.
- [`view`]: what it answers with (runs, attempts, log lines, nodes,
  registered flows) and [`view::CoordinatorError`]. Below the actor: the
  actor, the handle and the history use it, it uses none of them.
- [`handle`]: [`handle::CoordinatorHandle`], the one way the rest of a node
  (CLI, HTTP API, dashboard) talks to the coordinator.
- [`runstore`]: its SQLite database of runs; [`history`]: the attempts and
  task logs beside them; [`schedules`]: registered flows and the slots
  their schedules fire; [`notify`]: a run's final report to webhooks.
- [`pumps`]: what feeds the actor from the broker (replies, submissions),
  and [`stop`]; [`start`](mod@start): the role's start, from its config.
- [`remote`]: `conveyor run --submit`: a flow handed to a coordinator node
  over the broker and followed from this process.
- [`metrics`]: the coordinator's Prometheus metrics.

This crate uses no data plane: no Arrow, DataFusion, PostgreSQL, and (since
it names the transport without its `amqp` feature) no lapin, so the HTTP API
and the dashboard, which use only [`handle`] and [`view`], compile without
them (`tests/layers.rs` checks it).
*/

pub mod actor;
pub mod handle;
pub mod history;
pub mod metrics;
pub mod notify;
pub mod pumps;
pub mod remote;
pub mod runstore;
pub mod schedules;
pub mod start;
pub mod state;
pub mod view;

pub use handle::CoordinatorHandle;
pub use pumps::stop;
pub use start::{start, Setup, StartError, Started};
