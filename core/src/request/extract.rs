//! The connection types every adapter's extractors hand out, defined once.

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
