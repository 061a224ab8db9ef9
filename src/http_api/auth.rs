//! Who may call the api. Local mode: a bearer token listed in `--api-token-file`
//! (re-read when the file changes) may do everything. Kube mode: the token is
//! checked with a TokenReview, then each request's verb and resource with a
//! SubjectAccessReview, as the apiserver would for the same resource path; both
//! answers are cached briefly (keyed by a digest of the token, never the token).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, header};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;

use super::problem::Problem;

/// Entries kept per cache; a full cache is emptied (simple and bounded).
const CACHE_MAX: usize = 4096;

/// What a request does, in RBAC terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Access {
    /// `create scalingsubscriptions/test (konsumer.dev) in namespace "x"`.
    pub fn describe(&self) -> String {
        let resource = match self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.to_string(),
        };
        let name = self
            .name
            .as_deref()
            .map(|n| format!(" {n:?}"))
            .unwrap_or_default();
        let scope = match &self.namespace {
            Some(ns) => format!("in namespace {ns:?}"),
            None => "in all namespaces".to_string(),
        };
        format!("{} {resource}{name} ({}) {scope}", self.verb, self.group)
    }

    /// The RBAC rule that would allow it.
    pub fn rule(&self) -> String {
        let resource = match self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.to_string(),
        };
        format!(
            "{{apiGroups: [\"{}\"], resources: [\"{resource}\"], verbs: [\"{}\"]}}",
            self.group, self.verb
        )
    }
}

/// Who called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
    /// Local mode: a token from the token file may do everything.
    pub all_access: bool,
}

/// The bearer token of a request, or why there is none.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Problem> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Problem::unauthorized("this api needs `Authorization: Bearer <token>` on every request but /openapi.json and /openapi.yaml")
    })?;
    let text = value
        .to_str()
        .map_err(|_| Problem::unauthorized("the Authorization header is not readable text"))?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Problem::unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ));
    }
    Ok(token)
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The tokens of a token file: one per line; blank lines and `#` comments skipped.
pub fn parse_tokens(text: &str) -> HashSet<[u8; 32]> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(digest)
        .collect()
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

struct TokenFile {
    path: PathBuf,
    state: Mutex<(Stamp, HashSet<[u8; 32]>)>,
}

impl TokenFile {
    /// The digests of the file's tokens, re-read when its stamp changed.
    fn contains(&self, token: &str) -> Result<bool, Problem> {
        let now = stamp(&self.path);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.is_none() || state.0 != now {
            match std::fs::read_to_string(&self.path) {
                Ok(text) => *state = (now, parse_tokens(&text)),
                Err(e) => {
                    tracing::warn!(file = %self.path.display(), error = %e, "cannot read --api-token-file; refusing every api request");
                    *state = (None, HashSet::new());
                    return Err(Problem::unavailable(format!(
                        "the api token file {} cannot be read; the operator must fix it",
                        self.path.display()
                    )));
                }
            }
        }
        Ok(state.1.contains(&digest(token)))
    }
}

struct Cached<T> {
    at: Instant,
    value: T,
}

/// A token's digest -> who it is, or why it is nobody.
type TokenCache = Mutex<HashMap<[u8; 32], Cached<Result<Identity, String>>>>;

struct Kube {
    client: kube::Client,
    ttl: Duration,
    /// Audiences a token must be meant for (empty: the apiserver's own).
    audiences: Vec<String>,
    tokens: TokenCache,
    decisions: Mutex<HashMap<(String, Access), Cached<bool>>>,
}

enum Mode {
    Tokens(TokenFile),
    Kube(Kube),
}

/// The api's authenticator and authorizer.
pub struct Auth {
    mode: Mode,
}

fn cache_get<K: std::hash::Hash + Eq, T: Clone>(
    map: &Mutex<HashMap<K, Cached<T>>>,
    key: &K,
    ttl: Duration,
) -> Option<T> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.get(key)
        .filter(|c| c.at.elapsed() < ttl)
        .map(|c| c.value.clone())
}

fn cache_put<K: std::hash::Hash + Eq, T>(map: &Mutex<HashMap<K, Cached<T>>>, key: K, value: T) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= CACHE_MAX {
        map.clear();
    }
    map.insert(
        key,
        Cached {
            at: Instant::now(),
            value,
        },
    );
}

impl Auth {
    pub fn token_file(path: PathBuf) -> Auth {
        Auth {
            mode: Mode::Tokens(TokenFile {
                path,
                state: Mutex::new((None, HashSet::new())),
            }),
        }
    }

    pub fn kube(client: kube::Client, ttl: Duration, audiences: Vec<String>) -> Auth {
        Auth {
            mode: Mode::Kube(Kube {
                client,
                ttl,
                audiences,
                tokens: Mutex::new(HashMap::new()),
                decisions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Who sent `headers` (401 when nobody konsumer knows).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, Problem> {
        let token = bearer(headers)?;
        match &self.mode {
            Mode::Tokens(file) => {
                if file.contains(token)? {
                    Ok(Identity {
                        username: "api-token".into(),
                        uid: None,
                        groups: Vec::new(),
                        extra: BTreeMap::new(),
                        all_access: true,
                    })
                } else {
                    Err(Problem::unauthorized(
                        "the bearer token is not one of --api-token-file's",
                    ))
                }
            }
            Mode::Kube(kube) => {
                let key = digest(token);
                let answer = match cache_get(&kube.tokens, &key, kube.ttl) {
                    Some(a) => a,
                    None => {
                        let a = kube.review_token(token).await?;
                        cache_put(&kube.tokens, key, a.clone());
                        a
                    }
                };
                answer.map_err(|why| {
                    Problem::unauthorized(format!(
                        "the bearer token was not accepted by the Kubernetes API (TokenReview: {why}); use a ServiceAccount token (`kubectl create token NAME`)"
                    ))
                })
            }
        }
    }

    /// Whether `who` may do `access`.
    pub async fn allowed(&self, who: &Identity, access: &Access) -> Result<bool, Problem> {
        if who.all_access {
            return Ok(true);
        }
        match &self.mode {
            Mode::Tokens(_) => Ok(false),
            Mode::Kube(kube) => {
                let key = (who.username.clone(), access.clone());
                if let Some(allowed) = cache_get(&kube.decisions, &key, kube.ttl) {
                    return Ok(allowed);
                }
                let allowed = kube.review_access(who, access).await?;
                cache_put(&kube.decisions, key, allowed);
                Ok(allowed)
            }
        }
    }

    /// `allowed`, or a 403 that names the missing permission.
    pub async fn authorize(&self, who: &Identity, access: &Access) -> Result<(), Problem> {
        if self.allowed(who, access).await? {
            Ok(())
        } else {
            Err(forbidden(who, access))
        }
    }
}

pub fn forbidden(who: &Identity, access: &Access) -> Problem {
    Problem::forbidden(format!(
        "{} may not {}; an RBAC Role (or ClusterRole) bound to it needs the rule {}",
        who.username,
        access.describe(),
        access.rule()
    ))
}

impl Kube {
    async fn review_token(&self, token: &str) -> Result<Result<Identity, String>, Problem> {
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "TokenReview failed");
                Problem::unavailable(
                    "the Kubernetes API could not review the token (TokenReview failed); retry shortly",
                )
            })?;
        let status = answer.status.unwrap_or_default();
        // As the TokenReview API asks of its clients: the token must be meant for
        // one of the audiences asked for.
        let meant_for_us = self.audiences.is_empty()
            || status
                .audiences
                .iter()
                .flatten()
                .any(|a| self.audiences.contains(a));
        if !meant_for_us && status.authenticated == Some(true) {
            return Ok(Err(format!(
                "the token is not meant for audience {:?} (--api-audience)",
                self.audiences
            )));
        }
        if status.authenticated == Some(true)
            && let Some(user) = status.user
            && let Some(username) = user.username.filter(|u| !u.is_empty())
        {
            return Ok(Ok(Identity {
                username,
                uid: user.uid,
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
                all_access: false,
            }));
        }
        Ok(Err(status
            .error
            .unwrap_or_else(|| "not authenticated".to_string())))
    }

    async fn review_access(&self, who: &Identity, access: &Access) -> Result<bool, Problem> {
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.username.clone()),
                uid: who.uid.clone(),
                groups: Some(who.groups.clone()),
                extra: (!who.extra.is_empty()).then(|| who.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: access.namespace.clone(),
                    verb: Some(access.verb.to_string()),
                    group: Some(access.group.to_string()),
                    resource: Some(access.resource.to_string()),
                    subresource: access.subresource.map(str::to_string),
                    name: access.name.clone(),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "SubjectAccessReview failed");
                Problem::unavailable(
                    "the Kubernetes API could not authorize the request (SubjectAccessReview failed); retry shortly",
                )
            })?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_skip_blank_lines_and_comments() {
        let set = parse_tokens("# team a\n  tok-1  \n\ntok-2\n");
        assert_eq!(set.len(), 2);
        assert!(set.contains(&digest("tok-1")));
        assert!(!set.contains(&digest("# team a")));
    }

    #[test]
    fn only_bearer_tokens_are_read() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h).unwrap_err().status, 401);
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h).unwrap_err().status, 401);
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h).unwrap(), "abc");
    }

    #[test]
    fn a_denial_names_the_rule_that_would_allow_it() {
        let access = Access {
            verb: "create",
            group: "konsumer.dev",
            resource: "scalingsubscriptions",
            subresource: Some("test"),
            namespace: Some("streams".into()),
            name: Some("feed".into()),
        };
        let who = Identity {
            username: "system:serviceaccount:ci:bot".into(),
            uid: None,
            groups: vec![],
            extra: BTreeMap::new(),
            all_access: false,
        };
        let p = forbidden(&who, &access);
        assert!(
            p.detail.contains(
                "create scalingsubscriptions/test \"feed\" (konsumer.dev) in namespace \"streams\""
            ),
            "{}",
            p.detail
        );
        assert!(
            p.detail
                .contains("resources: [\"scalingsubscriptions/test\"], verbs: [\"create\"]"),
            "{}",
            p.detail
        );
    }
}
