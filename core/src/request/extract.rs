//! The connection types every adapter's extractors hand out, the error type they answer
//! with, and the middleware's constructors, defined once.

/// Defines an adapter's `TenantDb` and `PublicDb`: newtypes over
/// [`ConnectionScope`](crate::ConnectionScope) that deref to it, one bound to the request's
/// tenant schema, one to `public`.
///
/// Each adapter needs its own types (a framework's extractor trait can only be implemented
/// for types of the adapter's crate); this keeps them alike. For adapter crates: not part of
/// the stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __connection_extractors {
    () => {
        $crate::__connection_extractors!(
            /// A pooled connection bound to the request's tenant schema.
            TenantDb
        );
        $crate::__connection_extractors!(
            /// A pooled connection bound to the shared `public` schema.
            PublicDb
        );
    };
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $name(pub $crate::ConnectionScope);

        impl ::std::ops::Deref for $name {
            type Target = $crate::ConnectionScope;

            fn deref(&self) -> &$crate::ConnectionScope {
                &self.0
            }
        }
    };
}

/// Defines an adapter's `TenantError`: a newtype over [`Error`](crate::Error) with its
/// `Display` (the error with its cause, for logs), its `source`, and `From<Error>` so that
/// `?` converts. The adapter adds its framework's response trait (a foreign trait can only
/// be implemented for types of the adapter's crate); this keeps the rest alike. For adapter
/// crates: not part of the stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __tenant_error {
    ($(#[$meta:meta])*) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct TenantError(pub $crate::Error);

        impl ::std::fmt::Display for TenantError {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::error::Error for TenantError {
            fn source(&self) -> ::std::option::Option<&(dyn ::std::error::Error + 'static)> {
                ::std::option::Option::Some(&self.0)
            }
        }

        impl ::std::convert::From<$crate::Error> for TenantError {
            fn from(err: $crate::Error) -> Self {
                Self(err)
            }
        }
    };
}

/// Defines an adapter's middleware type (the tower `TenantLayer`, actix-web's
/// `TenantMiddleware`): a [`RequestResolver`](crate::request::RequestResolver) and the two
/// constructors every adapter offers, `new` (by host, 404 for unknown hosts) and
/// `with_resolver`. The adapter adds its framework's middleware trait. For adapter crates:
/// not part of the stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __tenant_middleware {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        pub struct $name {
            resolver: $crate::request::RequestResolver,
        }

        impl $name {
            /// Resolves by host, answering 404 for unknown hosts.
            #[must_use]
            pub fn new(tenancy: $crate::Tenancy) -> Self {
                Self::with_resolver($crate::request::RequestResolver::new(tenancy))
            }

            /// Uses a configured
            /// [`RequestResolver`](tenant_schemas::request::RequestResolver) (strategies,
            /// fallbacks, path token).
            #[must_use]
            pub fn with_resolver(resolver: $crate::request::RequestResolver) -> Self {
                Self { resolver }
            }
        }
    };
}
