//! A PostgreSQL database of a test's own on the test server
//! (`CONVEYOR_TEST_PG_URL`, default postgresql://postgres@127.0.0.1:5432/postgres,
//! which scripts/test.sh starts): created by [`TestDb::create`], dropped
//! with every connection to it when the value is dropped.

use std::hash::{BuildHasher, Hasher};

/// The URL of the test server's maintenance database.
pub fn admin_url() -> String {
    std::env::var("CONVEYOR_TEST_PG_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

/// A database named `conveyor_test_<test>_<random>`.
pub struct TestDb {
    pub name: String,
    /// A URL of the database itself.
    pub url: String,
}

impl TestDb {
    pub fn create(test: &str) -> TestDb {
        let salt = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let name = format!("conveyor_test_{test}_{salt:016x}");
        let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls)
            .unwrap_or_else(|e| panic!("test PostgreSQL at {}: {e}", admin_url()));
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap();
        let base = admin_url();
        let url = match base.rfind('/') {
            Some(i) if i > "postgresql://".len() => format!("{}/{name}", &base[..i]),
            _ => format!("{base}/{name}"),
        };
        TestDb { name, url }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }

    /// Runs statements.
    pub fn exec(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The single `int8` value of a query.
    pub fn count(&self, sql: &str) -> i64 {
        self.client()
            .query_one(sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// Every row of a query, each as its text (`row::text`), in order.
    pub fn rows_text(&self, sql: &str) -> Vec<String> {
        self.client()
            .query(&format!("SELECT q::text FROM ({sql}) AS q"), &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

impl TestDb {
    /// The first column of every row of a query, as text.
    pub fn strings(&self, sql: &str) -> Vec<String> {
        self.client()
            .query(&format!("SELECT v::text FROM ({sql}) AS q(v)"), &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&admin_url(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}
