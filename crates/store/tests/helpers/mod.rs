//! One store per backend: a fresh SQLite file, and a fresh PostgreSQL
//! schema when `VETO_TEST_POSTGRES_URL` is set.

#![allow(dead_code)]

use std::path::PathBuf;

use veto_store::{NewTopic, Store};

pub struct TestStore {
    pub store: Store,
    pub name: &'static str,
    /// For tampering from outside: the SQLite file, or the PostgreSQL schema.
    pub sqlite_path: Option<PathBuf>,
    pub pg_schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("veto.db");
    let store = Store::open_sqlite(&path).await.expect("open sqlite");
    TestStore {
        store,
        name: "sqlite",
        sqlite_path: Some(path),
        pg_schema: None,
        _dir: Some(dir),
    }
}

pub fn postgres_url() -> Option<String> {
    std::env::var("VETO_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

pub async fn postgres() -> Option<TestStore> {
    let url = postgres_url()?;
    let schema = unique("veto_test");
    let store = Store::open_postgres(&url, Some(&schema))
        .await
        .unwrap_or_else(|e| {
            panic!("VETO_TEST_POSTGRES_URL is set but PostgreSQL could not be used: {e}")
        });
    Some(TestStore {
        store,
        name: "postgres",
        sqlite_path: None,
        pg_schema: Some(schema),
        _dir: None,
    })
}

/// Every backend this run can test. PostgreSQL is skipped (and says so)
/// without `VETO_TEST_POSTGRES_URL`.
pub async fn stores() -> Vec<TestStore> {
    let mut v = vec![sqlite().await];
    match postgres().await {
        Some(pg) => v.push(pg),
        None => eprintln!("skipped: PostgreSQL half (set VETO_TEST_POSTGRES_URL to run it)"),
    }
    v
}

impl TestStore {
    /// Runs SQL on the store's database through a connection of its own,
    /// as someone tampering with the database would.
    pub async fn tamper(&self, sql: &str) {
        if let Some(path) = &self.sqlite_path {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("open db file");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&pool)
                .await
                .expect("tamper");
            pool.close().await;
        } else if let Some(schema) = &self.pg_schema {
            let url = postgres_url().expect("postgres url");
            let pool = sqlx::PgPool::connect(&url).await.expect("connect");
            let sql = format!("SET search_path TO {schema}; {sql}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect("tamper");
            pool.close().await;
        }
    }

    pub async fn add_topics(&self) {
        for t in law_topics() {
            self.store
                .add_topic(NewTopic {
                    key: t.key.clone(),
                    name: t.name.clone(),
                    description: t.description.clone(),
                    group: t.group.clone(),
                })
                .await
                .expect("add topic");
        }
    }
}

pub fn law_topics() -> Vec<veto_core::Topic> {
    crate::law_cases::topics()
}
