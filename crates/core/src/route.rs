use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// HTTP methods a route can name. `ANY` matches every method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
    Any,
}

impl Method {
    const ALL: [Method; 8] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Head,
        Method::Options,
        Method::Any,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Any => "ANY",
        }
    }

    /// The method of a request, or `None` for methods no route can name (e.g. `TRACE`).
    pub fn from_request(m: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|x| *x != Method::Any && x.as_str() == m)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// `{name}`: matches one non-empty segment.
    Param(String),
    /// `{*name}`: matches the rest of the path (last segment only).
    Wildcard(String),
}

/// A path such as `/users/{id}` or `/static/{*path}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathTemplate {
    raw: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("route `{0}` must be `METHOD /path`, e.g. `GET /users/{{id}}`")]
    Shape(String),
    #[error(
        "route `{0}` has an unknown method `{1}`: use GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or ANY"
    )]
    Method(String, String),
    #[error("path `{0}` must start with `/`")]
    NoLeadingSlash(String),
    #[error("path `{0}` has an empty segment (`//`) or a trailing `/`")]
    EmptySegment(String),
    #[error(
        "path `{0}`: parameter `{1}` is not a valid name: use letters, digits and `_`, e.g. `{{user_id}}`"
    )]
    ParamName(String, String),
    #[error("path `{0}`: parameter `{1}` appears twice")]
    DuplicateParam(String, String),
    #[error("path `{0}`: the wildcard `{{*{1}}}` must be the last segment")]
    WildcardNotLast(String, String),
    #[error("path `{0}`: a segment is either literal text or one `{{param}}`, not both (`{1}`)")]
    MixedSegment(String, String),
    #[error("path `{0}` contains `{1}`, which is not allowed in a route")]
    BadChar(String, char),
    #[error("route {0} is defined twice")]
    Duplicate(String),
    #[error("route {0} conflicts with route {1}: they match the same requests")]
    Conflict(String, String),
}

impl PathTemplate {
    pub fn parse(raw: &str) -> Result<Self, RouteError> {
        if !raw.starts_with('/') {
            return Err(RouteError::NoLeadingSlash(raw.to_string()));
        }
        if let Some(c) = raw
            .chars()
            .find(|c| c.is_whitespace() || matches!(c, '?' | '#' | '%' | '\\') || c.is_control())
        {
            return Err(RouteError::BadChar(raw.to_string(), c));
        }
        let mut segments = Vec::new();
        if raw != "/" {
            let parts: Vec<&str> = raw[1..].split('/').collect();
            let mut names = BTreeSet::new();
            for (i, part) in parts.iter().enumerate() {
                if part.is_empty() {
                    return Err(RouteError::EmptySegment(raw.to_string()));
                }
                let seg =
                    if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                        let (wild, name) = match inner.strip_prefix('*') {
                            Some(n) => (true, n),
                            None => (false, inner),
                        };
                        let valid = !name.is_empty()
                            && name
                                .chars()
                                .next()
                                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                        if !valid {
                            return Err(RouteError::ParamName(raw.to_string(), name.to_string()));
                        }
                        if !names.insert(name.to_string()) {
                            return Err(RouteError::DuplicateParam(
                                raw.to_string(),
                                name.to_string(),
                            ));
                        }
                        if wild {
                            if i != parts.len() - 1 {
                                return Err(RouteError::WildcardNotLast(
                                    raw.to_string(),
                                    name.to_string(),
                                ));
                            }
                            Segment::Wildcard(name.to_string())
                        } else {
                            Segment::Param(name.to_string())
                        }
                    } else if part.contains('{') || part.contains('}') {
                        return Err(RouteError::MixedSegment(raw.to_string(), part.to_string()));
                    } else {
                        Segment::Literal(part.to_string())
                    };
                segments.push(seg);
            }
        }
        Ok(PathTemplate {
            raw: raw.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Orders templates by how specific they are: segment by segment, literal text beats
    /// `{param}`, which beats `{*wildcard}`.
    fn specificity(&self) -> Vec<u8> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 3,
                Segment::Param(_) => 2,
                Segment::Wildcard(_) => 1,
            })
            .collect()
    }

    /// The params of `path` if this template matches it: a literal segment exactly, a
    /// `{param}` one non-empty segment, a `{*wildcard}` the non-empty rest.
    fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let mut rest = path.strip_prefix('/')?;
        let mut params = Vec::new();
        if self.segments.is_empty() {
            return rest.is_empty().then_some(params);
        }
        for (i, seg) in self.segments.iter().enumerate() {
            let last = i == self.segments.len() - 1;
            if let Segment::Wildcard(name) = seg {
                if rest.is_empty() {
                    return None;
                }
                params.push((name.clone(), rest.to_string()));
                return Some(params);
            }
            let (part, after) = match rest.split_once('/') {
                Some((part, after)) if !last => (part, after),
                None if last => (rest, ""),
                _ => return None,
            };
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Param(name) if !part.is_empty() => {
                    params.push((name.clone(), part.to_string()))
                }
                _ => return None,
            }
            rest = after;
        }
        Some(params)
    }

    /// The template with parameter names erased: two templates with the same shape match
    /// the same requests.
    fn shape(&self) -> String {
        let mut s = String::new();
        for seg in &self.segments {
            s.push('/');
            match seg {
                Segment::Literal(l) => s.push_str(l),
                Segment::Param(_) => s.push_str("{}"),
                Segment::Wildcard(_) => s.push_str("{*}"),
            }
        }
        if s.is_empty() {
            s.push('/');
        }
        s
    }
}

/// `METHOD /path`: one route of a function.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    pub method: Method,
    pub path: PathTemplate,
}

impl FromStr for RouteSpec {
    type Err = RouteError;
    fn from_str(s: &str) -> Result<Self, RouteError> {
        let mut parts = s.split_whitespace();
        let (Some(m), Some(p), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(RouteError::Shape(s.to_string()));
        };
        let method = Method::ALL
            .into_iter()
            .find(|x| x.as_str() == m)
            .ok_or_else(|| RouteError::Method(s.to_string(), m.to_string()))?;
        Ok(RouteSpec {
            method,
            path: PathTemplate::parse(p)?,
        })
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path.raw)
    }
}

impl Serialize for RouteSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RouteSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The result of matching a request against a [`RouteTable`].
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'a, T> {
    Found {
        target: &'a T,
        route: &'a RouteSpec,
        /// Path parameters by name, as they appear in the path (not percent-decoded).
        params: Vec<(String, String)>,
    },
    /// The path matches routes, but none for this method.
    MethodNotAllowed {
        allowed: Vec<Method>,
    },
    NotFound,
}

/// Routes to targets, matched by method and path; the most specific template wins
/// (literal segments beat `{param}`, which beats `{*wildcard}`).
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    entries: Vec<(RouteSpec, T)>,
    /// (method, shape) of every entry, to refuse a second route of the same shape in
    /// constant time (a linear scan made building a table of n routes quadratic).
    shapes: std::collections::HashMap<(Method, String), usize>,
    /// One router per [`Method`] (index = `Method as usize`), values index `entries`.
    routers: Vec<matchit::Router<usize>>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable {
            entries: Vec::new(),
            shapes: std::collections::HashMap::new(),
            routers: Method::ALL.iter().map(|_| matchit::Router::new()).collect(),
        }
    }
}

impl<T> RouteTable<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. Fails if the same method and shape are already routed.
    pub fn insert(&mut self, route: RouteSpec, target: T) -> Result<(), RouteError> {
        let shape = route.path.shape();
        if let Some((existing, _)) = self
            .shapes
            .get(&(route.method, shape.clone()))
            .map(|i| &self.entries[*i])
        {
            return if existing == &route {
                Err(RouteError::Duplicate(route.to_string()))
            } else {
                Err(RouteError::Conflict(
                    route.to_string(),
                    existing.to_string(),
                ))
            };
        }
        let idx = self.entries.len();
        self.routers[route.method.index()]
            .insert(route.path.as_str(), idx)
            .map_err(|e| match e {
                matchit::InsertError::Conflict { with } => {
                    RouteError::Conflict(route.to_string(), format!("{} {with}", route.method))
                }
                other => RouteError::Conflict(route.to_string(), other.to_string()),
            })?;
        self.shapes.insert((route.method, shape), idx);
        self.entries.push((route, target));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RouteSpec, &T)> {
        self.entries.iter().map(|(r, t)| (r, t))
    }

    /// Matches a request. `method` is the request's method (`GET`, ...), `path` its path
    /// without the query string.
    pub fn lookup(&self, method: &str, path: &str) -> RouteMatch<'_, T> {
        let found = |m: Method| {
            self.find(m, path).map(|(i, params)| {
                let (route, target) = &self.entries[i];
                RouteMatch::Found {
                    target,
                    route,
                    params,
                }
            })
        };
        let specific = Method::from_request(method).and_then(|m| {
            found(m).or_else(|| {
                // HEAD falls back to GET routes, as HTTP servers do.
                (m == Method::Head).then(|| found(Method::Get)).flatten()
            })
        });
        let any = found(Method::Any);
        // Both a route for this method and an ANY route match: the more specific path
        // wins, and the method's own route on a tie.
        let key = |m: &RouteMatch<'_, T>| match m {
            RouteMatch::Found { route, .. } => route.path.specificity(),
            _ => Vec::new(),
        };
        match (specific, any) {
            (Some(s), Some(a)) => return if key(&a) > key(&s) { a } else { s },
            (Some(hit), None) | (None, Some(hit)) => return hit,
            (None, None) => {}
        }
        let allowed: Vec<Method> = Method::ALL
            .into_iter()
            .filter(|m| *m != Method::Any && self.find(*m, path).is_some())
            .collect();
        if allowed.is_empty() {
            RouteMatch::NotFound
        } else {
            RouteMatch::MethodNotAllowed { allowed }
        }
    }

    /// The entry of `method`'s most specific route matching `path`, and its params.
    fn find(&self, method: Method, path: &str) -> Option<(usize, Vec<(String, String)>)> {
        let m = self.routers[method.index()].at(path).ok()?;
        let params: Vec<(String, String)> = m
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if params.iter().all(|(_, v)| !v.is_empty()) {
            return Some((*m.value, params));
        }
        // matchit lets a `{param}` before the last segment match an empty one (`/a//b`
        // matches `/a/{x}/b`); a param is one non-empty segment, so such a path matches
        // by the rules, checked here route by route (only a wildcard can take the `//`).
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, (r, _))| r.method == method)
            .filter_map(|(i, (r, _))| Some((i, r.path.matches(path)?, r.path.specificity())))
            .max_by(|a, b| a.2.cmp(&b.2))
            .map(|(i, params, _)| (i, params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> RouteSpec {
        s.parse().unwrap()
    }

    fn table(routes: &[&str]) -> RouteTable<String> {
        let mut t = RouteTable::new();
        for s in routes {
            t.insert(r(s), s.to_string()).unwrap();
        }
        t
    }

    fn hit<'a>(t: &'a RouteTable<String>, m: &str, p: &str) -> (&'a str, Vec<(String, String)>) {
        match t.lookup(m, p) {
            RouteMatch::Found { target, params, .. } => (target.as_str(), params),
            other => panic!("{m} {p}: {other:?}"),
        }
    }

    #[test]
    fn parses_routes() {
        let x = r("GET /users/{id}");
        assert_eq!(x.method, Method::Get);
        assert_eq!(
            x.path.segments(),
            &[
                Segment::Literal("users".into()),
                Segment::Param("id".into())
            ]
        );
        assert_eq!(x.to_string(), "GET /users/{id}");
        assert_eq!(r("ANY /").path.segments(), &[]);
    }

    #[test]
    fn rejects_bad_routes() {
        for bad in [
            "GET",
            "GET /a /b",
            "FETCH /a",
            "get /a",
            "GET a",
            "GET /a//b",
            "GET /a/",
            "GET /{1x}",
            "GET /{id}/{id}",
            "GET /{*rest}/x",
            "GET /a{id}",
            "GET /a?b",
            "GET /{}",
        ] {
            assert!(bad.parse::<RouteSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn most_specific_wins() {
        let t = table(&[
            "GET /users/{id}",
            "GET /users/me",
            "GET /users",
            "GET /static/{*path}",
            "GET /{*rest}",
        ]);
        assert_eq!(hit(&t, "GET", "/users/me").0, "GET /users/me");
        let (target, params) = hit(&t, "GET", "/users/42");
        assert_eq!(target, "GET /users/{id}");
        assert_eq!(params, vec![("id".to_string(), "42".to_string())]);
        assert_eq!(hit(&t, "GET", "/users").0, "GET /users");
        let (target, params) = hit(&t, "GET", "/static/css/site.css");
        assert_eq!(target, "GET /static/{*path}");
        assert_eq!(
            params,
            vec![("path".to_string(), "css/site.css".to_string())]
        );
        assert_eq!(hit(&t, "GET", "/anything/else").0, "GET /{*rest}");
    }

    #[test]
    fn method_not_allowed_and_not_found() {
        let t = table(&["GET /users", "POST /orders", "DELETE /orders"]);
        assert_eq!(
            t.lookup("PUT", "/orders"),
            RouteMatch::MethodNotAllowed {
                allowed: vec![Method::Post, Method::Delete]
            }
        );
        assert_eq!(t.lookup("GET", "/nope"), RouteMatch::NotFound);
        assert_eq!(t.lookup("TRACE", "/nope"), RouteMatch::NotFound);
        assert!(matches!(
            t.lookup("HEAD", "/users"),
            RouteMatch::Found { .. }
        ));
    }

    #[test]
    fn any_matches_every_method() {
        let t = table(&[
            "ANY /hook",
            "GET /hook/status",
            "GET /{*rest}",
            "ANY /a/{x}",
            "GET /a/{y}",
        ]);
        assert_eq!(hit(&t, "PATCH", "/hook").0, "ANY /hook");
        assert_eq!(hit(&t, "GET", "/hook/status").0, "GET /hook/status");
        // A more specific ANY route beats a less specific route for the method...
        assert_eq!(hit(&t, "GET", "/hook").0, "ANY /hook");
        assert_eq!(hit(&t, "GET", "/other").0, "GET /{*rest}");
        // ...and on a tie the method's own route wins.
        assert_eq!(hit(&t, "GET", "/a/1").0, "GET /a/{y}");
        assert_eq!(hit(&t, "POST", "/a/1").0, "ANY /a/{x}");
    }

    #[test]
    fn a_table_of_ten_thousand_routes_still_refuses_a_second_route_of_a_shape() {
        let mut t = RouteTable::new();
        for i in 0..10_000 {
            t.insert(format!("GET /f{i}/{{id}}").parse().unwrap(), i)
                .unwrap();
        }
        assert_eq!(t.len(), 10_000);
        assert!(matches!(
            t.insert("GET /f9999/{other}".parse().unwrap(), 0),
            Err(RouteError::Conflict(..))
        ));
        assert!(matches!(
            t.insert("GET /f5/{id}".parse().unwrap(), 0),
            Err(RouteError::Duplicate(_))
        ));
    }

    #[test]
    fn duplicates_and_conflicts_are_errors() {
        let mut t = table(&["GET /users/{id}"]);
        assert_eq!(
            t.insert(r("GET /users/{id}"), String::new()),
            Err(RouteError::Duplicate("GET /users/{id}".into()))
        );
        assert!(matches!(
            t.insert(r("GET /users/{name}"), String::new()),
            Err(RouteError::Conflict(..))
        ));
        // The same path with another method is fine.
        t.insert(r("POST /users/{id}"), String::new()).unwrap();
    }

    #[test]
    fn a_param_never_matches_an_empty_segment() {
        // Found by fuzz/fuzz_targets/route.rs: matchit matched `//v` to `/{id}/{p}` with
        // an empty `id`.
        let t = table(&["POST /{id}/{p}"]);
        assert_eq!(t.lookup("PATCH", "//v"), RouteMatch::NotFound);
        assert_eq!(t.lookup("POST", "//v"), RouteMatch::NotFound);
        assert!(matches!(t.lookup("POST", "/u/v"), RouteMatch::Found { .. }));
        // Only a wildcard takes an empty segment.
        let t = table(&["GET /a/{x}/b", "GET /{*rest}"]);
        let (target, params) = hit(&t, "GET", "/a//b");
        assert_eq!(target, "GET /{*rest}");
        assert_eq!(params, vec![("rest".to_string(), "a//b".to_string())]);
        assert_eq!(hit(&t, "GET", "/a/1/b").0, "GET /a/{x}/b");
    }

    proptest! {
        #[test]
        fn route_parser_never_panics(s in "(GET|POST|ANY|X)? ?[/a-z{}*_0-9]{0,24}") {
            let _ = s.parse::<RouteSpec>();
        }

        #[test]
        fn lookup_never_panics(path in "/[a-z/{}%*]{0,30}") {
            let t = table(&["GET /users/{id}", "GET /static/{*p}", "POST /"]);
            let _ = t.lookup("GET", &path);
        }

        #[test]
        fn parsed_routes_round_trip(segs in proptest::collection::vec("[a-z]{1,5}", 0..5)) {
            let s = format!("GET /{}", segs.join("/"));
            let route: RouteSpec = s.parse().unwrap();
            prop_assert_eq!(route.to_string(), s);
        }
    }
}
