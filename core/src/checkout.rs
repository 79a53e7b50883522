//! The checkout: the one place where a tenant becomes a connection.
//!
//! Whatever brought a tenant into scope — a resolver from the registry, a
//! [`StaticResolver`](crate::StaticResolver) or [`SubdomainResolver`](crate::SubdomainResolver),
//! [`Tenant::new`], [`scope::run_in_schema`](crate::scope::run_in_schema), a background job —
//! its *state* is not taken from the [`Tenant`] value someone built. When the router has the
//! registry's [`TenantStates`] (every router a [`Tenancy`](crate::Tenancy) makes does), the
//! checkout reads the tenant's state from the registry (cached by schema name, and forgotten
//! when the registry changes: at once in this process, within moments in every process
//! listening for changes, and after the cache's
//! [negative TTL](crate::CacheConfig::negative_ttl) otherwise):
//!
//! | the registry has | the `Tenant` value | the checkout |
//! |---|---|---|
//! | a row in a state that is not served | anything | [`Error::TenantNotServed`] with the registry's state |
//! | a row, served | not served | [`Error::TenantNotServed`] with the value's state (the stricter one wins) |
//! | a row, read-only | anything served | read-only: writes fail with [`Error::TenantReadOnly`] |
//! | a row, active | read-only | read-only (the stricter one wins) |
//! | a row with another id than the value's | from the registry (has an id) | [`Error::TenantGone`]: the tenant it was resolved to was deleted and the schema re-used |
//! | no row | from the registry (has an id) | [`Error::SchemaMissing`]: its tenant was deleted or renamed since it was resolved |
//! | no row | without an id (`Tenant::new`, a resolver that invents tenants) | served as the value says, if the schema exists ([`Error::SchemaMissing`] otherwise) |
//!
//! The shared `public` schema asked for by name ([`SchemaRouter::public`],
//! [`SchemaRouter::connection_for`] with `public`) is always served read and write; the public
//! *tenant* in scope (the main site's requests) is checked like any other tenant.
//!
//! A router without the registry's states — [`SchemaRouter::new`] over a pool, with no
//! [`SchemaRouterBuilder::tenant_states`] — has no states to read: it serves a tenant in the
//! state its [`Tenant`] value carries (its application decides the states). Attach the
//! states of the [`Tenancy`](crate::Tenancy) with
//! [`Tenancy::tenant_states`](crate::Tenancy::tenant_states) when building such a router over
//! the same database.
//!
//! Besides the state, the checkout takes the schema's gate (which deletion and rename honour),
//! and the switch checks the schema's existence; see [`SchemaRouter`].
//!
//! [`SchemaRouter`]: crate::SchemaRouter
//! [`SchemaRouter::new`]: crate::SchemaRouter::new
//! [`SchemaRouter::public`]: crate::SchemaRouter::public
//! [`SchemaRouter::connection_for`]: crate::SchemaRouter::connection_for
//! [`SchemaRouterBuilder::tenant_states`]: crate::SchemaRouterBuilder::tenant_states

use std::fmt;

use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::resolve::CoherentCache;
use crate::schema::SchemaName;
use crate::tenant::{Tenant, TenantStatus};

/// The tenants' states as the registry holds them, cached by schema name and kept coherent
/// with the registry by the [`Tenancy`](crate::Tenancy) that made it (its changes, and those
/// its change listener hears).
///
/// Cheap to clone. Get it from [`Tenancy::tenant_states`](crate::Tenancy::tenant_states);
/// give it to a router built by hand with
/// [`SchemaRouterBuilder::tenant_states`](crate::SchemaRouterBuilder::tenant_states).
#[derive(Clone)]
pub struct TenantStates {
    by_schema: CoherentCache<SchemaName, Option<Tenant>>,
    registry: Registry,
}

impl fmt::Debug for TenantStates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantStates")
            .field("cached", &self.by_schema.entry_count())
            .finish_non_exhaustive()
    }
}

impl TenantStates {
    pub(crate) fn new(
        by_schema: CoherentCache<SchemaName, Option<Tenant>>,
        registry: Registry,
    ) -> Self {
        Self {
            by_schema,
            registry,
        }
    }

    /// The registered tenant living in `schema`, with its state; `None` when the registry
    /// has no tenant there. A lookup that raced an invalidation of the schema is not cached.
    pub async fn registered(&self, schema: &SchemaName) -> Result<Option<Tenant>> {
        let registry = &self.registry;
        self.by_schema
            .get_or_try_insert_with(schema, || async move {
                match registry.get(schema).await {
                    Ok(record) => Ok(Some(record.tenant())),
                    Err(Error::TenantNotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await
            .map(|(tenant, _)| tenant)
            .map_err(|source| Error::Lookup {
                key: schema.to_string(),
                source,
            })
    }

    /// The state `tenant` is served in, read from the registry (see the [module](self)):
    /// [`TenantStatus::Active`] or [`TenantStatus::ReadOnly`], or the error that refuses it.
    pub async fn admit(&self, tenant: &Tenant) -> Result<TenantStatus> {
        let registered = self.registered(tenant.schema()).await?;
        admit(tenant, Some(registered.as_ref()))
    }
}

/// The state `asked` is served in, given what the registry has in its schema
/// (`registered`: `None` when there are no states to read, `Some(None)` when the registry has
/// no tenant there). See the [module](self).
pub(crate) fn admit(asked: &Tenant, registered: Option<Option<&Tenant>>) -> Result<TenantStatus> {
    let schema = asked.schema();
    let registry_status = match registered {
        None => None,
        Some(None) => {
            if asked.id().is_some() {
                // Resolved from the registry, which no longer has a tenant there.
                return Err(Error::SchemaMissing {
                    schema: schema.clone(),
                });
            }
            None
        }
        Some(Some(row)) => {
            if let Some(id) = asked.id() {
                if row.id() != Some(id) {
                    return Err(Error::TenantGone {
                        id,
                        schema: schema.clone(),
                    });
                }
            }
            Some(row.status())
        }
    };
    let not_served = |status: TenantStatus| Error::TenantNotServed {
        schema: schema.clone(),
        status,
    };
    if let Some(status) = registry_status {
        if !status.is_served() {
            return Err(not_served(status));
        }
    }
    if !asked.status().is_served() {
        return Err(not_served(asked.status()));
    }
    if registry_status == Some(TenantStatus::ReadOnly) || asked.status() == TenantStatus::ReadOnly {
        Ok(TenantStatus::ReadOnly)
    } else {
        Ok(TenantStatus::Active)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn tenant(status: TenantStatus) -> Tenant {
        Tenant::new(SchemaName::new("acme").unwrap()).with_status(status)
    }

    #[test]
    fn the_stricter_state_wins_and_the_registry_decides_first() {
        use TenantStatus::*;
        for registry in TenantStatus::ALL {
            for value in TenantStatus::ALL {
                let row = tenant(registry).with_id(1);
                let got = admit(&tenant(value), Some(Some(&row)));
                match (registry.is_served(), value.is_served()) {
                    (false, _) => assert!(
                        matches!(got, Err(Error::TenantNotServed { status, .. }) if status == registry)
                    ),
                    (true, false) => assert!(
                        matches!(got, Err(Error::TenantNotServed { status, .. }) if status == value)
                    ),
                    (true, true) => {
                        let expected = if registry == ReadOnly || value == ReadOnly {
                            ReadOnly
                        } else {
                            Active
                        };
                        assert_eq!(got.unwrap(), expected);
                    }
                }
            }
        }
    }

    #[test]
    fn a_registered_tenant_whose_row_is_gone_or_replaced_is_refused() {
        let resolved = tenant(TenantStatus::Active).with_id(7);
        assert!(matches!(
            admit(&resolved, Some(None)),
            Err(Error::SchemaMissing { .. })
        ));
        let recreated = tenant(TenantStatus::Active).with_id(8);
        assert!(matches!(
            admit(&resolved, Some(Some(&recreated))),
            Err(Error::TenantGone { id: 7, .. })
        ));
        // Unregistered, without an id: as the value says.
        assert_eq!(
            admit(&tenant(TenantStatus::Active), Some(None)).unwrap(),
            TenantStatus::Active
        );
        // No states to read: as the value says.
        assert!(admit(&tenant(TenantStatus::Suspended), None).is_err());
        assert_eq!(
            admit(&tenant(TenantStatus::ReadOnly).with_id(7), None).unwrap(),
            TenantStatus::ReadOnly
        );
    }
}
