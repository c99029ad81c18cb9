//! The admin UI over HTTP: signing in and out, sessions, forgery checks,
//! and the menu each role sees. Every test runs on SQLite, and on
//! PostgreSQL too when `VETO_TEST_POSTGRES_URL` is set.

mod admin_support;
mod api_support;

use admin_support::{PASSWORD, sign_in, sign_in_as};
use api_support::apps;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, ORIGIN};
use veto_core::Role;
use veto_store::UserUpdate;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_need_a_session_and_sign_in_leads_back() {
    for app in apps().await {
        let db = app.name();
        let res = admin_support::send(app.client.get(app.url("/admin/contacts?q=jo"))).await;
        assert_eq!(res.status, 303, "{db}");
        assert_eq!(
            res.location(),
            "/admin/login?next=%2Fadmin%2Fcontacts%3Fq%3Djo",
            "{db}"
        );
        let login = admin_support::send(app.client.get(app.url(res.location()))).await;
        assert_eq!(login.status, 200, "{db}");
        assert!(
            login.body.contains("value=\"/admin/contacts?q=jo\""),
            "{db}: {}",
            login.body
        );

        app.store
            .add_user("ada", Role::Admin, PASSWORD)
            .await
            .expect("user");
        let ok = admin_support::send(
            app.client
                .post(app.url("/admin/login"))
                .header(ORIGIN, &app.base)
                .form(&[
                    ("name", "ada"),
                    ("password", PASSWORD),
                    ("next", "/admin/contacts?q=jo"),
                ]),
        )
        .await;
        assert_eq!(ok.status, 303, "{db}: {}", ok.body);
        assert_eq!(ok.location(), "/admin/contacts?q=jo", "{db}");
        let cookie = ok.set_cookie("veto_admin").expect("session cookie");
        for attr in ["Path=/admin", "HttpOnly", "SameSite=Lax"] {
            assert!(cookie.contains(attr), "{db}: {cookie}");
        }
        // Never sent elsewhere after signing in.
        let away = admin_support::send(
            app.client
                .post(app.url("/admin/login"))
                .header(ORIGIN, &app.base)
                .form(&[
                    ("name", "ada"),
                    ("password", PASSWORD),
                    ("next", "https://evil.example/"),
                ]),
        )
        .await;
        assert_eq!(away.location(), "/admin", "{db}");
        let actions = app.store.staff_actions(None, 100).await.expect("audit");
        assert!(
            actions
                .iter()
                .any(|a| a.actor == "user:ada" && a.action == "session.sign_in"),
            "{db}: {actions:?}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_passwords_unknown_names_and_disabled_users_are_refused_alike() {
    for app in apps().await {
        let db = app.name();
        let user = app
            .store
            .add_user("bo", Role::Viewer, PASSWORD)
            .await
            .expect("user");
        for (name, password) in [("bo", "wrong password!"), ("nobody", PASSWORD)] {
            let page = sign_in_as(&app, name, password)
                .await
                .err()
                .expect("refused");
            assert_eq!(page.status, 401, "{db}");
            assert!(
                page.body.contains("do not match an active account"),
                "{db}: {}",
                page.body
            );
            assert!(page.set_cookie("veto_admin").is_none(), "{db}");
        }
        let empty = sign_in_as(&app, "bo", "").await.err().expect("refused");
        assert_eq!(empty.status, 422, "{db}");
        assert!(
            empty
                .body
                .contains("Enter your user name and your password"),
            "{db}"
        );

        // Signed in, then disabled: the session ends at once.
        let bo = sign_in_as(&app, "bo", PASSWORD).await.expect("signed in");
        app.store
            .update_user(
                user.id,
                UserUpdate {
                    disabled: Some(true),
                    ..Default::default()
                },
            )
            .await
            .expect("disable");
        assert_eq!(bo.get("/admin").await.status, 303, "{db}");
        let again = sign_in_as(&app, "bo", PASSWORD)
            .await
            .err()
            .expect("refused");
        assert_eq!(again.status, 401, "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forms_without_the_session_token_or_from_another_site_do_nothing() {
    for app in apps().await {
        let db = app.name();
        let ada = sign_in(&app, "ada", Role::Admin).await;
        // No token, a wrong token, another session's token.
        let other = sign_in(&app, "cy", Role::Admin).await;
        for fields in [
            vec![],
            vec![("_csrf", "0000")],
            vec![("_csrf", other.csrf.as_str())],
        ] {
            let res = ada.post_exactly("/admin/logout", &fields).await;
            assert_eq!(res.status, 403, "{db}: {}", res.body);
            assert!(res.body.contains("nothing was done"), "{db}: {}", res.body);
        }
        // The right token, from another origin.
        let forged = admin_support::send(
            app.client
                .post(app.url("/admin/logout"))
                .header(COOKIE, &ada.cookie)
                .header(ORIGIN, "https://evil.example")
                .form(&[("_csrf", ada.csrf.as_str())]),
        )
        .await;
        assert_eq!(forged.status, 403, "{db}");
        assert_eq!(ada.get("/admin").await.status, 200, "{db}: still signed in");
        // Signing in from another site's form is refused too.
        let res = admin_support::send(
            app.client
                .post(app.url("/admin/login"))
                .header(ORIGIN, "https://evil.example")
                .form(&[("name", "ada"), ("password", PASSWORD)]),
        )
        .await;
        assert_eq!(res.status, 403, "{db}");

        let out = ada.post("/admin/logout", &[]).await;
        assert_eq!(out.status, 303, "{db}: {}", out.body);
        assert_eq!(out.location(), "/admin/login", "{db}");
        assert_eq!(ada.get("/admin").await.status, 303, "{db}: signed out");
        assert_eq!(
            other.get("/admin").await.status,
            200,
            "{db}: only that session"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_sees_the_pages_the_role_table_allows_it() {
    for app in apps().await {
        let db = app.name();
        let viewer = sign_in(&app, "vi", Role::Viewer).await;
        let admin = sign_in(&app, "ad", Role::Admin).await;
        let dpo = sign_in(&app, "dp", Role::Dpo).await;
        let home = viewer.get("/admin").await;
        assert!(
            home.body.contains("href=\"/admin/contacts\""),
            "{db}: {}",
            home.body
        );
        assert!(
            !home.body.contains("href=\"/admin/keys\""),
            "{db}: viewers manage no keys"
        );
        let home = admin.get("/admin").await;
        assert!(home.body.contains("href=\"/admin/keys\""), "{db}");
        assert!(home.body.contains("href=\"/admin/approvals\""), "{db}");
        let home = dpo.get("/admin").await;
        assert!(home.body.contains("href=\"/admin/approvals\""), "{db}");
        assert!(!home.body.contains("href=\"/admin/keys\""), "{db}");

        let csp = home
            .headers
            .get(CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{db}: {csp}"
        );
        let missing = viewer.get("/admin/no-such-page").await;
        assert_eq!(missing.status, 404, "{db}");
        // The customer pages keep their policy without scripts.
        let page = admin_support::send(app.client.get(app.url("/p"))).await;
        let csp = page
            .headers
            .get(CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'"),
            "{db}: /p ({}) has the customer pages' policy: {csp:?}",
            page.status
        );
        assert!(!csp.contains("script-src"), "{db}: {csp}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_verifies_the_audit_trail_for_those_who_may() {
    for app in apps().await {
        let db = app.name();
        let viewer = sign_in(&app, "vi", Role::Viewer).await;
        let res = viewer.post("/admin/audit/verify", &[]).await;
        assert_eq!(res.status, 303, "{db}: {}", res.body);
        let home = viewer.follow(&res).await;
        assert!(home.body.contains("role=\"status\""), "{db}: {}", home.body);
        assert!(
            home.body
                .contains("nothing was edited, deleted or reordered"),
            "{db}"
        );
        // Shown once.
        let again = viewer.get("/admin").await;
        assert_eq!(again.status, 200, "{db}");
        assert!(again.body.contains("<h1>Dashboard</h1>"), "{db}");
        assert!(!again.body.contains("Verified:"), "{db}");
        let actions = app.store.staff_actions(None, 100).await.expect("audit");
        assert!(
            actions
                .iter()
                .any(|a| a.actor == "user:vi" && a.action == "audit.verify"),
            "{db}"
        );

        let sender = sign_in(&app, "ss", Role::ServiceSender).await;
        assert!(
            !sender
                .get("/admin")
                .await
                .body
                .contains("/admin/audit/verify"),
            "{db}"
        );
        let res = sender.post("/admin/audit/verify", &[]).await;
        assert_eq!(res.status, 403, "{db}");
        assert!(
            res.body.contains("Roles that may: viewer, dpo, admin"),
            "{db}: {}",
            res.body
        );
        app.close().await;
    }
}
