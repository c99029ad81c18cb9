//! `/p` without a token: "email me a link to manage my preferences".

mod pref_support;

use pref_support::{apps, forms, text};

async fn request(
    app: &pref_support::TestApp,
    address: &str,
    headers: &[(&str, &str)],
) -> (reqwest::StatusCode, String) {
    let (status, html) = app.page(&format!("{}/p", app.base)).await;
    assert_eq!(status, 200, "[{}] {html}", app.name());
    let mut form = forms(&html)
        .into_iter()
        .next()
        .expect("the page has a form");
    form.set("email", address);
    let res = app
        .post(
            &format!("{}{}", app.base, form.action),
            &form.fields,
            headers,
        )
        .await;
    (res.status(), res.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_answer_whether_or_not_the_address_is_known() {
    for app in apps().await {
        app.grant("jo@example.com", "news").await;
        let (known_status, known) = request(&app, "jo@example.com", &[]).await;
        let (unknown_status, unknown) = request(&app, "nobody@example.com", &[]).await;
        assert_eq!(
            (known_status.as_u16(), unknown_status.as_u16()),
            (200, 200),
            "[{}]",
            app.name()
        );
        // Identical but for the masked address each page repeats back.
        assert_eq!(
            text(&known).replace("j\u{2022}\u{2022}\u{2022}@example.com", "X"),
            text(&unknown).replace("n\u{2022}\u{2022}\u{2022}@example.com", "X"),
            "[{}] the answer reveals whether the address is known",
            app.name()
        );
        // Only the known contact gets a mail, and it carries their preference link.
        let mails = app.outbox_messages();
        assert_eq!(mails.len(), 1, "[{}] {mails:?}", app.name());
        assert!(
            mails[0].contains("To: <jo@example.com>") || mails[0].contains("To: jo@example.com"),
            "[{}] {}",
            app.name(),
            mails[0]
        );
        let contact = app.contact_id("jo@example.com").await;
        assert!(
            mails[0].contains(&app.prefs_url_for(contact)),
            "[{}] {}",
            app.name(),
            mails[0]
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_address_is_explained_and_a_cross_site_post_refused() {
    for app in apps().await {
        let (status, html) = request(&app, "jo@@example", &[]).await;
        assert_eq!(status, 422, "[{}]", app.name());
        assert!(
            text(&html).contains("doesn't look like an email address"),
            "[{}] {html}",
            app.name()
        );
        let (status, _) = request(
            &app,
            "jo@example.com",
            &[("Origin", "https://evil.example")],
        )
        .await;
        assert_eq!(status, 403, "[{}]", app.name());
        assert!(app.outbox_messages().is_empty());
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_is_not_mailed_again_and_again() {
    for app in apps().await {
        app.grant("jo@example.com", "news").await;
        for _ in 0..5 {
            let (status, _) = request(&app, "jo@example.com", &[]).await;
            assert_eq!(status, 200);
        }
        assert_eq!(
            app.outbox_messages().len(),
            3,
            "[{}] at most three an hour per address",
            app.name()
        );
        app.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_token_must_be_this_pages() {
    for app in apps().await {
        let contact = app.grant("jo@example.com", "news").await;
        let url = format!("{}/p", app.base);
        let email = ("email".to_owned(), "jo@example.com".to_owned());
        // No token at all.
        let res = app.post(&url, std::slice::from_ref(&email), &[]).await;
        assert_eq!(res.status(), 403, "[{}]", app.name());
        // A token the preference centre minted for a contact is not this form's.
        let (_, prefs) = app.page(&app.prefs_url_for(contact)).await;
        let theirs = forms(&prefs)
            .into_iter()
            .find_map(|f| f.get("form").map(str::to_owned))
            .expect("the preference page has a form token");
        let res = app
            .post(&url, &[email.clone(), ("form".to_owned(), theirs)], &[])
            .await;
        assert_eq!(res.status(), 403, "[{}]", app.name());
        assert!(app.outbox_messages().is_empty(), "[{}]", app.name());
        app.close().await;
    }
}
