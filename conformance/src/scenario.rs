//! The scenario file (`conformance/scenarios.txt`): scenarios made of steps, one per line.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One step: a verb and its `key=value` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What to do (`open`, `cut`, `expect_state`, ...).
    pub verb: String,
    /// The step's arguments.
    pub args: BTreeMap<String, String>,
    /// The line in the file, for messages.
    pub line: usize,
}

impl Step {
    /// An argument, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.args.get(key).map(String::as_str)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.verb)?;
        for (k, v) in &self.args {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// A named list of steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Its name (the matrix's row).
    pub name: String,
    /// What it checks, for people.
    pub about: String,
    /// Its steps, in order.
    pub steps: Vec<Step>,
}

/// A malformed scenario file.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not what the format allows.
    #[error("line {line}: {message}")]
    Syntax {
        /// The line number (1-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The scenario file of this checkout.
pub fn default_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios.txt")
}

/// Reads and parses a scenario file.
pub fn load(path: &std::path::Path) -> Result<Vec<Scenario>, ParseError> {
    let text = std::fs::read_to_string(path).map_err(|source| ParseError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text)
}

/// Parses the text of a scenario file.
pub fn parse(text: &str) -> Result<Vec<Scenario>, ParseError> {
    let mut scenarios: Vec<Scenario> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (verb, rest) = trimmed
            .split_once(char::is_whitespace)
            .map_or((trimmed, ""), |(v, r)| (v, r.trim()));
        let syntax = |message: String| ParseError::Syntax { line, message };
        match verb {
            "scenario" => {
                if rest.is_empty() || rest.contains(char::is_whitespace) {
                    return Err(syntax("`scenario` takes one name".into()));
                }
                if scenarios.iter().any(|s| s.name == rest) {
                    return Err(syntax(format!("scenario {rest} is defined twice")));
                }
                scenarios.push(Scenario {
                    name: rest.to_owned(),
                    about: String::new(),
                    steps: Vec::new(),
                });
            }
            _ => {
                let Some(current) = scenarios.last_mut() else {
                    return Err(syntax("a step before the first `scenario`".into()));
                };
                if verb == "about" {
                    current.about = rest.to_owned();
                    continue;
                }
                let mut args = BTreeMap::new();
                for word in rest.split_whitespace() {
                    let Some((k, v)) = word.split_once('=') else {
                        return Err(syntax(format!("{word:?} is not key=value")));
                    };
                    if args.insert(k.to_owned(), v.to_owned()).is_some() {
                        return Err(syntax(format!("{k} is given twice")));
                    }
                }
                current.steps.push(Step {
                    verb: verb.to_owned(),
                    args,
                    line,
                });
            }
        }
    }
    Ok(scenarios)
}

/// One scenario's outcome in one language, as runners write it (`name<TAB>outcome<TAB>detail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every step passed.
    Pass,
    /// A step failed: why.
    Fail(String),
    /// The language cannot do a step yet: why.
    NotSupported(String),
}

impl Outcome {
    /// The result line of scenario `name`.
    pub fn line(&self, name: &str) -> String {
        let (word, detail) = match self {
            Outcome::Pass => ("pass", ""),
            Outcome::Fail(d) => ("FAIL", d.as_str()),
            Outcome::NotSupported(d) => ("unsupported", d.as_str()),
        };
        let detail = detail.replace(['\t', '\n', '\r'], " ");
        format!("{name}\t{word}\t{detail}")
    }

    /// Reads a result line back: the scenario's name and its outcome.
    pub fn parse_line(line: &str) -> Option<(String, Outcome)> {
        let mut parts = line.splitn(3, '\t');
        let name = parts.next()?.to_owned();
        let word = parts.next()?;
        let detail = parts.next().unwrap_or("").to_owned();
        let outcome = match word {
            "pass" => Outcome::Pass,
            "FAIL" => Outcome::Fail(detail),
            "unsupported" => Outcome::NotSupported(detail),
            _ => return None,
        };
        Some((name, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scenarios_steps_and_arguments() {
        let text = "# comment\n\nscenario a\nabout two words\nenv tls=1\n  cut\nscenario b\nopen x=1 y=2\n";
        let s = parse(text).expect("parses");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].about, "two words");
        assert_eq!(s[0].steps[0].verb, "env");
        assert_eq!(s[0].steps[0].get("tls"), Some("1"));
        assert_eq!(s[0].steps[1].verb, "cut");
        assert_eq!(s[1].steps[0].get("y"), Some("2"));
        assert_eq!(s[1].steps[0].line, 8);
    }

    #[test]
    fn rejects_what_the_format_does_not_allow() {
        for bad in [
            "cut\n",
            "scenario a\nopen x\n",
            "scenario a\nscenario a\n",
            "scenario a b\n",
            "scenario a\nopen x=1 x=2\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_checked_in_file_parses_and_every_scenario_has_steps() {
        let all = load(&default_path()).expect("scenarios.txt parses");
        assert!(all.len() >= 10);
        for s in &all {
            assert!(!s.about.is_empty(), "{} has no `about`", s.name);
            assert_eq!(
                s.steps.first().map(|s| s.verb.as_str()),
                Some("env"),
                "{}",
                s.name
            );
        }
    }

    #[test]
    fn result_lines_round_trip() {
        for o in [
            Outcome::Pass,
            Outcome::Fail("x\ty".into()),
            Outcome::NotSupported("no TLS".into()),
        ] {
            let (name, back) = Outcome::parse_line(&o.line("s")).expect("parses");
            assert_eq!(name, "s");
            match (&o, &back) {
                (Outcome::Fail(_), Outcome::Fail(d)) => assert_eq!(d, "x y"),
                _ => assert_eq!(o, back),
            }
        }
    }
}
