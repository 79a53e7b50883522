//! One module per command; each runs against a built [`Tenancy`](tenant_schemas::Tenancy)
//! and prints through [`Output`](crate::output::Output).

pub(crate) mod clone;
pub(crate) mod create;
pub(crate) mod delete;
pub(crate) mod doctor;
pub(crate) mod domains;
pub(crate) mod list;
pub(crate) mod migrate;
pub(crate) mod run;
