//! `limit` + opaque `continue`, as Kubernetes lists do: a page ends after
//! `limit` items and its `continue` token resumes after the last one, whatever
//! was added or removed in between.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::Query;
use super::problem::Problem;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 500;

/// List metadata: `continue` when there is more.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ListMeta {
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_: Option<String>,
}

/// What a list request asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    /// The key the previous page ended at.
    pub after: Option<String>,
}

/// `limit` (1–500, default 100) and `continue` of a query.
pub fn request(query: &Query) -> Result<PageRequest, Problem> {
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(Problem::bad_request(format!(
                    "limit={text:?}: give a whole number from 1 to {MAX_LIMIT}"
                )));
            }
        },
    };
    let after = match query.get("continue").filter(|t| !t.is_empty()) {
        None => None,
        Some(token) => Some(decode(token)?),
    };
    Ok(PageRequest { limit, after })
}

pub fn encode(after: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{after}"))
}

fn decode(token: &str) -> Result<String, Problem> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("v1:").map(str::to_string))
        .ok_or_else(|| {
            Problem::bad_request(
                "the continue token is not one this api gave; start again without it",
            )
        })
}

/// One page of `items` (sorted by `key`, ascending) after `request.after`.
pub fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    request: &PageRequest,
) -> (Vec<T>, ListMeta) {
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|i| request.after.as_deref().is_none_or(|a| key(i).as_str() > a))
        .collect();
    let more = rest.len() > request.limit;
    rest.truncate(request.limit);
    let continue_ = more.then(|| rest.last().map(|l| encode(&key(l)))).flatten();
    (rest, ListMeta { continue_ })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(q: &str) -> PageRequest {
        request(&Query::parse(Some(q))).unwrap()
    }

    #[test]
    fn pages_resume_after_the_last_item_even_when_items_come_and_go() {
        let items = vec!["a", "b", "c", "d", "e"];
        let (p1, m1) = page(items.clone(), |s| s.to_string(), &req("limit=2"));
        assert_eq!(p1, vec!["a", "b"]);
        let token = m1.continue_.unwrap();
        // "b" went away and "bb" came: the next page still starts after "b".
        let changed = vec!["a", "bb", "c", "d", "e"];
        let (p2, m2) = page(
            changed,
            |s| s.to_string(),
            &req(&format!("limit=2&continue={token}")),
        );
        assert_eq!(p2, vec!["bb", "c"]);
        let (p3, m3) = page(
            items,
            |s| s.to_string(),
            &req(&format!("limit=2&continue={}", m2.continue_.unwrap())),
        );
        assert_eq!(p3, vec!["d", "e"]);
        assert_eq!(m3.continue_, None);
    }

    #[test]
    fn bad_limits_and_tokens_are_400s() {
        for q in [
            "limit=0",
            "limit=-1",
            "limit=501",
            "limit=x",
            "continue=%%%",
            "continue=YWJj",
        ] {
            let e = request(&Query::parse(Some(q))).unwrap_err();
            assert_eq!(e.status, 400, "{q}");
        }
    }
}
