/*!
The Conveyor runtime: actors that move messages between the flow state
machine, the data plane and the broker.

# Layout
- [`node`]: starts a node's roles (from [`conveyor_flow::Roles`]) and stops
  them gracefully; [`tasks`] tracks every task it spawns.
- [`state`]: the flow-run state machine. Plain data, no actix, no I/O: typed
  task phases, retries, deadlines, fences.
- [`coordinator`]: the actor around the state machine; [`handle`] is
  [`handle::CoordinatorHandle`], the one way the rest of a node (CLI, HTTP
  API, dashboard) talks to it; [`runstore`] is its SQLite history, and
  [`history`] the attempts and task logs beside it; [`schedules`] its
  registered flows and the slots their schedules fire.
- [`supervisor`] and [`worker`]: one worker actor per kind, restarted with
  backoff; each task runs off the actix thread. [`cancel`]: the cancel
  flags of a node's attempts, raised when their run ends. [`tasklog`]
  captures and ships the log lines of each task attempt.
- [`transport`]: RabbitMQ through lapin, and the in-process bus of the
  embedded default, behind one [`transport::Transport`].
- [`metrics`]: Prometheus metrics (names, recorder, the handles hot paths
  hold; the node binary serves them at `/metrics`); [`notify`] posts a
  run's final report to the webhooks of `[coordinator] notify`.
- [`backoff`], [`fatal`], [`failpoint`]: the one retry helper, why a node
  exits, and fault injection (feature `failpoints`).
*/

pub mod backoff;
pub mod cancel;
pub mod coordinator;
pub mod failpoint;
pub mod fatal;
pub mod handle;
pub mod history;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod runstore;
pub mod schedules;
pub mod state;
pub mod supervisor;
pub mod tasklog;
pub mod tasks;
pub mod transport;
pub mod worker;
