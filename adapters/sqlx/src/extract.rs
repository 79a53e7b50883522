//! What the extractors of every web framework share: the two connection types and the
//! rejection, defined once for [`actix`](crate::actix) and [`axum`](crate::axum), which add
//! only their framework's traits.

/// Defines `SqlxTenantDb`, `SqlxPublicDb` (both deref to [`SqlxConnection`]) and
/// `SqlxRejection` in the calling module; `$answer` names what a rejection becomes there
/// ("an axum response").
///
/// [`SqlxConnection`]: crate::SqlxConnection
macro_rules! extractor_types {
    ($answer:literal) => {
        /// A sqlx connection bound to the request's tenant schema. Derefs to
        /// [`SqlxConnection`](crate::SqlxConnection) (and on to `sqlx::PgConnection`:
        /// `&mut **db`).
        #[derive(Debug)]
        pub struct SqlxTenantDb(pub $crate::SqlxConnection);

        /// A sqlx connection bound to the shared `public` schema.
        #[derive(Debug)]
        pub struct SqlxPublicDb(pub $crate::SqlxConnection);

        $crate::extract::extractor_types!(@deref SqlxTenantDb);
        $crate::extract::extractor_types!(@deref SqlxPublicDb);

        #[doc = concat!(
            "An error of the extractors (or of a handler's query) as ", $answer, ": 404 for a\n",
            "missing schema, 503 when the database is unreachable, 403 for a tenant's state,\n",
            "500 otherwise, with a short text."
        )]
        #[derive(Debug)]
        pub struct SqlxRejection(pub $crate::Error);

        impl SqlxRejection {
            /// A failed query of a handler, answered with 500 (503 when the connection was
            /// lost, 403 for a write refused because the tenant is read-only).
            #[must_use]
            pub fn query(source: sqlx::Error) -> Self {
                let schema = tenant_schemas::scope::current_schema()
                    .unwrap_or_else(tenant_schemas::SchemaName::public);
                Self($crate::Error::query(&schema, source))
            }
        }

        impl From<$crate::Error> for SqlxRejection {
            fn from(err: $crate::Error) -> Self {
                Self(err)
            }
        }

        impl std::fmt::Display for SqlxRejection {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0, f)
            }
        }
    };
    (@deref $name:ident) => {
        impl std::ops::Deref for $name {
            type Target = $crate::SqlxConnection;

            fn deref(&self) -> &$crate::SqlxConnection {
                &self.0
            }
        }

        impl std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut $crate::SqlxConnection {
                &mut self.0
            }
        }
    };
}

pub(crate) use extractor_types;
