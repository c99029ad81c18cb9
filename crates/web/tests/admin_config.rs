//! The admin UI's configuration pages: topics and service types, wordings,
//! API keys, staff users and webhook deliveries. Each test looks at what
//! a member of staff sees, what the store holds afterwards (rows, the
//! audit trail), and that roles that may not get 403 and no buttons. Every
//! test runs on SQLite, and on PostgreSQL too when `VETO_TEST_POSTGRES_URL`
//! is set.

mod admin_support;
mod api_support;

use admin_support::{sign_in, sign_in_as};
use api_support::{TestApp, apps};
use veto_core::{Role, Timestamp, TopicKey};
use veto_store::{AttemptOutcome, WebhookEndpoint, WebhookStatus};

/// The last audit-trail entry: (actor, action, target).
async fn last_action(app: &TestApp) -> (String, String, Option<String>) {
    let all = app.store.staff_actions(None, 1000).await.expect("audit");
    let a = all.last().expect("an audit entry");
    (a.actor.clone(), a.action.clone(), a.target.clone())
}

async fn audit_len(app: &TestApp) -> usize {
    app.store
        .staff_actions(None, 1000)
        .await
        .expect("audit")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_are_listed_added_and_described_with_the_apis_checks() {
    for app in apps().await {
        let db = app.name();
        let mia = sign_in(&app, "mia", Role::Marketer).await;
        let page = mia.get("/admin/topics").await;
        assert_eq!(page.status, 200, "{db}: {}", page.body);
        for text in [
            "<code>shoe-offers</code>",
            "Shoe offers",
            "shoes",
            "Product news, now and then.",
            "Add a topic",
            "Save the description of news",
            // The service types, read-only, with where they are set.
            "<code>billing</code>",
            "Bills and receipts",
            "veto.toml",
        ] {
            assert!(page.body.contains(text), "{db}: {text}: {}", page.body);
        }

        // Added: the notice, the row, the audit trail.
        let res = mia
            .post(
                "/admin/topics",
                &[
                    ("key", "gifts"),
                    ("name", "Gift ideas"),
                    ("description", "Ideas for presents, in December."),
                    ("group", ""),
                ],
            )
            .await;
        assert_eq!(res.status, 303, "{db}: {}", res.body);
        let after = mia.follow(&res).await;
        assert!(
            after.body.contains("Topic gifts (Gift ideas) added."),
            "{db}: {}",
            after.body
        );
        assert!(after.body.contains("<code>gifts</code>"), "{db}");
        let gifts = app.topic("gifts").await;
        assert_eq!(
            gifts.description, "Ideas for presents, in December.",
            "{db}"
        );
        assert_eq!(gifts.group, None, "{db}");
        assert_eq!(
            last_action(&app).await,
            (
                "user:mia".into(),
                "topics.create".into(),
                Some("topic:gifts".into())
            ),
            "{db}"
        );

        // Bad input: the API's message, nothing changed.
        let topics = app.store.topics().await.expect("topics").len();
        let audited = audit_len(&app).await;
        for (fields, message) in [
            (
                vec![("key", "Bad Key"), ("name", "Bad"), ("description", "Bad.")],
                "is not a valid key",
            ),
            (
                vec![("key", "empty"), ("name", "  "), ("description", "Some.")],
                "Name is required",
            ),
            (
                vec![("key", "nodesc"), ("name", "No description")],
                "Description is required",
            ),
            (
                vec![
                    ("key", "news"),
                    ("name", "Again"),
                    ("description", "Again."),
                ],
                "There is already a topic news",
            ),
        ] {
            let res = mia.post("/admin/topics", &fields).await;
            assert_eq!(res.status, 303, "{db}: {}", res.body);
            let page = mia.follow(&res).await;
            assert!(page.body.contains("flash-error"), "{db}: {}", page.body);
            assert!(
                page.body.contains(message),
                "{db}: {message}: {}",
                page.body
            );
        }
        assert_eq!(
            app.store.topics().await.expect("topics").len(),
            topics,
            "{db}"
        );
        assert_eq!(audit_len(&app).await, audited, "{db}");

        // The description changes, and the trail says from what to what.
        let res = mia
            .post(
                "/admin/topics/news",
                &[("description", "New products, about once a month.")],
            )
            .await;
        let page = mia.follow(&res).await;
        assert!(
            page.body
                .contains("The description of topic news was changed."),
            "{db}: {}",
            page.body
        );
        assert_eq!(
            app.topic("news").await.description,
            "New products, about once a month.",
            "{db}"
        );
        let trail = app.store.staff_actions(None, 1000).await.expect("audit");
        let last = trail.last().expect("entry");
        assert_eq!(
            (
                last.action.as_str(),
                last.detail["description"]["from"].as_str()
            ),
            ("topics.update", Some("Product news, now and then.")),
            "{db}"
        );
        let res = mia
            .post("/admin/topics/news", &[("description", " ")])
            .await;
        let page = mia.follow(&res).await;
        assert!(
            page.body
                .contains("Description is required and may not be blank"),
            "{db}: {}",
            page.body
        );
        assert_eq!(
            app.topic("news").await.description,
            "New products, about once a month.",
            "{db}"
        );

        // A viewer reads, without the forms, and may not post.
        let vic = sign_in(&app, "vic", Role::Viewer).await;
        let page = vic.get("/admin/topics").await;
        assert_eq!(page.status, 200, "{db}");
        assert!(page.body.contains("<code>gifts</code>"), "{db}");
        assert!(!page.body.contains("Add a topic"), "{db}");
        assert!(!page.body.contains("Save the description"), "{db}");
        let res = vic
            .post(
                "/admin/topics",
                &[("key", "sneaky"), ("name", "S"), ("description", "S.")],
            )
            .await;
        assert_eq!(res.status, 403, "{db}");
        let res = vic
            .post("/admin/topics/news", &[("description", "Changed.")])
            .await;
        assert_eq!(res.status, 403, "{db}");
        assert!(
            app.store
                .topic(&TopicKey::parse("sneaky").expect("key"))
                .await
                .expect("topic")
                .is_none(),
            "{db}"
        );
        assert_eq!(
            app.topic("news").await.description,
            "New products, about once a month.",
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wordings_are_listed_and_added_never_edited() {
    for app in apps().await {
        let db = app.name();
        let mia = sign_in(&app, "mia", Role::Marketer).await;
        let page = mia.get("/admin/wordings").await;
        assert_eq!(page.status, 200, "{db}");
        let v1 = format!("v{}", app.wording);
        assert!(page.body.contains(&v1), "{db}: {}", page.body);
        assert!(
            page.body
                .contains("Yes, email me about new products and offers."),
            "{db}"
        );
        assert!(page.body.contains("never edited or deleted"), "{db}");
        assert!(!page.body.contains("Delete"), "{db}");

        let text = "Yes, send me gift ideas by email.";
        let res = mia.post("/admin/wordings", &[("text", text)]).await;
        let page = mia.follow(&res).await;
        let ids = app.store.wording_ids().await.expect("ids");
        let new = *ids.iter().max().expect("an id");
        assert!(
            page.body.contains(&format!("Wording v{new} added.")),
            "{db}: {}",
            page.body
        );
        assert_eq!(
            app.store
                .wording(veto_core::WordingId(new))
                .await
                .expect("wording")
                .map(|w| w.text),
            Some(text.to_owned()),
            "{db}"
        );
        assert_eq!(last_action(&app).await.1, "wordings.create", "{db}");

        // The same text keeps its id; a blank one is refused.
        let res = mia.post("/admin/wordings", &[("text", text)]).await;
        let page = mia.follow(&res).await;
        assert!(
            page.body.contains(&format!("already wording v{new}")),
            "{db}: {}",
            page.body
        );
        let res = mia.post("/admin/wordings", &[("text", "   ")]).await;
        let page = mia.follow(&res).await;
        assert!(page.body.contains("Text may not be blank."), "{db}");
        assert_eq!(app.store.wording_ids().await.expect("ids"), ids, "{db}");

        // A service sender reads them, without the form, and may not add.
        let sam = sign_in(&app, "sam", Role::ServiceSender).await;
        let page = sam.get("/admin/wordings").await;
        assert_eq!(page.status, 200, "{db}");
        assert!(!page.body.contains("Add the wording"), "{db}");
        let res = sam.post("/admin/wordings", &[("text", "Sneaky.")]).await;
        assert_eq!(res.status, 403, "{db}");
        assert_eq!(app.store.wording_ids().await.expect("ids"), ids, "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_creates_a_key_sees_it_once_and_revokes_it_after_confirming() {
    for app in apps().await {
        let db = app.name();
        let ada = sign_in(&app, "ada", Role::Admin).await;
        let page = ada.get("/admin/keys").await;
        assert_eq!(page.status, 200, "{db}");
        assert!(page.body.contains("Create the key"), "{db}");

        let res = ada
            .post(
                "/admin/keys",
                &[
                    ("role", "marketer"),
                    ("default_topic", "news"),
                    ("service_type", ""),
                    ("owner", "Shop CRM"),
                ],
            )
            .await;
        // Rendered at once: no redirect, no notice cookie carrying it.
        assert_eq!(res.status, 201, "{db}: {}", res.body);
        assert!(res.set_cookie("veto_flash").is_none(), "{db}");
        assert_eq!(
            res.headers
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{db}"
        );
        assert!(res.body.contains("will not be shown again"), "{db}");
        assert!(res.body.contains("<dd>marketer</dd>"), "{db}: {}", res.body);
        // The header still names who is signed in, with their own role.
        assert!(res.body.contains("(admin)"), "{db}");
        let at = res.body.find("readonly value=\"").expect("the key") + 16;
        let key = res.body[at..at + res.body[at..].find('"').expect("end")].to_owned();
        assert!(key.len() > 20, "{db}: {key}");

        // It works as a Bearer key, with its role.
        let (status, body) = app.get_json("/api/v1/topics", &key).await;
        assert_eq!(status, 200, "{db}: {body}");
        let (status, _) = app.get_json("/api/v1/keys", &key).await;
        assert_eq!(status, 403, "{db}");

        let info = app
            .store
            .api_keys(None, 100)
            .await
            .expect("keys")
            .into_iter()
            .find(|k| k.owner.as_deref() == Some("Shop CRM"))
            .expect("the new key");
        assert_eq!(
            (info.role, info.default_topic.as_deref()),
            (Role::Marketer, Some("news")),
            "{db}"
        );
        assert_eq!(
            last_action(&app).await,
            (
                "user:ada".into(),
                "keys.create".into(),
                Some(format!("key:{}", info.id))
            ),
            "{db}"
        );
        // Listed by its prefix; never shown again.
        let page = ada.get("/admin/keys").await;
        assert!(page.body.contains(&info.prefix), "{db}");
        assert!(page.body.contains("Shop CRM"), "{db}");
        assert!(!page.body.contains(&key), "{db}");
        let trail = app.store.staff_actions(None, 1000).await.expect("audit");
        assert!(
            !trail.iter().any(|a| a.detail.to_string().contains(&key)),
            "{db}"
        );

        // Bad input: the API's message, no key made.
        let keys = app.store.api_keys(None, 100).await.expect("keys").len();
        for (fields, message) in [
            (
                vec![("role", "marketer"), ("default_topic", "nope")],
                "There is no topic",
            ),
            (vec![("role", "boss")], "boss"),
            (
                vec![("role", "service-sender"), ("service_type", "parcels")],
                "is not declared under [service.types]",
            ),
            (
                vec![
                    ("role", "service-sender"),
                    ("default_topic", "news"),
                    ("service_type", "billing"),
                ],
                "not both",
            ),
        ] {
            let res = ada.post("/admin/keys", &fields).await;
            assert_eq!(res.status, 303, "{db}: {}", res.body);
            let page = ada.follow(&res).await;
            assert!(page.body.contains("flash-error"), "{db}");
            assert!(
                page.body.contains(message),
                "{db}: {message}: {}",
                page.body
            );
        }
        assert_eq!(
            app.store.api_keys(None, 100).await.expect("keys").len(),
            keys,
            "{db}"
        );

        // Revoking asks first; without the box ticked nothing happens.
        let page = ada.get(&format!("/admin/keys/{}/revoke", info.id)).await;
        assert_eq!(page.status, 200, "{db}");
        assert!(
            page.body.contains(&format!("Revoke key {}", info.prefix)),
            "{db}"
        );
        let path = format!("/admin/keys/{}/revoke", info.id);
        let res = ada.post(&path, &[]).await;
        let page = ada.follow(&res).await;
        assert!(page.body.contains("Tick the box"), "{db}: {}", page.body);
        assert_eq!(app.get_json("/api/v1/topics", &key).await.0, 200, "{db}");
        let res = ada.post(&path, &[("confirm", "yes")]).await;
        let page = ada.follow(&res).await;
        assert!(
            page.body.contains("is revoked: it no longer works."),
            "{db}: {}",
            page.body
        );
        assert!(page.body.contains("Revoked"), "{db}");
        assert_eq!(app.get_json("/api/v1/topics", &key).await.0, 401, "{db}");
        assert_eq!(last_action(&app).await.1, "keys.revoke", "{db}");

        // Not an admin: 403, no menu entry, nothing made.
        let mia = sign_in(&app, "mia", Role::Marketer).await;
        let home = mia.get("/admin").await;
        assert!(!home.body.contains("/admin/keys"), "{db}");
        assert!(!home.body.contains("/admin/users"), "{db}");
        assert_eq!(mia.get("/admin/keys").await.status, 403, "{db}");
        let res = mia.post("/admin/keys", &[("role", "admin")]).await;
        assert_eq!(res.status, 403, "{db}");
        assert!(!res.body.contains("will not be shown again"), "{db}");
        assert_eq!(
            app.store.api_keys(None, 100).await.expect("keys").len(),
            keys,
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_manages_staff_users_but_cannot_lock_themselves_out() {
    for app in apps().await {
        let db = app.name();
        let ada = sign_in(&app, "ada", Role::Admin).await;
        let page = ada.get("/admin/users").await;
        assert_eq!(page.status, 200, "{db}");
        assert!(
            page.body
                .contains("<td>ada <span class=\"quiet\">(you)</span></td>"),
            "{db}: ada's row: {}",
            page.body
        );
        assert!(page.body.contains("at least 12 characters"), "{db}");

        // Bad input: the message, no user.
        let long = "a long enough password";
        for (fields, message) in [
            (
                vec![
                    ("name", " "),
                    ("role", "viewer"),
                    ("password", long),
                    ("password2", long),
                ],
                "Name is required",
            ),
            (
                vec![
                    ("name", "bo"),
                    ("role", "viewer"),
                    ("password", "short"),
                    ("password2", "short"),
                ],
                "Password must have at least 12 characters.",
            ),
            (
                vec![
                    ("name", "bo"),
                    ("role", "viewer"),
                    ("password", long),
                    ("password2", "a long enough passwort"),
                ],
                "The two passwords differ",
            ),
            (
                vec![
                    ("name", "b o"),
                    ("role", "viewer"),
                    ("password", long),
                    ("password2", long),
                ],
                "must be 1 to 64 letters",
            ),
        ] {
            let res = ada.post("/admin/users", &fields).await;
            assert_eq!(res.status, 303, "{db}: {}", res.body);
            let page = ada.follow(&res).await;
            assert!(
                page.body.contains(message),
                "{db}: {message}: {}",
                page.body
            );
        }
        assert_eq!(
            app.store.users(None, 100).await.expect("users").len(),
            1,
            "{db}"
        );

        let res = ada
            .post(
                "/admin/users",
                &[
                    ("name", "bo"),
                    ("role", "viewer"),
                    ("password", long),
                    ("password2", long),
                ],
            )
            .await;
        let page = ada.follow(&res).await;
        assert!(
            page.body.contains("bo was added as viewer."),
            "{db}: {}",
            page.body
        );
        assert_eq!(last_action(&app).await.1, "users.add", "{db}");
        let bo_id = app
            .store
            .users(None, 100)
            .await
            .expect("users")
            .into_iter()
            .find(|u| u.name == "bo")
            .expect("bo")
            .id;
        let bo = sign_in_as(&app, "bo", long).await.expect("bo signs in");
        let path = format!("/admin/users/{bo_id}");

        // Role.
        let res = ada
            .post(&path, &[("action", "role"), ("role", "dpo")])
            .await;
        let page = ada.follow(&res).await;
        assert!(
            page.body.contains("bo now has the role dpo."),
            "{db}: {}",
            page.body
        );
        let user = app.store.user(bo_id).await.expect("user").expect("bo");
        assert_eq!(user.role, Role::Dpo, "{db}");
        let trail = app.store.staff_actions(None, 1000).await.expect("audit");
        let last = trail.last().expect("entry");
        assert_eq!(
            (
                last.actor.as_str(),
                last.action.as_str(),
                last.detail["role"].as_str()
            ),
            ("user:ada", "users.update", Some("dpo")),
            "{db}"
        );

        // Disable (confirmed), and bo's session ends; then enable.
        let res = ada.post(&path, &[("action", "disable")]).await;
        let page = ada.follow(&res).await;
        assert!(page.body.contains("Tick the box"), "{db}");
        assert!(
            !app.store
                .user(bo_id)
                .await
                .expect("user")
                .expect("bo")
                .disabled,
            "{db}"
        );
        let res = ada
            .post(&path, &[("action", "disable"), ("confirm", "yes")])
            .await;
        let page = ada.follow(&res).await;
        assert!(page.body.contains("bo is disabled"), "{db}: {}", page.body);
        assert!(
            app.store
                .user(bo_id)
                .await
                .expect("user")
                .expect("bo")
                .disabled,
            "{db}"
        );
        assert_eq!(bo.get("/admin").await.status, 303, "{db}");
        assert!(sign_in_as(&app, "bo", long).await.is_err(), "{db}");
        let res = ada.post(&path, &[("action", "enable")]).await;
        let page = ada.follow(&res).await;
        assert!(page.body.contains("bo is enabled again."), "{db}");

        // A new password: typed twice, long enough.
        let new = "another good password";
        for (p1, p2, message) in [
            (
                "short",
                "short",
                "Password must have at least 12 characters.",
            ),
            (new, "something else entirely", "The two passwords differ"),
        ] {
            let res = ada
                .post(
                    &path,
                    &[("action", "password"), ("password", p1), ("password2", p2)],
                )
                .await;
            let page = ada.follow(&res).await;
            assert!(page.body.contains(message), "{db}: {}", page.body);
        }
        assert!(sign_in_as(&app, "bo", long).await.is_ok(), "{db}");
        let res = ada
            .post(
                &path,
                &[
                    ("action", "password"),
                    ("password", new),
                    ("password2", new),
                ],
            )
            .await;
        let page = ada.follow(&res).await;
        assert!(
            page.body.contains("bo has a new password"),
            "{db}: {}",
            page.body
        );
        assert!(sign_in_as(&app, "bo", long).await.is_err(), "{db}");
        assert!(sign_in_as(&app, "bo", new).await.is_ok(), "{db}");

        // No self-lockout: refused with a reason, nothing changed.
        let me = format!(
            "/admin/users/{}",
            app.store.users(None, 100).await.expect("users")[0].id
        );
        let audited = audit_len(&app).await;
        for (fields, message) in [
            (
                vec![("action", "disable"), ("confirm", "yes")],
                "You cannot disable yourself",
            ),
            (
                vec![("action", "role"), ("role", "viewer")],
                "You cannot take away your own admin role",
            ),
        ] {
            let res = ada.post(&me, &fields).await;
            let page = ada.follow(&res).await;
            assert!(page.body.contains(message), "{db}: {}", page.body);
        }
        let ada_user = &app.store.users(None, 100).await.expect("users")[0];
        assert_eq!(
            (ada_user.role, ada_user.disabled),
            (Role::Admin, false),
            "{db}"
        );
        assert_eq!(audit_len(&app).await, audited, "{db}");
        assert_eq!(ada.get("/admin/users").await.status, 200, "{db}");
        let page = ada.get("/admin/users").await;
        assert!(!page.body.contains("Disable ada"), "{db}");

        // Not an admin: 403 and nothing changes.
        let mia = sign_in(&app, "mia", Role::Marketer).await;
        assert_eq!(mia.get("/admin/users").await.status, 403, "{db}");
        let res = mia
            .post(&path, &[("action", "role"), ("role", "admin")])
            .await;
        assert_eq!(res.status, 403, "{db}");
        assert_eq!(
            app.store.user(bo_id).await.expect("user").expect("bo").role,
            Role::Dpo,
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_deliveries_are_counted_filtered_and_retried_by_admins() {
    for app in apps().await {
        let db = app.name();
        app.store
            .set_webhook_endpoints(vec![WebhookEndpoint::new("crm")]);
        app.grant("jo@example.com", "news").await;
        app.withdraw("jo@example.com", "news").await;
        // The first runs out of retries, as the worker records it.
        let claimed = app
            .store
            .claim_webhook_deliveries("n", 1, Timestamp::now(), std::time::Duration::from_secs(60))
            .await
            .expect("claim");
        let id = claimed[0].id;
        app.store
            .finish_webhook_attempt(
                id,
                "n",
                AttemptOutcome::GaveUp {
                    status: Some(503),
                    error: "the receiver answered 503".into(),
                },
                Timestamp::now(),
            )
            .await
            .expect("finish");

        // An auditor sees counts and the open deliveries, without Retry.
        let vic = sign_in(&app, "vic", Role::Viewer).await;
        let page = vic.get("/admin/webhooks").await;
        assert_eq!(page.status, 200, "{db}: {}", page.body);
        for text in [
            "<td>crm</td>",
            "HTTP 503: the receiver answered 503",
            ">failed</span>",
            ">pending</span>",
            "withdraw (event",
        ] {
            assert!(page.body.contains(text), "{db}: {text}: {}", page.body);
        }
        assert!(!page.body.contains("Retry delivery"), "{db}");
        let res = vic.post(&format!("/admin/webhooks/{id}/retry"), &[]).await;
        assert_eq!(res.status, 403, "{db}");
        let page = vic.get("/admin/webhooks?status=pending").await;
        assert!(!page.body.contains(">failed</span>"), "{db}");
        assert!(page.body.contains(">pending</span>"), "{db}");
        let bad = vic.get("/admin/webhooks?status=lost").await;
        assert_eq!(bad.status, 400, "{db}");
        assert!(
            bad.body
                .contains("status must be pending, delivered, failed or gone"),
            "{db}"
        );
        // A marketer may not see them at all.
        let mia = sign_in(&app, "mia", Role::Marketer).await;
        assert_eq!(mia.get("/admin/webhooks").await.status, 403, "{db}");

        // An admin retries: pending again, audited.
        let ada = sign_in(&app, "ada", Role::Admin).await;
        let page = ada.get("/admin/webhooks?status=failed").await;
        assert!(page.body.contains(&format!("Retry delivery {id}")), "{db}");
        let res = ada.post(&format!("/admin/webhooks/{id}/retry"), &[]).await;
        let page = ada.follow(&res).await;
        assert!(page.body.contains("is queued again"), "{db}: {}", page.body);
        let d = app
            .store
            .webhook_delivery(id)
            .await
            .expect("row")
            .expect("delivery");
        assert_eq!(d.status, WebhookStatus::Pending, "{db}");
        assert_eq!(
            last_action(&app).await,
            (
                "user:ada".into(),
                "webhooks.retry".into(),
                Some(format!("webhook-delivery:{id}"))
            ),
            "{db}"
        );
        let page = ada.get("/admin/webhooks?status=failed").await;
        assert!(
            page.body.contains("No deliveries with status failed."),
            "{db}"
        );

        // A delivered one is not sent again: the API's refusal, as a notice.
        let claimed = app
            .store
            .claim_webhook_deliveries("n", 1, Timestamp::now(), std::time::Duration::from_secs(60))
            .await
            .expect("claim");
        app.store
            .finish_webhook_attempt(
                claimed[0].id,
                "n",
                AttemptOutcome::Delivered { status: 200 },
                Timestamp::now(),
            )
            .await
            .expect("finish");
        let res = ada
            .post(&format!("/admin/webhooks/{}/retry", claimed[0].id), &[])
            .await;
        let page = ada.follow(&res).await;
        assert!(
            page.body.contains("was delivered already"),
            "{db}: {}",
            page.body
        );
        app.close().await;
    }
}
