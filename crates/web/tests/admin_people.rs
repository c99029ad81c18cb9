//! The people pages of the admin UI: the dashboard's numbers, contacts and
//! their timeline, erasure and export, suppressions and the audit trail.
//! Every test runs on SQLite, and on PostgreSQL too when
//! `VETO_TEST_POSTGRES_URL` is set.

mod admin_support;
mod api_support;

use admin_support::sign_in;
use api_support::{TestApp, apps, email};
use veto_core::{Channel, EventKind, NewEvent, Role, Scope, Source, Timestamp};
use veto_store::describe::day;
use veto_store::{
    Append, AppendOutcome, ContactInput, DAY_US, Evidence, NewReceipt, NewSubjectRequest,
    RequestKind, RequestVia,
};

const JO: &str = "jo@example.com";

fn receipt(
    contact: Option<i64>,
    allowed: bool,
    reason: Option<&str>,
    checked_at: i64,
) -> NewReceipt {
    NewReceipt {
        message_id: format!("<m{checked_at}-{allowed}@shop.example>"),
        contact,
        recipient: JO.into(),
        subject: Some("Spring sale".into()),
        content_hash: None,
        template_version: None,
        class: "news".into(),
        channel: "email".into(),
        allowed,
        rule: if allowed { "GDPR-6-1-a" } else { "GDPR-7" }.into(),
        reason: reason.map(str::to_owned),
        event: None,
        checked_at,
        outcome: None,
        relayed_at: None,
    }
}

async fn contact_id(app: &TestApp, address: &str) -> i64 {
    app.store
        .find_contact(&email(address))
        .await
        .expect("find")
        .expect("a contact")
        .id
}

/// A one-click unsubscribe from `topic`, as `POST /u/TOKEN` records it.
async fn one_click(app: &TestApp, address: &str, topic: &str) {
    let t = app.topic(topic).await;
    let out = app
        .store
        .append(
            vec![Append {
                contact: ContactInput::new(email(address)),
                event: NewEvent {
                    kind: EventKind::Withdraw,
                    scope: Scope::Topic(t.id),
                    channel: Some(Channel::Email),
                    source: Source::OneClick,
                    at: Timestamp::now(),
                },
                evidence: Evidence::default(),
                actor: "person".into(),
            }],
            false,
        )
        .await
        .expect("append");
    assert!(matches!(out[0], AppendOutcome::Recorded { .. }), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_chart_counts_the_receipts() {
    for app in apps().await {
        let db = app.name();
        let now = Timestamp::now().as_microsecond();
        let today = now.div_euclid(DAY_US);
        let mut receipts = vec![];
        for _ in 0..3 {
            receipts.push(receipt(None, true, None, now));
        }
        for _ in 0..2 {
            receipts.push(receipt(None, false, Some("withdrawn"), now));
        }
        receipts.push(receipt(None, false, Some("objected"), now - 2 * DAY_US));
        // Outside the 30 days: not counted.
        receipts.push(receipt(None, false, Some("objected"), now - 40 * DAY_US));
        app.store.record_receipts(receipts).await.expect("receipts");

        let rows = app
            .store
            .receipts_by_day(Timestamp::from_microsecond((today - 29) * DAY_US).expect("time"))
            .await
            .expect("by day");
        let total: i64 = rows.iter().map(|r| r.count).sum();
        assert_eq!(total, 6, "{db}: {rows:?}");
        assert!(
            rows.iter()
                .any(|r| r.day == today && r.allowed && r.reason.is_none() && r.count == 3),
            "{db}: {rows:?}"
        );

        app.grant(JO, "news").await;
        app.withdraw(JO, "news").await;

        let viewer = sign_in(&app, "vi", Role::Viewer).await;
        let home = viewer.get("/admin").await;
        assert_eq!(home.status, 200, "{db}");
        let body = &home.body;
        assert!(body.contains("role=\"img\""), "{db}");
        assert!(
            body.contains("6 messages checked in the last 30 days: 3 allowed, 3 refused."),
            "{db}: {body}"
        );
        // The table: allowed, then the reasons in order (objected, withdrawn).
        let today_s = day(Timestamp::from_microsecond(today * DAY_US).expect("time"));
        assert!(
            body.contains(&format!(
                "<th scope=\"row\">{today_s}</th><td>3</td><td>0</td><td>2</td><td>5</td>"
            )),
            "{db}: {body}"
        );
        let two_ago = day(Timestamp::from_microsecond((today - 2) * DAY_US).expect("time"));
        assert!(
            body.contains(&format!(
                "<th scope=\"row\">{two_ago}</th><td>0</td><td>1</td><td>0</td><td>1</td>"
            )),
            "{db}"
        );
        assert!(body.contains("Refused: withdrew consent"), "{db}");
        // One withdrawal in the ledger, in the last 7 and 30 days.
        assert!(
            body.contains("<th scope=\"row\">Last 7 days</th><td>1</td><td>0</td><td>1</td>"),
            "{db}: {body}"
        );
        assert!(body.contains("Spam complaint rate"), "{db}");
        assert!(body.contains("Contacts</dt><dd>1</dd>"), "{db}: {body}");
        assert!(body.contains("Topics</dt><dd>3</dd>"), "{db}");
        // The audit chain: not verified yet, then verified by vi.
        assert!(body.contains("have not been verified"), "{db}");
        let res = viewer.post("/admin/audit/verify", &[]).await;
        let home = viewer.follow(&res).await;
        assert!(home.body.contains("by user:vi"), "{db}: {}", home.body);
        assert!(home.body.contains("badge ok\">verified"), "{db}");

        // A service sender sees no personal numbers.
        let sender = sign_in(&app, "ss", Role::ServiceSender).await;
        let page = sender.get("/admin").await;
        assert_eq!(page.status, 200, "{db}");
        assert!(!page.body.contains("role=\"img\""), "{db}");
        app.close().await;
    }
}

/// An access request received `days` before `now`.
async fn request(app: &TestApp, now: Timestamp, address: &str, days: i64) {
    app.store
        .create_request(NewSubjectRequest {
            kind: RequestKind::Access,
            contact: None,
            email: Some(email(address)),
            via: RequestVia::Email,
            note: None,
            received_at: Timestamp::from_microsecond(now.as_microsecond() - days * DAY_US)
                .expect("time"),
            actor: "cli".into(),
        })
        .await
        .expect("request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_counts_gdpr_requests_for_those_who_may_read_them() {
    for app in apps().await {
        let db = app.name();
        let dpo = sign_in(&app, "dana", Role::Dpo).await;
        let home = dpo.get("/admin").await;
        assert!(home.body.contains("GDPR requests</h2>"), "{db}");
        assert!(home.body.contains("badge ok\">on time"), "{db}");

        // Received 27 days ago: due within 7 days; 40 days ago: overdue.
        let now = Timestamp::now();
        request(&app, now, "soon@example.com", 27).await;
        let home = dpo.get("/admin").await;
        assert!(home.body.contains("badge warn\">due soon"), "{db}");
        request(&app, now, "late@example.com", 40).await;
        request(&app, now, "new@example.com", 0).await;

        let admin = sign_in(&app, "ada", Role::Admin).await;
        for staff in [&dpo, &admin] {
            let body = staff.get("/admin").await.body;
            assert!(body.contains("<dt>Open</dt><dd>3</dd>"), "{db}: {body}");
            assert!(
                body.contains("<dt>Due within 7 days</dt><dd>1</dd>"),
                "{db}"
            );
            assert!(body.contains("<dt>Overdue</dt><dd>1</dd>"), "{db}");
            assert!(body.contains("badge bad\">overdue"), "{db}");
            assert!(body.contains("href=\"/admin/requests\""), "{db}");
        }
        // A viewer may not read the requests: no numbers, no link.
        let viewer = sign_in(&app, "vi", Role::Viewer).await;
        let body = viewer.get("/admin").await.body;
        assert!(!body.contains("GDPR requests</h2>"), "{db}");
        assert!(!body.contains("Due within 7 days"), "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_contacts_timeline_reads_as_sentences_newest_first() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        one_click(&app, JO, "news").await;
        let id = contact_id(&app, JO).await;
        let later = Timestamp::now().as_microsecond() + 1000;
        app.store
            .record_receipts(vec![receipt(Some(id), false, Some("withdrawn"), later)])
            .await
            .expect("receipt");

        let viewer = sign_in(&app, "vi", Role::Viewer).await;
        let found = viewer.get("/admin/contacts?q=jo%40").await;
        assert_eq!(found.status, 200, "{db}");
        assert!(
            found
                .body
                .contains(&format!("href=\"/admin/contacts/{id}\"")),
            "{db}: {}",
            found.body
        );
        let none = viewer.get("/admin/contacts?q=nobody").await;
        assert!(none.body.contains("No contact's address contains"), "{db}");

        let page = viewer.get(&format!("/admin/contacts/{id}")).await;
        assert_eq!(page.status, 200, "{db}");
        let body = page.body.replace("&#x27;", "'");
        let today = day(Timestamp::now());
        let agreed = format!(
            "{today}: agreed to Product news by email on the organisation's form (https://shop.example/signup) (wording #{})",
            app.wording
        );
        let unsubscribed =
            format!("{today}: unsubscribed from Product news by email via one-click");
        let refused =
            format!("{today}: Spring sale (a Product news message) not sent — withdrew consent");
        for s in [&agreed, &unsubscribed, &refused] {
            assert!(body.contains(s.as_str()), "{db}: {s}\n{body}");
        }
        let at = |s: &str| body.find(s).expect("present");
        assert!(
            at(&refused) < at(&unsubscribed) && at(&unsubscribed) < at(&agreed),
            "{db}: newest first"
        );
        // The wording they were shown, and the guard's decision now.
        assert!(
            body.contains("Yes, email me about new products and offers."),
            "{db}"
        );
        assert!(body.contains("withdrew consent (rule"), "{db}: {body}");
        assert!(body.contains("badge bad\">not allowed"), "{db}");
        assert!(body.contains("/p/"), "{db}: the preference-centre link");
        // A viewer neither exports nor erases.
        assert!(!body.contains("/erase\""), "{db}");
        assert!(!body.contains("/export\""), "{db}");
        assert_eq!(
            viewer.get("/admin/contacts/999999").await.status,
            404,
            "{db}"
        );
        assert_eq!(viewer.get("/admin/contacts/x").await.status, 404, "{db}");
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_dpo_exports_and_erases_after_confirming() {
    for app in apps().await {
        let db = app.name();
        app.grant(JO, "news").await;
        let id = contact_id(&app, JO).await;
        let erase = format!("/admin/contacts/{id}/erase");

        let viewer = sign_in(&app, "vi", Role::Viewer).await;
        assert_eq!(viewer.get(&erase).await.status, 403, "{db}");
        let res = viewer.post(&erase, &[("confirm", "yes")]).await;
        assert_eq!(res.status, 403, "{db}");
        assert!(
            res.body.contains("Roles that may: dpo"),
            "{db}: {}",
            res.body
        );
        assert_eq!(
            viewer
                .get(&format!("/admin/contacts/{id}/export"))
                .await
                .status,
            403,
            "{db}"
        );
        assert!(
            app.store
                .find_contact(&email(JO))
                .await
                .expect("find")
                .is_some(),
            "{db}"
        );

        let dpo = sign_in(&app, "dana", Role::Dpo).await;
        let page = dpo.get(&format!("/admin/contacts/{id}")).await;
        assert!(page.body.contains(&format!("href=\"{erase}\"")), "{db}");
        let export = dpo.get(&format!("/admin/contacts/{id}/export")).await;
        assert_eq!(export.status, 200, "{db}");
        assert!(
            export
                .headers
                .get("content-disposition")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .starts_with("attachment"),
            "{db}"
        );
        let v: serde_json::Value = serde_json::from_str(&export.body).expect("json");
        assert!(v.to_string().contains(JO), "{db}");

        let confirm = dpo.get(&erase).await;
        assert_eq!(confirm.status, 200, "{db}");
        assert!(confirm.body.contains("name=\"confirm\""), "{db}");
        let unconfirmed = dpo.post(&erase, &[]).await;
        assert_eq!(unconfirmed.location(), erase, "{db}");
        assert!(
            app.store
                .find_contact(&email(JO))
                .await
                .expect("find")
                .is_some(),
            "{db}"
        );

        let done = dpo.post(&erase, &[("confirm", "yes")]).await;
        assert_eq!(done.status, 303, "{db}: {}", done.body);
        let after = dpo.follow(&done).await;
        assert!(after.body.contains("was erased"), "{db}: {}", after.body);
        assert!(after.body.contains(&format!("Erased contact {id}")), "{db}");
        assert!(
            app.store
                .find_contact(&email(JO))
                .await
                .expect("find")
                .is_none(),
            "{db}"
        );
        let events = app
            .store
            .events_of(veto_core::ContactId(id))
            .await
            .expect("events");
        assert!(
            events.iter().any(|e| e.event.kind == EventKind::Erasure),
            "{db}"
        );
        let actions = app.store.staff_actions(None, 100).await.expect("audit");
        for action in ["contacts.export", "contacts.erase"] {
            assert!(
                actions.iter().any(|a| a.actor == "user:dana"
                    && a.action == action
                    && a.target.as_deref() == Some(&format!("contact:{id}"))),
                "{db}: {action} {actions:?}"
            );
        }
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suppressions_are_added_and_only_hard_bounces_removed_by_a_dpo() {
    for app in apps().await {
        let db = app.name();
        let marketer = sign_in(&app, "mo", Role::Marketer).await;
        let dpo = sign_in(&app, "dana", Role::Dpo).await;
        let admin = sign_in(&app, "ad", Role::Admin).await;

        let bad = marketer
            .post(
                "/admin/suppressions",
                &[("email", "not an address"), ("kind", "complaint")],
            )
            .await;
        let page = marketer.follow(&bad).await;
        assert!(
            page.body.contains("Nothing was added"),
            "{db}: {}",
            page.body
        );
        assert!(page.body.contains("role=\"alert\""), "{db}");

        let res = marketer
            .post(
                "/admin/suppressions",
                &[
                    ("email", "bo@example.com"),
                    ("kind", "hard_bounce"),
                    ("topic", ""),
                    ("channel", "email"),
                ],
            )
            .await;
        let page = marketer.follow(&res).await;
        assert!(
            page.body.contains("Added: hard bounce"),
            "{db}: {}",
            page.body
        );
        let res = marketer
            .post(
                "/admin/suppressions",
                &[
                    ("email", "cy@example.com"),
                    ("kind", "complaint"),
                    ("channel", "email"),
                ],
            )
            .await;
        assert!(
            marketer
                .follow(&res)
                .await
                .body
                .contains("Added: complaint"),
            "{db}"
        );
        let entries = app.store.suppressions(None, 100).await.expect("list");
        let bounce = entries
            .iter()
            .find(|e| e.kind == "hard_bounce")
            .expect("bounce")
            .event;
        let complaint = entries
            .iter()
            .find(|e| e.kind == "complaint")
            .expect("complaint")
            .event;

        // Only the DPO sees a remove link, and only on the hard bounce.
        let list = dpo.get("/admin/suppressions").await;
        assert!(
            list.body
                .contains(&format!("/admin/suppressions/{bounce}/remove")),
            "{db}"
        );
        assert!(
            !list
                .body
                .contains(&format!("/admin/suppressions/{complaint}/remove")),
            "{db}"
        );
        let list = admin.get("/admin/suppressions").await;
        assert!(!list.body.contains("/remove"), "{db}");
        let only = dpo.get("/admin/suppressions?kind=complaint").await;
        assert!(
            only.body.contains("cy@example.com") && !only.body.contains("bo@example.com"),
            "{db}"
        );
        assert_eq!(
            dpo.get("/admin/suppressions?kind=nope").await.status,
            400,
            "{db}"
        );

        let path = format!("/admin/suppressions/{bounce}/remove");
        assert_eq!(
            admin.post(&path, &[("confirm", "yes")]).await.status,
            403,
            "{db}"
        );
        assert_eq!(admin.get(&path).await.status, 403, "{db}");
        // Other kinds: refused with the reason.
        let res = dpo
            .post(
                &format!("/admin/suppressions/{complaint}/remove"),
                &[("confirm", "yes")],
            )
            .await;
        let page = dpo.follow(&res).await;
        assert!(page.body.contains("Nothing was removed"), "{db}");
        assert!(
            page.body.contains("staff can never remove it"),
            "{db}: {}",
            page.body
        );
        assert!(
            app.store
                .suppression(complaint)
                .await
                .expect("get")
                .is_some(),
            "{db}"
        );
        // The hard bounce: after confirming.
        assert_eq!(dpo.get(&path).await.status, 200, "{db}");
        let res = dpo.post(&path, &[]).await;
        assert_eq!(res.location(), path, "{db}");
        assert!(
            app.store.suppression(bounce).await.expect("get").is_some(),
            "{db}"
        );
        let res = dpo.post(&path, &[("confirm", "yes")]).await;
        let page = dpo.follow(&res).await;
        assert!(page.body.contains("was cleared"), "{db}: {}", page.body);
        assert!(
            app.store.suppression(bounce).await.expect("get").is_none(),
            "{db}"
        );
        let events = app.events("bo@example.com").await;
        assert!(
            events
                .iter()
                .any(|e| e.event.kind == EventKind::BounceCleared),
            "{db}"
        );
        let actions = app.store.staff_actions(None, 100).await.expect("audit");
        assert!(
            actions
                .iter()
                .any(|a| a.actor == "user:dana" && a.action == "suppressions.remove"),
            "{db}"
        );
        assert!(
            actions
                .iter()
                .any(|a| a.actor == "user:mo" && a.action == "suppressions.add"),
            "{db}"
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_trail_lists_staff_actions_newest_first() {
    for app in apps().await {
        let db = app.name();
        let viewer = sign_in(&app, "vi", Role::Viewer).await;
        viewer.post("/admin/audit/verify", &[]).await;
        let page = viewer.get("/admin/audit").await;
        assert_eq!(page.status, 200, "{db}");
        let verify = page.body.find("audit.verify").expect("verify listed");
        let sign_in_at = page.body.find("session.sign_in").expect("sign-in listed");
        assert!(verify < sign_in_at, "{db}: newest first");
        assert!(page.body.contains("user:vi"), "{db}");
        assert_eq!(
            viewer.get("/admin/audit?before=x").await.status,
            400,
            "{db}"
        );
        let older = viewer.get("/admin/audit?before=2").await;
        assert!(older.body.contains("Newest entries"), "{db}");
        let sender = sign_in(&app, "ss", Role::ServiceSender).await;
        assert_eq!(sender.get("/admin/audit").await.status, 403, "{db}");
        app.close().await;
    }
}
