//! Pagination for list endpoints: `limit` (1 to [`MAX_LIMIT`], default
//! [`DEFAULT_LIMIT`]) and an opaque `cursor` from the previous page's
//! `next_cursor`; and the query-string extractor whose errors have the
//! API's one shape.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// A query string, parsed into `T`; a malformed one is a 400 in JSON.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(ApiQuery(q)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("the query string is not valid: {}", e.body_text()),
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                e.body_text(),
            )),
        }
    }
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paging {
    /// Items with a larger id than this come next.
    pub after: Option<i64>,
    pub limit: i64,
}

impl Paging {
    /// Reads `limit` and `cursor` as given in the query string.
    pub fn new(limit: Option<&str>, cursor: Option<&str>) -> Result<Paging, ApiError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(s) => match s.trim().parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid(
                        "limit",
                        "invalid_limit",
                        format!("limit must be a whole number from 1 to {MAX_LIMIT}, not {s:?}"),
                    ));
                }
            },
        };
        let after = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                ApiError::invalid(
                    "cursor",
                    "invalid_cursor",
                    "cursor is not one this API gave out; pass the next_cursor of the previous page as it is",
                )
            })?),
        };
        Ok(Paging { after, limit })
    }

    /// How many rows to ask the store for: one more than the page, to
    /// know whether another page follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// Cuts `items` (fetched with [`Paging::fetch`], in id order) to the
    /// page, with the cursor of the next page when there is one.
    pub fn finish<T>(&self, mut items: Vec<T>, id: impl Fn(&T) -> i64) -> (Vec<T>, Option<String>) {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        if items.len() > limit {
            items.truncate(limit);
            let next = items.last().map(|last| encode_cursor(id(last)));
            (items, next)
        } else {
            (items, None)
        }
    }

    /// A page of a list held in memory (sorted by `id` here).
    pub fn slice<T>(&self, mut items: Vec<T>, id: impl Fn(&T) -> i64) -> (Vec<T>, Option<String>) {
        items.sort_by_key(&id);
        let after = self.after.unwrap_or(i64::MIN);
        let limit = usize::try_from(self.fetch()).unwrap_or(usize::MAX);
        let items: Vec<T> = items
            .into_iter()
            .filter(|t| id(t) > after)
            .take(limit)
            .collect();
        self.finish(items, id)
    }
}

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `v1.<id>` in lower-case base32: opaque to callers, so that how pages
/// are cut may change without breaking them.
pub(crate) fn encode_cursor(id: i64) -> String {
    let bytes = format!("v1.{id}").into_bytes();
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0);
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

pub(crate) fn decode_cursor(s: &str) -> Option<i64> {
    if s.len() > 64 {
        return None;
    }
    let mut bytes = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push((acc >> bits) as u8);
        }
    }
    let text = String::from_utf8(bytes).ok()?;
    let id: i64 = text.strip_prefix("v1.")?.parse().ok()?;
    // The canonical form only: one id, one cursor.
    (encode_cursor(id) == s).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        for id in [0, 1, 42, 1 << 40, i64::MAX, -5] {
            assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        }
        for bad in ["", "abc", "v1.5", "ZZZ", &"a".repeat(100)] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn limit_is_bounded() {
        assert_eq!(
            Paging::new(None, None).map(|p| p.limit).ok(),
            Some(DEFAULT_LIMIT)
        );
        assert_eq!(
            Paging::new(Some("500"), None).map(|p| p.limit).ok(),
            Some(500)
        );
        for bad in ["0", "501", "-1", "x", "1.5"] {
            assert!(Paging::new(Some(bad), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn slicing_pages_through_everything_once() {
        let items: Vec<i64> = (1..=7).rev().collect();
        let mut paging = Paging {
            after: None,
            limit: 3,
        };
        let mut seen = vec![];
        loop {
            let (page, next) = paging.slice(items.clone(), |x| *x);
            seen.extend(page);
            match next {
                Some(c) => paging.after = decode_cursor(&c),
                None => break,
            }
        }
        assert_eq!(seen, (1..=7).collect::<Vec<_>>());
    }
}
