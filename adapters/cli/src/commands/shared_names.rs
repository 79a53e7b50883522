//! `shared-names`: table names tenant schemas may share with `public`, kept in the registry.

use serde_json::json;

use crate::args::SharedNamesCommand;
use crate::connect::Context;
use crate::error::{CliError, CliResult};
use crate::output::Output;

/// The tables of Django's own apps (contenttypes, auth, sessions, admin, sites and the
/// migration recorder), which django-tenants leaves in `public` and in every tenant schema.
pub(crate) const DJANGO_TABLES: &[&str] = &[
    "django_migrations",
    "django_content_type",
    "django_session",
    "django_admin_log",
    "django_site",
    "auth_permission",
    "auth_group",
    "auth_group_permissions",
    "auth_user",
    "auth_user_groups",
    "auth_user_user_permissions",
];

pub(crate) async fn run(ctx: &Context, out: Output, cmd: SharedNamesCommand) -> CliResult {
    match cmd {
        SharedNamesCommand::List => {
            let names = ctx.tenancy.shared_names();
            let text = if names.is_empty() {
                "no shared names".to_owned()
            } else {
                names.join("\n")
            };
            out.print(&text, &json!({"shared_names": names}));
        }
        SharedNamesCommand::Add { names } => {
            let kept = ctx.tenancy.declare_shared_names(names).await?;
            out.print(
                &format!(
                    "the registry keeps {} shared names: {}",
                    kept.len(),
                    kept.join(", ")
                ),
                &json!({"kept": kept}),
            );
        }
        SharedNamesCommand::Remove { name } => {
            if !ctx.tenancy.forget_shared_name(&name).await? {
                return Err(CliError::failed(format!(
                    "the registry has no shared name {name} (names given with --shared-name are not kept)"
                )));
            }
            out.print(
                &format!("removed shared name {name}"),
                &json!({"removed": name}),
            );
        }
    }
    Ok(())
}
