//! Shared test support: a private PostgreSQL server ([`pg`]) and throwaway databases of either
//! storage backend ([`TestDb`]).
#![allow(dead_code)] // Each test binary uses a different part.

pub mod pg;

#[allow(unused_macros)] // Only the dual-backend store tests use it.
/// Runs `body(TestDb)` as two tests, `NAME::sqlite` and `NAME::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(super::TestDb::new(super::Backend::Sqlite)).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name(super::TestDb::new(super::Backend::Postgres)).await
            }
        }
    )*};
}

use ovsa_license_server::store::Store;

/// A storage backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the shared private PostgreSQL server.
    Postgres,
}

/// A fresh, empty database; [`TestDb::open`] may be called several times (several "replicas").
pub struct TestDb {
    /// The backend.
    pub backend: Backend,
    /// `sqlite:PATH` or `postgres://...`.
    pub url: String,
    /// Keeps the SQLite directory alive.
    pub dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A new database of `backend`.
    pub fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres(),
        }
    }

    /// A SQLite file `licenses.db` in a new temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite:{}", dir.path().join("licenses.db").display());
        TestDb {
            backend: Backend::Sqlite,
            url,
            dir: Some(dir),
        }
    }

    /// A new database on the shared PostgreSQL server of this test binary.
    pub fn postgres() -> TestDb {
        TestDb {
            backend: Backend::Postgres,
            url: pg::shared().create_database(),
            dir: None,
        }
    }

    /// Opens (and migrates) a store on this database.
    pub async fn open(&self) -> Store {
        Store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.url))
    }
}
