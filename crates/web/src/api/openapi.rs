//! The OpenAPI 3 description of `/api/v1`, generated from the handlers'
//! annotations and the schema types (`GET /api/v1/openapi.json`).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::*;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "veto admin API",
        description = "Consent capture, staff administration and the audit trail of veto. \
Every endpoint but this description needs `Authorization: Bearer <API key>`; which role may \
call which endpoint is in docs/ROLES.md. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`. \
Lists take `limit` (1 to 500) and `cursor` and answer `next_cursor`. POSTs that create \
things honour `Idempotency-Key`.",
        license(name = "AGPL-3.0-or-later"),
    ),
    modifiers(&Security),
    paths(
        consents::record, consents::purchase, signups::request,
        topics::list, topics::create, topics::show, topics::update, topics::service_types,
        topics::wordings, topics::add_wording, topics::wording,
        contacts::search, contacts::upsert, contacts::show, contacts::timeline, contacts::export,
        contacts::events, contacts::append, contacts::receipts, contacts::erase,
        requests::list, requests::create, requests::show, requests::identity_checked,
        requests::extend, requests::answer,
        suppressions::list, suppressions::add, suppressions::remove,
        approvals::list, approvals::approve,
        campaigns::list, campaigns::create, campaigns::show, campaigns::preview, campaigns::test,
        campaigns::control, messages::send, decisions::decide,
        keys::list, keys::create, keys::revoke, keys::users, keys::add_user, keys::update_user,
        audit::list, audit::verify, webhooks::list, webhooks::retry, openapi_json,
    ),
)]
pub(crate) struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "an API key from `veto keys create` or `POST /api/v1/keys`",
                    ))
                    .build(),
            ),
        );
    }
}

/// This description.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, body = Object, description = "the OpenAPI 3 description")))]
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
