//! The tenant-schemas demo as a library: the app (public site with sign-up and an operator
//! view, tenant sites with notes) and its tenancy, so the binary serves it and the browser
//! test drives it.

use axum::extract::{Form, Json};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use demo_support::{seed, tenant_host, DemoDatabase};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tenant_schemas::{Host, NewTenant, SchemaName, Tenancy, TenantMigrations};
use tenant_schemas_axum::{
    split, with_tenancy, CurrentTenant, RequestResolver, TenantClaim, TenantDb, TenantError,
    TenantLayer,
};

/// Any error of the set-up.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

const TENANT_MIGRATIONS: &[(&str, &str)] = &[(
    "create_notes",
    "CREATE TABLE notes (
         id bigserial PRIMARY KEY,
         body text NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
         created_at timestamptz NOT NULL DEFAULT now()
     )",
)];

/// The demo's tenancy on `db`: the notes migration, the public tenant on `localhost`, and
/// `acme` and `globex` on `<name>.localhost`.
pub async fn tenancy(db: &DemoDatabase) -> Result<Tenancy, BoxError> {
    let migrations = TENANT_MIGRATIONS
        .iter()
        .fold(TenantMigrations::new(), |m, (name, sql)| {
            m.with(*name, *sql)
        });
    // DATABASE_URL's way (a pool and the change listener, over TLS as its sslmode says),
    // or the throwaway database's.
    let tenancy = db.builder()?.migrations(migrations).build().await?;
    seed(
        &tenancy,
        &[("acme", "Acme Inc."), ("globex", "Globex Corporation")],
    )
    .await?;
    Ok(tenancy)
}

/// The port the app is served on, for the links between the public site and the tenant
/// sites (`http://<slug>.localhost:<port>/`).
#[derive(Clone, Copy, Debug)]
struct SitePort(u16);

/// The API tokens the demo has issued (`POST /api/token` on a tenant's site), each bound to
/// the tenant it was issued for: kept in memory, gone when the demo stops.
#[derive(Clone, Default)]
struct Tokens(Arc<Mutex<HashMap<String, SchemaName>>>);

impl Tokens {
    /// A new random token for `schema`.
    fn issue(&self, schema: &SchemaName) -> String {
        let token: String = (0..4)
            .map(|_| format!("{:016x}", rand::random::<u64>()))
            .collect();
        self.lock().insert(token.clone(), schema.clone());
        token
    }

    /// Whom the request's `Authorization: Bearer` token was issued for: what the
    /// [`RequestResolver`] compares with the tenant the request reached. An unknown token
    /// names nobody (the request is served as anonymous).
    fn claim(&self, headers: &axum::http::HeaderMap) -> Option<TenantClaim> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let token = value.strip_prefix("Bearer ")?;
        self.lock().get(token).cloned().map(TenantClaim::Schema)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SchemaName>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The app, served on `port`: the public site on `localhost`, each tenant's on its host.
/// An API token is good only on the site that issued it: sent to another tenant's host it
/// is answered 403 before any handler runs.
pub fn app(tenancy: Tenancy, port: u16) -> Router {
    let tokens = Tokens::default();
    let public = Router::new()
        .route("/", get(public_home))
        .route("/signup", post(signup_form))
        .route("/api/tenants", get(list_tenants).post(signup_json));
    let tenants = Router::new()
        .route("/", get(notes_page))
        .route("/notes", post(add_note_form))
        .route("/api/notes", get(list_notes).post(add_note_json))
        .route("/api/token", post(issue_token));
    let resolver = {
        let tokens = tokens.clone();
        RequestResolver::builder(tenancy.clone())
            .credential_tenant(move |headers| tokens.claim(headers))
            .build()
    };
    with_tenancy(split(public, tenants), TenantLayer::with_resolver(resolver))
        .layer(Extension(tenancy))
        .layer(Extension(tokens))
        .layer(Extension(SitePort(port)))
}

/// `POST /api/token`: a token for this tenant's API (`Authorization: Bearer …`).
async fn issue_token(
    CurrentTenant(tenant): CurrentTenant,
    Extension(tokens): Extension<Tokens>,
) -> impl IntoResponse {
    let token = tokens.issue(tenant.schema());
    (
        StatusCode::CREATED,
        Json(serde_json::json!({ "tenant": tenant.schema().as_str(), "token": token })),
    )
}

async fn sign_up(tenancy: &Tenancy, slug: &str, name: &str) -> Result<Host, AppError> {
    let schema = SchemaName::new(slug).map_err(|e| AppError::bad_request(e.to_string()))?;
    let host = tenant_host(slug).map_err(|e| AppError::bad_request(e.to_string()))?;
    let name = name.trim();
    let name = if name.is_empty() { slug } else { name };
    tenancy
        .create_tenant(NewTenant::new(schema).name(name).domain(host.clone()))
        .await?;
    Ok(host)
}

/// Errors as responses: the library's errors keep their status (400, 404, 409, 503).
struct AppError(StatusCode, String);

impl AppError {
    fn bad_request(message: String) -> Self {
        Self(StatusCode::BAD_REQUEST, message)
    }
}

impl From<tenant_schemas::Error> for AppError {
    fn from(err: tenant_schemas::Error) -> Self {
        let status = StatusCode::from_u16(err.status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match status {
            StatusCode::INTERNAL_SERVER_ERROR | StatusCode::SERVICE_UNAVAILABLE => {
                eprintln!("error: {err}");
                status.canonical_reason().unwrap_or("error").to_owned()
            }
            _ => err.to_string(),
        };
        Self(status, message)
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}

impl std::fmt::Debug for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for AppError {}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    ))
}

// ---- the public site -------------------------------------------------------------------

async fn public_home(
    Extension(tenancy): Extension<Tenancy>,
    Extension(SitePort(port)): Extension<SitePort>,
) -> Result<Html<String>, AppError> {
    let mut items = String::new();
    let mut rows = String::new();
    // Schema sizes, measured at most every 10 s (one catalog query), or now when a tenant
    // is newer than the last measurement.
    let tenants = tenancy.registry().list().await?;
    let mut usage = tenancy.usage(std::time::Duration::from_secs(10)).await?;
    if tenants
        .iter()
        .any(|t| !t.schema.is_public() && !usage.iter().any(|u| u.schema == t.schema))
    {
        usage = tenancy.usage(std::time::Duration::ZERO).await?;
    }
    for t in tenants {
        let domains: Vec<String> = t.domains.iter().map(|d| escape(d)).collect();
        let size = usage
            .iter()
            .find(|u| u.schema == t.schema)
            .map_or_else(|| "-".to_owned(), |u| format!("{} kB", u.bytes / 1000));
        rows.push_str(&format!(
            "<tr><td><code>{s}</code></td><td>{n}</td><td>{d}</td><td>{v}</td><td>{st}</td><td>{size}</td></tr>",
            s = t.schema,
            n = escape(&t.name),
            d = domains.join(", "),
            v = t.version,
            st = t.status,
        ));
        if t.schema.is_public() {
            continue;
        }
        let domain = escape(t.primary_domain().unwrap_or_default());
        items.push_str(&format!(
            "<li><a href=\"http://{domain}:{port}/\">{n}</a> <code>{domain}</code></li>",
            n = escape(&t.name)
        ));
    }
    Ok(page(
        "tenant-schemas demo",
        &format!(
            "<p>Every tenant below has its own PostgreSQL schema.</p><ul id=tenants>{items}</ul>\
             <h2>Sign up</h2><form method=post action=/signup>\
             <input name=slug placeholder=slug required pattern='[a-z_][a-z0-9_]*'> \
             <input name=name placeholder='Company name'> <button>Create tenant</button></form>\
             <h2>Operator view</h2><table id=operator border=1 cellpadding=4>\
             <tr><th>schema</th><th>name</th><th>domains</th><th>migration version</th><th>state</th><th>size</th></tr>\
             {rows}</table>"
        ),
    ))
}

#[derive(Deserialize)]
struct SignUp {
    slug: String,
    #[serde(default)]
    name: String,
}

async fn signup_form(
    Extension(tenancy): Extension<Tenancy>,
    Extension(SitePort(port)): Extension<SitePort>,
    Form(form): Form<SignUp>,
) -> Result<Html<String>, AppError> {
    let host = sign_up(&tenancy, &form.slug, &form.name).await?;
    Ok(page(
        "Tenant created",
        &format!(
            "<p>Your site: <a id=site href=\"http://{h}:{port}/\">{h}</a></p><p><a href=/>back</a></p>",
            h = escape(host.as_str())
        ),
    ))
}

async fn signup_json(
    Extension(tenancy): Extension<Tenancy>,
    Json(form): Json<SignUp>,
) -> Result<impl IntoResponse, AppError> {
    let host = sign_up(&tenancy, &form.slug, &form.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "slug": form.slug, "host": host.as_str() })),
    ))
}

async fn list_tenants(
    Extension(tenancy): Extension<Tenancy>,
) -> Result<Json<serde_json::Value>, AppError> {
    let tenants: Vec<_> = tenancy
        .registry()
        .list()
        .await?
        .into_iter()
        .map(|t| serde_json::json!({ "schema": t.schema.as_str(), "name": t.name, "domains": t.domains }))
        .collect();
    Ok(Json(serde_json::Value::Array(tenants)))
}

// ---- the tenant sites ------------------------------------------------------------------

async fn notes(db: &TenantDb) -> Result<Vec<(i64, String)>, TenantError> {
    let rows = db
        .query("SELECT id, body FROM notes ORDER BY id", &[])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn notes_page(
    CurrentTenant(tenant): CurrentTenant,
    db: TenantDb,
) -> Result<Html<String>, TenantError> {
    let items: String = notes(&db)
        .await?
        .iter()
        .map(|(_, body)| format!("<li>{}</li>", escape(body)))
        .collect();
    Ok(page(
        tenant.name(),
        &format!(
            "<p>Schema <code>{}</code>. These notes live in it and nowhere else.</p><ul id=notes>{items}</ul>\
             <form method=post action=/notes><input name=body required maxlength=2000> <button>Add note</button></form>",
            tenant.schema()
        ),
    ))
}

#[derive(Deserialize)]
struct NewNote {
    body: String,
}

async fn insert(db: &TenantDb, body: &str) -> Result<i64, AppError> {
    let body = body.trim();
    if body.is_empty() || body.chars().count() > 2000 {
        return Err(AppError::bad_request(
            "a note is 1 to 2000 characters".into(),
        ));
    }
    let row = db
        .query_one(
            "INSERT INTO notes (body) VALUES ($1) RETURNING id",
            &[&body],
        )
        .await?;
    Ok(row.get(0))
}

async fn add_note_form(db: TenantDb, Form(note): Form<NewNote>) -> Result<Redirect, AppError> {
    insert(&db, &note.body).await?;
    Ok(Redirect::to("/"))
}

async fn list_notes(
    CurrentTenant(tenant): CurrentTenant,
    db: TenantDb,
) -> Result<Json<serde_json::Value>, TenantError> {
    let notes: Vec<_> = notes(&db)
        .await?
        .into_iter()
        .map(|(id, body)| serde_json::json!({ "id": id, "body": body }))
        .collect();
    Ok(Json(
        serde_json::json!({ "tenant": tenant.schema().as_str(), "notes": notes }),
    ))
}

async fn add_note_json(
    db: TenantDb,
    Json(note): Json<NewNote>,
) -> Result<impl IntoResponse, AppError> {
    let id = insert(&db, &note.body).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}
