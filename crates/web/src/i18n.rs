//! Message catalogues (English and Welsh), chosen by `?lang=` or `Accept-Language`.

use std::collections::BTreeMap;

use crate::WebError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Cy,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Cy => "cy",
        }
    }

    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Cy,
            Lang::Cy => Lang::En,
        }
    }

    /// The language of a page: `?lang=`, else `Accept-Language`.
    pub fn of_request(query: Option<&str>, headers: &axum::http::HeaderMap) -> Lang {
        Lang::choose(
            query,
            headers
                .get(axum::http::header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok()),
        )
    }

    /// `?lang=` wins; then the first of the person's `Accept-Language`
    /// preferences (by q) that we have; then English.
    pub fn choose(query: Option<&str>, accept_language: Option<&str>) -> Lang {
        let pick = |tag: &str| match tag
            .trim()
            .split('-')
            .next()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("cy") => Some(Lang::Cy),
            Some("en") => Some(Lang::En),
            _ => None,
        };
        if let Some(l) = query.and_then(pick) {
            return l;
        }
        let mut prefs: Vec<(f32, Lang)> = accept_language
            .unwrap_or("")
            .split(',')
            .filter_map(|part| {
                let mut it = part.split(';');
                let lang = pick(it.next()?)?;
                let q = it
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some((q, lang))
            })
            .collect();
        prefs.sort_by(|a, b| b.0.total_cmp(&a.0));
        prefs.first().map_or(Lang::En, |p| p.1)
    }
}

pub struct Catalogues {
    en: BTreeMap<String, String>,
    cy: BTreeMap<String, String>,
}

impl Catalogues {
    /// The common catalogues (`locales/{en,cy}.toml`) with `parts` merged
    /// in: each `(name, English, Welsh)` is `locales/{en,cy}/{name}.toml`.
    /// A key defined twice, or missing in one language, is an error.
    pub fn load_with(parts: &[(&str, &str, &str)]) -> Result<Catalogues, WebError> {
        let parse = |name: &str, text: &str| {
            toml::from_str::<BTreeMap<String, String>>(text)
                .map_err(|e| WebError::Internal(format!("message catalogue {name}: {e}")))
        };
        let mut en = parse("en", include_str!("../locales/en.toml"))?;
        let mut cy = parse("cy", include_str!("../locales/cy.toml"))?;
        for (name, en_text, cy_text) in parts {
            for (lang, all, text) in [("en", &mut en, en_text), ("cy", &mut cy, cy_text)] {
                for (k, v) in parse(&format!("{lang}/{name}"), text)? {
                    if all.insert(k.clone(), v).is_some() {
                        return Err(WebError::Internal(format!(
                            "message catalogue {lang}/{name} defines {k} again"
                        )));
                    }
                }
            }
        }
        if let Some(missing) = en.keys().find(|k| !cy.contains_key(*k)) {
            return Err(WebError::Internal(format!(
                "the Welsh catalogue lacks {missing}"
            )));
        }
        if let Some(missing) = cy.keys().find(|k| !en.contains_key(*k)) {
            return Err(WebError::Internal(format!(
                "the English catalogue lacks {missing}"
            )));
        }
        Ok(Catalogues { en, cy })
    }

    pub fn texts(&self, lang: Lang) -> &BTreeMap<String, String> {
        match lang {
            Lang::En => &self.en,
            Lang::Cy => &self.cy,
        }
    }

    /// A text with `{name}` placeholders filled in (escaping happens when
    /// the template prints it).
    pub fn fill(&self, lang: Lang, key: &str, args: &[(&str, &str)]) -> String {
        let mut s = self
            .texts(lang)
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_owned());
        for (k, v) in args {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_choice() {
        assert_eq!(Lang::choose(None, None), Lang::En);
        assert_eq!(
            Lang::choose(None, Some("cy-GB,cy;q=0.9,en;q=0.8")),
            Lang::Cy
        );
        assert_eq!(Lang::choose(None, Some("fr, en;q=0.5, cy;q=0.7")), Lang::Cy);
        assert_eq!(Lang::choose(Some("en"), Some("cy")), Lang::En);
        assert_eq!(Lang::choose(Some("xx"), Some("cy")), Lang::Cy);
    }

    #[test]
    fn catalogues_load_and_match() {
        let c = Catalogues::load_with(&[]).unwrap();
        assert_eq!(c.texts(Lang::En).len(), c.texts(Lang::Cy).len());
        assert_eq!(
            c.fill(
                Lang::En,
                "unsub_explain",
                &[("topic", "News"), ("org", "Shop")]
            ),
            "You'll stop getting News emails from Shop."
        );
    }
}
