//! `Serialize`/`Deserialize` (feature `serde`) for the names the library validates: a
//! [`SchemaName`], [`Host`] or [`ShardName`] is written as its string and read back through
//! the same validation as in code, so an invalid name in the input is a deserialize error,
//! never a value that bypassed the checks. `"public"` reads back as
//! [`SchemaName::public`], the public tenant's schema. [`Tenant`](crate::Tenant),
//! [`TenantRecord`](crate::TenantRecord) and [`TenantStatus`](crate::TenantStatus) derive
//! theirs from these.
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! use tenant_schemas::SchemaName;
//!
//! let acme: SchemaName = serde_json::from_str("\"acme\"").unwrap();
//! assert_eq!(acme.as_str(), "acme");
//! assert!(serde_json::from_str::<SchemaName>("\"pg_catalog\"").is_err());
//! # }
//! ```

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::host::Host;
use crate::schema::SchemaName;
use crate::shard::ShardName;

/// Reads a string and checks it with `parse`.
struct Checked<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for Checked<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

macro_rules! as_checked_string {
    ($ty:ty, $expecting:literal, $parse:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(Checked {
                    expecting: $expecting,
                    parse: $parse,
                })
            }
        }
    };
}

as_checked_string!(SchemaName, "a schema name", |s| {
    SchemaName::from_registry(s).map_err(|e| e.to_string())
});
as_checked_string!(Host, "a host name", |s| Host::parse(s)
    .map_err(|e| format!("invalid host: {e}")));
as_checked_string!(ShardName, "a database (shard) name", |s| Ok(
    ShardName::new(s)
));

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use crate::{Host, SchemaName, ShardName, Tenant, TenantRecord, TenantStatus};

    fn round_trip<T>(value: &T) -> T
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        serde_json::from_str(&serde_json::to_string(value).unwrap()).unwrap()
    }

    #[test]
    fn names_round_trip_as_strings() {
        let acme = SchemaName::new("acme").unwrap();
        assert_eq!(serde_json::to_string(&acme).unwrap(), "\"acme\"");
        assert_eq!(round_trip(&acme), acme);
        assert!(round_trip(&SchemaName::public()).is_public());
        let host = Host::parse("acme.example.com").unwrap();
        assert_eq!(round_trip(&host), host);
        assert_eq!(round_trip(&ShardName::new("eu")), "eu");
        assert!(round_trip(&ShardName::DEFAULT).is_default());
    }

    #[test]
    fn invalid_names_and_hosts_are_deserialize_errors() {
        let err = serde_json::from_str::<SchemaName>("\"Robert'); DROP TABLE students;--\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid schema name"), "{err}");
        assert!(serde_json::from_str::<SchemaName>("\"pg_toast\"").is_err());
        assert!(serde_json::from_str::<SchemaName>("42").is_err());
        let err = serde_json::from_str::<Host>("\"bad..host\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid host"), "{err}");
        // Hosts are normalized on the way in, as by `Host::parse`.
        let host: Host = serde_json::from_str("\"Acme.Example.COM.\"").unwrap();
        assert_eq!(host.as_str(), "acme.example.com");
    }

    #[test]
    fn tenants_and_records_round_trip() {
        let tenant = Tenant::new(SchemaName::new("acme").unwrap())
            .with_name("Acme Inc.")
            .with_id(7)
            .with_shard("eu");
        assert_eq!(round_trip(&tenant), tenant);
        assert_eq!(round_trip(&Tenant::public()), Tenant::public());

        let record = TenantRecord {
            id: 7,
            schema: SchemaName::new("acme").unwrap(),
            name: "Acme Inc.".into(),
            created_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            status: TenantStatus::Suspended,
            version: 3,
            domains: vec!["acme.example.com".into()],
            shard: ShardName::DEFAULT,
            max_connections: Some(4),
            storage_quota: Some(1 << 30),
            statement_timeout: Some(Duration::from_millis(2500)),
            role: Some("ts_0123456789abcdef".into()),
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["status"], "suspended");
        assert_eq!(json["shard"], "default");
        assert_eq!(round_trip(&record), record);

        // A tenant whose schema name is invalid is refused whole.
        let bad = serde_json::json!({"schema": "pg_catalog", "name": "x", "id": null, "shard": "default"});
        let err = serde_json::from_value::<Tenant>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid schema name `pg_catalog`"), "{err}");
    }
}
