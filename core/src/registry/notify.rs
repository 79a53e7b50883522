//! Every registry change is announced with `NOTIFY` in the transaction that makes it, so
//! other processes can drop what they cached: the payload is written and read here only.
//!
//! The payload is the tenant's schema, then the hosts the change concerns, separated by
//! spaces; `*` in place of (the rest of) the hosts means "forget every host". Anything else
//! is unreadable, and a listener then forgets everything rather than keep something stale.

use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use crate::host::Host;
use crate::schema::SchemaName;

/// The `LISTEN`/`NOTIFY` channel every registry change is announced on, in the changing
/// transaction, so other processes can drop what they cached (see
/// [`TenancyBuilder::listen_for_changes`](crate::TenancyBuilder::listen_for_changes)). The
/// payload is the tenant's schema, then the hosts the change concerns, separated by spaces;
/// `*` in place of the hosts means "forget every host".
pub const CHANNEL: &str = "tenant_schemas_registry";

/// NOTIFY payloads are limited to 8,000 bytes.
const MAX_PAYLOAD: usize = 7_900;

/// Announces, inside `tx`, that the tenant in `schema` and `hosts` changed.
pub(crate) async fn announce(
    tx: &Transaction<'_>,
    schema: &SchemaName,
    hosts: &[&str],
) -> Result<(), tokio_postgres::Error> {
    tx.execute_typed(
        "SELECT pg_catalog.pg_notify($1, $2)",
        &[
            (&CHANNEL, Type::TEXT),
            (&payload(schema, hosts), Type::TEXT),
        ],
    )
    .await
    .map(drop)
}

/// The payload announcing a change of `schema` and `hosts`: `*` replaces the hosts that do
/// not fit.
fn payload(schema: &SchemaName, hosts: &[&str]) -> String {
    let mut payload = schema.as_str().to_owned();
    for host in hosts {
        if payload.len() + host.len() + 3 > MAX_PAYLOAD {
            payload.push_str(" *");
            break;
        }
        payload.push(' ');
        payload.push_str(host);
    }
    payload
}

/// A change as a listener reads it from a payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Announcement {
    /// The tenant in `schema` changed, and so did `hosts`, or every host with `all_hosts`.
    Change {
        /// The tenant's schema.
        schema: SchemaName,
        /// The hosts named (those that parse).
        hosts: Vec<Host>,
        /// Whether every host must be forgotten.
        all_hosts: bool,
    },
    /// Not a payload of ours: everything may have changed.
    Unreadable,
}

/// Reads a payload written by [`announce`].
pub(crate) fn read(payload: &str) -> Announcement {
    let mut parts = payload.split(' ');
    let Some(schema) = parts.next().and_then(|s| SchemaName::from_registry(s).ok()) else {
        return Announcement::Unreadable;
    };
    let mut hosts = Vec::new();
    let mut all_hosts = false;
    for host in parts {
        if host == "*" {
            all_hosts = true;
            break;
        }
        if let Ok(host) = Host::parse(host) {
            hosts.push(host);
        }
    }
    Announcement::Change {
        schema,
        hosts,
        all_hosts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(schema: &str, hosts: &[&str], all_hosts: bool) -> Announcement {
        Announcement::Change {
            schema: SchemaName::from_registry(schema).unwrap(),
            hosts: hosts.iter().map(|h| Host::parse(h).unwrap()).collect(),
            all_hosts,
        }
    }

    #[test]
    fn what_is_written_is_read() {
        let acme = SchemaName::new("acme").unwrap();
        let hosts = ["acme.example.com", "www.acme.example.com"];
        assert_eq!(read(&payload(&acme, &hosts)), change("acme", &hosts, false));
        assert_eq!(read(&payload(&acme, &[])), change("acme", &[], false));
        assert_eq!(
            read(&payload(&SchemaName::public(), &["example.com"])),
            change("public", &["example.com"], false)
        );
    }

    #[test]
    fn hosts_that_do_not_fit_become_a_star() {
        let acme = SchemaName::new("acme").unwrap();
        let long = format!("{}.example.com", "a".repeat(60));
        let hosts: Vec<&str> = std::iter::repeat_n(long.as_str(), 200).collect();
        let written = payload(&acme, &hosts);
        assert!(written.len() <= MAX_PAYLOAD && written.ends_with(" *"));
        let Announcement::Change { all_hosts, .. } = read(&written) else {
            panic!("unreadable: {written}");
        };
        assert!(all_hosts);
    }

    #[test]
    fn foreign_payloads_are_unreadable() {
        for payload in ["", "Not A Schema", "pg_catalog x"] {
            assert_eq!(read(payload), Announcement::Unreadable, "{payload:?}");
        }
    }
}
