//! veto-web: what people and tools reach over HTTP.
//!
//! Today: RFC 8058 one-click unsubscribe (`POST /u/{token}`) with its
//! confirmation page (`GET /u/{token}`), committed in groups so that many
//! unsubscribes share one fsync. The router is built outside `main`
//! ([`router`]) so tests can drive it.

mod admin;
mod api;
mod client;
mod error;
mod group_commit;
mod i18n;
mod limiter;
mod metrics;
mod pages;
mod preferences;
mod request_link;
mod unsubscribe;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::get;
use veto_core::{ServiceType, Topic};
use veto_mail::{Claims, Purpose, TokenKey, TokenKeys, TokenScope};
use veto_store::Store;

pub use api::openapi_json;
pub use api::roles::{EndpointRoles, TABLE as ROLE_TABLE, markdown_table as roles_markdown};
pub use client::TrustedProxies;
pub use error::WebError;
pub use group_commit::GroupCommit;
pub use metrics::MetricsAccess;
pub use webhooks::Webhooks;

/// Who the organisation is: shown on every page.
#[derive(Debug, Clone, Default)]
pub struct Organisation {
    pub name: String,
    pub postal_address: String,
    pub privacy_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Where people reach veto, without a trailing slash: links are built on it.
    pub public_url: String,
    pub organisation: Organisation,
    pub trusted_proxies: TrustedProxies,
    /// Service messages that still arrive after an opt-out, with the reason.
    pub service_types: Vec<ServiceType>,
}

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    mailer: Option<veto_sender::Mailer>,
    keys: TokenKeys,
    settings: WebSettings,
    pages: pages::Pages,
    commits: GroupCommit,
    limiter: limiter::Limiter,
    sending: Sending,
    metrics: MetricsAccess,
    /// Provider feedback receivers (`/webhooks/…`); `None`: all answer 404.
    webhooks: Option<Arc<Webhooks>>,
    /// The maildir copies go to, when delivery is to a maildir: the admin
    /// UI's outbox viewer reads it.
    outbox: Option<std::path::PathBuf>,
}

/// What sends campaigns and service messages, when this server does.
#[derive(Default)]
struct Sending {
    campaigns: Option<Arc<veto_sender::campaign::Campaigns>>,
    service: Option<(
        veto_sender::outbound::Outbound,
        veto_sender::service::ServiceSettings,
    )>,
}

impl AppState {
    /// Loads the token keys from the store and starts the group committer.
    /// Without a mailer, flows that send a confirmation link answer 503.
    pub async fn new(store: Store, settings: WebSettings) -> Result<AppState, WebError> {
        AppState::with_mailer(store, settings, None).await
    }

    /// As [`AppState::new`], sending veto's own messages through `mailer`.
    pub async fn with_mailer(
        store: Store,
        settings: WebSettings,
        mailer: Option<veto_sender::Mailer>,
    ) -> Result<AppState, WebError> {
        let keys = token_keys(&store).await?;
        let commits = GroupCommit::start(store.clone());
        Ok(AppState {
            inner: Arc::new(Inner {
                store,
                mailer,
                keys,
                settings,
                pages: pages::Pages::new()?,
                commits,
                limiter: limiter::Limiter::default(),
                sending: Sending::default(),
                metrics: MetricsAccess::default(),
                webhooks: None,
                outbox: None,
            }),
        })
    }

    /// This state, also sending campaigns (the API's `/campaigns`) and
    /// service messages (`/messages`). Call before serving.
    pub fn with_sending(
        self,
        campaigns: Arc<veto_sender::campaign::Campaigns>,
        outbound: veto_sender::outbound::Outbound,
        service: veto_sender::service::ServiceSettings,
    ) -> AppState {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => {
                tracing::error!("with_sending called on a state already in use; sending stays off");
                return AppState { inner: shared };
            }
        };
        inner.sending = Sending {
            campaigns: Some(campaigns),
            service: Some((outbound, service)),
        };
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// This state, with `/metrics` open to `access` (by default: this
    /// machine only). Call before serving.
    pub fn with_metrics_access(self, access: MetricsAccess) -> AppState {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.metrics = access;
                AppState {
                    inner: Arc::new(inner),
                }
            }
            Err(shared) => {
                tracing::error!(
                    "with_metrics_access called on a state already in use; /metrics stays local"
                );
                AppState { inner: shared }
            }
        }
    }

    pub(crate) fn metrics_access(&self) -> &MetricsAccess {
        &self.inner.metrics
    }

    /// This state, also taking provider feedback (`/webhooks/ses`,
    /// `/sendgrid`, `/postmark`) for the receivers `webhooks` turns on.
    /// Call before serving.
    pub fn with_webhooks(self, webhooks: Webhooks) -> AppState {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => {
                tracing::error!(
                    "with_webhooks called on a state already in use; webhooks stay off"
                );
                return AppState { inner: shared };
            }
        };
        inner.webhooks = Some(Arc::new(webhooks));
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// This state, showing the maildir at `dir` in the admin UI's outbox
    /// viewer. Call before serving.
    pub fn with_outbox(self, dir: std::path::PathBuf) -> AppState {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.outbox = Some(dir);
                AppState {
                    inner: Arc::new(inner),
                }
            }
            Err(shared) => {
                tracing::error!("with_outbox called on a state already in use; no outbox viewer");
                AppState { inner: shared }
            }
        }
    }

    /// The maildir the admin UI's outbox viewer shows, when delivery is to
    /// a maildir (`None`: to an MTA).
    pub(crate) fn outbox_dir(&self) -> Option<&std::path::Path> {
        self.inner.outbox.as_deref()
    }

    pub(crate) fn webhooks(&self) -> Option<&Arc<Webhooks>> {
        self.inner.webhooks.as_ref()
    }

    pub fn campaigns(&self) -> Option<&Arc<veto_sender::campaign::Campaigns>> {
        self.inner.sending.campaigns.as_ref()
    }

    pub(crate) fn service(
        &self,
    ) -> Option<&(
        veto_sender::outbound::Outbound,
        veto_sender::service::ServiceSettings,
    )> {
        self.inner.sending.service.as_ref()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.inner.keys
    }

    pub fn settings(&self) -> &WebSettings {
        &self.inner.settings
    }

    /// The policy the pages explain choices by: the sending guard's.
    pub fn policy(&self) -> veto_core::PolicySettings {
        self.inner
            .mailer
            .as_ref()
            .map(|m| *m.policy())
            .unwrap_or_default()
    }

    /// The mailer for veto's own messages (confirmation links).
    pub fn mailer(&self) -> Result<&veto_sender::Mailer, WebError> {
        self.inner.mailer.as_ref().ok_or_else(|| {
            WebError::Internal("no delivery is configured for veto's own messages".into())
        })
    }

    /// Appends one event through the group committer (durable on return).
    pub async fn append(
        &self,
        item: veto_store::Append,
    ) -> Result<veto_store::AppendOutcome, WebError> {
        self.inner.commits.append(item).await
    }

    async fn topic(&self, scope: TokenScope) -> Result<Option<Topic>, WebError> {
        let TokenScope::Topic(id) = scope else {
            return Ok(None);
        };
        Ok(self
            .inner
            .store
            .topics()
            .await?
            .into_iter()
            .find(|t| t.id.0 == id))
    }
}

/// The token keys in the store: the newest signs, all verify.
pub async fn token_keys(store: &Store) -> Result<TokenKeys, WebError> {
    let mut keys = store
        .token_keys()
        .await?
        .into_iter()
        .map(|(id, secret)| TokenKey::new(id, secret));
    let current = keys
        .next()
        .ok_or_else(|| WebError::Internal("the store holds no token key".into()))?;
    TokenKeys::new(current, keys.collect()).map_err(|e| WebError::Internal(e.to_string()))
}

/// A person's one-click unsubscribe link and preference-centre link.
pub struct Links {
    pub unsubscribe: String,
    pub preferences: String,
}

/// Builds the links for a contact and scope (a topic id, or all marketing).
pub fn links(
    keys: &TokenKeys,
    public_url: &str,
    contact: i64,
    topic: Option<u16>,
) -> Result<Links, WebError> {
    let contact =
        u64::try_from(contact).map_err(|_| WebError::Internal(format!("contact id {contact}")))?;
    let scope = topic.map_or(TokenScope::AllMarketing, TokenScope::Topic);
    let mint = |scope, purpose| {
        keys.mint(
            &Claims {
                contact,
                scope,
                message: None,
            },
            purpose,
        )
        .map_err(|e| WebError::Internal(e.to_string()))
    };
    let base = public_url.trim_end_matches('/');
    Ok(Links {
        unsubscribe: format!("{base}/u/{}", mint(scope, Purpose::Unsubscribe)?),
        preferences: format!(
            "{base}/p/{}",
            mint(TokenScope::AllMarketing, Purpose::Preferences)?
        ),
    })
}

/// Every route, with the security headers every response carries.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/u/{token}",
            get(unsubscribe::page).post(unsubscribe::one_click),
        )
        .route("/p", get(request_link::page).post(request_link::request))
        .route("/p/{token}", get(preferences::page).post(preferences::save))
        .route(
            "/p/{token}/download",
            get(preferences::back_to_page).post(preferences::request_download),
        )
        .route(
            "/p/{token}/erase",
            get(preferences::back_to_page).post(preferences::request_erase),
        )
        .route("/p/confirm/download/{token}", get(preferences::download))
        .route(
            "/p/confirm/erase/{token}",
            get(preferences::erase_page).post(preferences::erase),
        )
        .route("/static/veto.css", get(pages::stylesheet))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .merge(api::routes(&state))
        .merge(admin::routes())
        .merge(webhooks::routes())
        .fallback(pages::not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<&'static str, WebError> {
    state.store().topics().await?;
    Ok("ok\n")
}

/// A strict policy: no scripts at all, styles and forms from veto only,
/// never framed, no referrer leaking tokens.
async fn security_headers(mut res: axum::response::Response) -> axum::response::Response {
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    // The admin UI sets a policy of its own (scripts from veto itself).
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        set(
            h,
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        );
    }
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // Tokens are in paths: never send them to another site. Same-origin
    // referrers let browsers send a real Origin on our own forms.
    set(h, header::REFERRER_POLICY, "same-origin");
    if !h.contains_key(header::X_FRAME_OPTIONS) {
        set(h, header::X_FRAME_OPTIONS, "DENY");
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    res
}

/// Serves until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
