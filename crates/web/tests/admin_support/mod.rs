//! A member of staff using the admin UI over HTTP, as a browser would:
//! the session cookie, the CSRF token the pages carry, an `Origin` on
//! every form, and no automatic redirects (tests look at each 303).

#![allow(dead_code)]

use reqwest::header::{COOKIE, HeaderMap, LOCATION, ORIGIN, SET_COOKIE};
use veto_core::Role;

use super::api_support::TestApp;

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    /// The HTML, with `&#x2f;` written as `/`.
    pub body: String,
}

impl Page {
    /// Where a 303 points.
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The value of the first `Set-Cookie` named `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }
}

pub struct Staff<'a> {
    pub app: &'a TestApp,
    pub name: String,
    /// `veto_admin=…`
    pub cookie: String,
    pub csrf: String,
}

/// Makes a user with `role` and signs them in through the form.
pub async fn sign_in<'a>(app: &'a TestApp, name: &str, role: Role) -> Staff<'a> {
    app.store
        .add_user(name, role, PASSWORD)
        .await
        .expect("add user");
    sign_in_as(app, name, PASSWORD)
        .await
        .unwrap_or_else(|p| panic!("sign in as {name}: {} {}", p.status, p.body))
}

/// Signs in through the form; `Err` is the page that refused.
pub async fn sign_in_as<'a>(
    app: &'a TestApp,
    name: &str,
    password: &str,
) -> Result<Staff<'a>, Page> {
    let res = send(
        app.client
            .post(app.url("/admin/login"))
            .header(ORIGIN, &app.base)
            .form(&[("name", name), ("password", password), ("next", "/admin")]),
    )
    .await;
    if res.status != 303 {
        return Err(res);
    }
    let set = res.set_cookie("veto_admin").expect("a session cookie");
    let cookie = set.split(';').next().unwrap_or_default().to_owned();
    let mut staff = Staff {
        app,
        name: name.to_owned(),
        cookie,
        csrf: String::new(),
    };
    let home = staff.get("/admin").await;
    assert_eq!(home.status, 200, "{}", home.body);
    staff.csrf = csrf_of(&home.body).expect("the dashboard carries a CSRF token");
    Ok(staff)
}

/// The `_csrf` value in a page's forms.
pub fn csrf_of(body: &str) -> Option<String> {
    let at = body.find("name=\"_csrf\" value=\"")?;
    let rest = &body[at + "name=\"_csrf\" value=\"".len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

pub async fn send(req: reqwest::RequestBuilder) -> Page {
    let res = req.send().await.expect("request");
    Page {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        // minijinja writes every `/` in a value as `&#x2f;`: the same HTML,
        // harder to search.
        body: res.text().await.unwrap_or_default().replace("&#x2f;", "/"),
    }
}

impl Staff<'_> {
    pub async fn get(&self, path: &str) -> Page {
        send(
            self.app
                .client
                .get(self.app.url(path))
                .header(COOKIE, &self.cookie),
        )
        .await
    }

    /// Posts a form from veto's own page: with the session's CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all = vec![("_csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_exactly(path, &all).await
    }

    /// Posts exactly these fields (no CSRF token added).
    pub async fn post_exactly(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        send(
            self.app
                .client
                .post(self.app.url(path))
                .header(COOKIE, &self.cookie)
                .header(ORIGIN, &self.app.base)
                .form(fields),
        )
        .await
    }

    /// Follows a 303 the way a browser does, carrying any notice cookie.
    pub async fn follow(&self, page: &Page) -> Page {
        assert_eq!(page.status, 303, "expected a redirect: {}", page.body);
        let mut cookie = self.cookie.clone();
        if let Some(flash) = page.set_cookie("veto_flash") {
            cookie.push_str("; ");
            cookie.push_str(flash.split(';').next().unwrap_or_default());
        }
        send(
            self.app
                .client
                .get(self.app.url(page.location()))
                .header(COOKIE, cookie),
        )
        .await
    }
}
