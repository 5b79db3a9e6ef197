//! Schema migrations, each applied at most once, in its own transaction.

use citypay_store::{Migration, StoreError};
use postgres::Client;

use crate::{backend, describe};

/// Advisory lock key that serializes migrators ("citypay" + 2), held per transaction.
const MIGRATION_LOCK_KEY: i64 = 0x6369_7479_7061_7902;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL, version BIGINT NOT NULL, name TEXT NOT NULL,
    PRIMARY KEY (component, version))";

const APPLIED: &str = "SELECT max(version) FROM schema_migrations WHERE component = $1";

/// Applies every migration not yet applied, then refuses a schema newer than `migrations`
/// know.
pub(crate) fn run(client: &mut Client, migrations: &[Migration]) -> Result<(), StoreError> {
    for migration in migrations {
        apply_once(client, migration)?;
    }
    check_not_newer(client, migrations)
}

/// Applies `migration` unless it already is. The transaction-level advisory lock makes a
/// concurrent migrator wait and then see the migration as applied.
fn apply_once(client: &mut Client, migration: &Migration) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY]).map_err(backend)?;
    tx.batch_execute(CREATE_TABLE).map_err(backend)?;
    let row = tx.query_one(APPLIED, &[&migration.component]).map_err(backend)?;
    let applied: Option<i64> = row.try_get(0).map_err(backend)?;
    if applied.unwrap_or(0) < migration.version {
        tx.batch_execute(migration.postgres).map_err(|e| {
            StoreError::Backend(format!("migration {} {}: {}", migration.component, migration.version, describe(&e)))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (component, version, name) VALUES ($1, $2, $3)",
            &[&migration.component, &migration.version, &migration.name],
        )
        .map_err(backend)?;
    }
    tx.commit().map_err(backend)
}

fn check_not_newer(client: &mut Client, migrations: &[Migration]) -> Result<(), StoreError> {
    for component in migrations.iter().map(|m| m.component) {
        let known = migrations.iter().filter(|m| m.component == component).map(|m| m.version).max();
        let row = client.query_one(APPLIED, &[&component]).map_err(backend)?;
        let found: Option<i64> = row.try_get(0).map_err(backend)?;
        if let (Some(found), Some(known)) = (found, known)
            && found > known
        {
            return Err(StoreError::SchemaTooNew { component: component.to_owned(), found, known });
        }
    }
    Ok(())
}
