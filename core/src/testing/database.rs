//! A database of its own for one test.

use deadpool_postgres::Pool;
use tokio_postgres::Config;

use super::{pool, HarnessResult};

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    config: Config,
    pool: Pool,
}

impl TestDatabase {
    pub(super) fn new(name: String, config: Config, pool: Pool) -> Self {
        Self { name, config, pool }
    }

    /// Its name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its connection settings.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A pool of 16 connections to it.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A new pool of `max_size` connections to it, e.g. to test a small pool.
    pub fn new_pool(&self, max_size: usize) -> HarnessResult<Pool> {
        pool(self.config.clone(), max_size)
    }
}
