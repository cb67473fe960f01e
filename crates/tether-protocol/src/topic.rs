//! Topic paths (`a/b/c`) and selectors (`a/b/c`, `a/*/c`, `a/b/**`).

use std::fmt;

/// Longest topic path or selector accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 1024;

/// Why a topic path or selector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The string was empty.
    #[error("topic is empty")]
    Empty,
    /// The string was longer than [`MAX_TOPIC_LEN`].
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// A segment between two slashes (or at either end) was empty.
    #[error("topic {0:?} has an empty segment")]
    EmptySegment(String),
    /// A control character or a wildcard where none is allowed.
    #[error("topic {0:?} contains an invalid character or a misplaced wildcard")]
    InvalidSegment(String),
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if s.chars().any(char::is_control) {
        return Err(TopicError::InvalidSegment(s.to_owned()));
    }
    if s.split('/').any(str::is_empty) {
        return Err(TopicError::EmptySegment(s.to_owned()));
    }
    Ok(())
}

/// Checks a concrete topic path: non-empty segments separated by `/`, no wildcards.
pub fn validate_topic(path: &str) -> Result<(), TopicError> {
    if is_plain_topic(path.as_bytes()) {
        return Ok(());
    }
    // Something is wrong, or the path is not plain ASCII: the general check says what.
    validate_topic_general(path)
}

/// Whether `b` is a valid topic of printable ASCII. This runs for every message, on both
/// sides: the loops fold without an early exit, so that they compile to vector instructions
/// rather than a branch per byte.
fn is_plain_topic(b: &[u8]) -> bool {
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if b.len() > MAX_TOPIC_LEN || first == b'/' || last == b'/' {
        return false;
    }
    let odd = b.iter().fold(false, |odd, &c| {
        odd | !(0x20..0x7f).contains(&c) | (c == b'*')
    });
    let double_slash = b
        .iter()
        .zip(&b[1..])
        .fold(false, |seen, (&x, &y)| seen | ((x == b'/') & (y == b'/')));
    !odd && !double_slash
}

/// The check for any topic, non-ASCII included; [`validate_topic`] agrees with it.
fn validate_topic_general(path: &str) -> Result<(), TopicError> {
    check_common(path)?;
    if path.split('/').any(|seg| seg.contains('*')) {
        return Err(TopicError::InvalidSegment(path.to_owned()));
    }
    Ok(())
}

/// A parsed topic selector.
///
/// - an exact path `a/b/c` matches that topic only;
/// - `*` as a whole segment matches exactly one segment (`a/*/c` matches `a/x/c`);
/// - `**` as the last segment matches one or more further segments (`a/b/**` matches `a/b/c`
///   and `a/b/c/d`, not `a/b`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    text: String,
    segments: Vec<Segment>,
    /// No wildcard: matching is comparing the text (checked per update, on both sides).
    exact: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Exact(String),
    One,
    Rest,
}

impl Selector {
    /// Parses a selector, refusing empty segments and wildcards inside segments (`a*`) or
    /// `**` anywhere but last.
    pub fn parse(text: &str) -> Result<Selector, TopicError> {
        check_common(text)?;
        let parts: Vec<&str> = text.split('/').collect();
        let last = parts.len() - 1;
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            let seg = match part {
                "*" => Segment::One,
                "**" if i == last => Segment::Rest,
                p if p.contains('*') => return Err(TopicError::InvalidSegment(text.to_owned())),
                p => Segment::Exact(p.to_owned()),
            };
            segments.push(seg);
        }
        let exact = segments.iter().all(|s| matches!(s, Segment::Exact(_)));
        Ok(Selector {
            text: text.to_owned(),
            segments,
            exact,
        })
    }

    /// The selector as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the selector names exactly one topic (no wildcard).
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// Whether every topic this selector can match is also matched by `self` (used to check a
    /// subscription against a permission pattern).
    pub fn covers(&self, other: &Selector) -> bool {
        fn go(p: &[Segment], s: &[Segment]) -> bool {
            match (p.first(), s.first()) {
                (None, None) => true,
                (None, Some(_)) | (Some(_), None) => false,
                (Some(Segment::Rest), Some(_)) => true,
                (Some(_), Some(Segment::Rest)) => false,
                (Some(Segment::One), Some(_)) => go(&p[1..], &s[1..]),
                (Some(Segment::Exact(a)), Some(Segment::Exact(b))) => {
                    a == b && go(&p[1..], &s[1..])
                }
                (Some(Segment::Exact(_)), Some(Segment::One)) => false,
            }
        }
        go(&self.segments, &other.segments)
    }

    /// Whether `topic` (a valid path) is selected.
    pub fn matches(&self, topic: &str) -> bool {
        if self.exact {
            return self.text == topic;
        }
        if let [Segment::Rest] = self.segments[..] {
            return true;
        }
        self.matches_segments(topic)
    }

    /// [`Selector::matches`] without its shortcuts: segment by segment.
    fn matches_segments(&self, topic: &str) -> bool {
        let mut parts = topic.split('/');
        for seg in &self.segments {
            match seg {
                Segment::Rest => return parts.next().is_some(),
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Exact(want) => match parts.next() {
                    Some(p) if p == want => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Selector {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).expect("valid selector")
    }

    #[test]
    fn shortcuts_agree_with_matching_segment_by_segment() {
        let selectors = [
            "a", "a/b", "a/b/c", "**", "*", "a/**", "*/b", "a/*/c", "b/**",
        ];
        let topics = [
            "a", "b", "a/b", "a/c", "b/b", "a/b/c", "a/x/c", "a/b/c/d", "ab", "a/bc",
        ];
        for s in selectors {
            let selector = sel(s);
            for t in topics {
                assert_eq!(
                    selector.matches(t),
                    selector.matches_segments(t),
                    "{s} against {t}"
                );
            }
        }
    }

    #[test]
    fn exact_one_level_and_any_depth() {
        assert!(sel("a/b/c").matches("a/b/c"));
        assert!(!sel("a/b/c").matches("a/b"));
        assert!(!sel("a/b/c").matches("a/b/c/d"));
        assert!(sel("a/*/c").matches("a/x/c"));
        assert!(!sel("a/*/c").matches("a/x/y/c"));
        assert!(sel("a/b/*").matches("a/b/c"));
        assert!(!sel("a/b/*").matches("a/b/c/d"));
        assert!(sel("a/b/**").matches("a/b/c"));
        assert!(sel("a/b/**").matches("a/b/c/d/e"));
        assert!(!sel("a/b/**").matches("a/b"));
        assert!(!sel("a/b/**").matches("a/c/d"));
        assert!(sel("**").matches("anything/at/all"));
    }

    #[test]
    fn covers_is_subsumption() {
        assert!(sel("a/**").covers(&sel("a/b")));
        assert!(sel("a/**").covers(&sel("a/*/c")));
        assert!(sel("a/**").covers(&sel("a/b/**")));
        assert!(!sel("a/**").covers(&sel("**")));
        assert!(!sel("a/*").covers(&sel("a/**")));
        assert!(sel("a/*").covers(&sel("a/b")));
        assert!(!sel("a/b").covers(&sel("a/*")));
        assert!(sel("**").covers(&sel("x/y/z")));
        assert!(!sel("public/**").covers(&sel("secret/x")));
    }

    #[test]
    fn bad_selectors_are_typed_errors() {
        assert_eq!(Selector::parse(""), Err(TopicError::Empty));
        assert!(matches!(
            Selector::parse("a//b"),
            Err(TopicError::EmptySegment(_))
        ));
        assert!(matches!(
            Selector::parse("/a"),
            Err(TopicError::EmptySegment(_))
        ));
        assert!(matches!(
            Selector::parse("a/b*"),
            Err(TopicError::InvalidSegment(_))
        ));
        assert!(matches!(
            Selector::parse("a/**/b"),
            Err(TopicError::InvalidSegment(_))
        ));
        assert!(matches!(
            Selector::parse("a/\n"),
            Err(TopicError::InvalidSegment(_))
        ));
        assert_eq!(Selector::parse(&"a".repeat(2000)), Err(TopicError::TooLong));
    }

    #[test]
    fn the_fast_topic_check_agrees_with_the_general_one() {
        let general = validate_topic_general;
        // Every string of up to 5 characters over an alphabet with each troublemaker.
        let alphabet = ['a', '/', '*', '\n', '\u{7f}', 'é', '\u{85}'];
        let mut paths = vec![String::new()];
        let mut checked = 0;
        for _ in 0..5 {
            let mut longer = Vec::new();
            for p in &paths {
                for c in alphabet {
                    let mut q = p.clone();
                    q.push(c);
                    assert_eq!(validate_topic(&q), general(&q), "{q:?}");
                    checked += 1;
                    longer.push(q);
                }
            }
            paths = longer;
        }
        assert_eq!(checked, 7 + 49 + 343 + 2401 + 16807);
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_topic(&long), general(&long));
        assert_eq!(validate_topic(""), Err(TopicError::Empty));
    }

    #[test]
    fn topics_refuse_wildcards() {
        assert!(validate_topic("a/b").is_ok());
        assert!(validate_topic("a/*").is_err());
        assert!(validate_topic("a/").is_err());
    }
}
