//! Reading scenario files: every file is parsed and validated before anything runs, and
//! every error names the file, the field and the allowed values.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::spec::Scenario;
use super::validate::{validate, Invalid};

/// Why a scenario file (or a set of them) cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The path could not be read (missing, unreadable, not UTF-8).
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file has nothing but white space.
    #[error("{}: empty file: expected a scenario object {{ \"firmware\": ..., \"faults\": [...], \"expect\": {{...}} }}", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Malformed JSON, an unknown field, a wrong type or an unknown enum value.
    #[error("{}:{line}:{column}: {field}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error, as serde_json counts it.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Dotted path of the field (`guest.backing`), or `(file)` when the JSON itself is
        /// broken before any field.
        field: String,
        /// serde's message, which lists the allowed values of an enum.
        reason: String,
    },
    /// The file parses but breaks validation rules.
    #[error("{}", InvalidList(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every rule broken, in field order (never empty).
        problems: Vec<Invalid>,
    },
    /// Two files give the same scenario name.
    #[error("{}: name: {name:?} is already used by {}", path.display(), first.display())]
    DuplicateName {
        /// The later file.
        path: PathBuf,
        /// The shared name.
        name: String,
        /// The file that used it first.
        first: PathBuf,
    },
    /// A directory holds no scenario: running it would prove nothing.
    #[error("{}: no scenario files (*.json) found", path.display())]
    NoScenarios {
        /// The directory.
        path: PathBuf,
    },
}

/// Formats validation problems one per line, each with the file, like the other variants.
struct InvalidList<'a>(&'a Path, &'a [Invalid]);

impl fmt::Display for InvalidList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.1.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}: {}", self.0.display(), p.field, p.reason)?;
        }
        Ok(())
    }
}

/// Reads, parses and validates one scenario file. A missing `name` becomes the file stem.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_owned(),
        source,
    })?;
    let default_name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse(path, &text, &default_name)
}

/// Parses and validates scenario text; `path` is only used in errors.
pub fn parse(path: &Path, text: &str, default_name: &str) -> Result<Scenario, ScenarioError> {
    if text.trim().is_empty() {
        return Err(ScenarioError::Empty {
            path: path.to_owned(),
        });
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let mut scenario: Scenario = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| parse_error(path, &e.path().to_string(), e.into_inner()))?;
    // Trailing garbage after the object is malformed JSON too.
    de.end().map_err(|e| parse_error(path, ".", e))?;
    if scenario.name.is_empty() {
        default_name.clone_into(&mut scenario.name);
    }
    let problems = validate(&scenario);
    if problems.is_empty() {
        Ok(scenario)
    } else {
        Err(ScenarioError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }
}

fn parse_error(path: &Path, field: &str, inner: serde_json::Error) -> ScenarioError {
    let message = inner.to_string();
    // serde_json appends " at line L column C"; the variant carries those separately.
    let reason = match message.rsplit_once(" at line ") {
        Some((reason, _)) => reason.to_owned(),
        None => message,
    };
    // serde reports a missing field at its parent; name the field itself.
    let missing = reason
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'));
    let field = match (field, missing) {
        ("." | "", Some(name)) => name.to_owned(),
        ("." | "", None) => String::from("(file)"),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (path, None) => path.to_owned(),
    };
    ScenarioError::Parse {
        path: path.to_owned(),
        line: inner.line(),
        column: inner.column(),
        field,
        reason,
    }
}

/// Loads every scenario named by `paths`: files as given, directories recursively (their
/// `*.json` files in sorted path order), arguments in the order given, each file once.
/// Returns all scenarios, or every error found: parse and validation errors of each file,
/// and names used twice.
pub fn load_all<P: AsRef<Path>>(
    paths: &[P],
) -> Result<Vec<(PathBuf, Scenario)>, Vec<ScenarioError>> {
    let mut errors = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for path in paths {
        let path = path.as_ref();
        if path.is_dir() {
            let mut found = Vec::new();
            match collect_json(path, &mut found) {
                Ok(()) if found.is_empty() => errors.push(ScenarioError::NoScenarios {
                    path: path.to_owned(),
                }),
                Ok(()) => {
                    found.sort();
                    files.extend(found);
                }
                Err(source) => errors.push(ScenarioError::Read {
                    path: path.to_owned(),
                    source,
                }),
            }
        } else {
            files.push(path.to_owned());
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(f.canonicalize().unwrap_or_else(|_| f.clone())));

    let mut loaded: Vec<(PathBuf, Scenario)> = Vec::new();
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        match load(&file) {
            Ok(s) => {
                if let Some(first) = names.get(&s.name) {
                    errors.push(ScenarioError::DuplicateName {
                        path: file,
                        name: s.name,
                        first: first.clone(),
                    });
                } else {
                    names.insert(s.name.clone(), file.clone());
                    loaded.push((file, s));
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

/// Appends the `*.json` files under `dir`, recursively.
fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}
