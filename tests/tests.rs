//! The one integration-test binary. Tests that need RabbitMQ connect to
//! `CONVEYOR_TEST_AMQP_URL` (default amqp://guest:guest@127.0.0.1:5672/%2f)
//! and use a namespace of their own.

mod api;
mod cluster;
mod conformance;
mod coordinator;
mod dashboard;
mod dashboard_http;
mod embedded;
mod engine;
mod faults;
mod harness;
mod layers;
mod logs;
mod metrics;
mod postgres;
mod schedules;
mod schemas;
mod security;
mod sql;
mod types;
