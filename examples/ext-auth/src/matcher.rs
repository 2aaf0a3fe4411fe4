//! Higress ext-auth's string matchers and match rules (`expr/matcher.go`,
//! `expr/repeated_string_matcher.go`, `expr/match_rules.go`).

use regex::Regex;
use serde_json::{Map, Value};

/// The error Higress gives for a matcher type it does not know.
pub const UNKNOWN_TYPE: &str = "unknown string matcher type";

/// One string matcher: `exact`, `prefix`, `suffix`, `contains` or `regex`, possibly ignoring
/// case (the target lower-cased once, the input at each match; a regex gets `(?i)`).
#[derive(Debug, Clone)]
pub enum StringMatcher {
    /// Equal.
    Exact(String, bool),
    /// Starts with.
    Prefix(String, bool),
    /// Ends with.
    Suffix(String, bool),
    /// Contains.
    Contains(String, bool),
    /// An unanchored RE2-style search.
    Regex(Regex),
}

impl StringMatcher {
    /// `BuildStringMatcher(type, target, ignoreCase)`.
    pub fn build(kind: &str, target: &str, ignore_case: bool) -> Result<StringMatcher, String> {
        let text = if ignore_case {
            target.to_lowercase()
        } else {
            target.to_string()
        };
        Ok(match kind {
            "exact" => StringMatcher::Exact(text, ignore_case),
            "prefix" => StringMatcher::Prefix(text, ignore_case),
            "suffix" => StringMatcher::Suffix(text, ignore_case),
            "contains" => StringMatcher::Contains(text, ignore_case),
            "regex" => {
                let pattern = if ignore_case && !target.starts_with("(?i)") {
                    format!("(?i){target}")
                } else {
                    target.to_string()
                };
                StringMatcher::Regex(Regex::new(&pattern).map_err(|error| error.to_string())?)
            }
            _ => return Err(UNKNOWN_TYPE.to_string()),
        })
    }

    /// Whether `input` matches.
    pub fn matches(&self, input: &str) -> bool {
        let fold = |ignore_case: bool| {
            if ignore_case {
                input.to_lowercase()
            } else {
                input.to_string()
            }
        };
        match self {
            StringMatcher::Exact(text, ignore_case) => fold(*ignore_case) == *text,
            StringMatcher::Prefix(text, ignore_case) => {
                fold(*ignore_case).starts_with(text.as_str())
            }
            StringMatcher::Suffix(text, ignore_case) => fold(*ignore_case).ends_with(text.as_str()),
            StringMatcher::Contains(text, ignore_case) => {
                fold(*ignore_case).contains(text.as_str())
            }
            StringMatcher::Regex(regex) => regex.is_match(input),
        }
    }
}

/// Matchers of which any may match (`BuildRepeatedStringMatcher`): a list of objects, each with
/// one of the five keys.
#[derive(Debug, Clone)]
pub struct RepeatedMatcher(Vec<StringMatcher>);

impl RepeatedMatcher {
    /// Builds the list; each item's first non-empty key, in the order `exact`, `prefix`,
    /// `suffix`, `contains`, `regex` (Go takes a map's keys in random order: an item with
    /// several is ambiguous there).
    pub fn build(
        items: &[Map<String, Value>],
        ignore_case: bool,
    ) -> Result<RepeatedMatcher, String> {
        let mut matchers = Vec::with_capacity(items.len());
        for item in items {
            let found = ["exact", "prefix", "suffix", "contains", "regex"]
                .into_iter()
                .find_map(|kind| {
                    let target = item.get(kind)?.as_str()?;
                    (!target.is_empty()).then_some((kind, target))
                });
            let Some((kind, target)) = found else {
                return Err(UNKNOWN_TYPE.to_string());
            };
            // A per-item `ignore_case` counts only where the list is not already ignoring case.
            let ignore = ignore_case
                || item
                    .get("ignore_case")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            matchers.push(StringMatcher::build(kind, target, ignore)?);
        }
        Ok(RepeatedMatcher(matchers))
    }

    /// Whether any matcher matches `input`.
    pub fn matches(&self, input: &str) -> bool {
        self.0.iter().any(|matcher| matcher.matches(input))
    }
}

/// Whitelist or blacklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A request a rule matches skips authorization.
    Whitelist,
    /// A request a rule matches is authorized; the others skip authorization.
    Blacklist,
    /// Anything else: every request is authorized (Go's `IsAllowedByMode` answers false).
    Other,
}

/// One rule: a domain (with `*` wildcards), methods, a path matcher; all that are set must
/// match, and a rule with none never matches.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `match_rule_domain`, empty for any.
    pub domain: String,
    /// `match_rule_method`, empty for any.
    pub methods: Vec<String>,
    /// `match_rule_path` with its type, `None` for any.
    pub path: Option<StringMatcher>,
}

impl Rule {
    fn matches(&self, domain: &str, method: &str, path: &str) -> bool {
        if self.domain.is_empty() && self.path.is_none() && self.methods.is_empty() {
            return false;
        }
        (self.domain.is_empty() || wildcard_matches(&self.domain, domain))
            && self
                .path
                .as_ref()
                .is_none_or(|matcher| matcher.matches(path))
            && (self.methods.is_empty()
                || self
                    .methods
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(method)))
    }
}

/// The rules that decide which requests skip authorization.
#[derive(Debug, Clone)]
pub struct MatchRules {
    /// How the rules are read.
    pub mode: Mode,
    /// The rules.
    pub rules: Vec<Rule>,
}

impl MatchRules {
    /// `IsAllowedByMode`: whether the request skips authorization.
    pub fn is_allowed(&self, domain: &str, method: &str, path: &str) -> bool {
        let any = self
            .rules
            .iter()
            .any(|rule| rule.matches(domain, method, path));
        match self.mode {
            Mode::Whitelist => any,
            Mode::Blacklist => !any,
            Mode::Other => false,
        }
    }
}

/// `pattern` with `*` for any run of characters, matched against the whole of `text` (Go: the
/// regex `^` + the quoted pattern with `\*` → `.*` + `$`), case-sensitively.
fn wildcard_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}
